"""Reference for resnet18: torchvision's ResNet-18 in numpy, composed of ``equiv.layers``.

Every tensor is in the canonical layout (NCHW activations, OIHW kernels, ``fc.weight``
(out, in)). The training-mode forward normalises each BatchNorm with its batch's statistics
and returns the running statistics updated torch's way (``new = (1 - m) old + m batch``; the
running variance from the unbiased batch variance unless ``cfg["bn_unbiased_running_var"]``
is false, Keras's convention); ``evaluate`` is the evaluation-mode forward, normalising with
the running statistics.

The reference asks ``numerics`` for every ReLU mask (``kink_mask``, one key per ReLU: "relu"
for the stem, "layer1.0.relu1" after a block's first BatchNorm and "layer1.0.relu2" after its
residual sum) and for the max-pool's choice (``pool_choice``, key "maxpool"), and passes every
result that involves a sum (convolution, BatchNorm, residual add, pooling, dense, and each of
their backward results) through ``numerics.rounded``: the float64 calibration's Monte Carlo
shadow rounds them as another algorithm might (``equiv.numerics.MonteCarloRounding``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from cases.resnet18.spec import (
    ACTIVATION_NAMES,
    PARAM_NAMES,
    STATE_NAMES,
    blocks,
    conv_layers,
    initial_state,
)
from equiv import layers
from equiv.numerics import EXACT, Numerics

__all__ = ["evaluate", "forward_backward", "initial_state"]

Back = Callable[..., np.ndarray | None]


@dataclass
class _Pass:
    """One forward pass: training mode (batch statistics, new running statistics) or
    evaluation mode (the running statistics ``state``). Collects the activations by name."""

    params: dict
    cfg: dict
    state: dict
    train: bool
    numerics: Numerics = EXACT
    activations: dict = field(default_factory=dict)
    new_state: dict = field(default_factory=dict)

    def __post_init__(self):
        self.convs = {conv: (stride, pad, bn) for conv, _, _, _, stride, pad, bn in conv_layers()}

    def conv_bn(self, x: np.ndarray, conv: str) -> tuple[np.ndarray, Back]:
        """Convolution then BatchNorm; ``back(g, grads, input_grad=True)`` fills the three
        parameters' gradients and returns the input's (None without ``input_grad``)."""
        stride, padding, bn = self.convs[conv]
        h, conv_back = layers.conv2d(x, self.params[f"{conv}.weight"], stride, padding)
        h = self.numerics.rounded(h)
        gamma, beta = self.params[f"{bn}.weight"], self.params[f"{bn}.bias"]
        eps = self.cfg["bn_eps"]
        if self.train:
            one_pass = self.cfg.get("bn_variance") == "one_pass"
            y, bn_back, stats = layers.batch_norm_train(h, gamma, beta, eps, one_pass)
            y = self.numerics.rounded(y)
            self._update_running(bn, stats)
        else:
            mean, var = self.state[f"{bn}.running_mean"], self.state[f"{bn}.running_var"]
            y, bn_back = layers.batch_norm_eval(h, gamma, beta, mean, var, eps)
        self.activations[conv], self.activations[bn] = h, y

        def back(g: np.ndarray, grads: dict, input_grad: bool = True) -> np.ndarray | None:
            rounded = self.numerics.rounded
            gh, ggamma, gbeta = bn_back(g)
            grads[f"{bn}.weight"], grads[f"{bn}.bias"] = rounded(ggamma), rounded(gbeta)
            gx, gw = conv_back(rounded(gh), input_grad)
            grads[f"{conv}.weight"] = rounded(gw)
            return None if gx is None else rounded(gx)

        return y, back

    def _update_running(self, bn: str, stats: layers.BatchStats) -> None:
        """torch's update: new = (1 - m) * old + m * batch, m = ``bn_momentum``."""
        m = stats.mean.dtype.type(self.cfg["bn_momentum"])
        keep = stats.mean.dtype.type(1.0) - m
        var = stats.unbiased_var() if self.cfg["bn_unbiased_running_var"] else stats.var
        for name, batch in (("running_mean", stats.mean), ("running_var", var)):
            old = np.asarray(self.state[f"{bn}.{name}"], dtype=batch.dtype)
            self.new_state[f"{bn}.{name}"] = keep * old + m * batch

    def relu(self, h: np.ndarray, key: str) -> tuple[np.ndarray, Back]:
        return layers.relu(h, self.numerics.kink_mask(h, key))

    def block(self, x: np.ndarray, name: str, downsample: bool) -> tuple[np.ndarray, Back]:
        """A BasicBlock: relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x)), the shortcut
        a 1x1 convolution and BatchNorm where the block downsamples, else x itself."""
        h, conv1_back = self.conv_bn(x, f"{name}.conv1")
        a, relu1_back = self.relu(h, f"{name}.relu1")
        h, conv2_back = self.conv_bn(a, f"{name}.conv2")
        shortcut, short_back = x, None
        if downsample:
            shortcut, short_back = self.conv_bn(x, f"{name}.downsample.0")
        out, relu2_back = self.relu(self.numerics.rounded(h + shortcut), f"{name}.relu2")
        self.activations[name] = out

        def back(g: np.ndarray, grads: dict) -> np.ndarray:
            gsum = relu2_back(g)
            gx = short_back(gsum, grads) if short_back is not None else gsum
            ga = conv2_back(gsum, grads)
            return self.numerics.rounded(gx + conv1_back(relu1_back(ga), grads))

        return out, back

    def network(self, x: np.ndarray) -> tuple[np.ndarray, Back]:
        """The whole forward to the logits; ``back(g_logits) -> grads`` by parameter name."""
        h, stem_back = self.conv_bn(x, "conv1")
        h, relu_back = self.relu(h, "relu")
        self.activations["relu"] = h
        choose = lambda windows: self.numerics.pool_choice(windows, "maxpool")  # noqa: E731
        h, pool_back = layers.max_pool2d(h, 3, 2, 1, choice=choose)
        self.activations["maxpool"] = h
        block_backs = []
        for name, downsample in blocks():
            h, back = self.block(h, name, downsample)
            block_backs.append(back)
        pooled, avg_back = layers.global_avg_pool(h)
        pooled = self.numerics.rounded(pooled)
        self.activations["avgpool"] = pooled
        w, b = self.params["fc.weight"], self.params["fc.bias"]
        logits, fc_back = layers.dense(pooled, w.T, b)
        logits = self.numerics.rounded(logits)
        self.activations["fc"] = logits

        def back(g_logits: np.ndarray) -> dict:
            grads: dict = {}
            rounded = self.numerics.rounded
            g, gw, gb = fc_back(g_logits)
            grads["fc.weight"], grads["fc.bias"] = rounded(gw.T), rounded(gb)
            g = rounded(avg_back(rounded(g)))
            for block_back in reversed(block_backs):
                g = block_back(g, grads)
            g = relu_back(rounded(pool_back(g)))
            stem_back(g, grads, input_grad=False)
            return grads

        return logits, back


def forward_backward(params, data, cfg, prev_loss=None, numerics=EXACT, state=None):
    """The training-mode step: (loss, grads, None, {"activations", "state"}); ``state`` is
    the running statistics before it (None: ``initial_state``), the returned ``state`` after
    it. No branch (the third value)."""
    state = initial_state(cfg) if state is None else state
    run = _Pass(params, cfg, state, train=True, numerics=numerics)
    logits, back = run.network(data["x"])
    loss, loss_back = layers.softmax_cross_entropy(logits, np.asarray(data["y"]).astype(int))
    grads = back(numerics.rounded(loss_back()))
    observed = {
        "activations": {n: run.activations[n] for n in ACTIVATION_NAMES},
        "state": {n: run.new_state[n] for n in STATE_NAMES},
    }
    return loss, {n: grads[n] for n in PARAM_NAMES}, None, observed


def evaluate(params, state, data, cfg) -> dict:
    """The evaluation-mode forward (``model.eval()``): BatchNorm with the running statistics
    ``state``, no update; exact ReLUs and max-pool."""
    logits, _ = _Pass(params, cfg, state, train=False).network(data["x"])
    return {"logits": logits}
