"""resnet18 in PyTorch: torchvision's own ``resnet18(num_classes=10)``, trained as the seed does.

The model is torchvision's class itself (``equiv.support.torchvision``), cast with
``.to(dtype)``; its ``state_dict`` is the canonical layout, so the canonical parameters, the
initial running statistics and ``num_batches_tracked`` load with ``load_state_dict`` as they
are, and every record is read back under the same names without conversion. The step is the
seed's: ``zero_grad``, ``F.cross_entropy`` on int64 labels, ``backward``,
``torch.optim.SGD(lr, momentum)``; the model stays in ``train()`` mode (BatchNorm normalises
with the batch statistics and updates its running ones). After the update the step runs an
evaluation forward (``model.eval()``, no grad, ``model.train()`` again) of the same batch.

Activations come from forward hooks on the modules named in ``ACTIVATION_NAMES``. Three
details: ``BasicBlock`` calls its one ``self.relu`` twice, so a block's output (``layer1.0``)
is hooked on the block and ``relu`` is the stem's ``model.relu`` (called once); the ReLUs are
in-place and ``out += identity`` writes into ``bn2``'s output, so a hook copies its output at
once; ``avgpool``'s output is (N, 512, 1, 1), recorded as the (N, 512) that ``fc`` reads.
Hooks record only during the training forward, never during the evaluation pass.

Modes (``backend.transform`` of the model): eager; ``torch.compile``, which traces the hooks
into its graph (two graphs: training with recording, evaluation without); ``torch.jit``, which
scripts the model: TorchScript compiles hooks too but a scripted hook cannot hand a tensor to
Python, so that mode registers none and declares its activations ``not_observed``.

**Variants** (``VARIANT_KEYS``: what this port reads, so that it can be the reference,
``equiv run --reference torch.eager``, of a cell whose declared explanation sets them;
``docs/port-reference.md``). With the case's own config (``bn_unbiased_running_var`` True,
``bn_variance`` "two_pass") the model is torchvision's, untouched. Otherwise every
``nn.BatchNorm2d`` is replaced by a ``VariantBatchNorm2d`` (same parameter and buffer names, so
the canonical state loads as before) whose training-mode forward is
``equiv.reference.layers.batch_norm_train``'s variant: it normalises with the biased batch
variance, computed in one pass as E[x^2] - E[x]^2 under ``bn_variance: "one_pass"`` (Keras 3 on
torch), and updates ``running_var`` with the biased variance under
``bn_unbiased_running_var: False`` (Keras, Flax). Its evaluation-mode forward is torch's. Its
training forward is that formula through autograd, not torch's fused kernel, so a variant's
gradients differ from the plain port's by rounding, no less accurately (step 0, seed 0, float64,
each gradient's error from the numpy reference run in longdouble, in ulps of its scale, the
mean over the parameters: 800 with this module, 1,050 with the fused kernel, 550 the numpy
reference's own).
"""

from __future__ import annotations

from importlib.util import find_spec
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from cases.resnet18.spec import ACTIVATION_NAMES, PARAM_NAMES, STATE_NAMES, initial_state
from equiv.backends.base import CellSkip
from equiv.support.records import step_record
from equiv.support.torch import load_module_state
from equiv.support.torchvision import resnet18

#: the config keys this port reads beyond torchvision's model (docs/port-reference.md)
VARIANT_KEYS = ("bn_unbiased_running_var", "bn_variance")

JIT_NOT_OBSERVED = {
    "activations": "torch.jit scripts the model with its hooks, and a scripted hook cannot "
    "hand a tensor to Python"
}


class ActivationRecorder:
    """Forward hooks on the named modules; ``recording`` switches them on for one forward."""

    def __init__(self, model: torch.nn.Module, names: tuple[str, ...] = ACTIVATION_NAMES):
        self.recording = False
        self.values: dict[str, torch.Tensor] = {}
        modules = dict(model.named_modules())
        self.handles = [modules[name].register_forward_hook(self.hook(name)) for name in names]

    def hook(self, name: str):
        def record(module, inputs, output):
            if self.recording:
                # a copy now: in-place ReLUs and ``out += identity`` overwrite it later
                self.values[name] = output.detach().clone()

        return record

    def canonical(self) -> dict[str, torch.Tensor]:
        """The recorded activations in canonical shapes: avgpool (N, 512, 1, 1) -> (N, 512)."""
        out = dict(self.values)
        if "avgpool" in out:
            out["avgpool"] = torch.flatten(out["avgpool"], 1)
        return out


class VariantBatchNorm2d(nn.BatchNorm2d):
    """``nn.BatchNorm2d`` (same parameters and buffers) with a variant's training-mode
    forward, as ``equiv.reference.layers.batch_norm_train`` computes it: the batch's mean and
    biased variance, that variance as mean((x - mean)^2) or, ``one_pass``, as mean(x^2) -
    mean^2; y = (x - mean) / sqrt(var + eps) * gamma + beta, differentiated by autograd
    through the statistics. The running statistics take torch's update, ``new = (1 - m) old
    + m batch``, the variance unbiased (n / (n - 1)) or, ``unbiased_running_var`` false, the
    biased one. Evaluation mode is torch's own."""

    def __init__(self, bn: nn.BatchNorm2d, unbiased_running_var: bool, one_pass: bool):
        super().__init__(bn.num_features, bn.eps, bn.momentum, bn.affine, bn.track_running_stats)
        self.unbiased_running_var = unbiased_running_var
        self.one_pass = one_pass

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:  # torch's evaluation mode (``super()`` does not script)
            return F.batch_norm(
                x, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0, self.eps
            )
        dims = [0, 2, 3]
        shape = [1, -1, 1, 1]
        count = x.numel() // x.shape[1]
        mean = x.mean(dims)
        centred = x - mean.reshape(shape)
        var = (x * x).mean(dims) - mean * mean if self.one_pass else (centred * centred).mean(dims)
        y = centred * (1.0 / torch.sqrt(var + self.eps)).reshape(shape)
        if self.weight is not None and self.bias is not None:
            y = y * self.weight.reshape(shape) + self.bias.reshape(shape)
        if self.running_mean is not None and self.running_var is not None:
            with torch.no_grad():
                m = self.momentum if self.momentum is not None else 0.1
                batch_var = var * (count / (count - 1)) if self.unbiased_running_var else var
                self.running_mean.mul_(1.0 - m).add_(mean.detach() * m)
                self.running_var.mul_(1.0 - m).add_(batch_var.detach() * m)
                if self.num_batches_tracked is not None:
                    self.num_batches_tracked.add_(1)
        return y


def batchnorm_variant(cfg) -> tuple[bool, bool] | None:
    """(unbiased_running_var, one_pass) where ``cfg`` sets a BatchNorm variant; None for the
    case's own (torch's) BatchNorm."""
    unbiased = bool(cfg.get("bn_unbiased_running_var", True))
    variance = cfg.get("bn_variance", "two_pass")
    if variance not in ("two_pass", "one_pass"):
        raise ValueError(f"bn_variance {variance!r}: 'two_pass' or 'one_pass'")
    one_pass = variance == "one_pass"
    return None if unbiased and not one_pass else (unbiased, one_pass)


def apply_batchnorm_variant(net: nn.Module, cfg) -> nn.Module:
    """``net`` with every ``nn.BatchNorm2d`` replaced by a ``VariantBatchNorm2d`` where
    ``cfg`` sets a variant (in place, each under its own name); ``net`` untouched otherwise."""
    variant = batchnorm_variant(cfg)
    if variant is None:
        return net
    for name, module in list(net.named_modules()):
        if type(module) is nn.BatchNorm2d:
            parent, _, attr = name.rpartition(".")
            owner = net.get_submodule(parent) if parent else net
            setattr(owner, attr, VariantBatchNorm2d(module, *variant))
    return net


def canonical_state_dict(state, backend) -> dict[str, torch.Tensor]:
    """torchvision's ``state_dict`` from the canonical parameters and the initial BatchNorm
    statistics (``num_batches_tracked`` 0): the canonical layout is torchvision's."""
    out = {name: backend.to_native(value) for name, value in state.params.items()}
    for name, value in initial_state(state.config).items():
        out[name] = backend.to_native(value.astype(state.dtype))
        bn = name.rsplit(".", 1)[0]
        out[f"{bn}.num_batches_tracked"] = torch.tensor(0, dtype=torch.long)
    return out


class Trainer:
    not_observed: dict[str, str] = {}

    def __init__(self, state, backend):
        cfg = state.config
        net = apply_batchnorm_variant(resnet18(num_classes=cfg["classes"]), cfg)
        net = net.to(getattr(torch, state.dtype))
        net.load_state_dict(canonical_state_dict(state, backend), strict=True)
        net.train()
        self.net = net
        self.backend = backend
        self.x = backend.to_native(state.data["x"])
        self.y = backend.to_native(state.data["y"]).long()
        if backend.mode == "jit":
            self.recorder = None
            self.not_observed = JIT_NOT_OBSERVED
        else:  # hooks before the transform: torch.compile traces them into its graph
            self.recorder = ActivationRecorder(net)
        self.model = backend.transform(net)
        self.optimizer = torch.optim.SGD(net.parameters(), lr=cfg["lr"], momentum=cfg["momentum"])
        self.params = dict(net.named_parameters())
        self.buffers = dict(net.named_buffers())

    def load_state(self, resume) -> None:
        """The reference's state at a later step (parameters, running statistics, momentum
        buffers) into the running model: torchvision's names are the canonical ones."""
        load_module_state(self.backend, self.params, self.buffers, self.optimizer, resume)

    def run_step(self) -> None:
        self.optimizer.zero_grad()
        logits = self.forward_recorded()
        loss = F.cross_entropy(logits, self.y)
        loss.backward()
        self.optimizer.step()
        self.loss = loss.detach()
        self.logits_eval = self.evaluate()

    def forward_recorded(self) -> torch.Tensor:
        """The training forward, with the hooks recording."""
        if self.recorder is None:
            return self.model(self.x)
        # a fresh dict each forward: torch.compile guards on the dict's keys, and a dict
        # filled by the last step would fail that guard and recompile once
        self.recorder.values = {}
        self.recorder.recording = True
        try:
            return self.model(self.x)
        finally:
            self.recorder.recording = False

    def evaluate(self) -> torch.Tensor:
        """Evaluation-mode logits of the same batch (running statistics, no state update)."""
        self.model.eval()
        try:
            with torch.no_grad():
                return self.model(self.x)
        finally:
            self.model.train()

    def record(self):
        activations: dict[str, Any] = self.recorder.canonical() if self.recorder else {}
        return step_record(
            self.backend.to_numpy,
            self.loss,
            {name: self.params[name].grad for name in PARAM_NAMES},
            {name: self.params[name] for name in PARAM_NAMES},
            activations=activations,
            state={name: self.buffers[name] for name in STATE_NAMES},
            evaluation={"logits": self.logits_eval},
        )


def build(state, backend):
    if find_spec("torchvision") is None:
        raise CellSkip("torchvision is not installed (pip install 'equiv[torch]')")
    return Trainer(state, backend)
