"""The planted-bug catalogue for ``equiv selftest``: realistic bugs, one line each, as data.

Each mutant names a cell, the source change that plants the bug in an otherwise correct
implementation (applied by ``equiv.backends.implementations``; the file on disk is untouched), and
the
first divergence the harness must report. Backends that are not installed skip their mutants.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from equiv.backends.implementations import Patch
from equiv.contract.divergence import Divergence


@dataclass(frozen=True)
class Mutant:
    id: str
    kind: str
    case: str
    backend: str
    dtype: str
    patches: tuple[Patch, ...]
    expected: dict[str, Any]  # step, quantity, and optionally name
    steps: int = 8
    note: str = ""
    #: the module to patch when the case re-uses another case's implementation file
    module: str | None = None
    #: compare past the float32 horizon from the reference's own state (``RunOptions.resync``)
    resync: bool = False

    def matches(self, divergence: Divergence | None) -> bool:
        if divergence is None:
            return False
        found = divergence.to_json()
        return all(found.get(k) == v for k, v in self.expected.items())


def _m(id, kind, case, backend, dtype, old, new, expected, **kw) -> Mutant:
    return Mutant(id, kind, case, backend, dtype, (Patch(old, new),), expected, **kw)


TORCH = [
    _m(
        "torch-missing-zero-grad",
        "gradients never reset (missing zero_grad)",
        "two_layer_mlp",
        "torch.eager",
        "float64",
        "            self.w1.grad.zero_()\n            self.w2.grad.zero_()\n",
        "",
        {"step": 1, "quantity": "grads", "name": "w1"},
    ),
    _m(
        "torch-manual-relu-mask",
        "hand-written backward without the ReLU mask (the seed's first program)",
        "two_layer_mlp",
        "torch.manual",
        "float64",
        "        grad_h[h < 0] = 0\n",
        "",
        {"step": 0, "quantity": "grads", "name": "w1"},
    ),
    _m(
        "torch-custom-backward",
        "wrong custom backward: y*(1+y) for the sigmoid",
        "sigmoid_custom_op",
        "torch.jit",
        "float64",
        "return grad_y * y * (1.0 - y)",
        "return grad_y * y * (1.0 + y)",
        {"step": 0, "quantity": "grads", "name": "w1"},
    ),
    _m(
        "torch-update-sign",
        "flipped update sign (gradient ascent)",
        "two_layer_mlp",
        "torch.eager",
        "float32",
        "self.w1 -= self.lr * self.w1.grad",
        "self.w1 += self.lr * self.w1.grad",
        {"step": 0, "quantity": "params", "name": "w1"},
    ),
    _m(
        "torch-learning-rate",
        "wrong learning rate (the seed's 1e-2 hard-coded)",
        "keras_sequential",
        "torch.eager",
        "float32",
        'return torch.optim.SGD(params, lr=cfg["lr"])',
        "return torch.optim.SGD(params, lr=1e-2)",
        {"step": 0, "quantity": "params", "name": "w1"},
    ),
    _m(
        "torch-reshape-not-transpose",
        "kernel loaded with reshape instead of transpose",
        "minibatch",
        "torch.eager",
        "float64",
        'dense1.weight.copy_(backend.linear_weight(p["w1"]))',
        'dense1.weight.copy_(backend.to_native(p["w1"].reshape(dense1.weight.shape)))',
        {"step": 0, "quantity": "loss"},
        note="minibatch's port loads by hand (keras_sequential's load); a port built with "
        "equiv.support.torch_port loads through its layout, which refuses the wrong shape",
        module="cases.keras_sequential.torch_impl",
    ),
    _m(
        "torch-sum-not-mean",
        "sum instead of mean in the loss",
        "keras_sequential",
        "torch.compile",
        "float32",
        "loss=F.mse_loss,",
        'loss=lambda out, y: F.mse_loss(out, y, reduction="sum"),',
        {"step": 0, "quantity": "loss"},
    ),
    _m(
        "torch-threshold-le",
        "<= instead of < at the branch threshold",
        "dynamic_branching",
        "torch.eager",
        "float64",
        "self.prev_loss < self.threshold",
        "self.prev_loss <= self.threshold",
        {"step": 0, "quantity": "branch"},
    ),
    Mutant(
        "torch-update-branch-not-taken",
        "update applied to the branch not taken",
        "static_graph_step",
        "torch.jit",
        "float64",
        (
            Patch(
                "        g2b = torch.zeros_like(w2b)\n    with torch.no_grad():\n"
                "        w1.sub_(lr * g1)\n        w2a.sub_(lr * g2a)\n        w2b.sub_(lr * g2b)",
                "        g2b = torch.zeros_like(w2b)\n    with torch.no_grad():\n"
                "        w1.sub_(lr * g1)\n        w2a.sub_(lr * g2b)\n        w2b.sub_(lr * g2a)",
            ),
        ),
        {"step": 0, "quantity": "params", "name": "w2a"},
    ),
    _m(
        "torch-float32-in-float64",
        "float32 arithmetic inside a float64 cell",
        "two_layer_mlp",
        "torch.eager",
        "float64",
        "y_pred = x.mm(w1).clamp(min=0).mm(w2)",
        "y_pred = x.float().mm(w1.float()).clamp(min=0).mm(w2.float()).double()",
        {"step": 0, "quantity": "loss"},
    ),
    _m(
        "torch-adam-beta",
        "wrong Adam beta_2 (0.99 for 0.999)",
        "keras_sequential_adam",
        "torch.eager",
        "float64",
        'betas=(cfg.get("beta_1", 0.9), cfg.get("beta_2", 0.999)),',
        'betas=(cfg.get("beta_1", 0.9), 0.99),',
        {"step": 1, "quantity": "params", "name": "w1"},
        note="at step 0 Adam's update is lr*g/(|g|+eps) whatever the betas: it shows at step 1",
        module="cases.keras_sequential.torch_impl",
    ),
    _m(
        "torch-bias-not-loaded",
        "a bias never loaded from the canonical state",
        "minibatch",
        "torch.jit",
        "float32",
        '        dense2.bias.copy_(backend.to_native(p["b2"]))\n',
        "",
        {"step": 0, "quantity": "loss"},
        note="a layout that leaves a model tensor out is refused when the port is built",
        module="cases.keras_sequential.torch_impl",
    ),
    _m(
        "torch-sigmoid-forward",
        "wrong sign in the custom op's forward",
        "sigmoid_custom_op",
        "torch.compile",
        "float32",
        "return 1.0 / (1.0 + (-h).exp())",
        "return 1.0 / (1.0 + h.exp())",
        {"step": 0, "quantity": "loss"},
    ),
]

TENSORFLOW = [
    _m(
        "tf1-update-never-run",
        "an update op built into the TF1 graph but never run",
        "two_layer_mlp",
        "tf.v1graph",
        "float64",
        "for w, g in zip(weights, grads, strict=True)]",
        "for w, g in zip(weights, grads, strict=True)][:0]",
        {"step": 0, "quantity": "params", "name": "w1"},
        note="the SGD's assign_sub ops are built, but not returned to the train op that groups "
        "what a step runs (a TF 2 step is unaffected: there they run as they are made)",
    ),
    _m(
        "tf-adam-epsilon-inside-sqrt",
        "Adam's epsilon inside the square root",
        "keras_sequential_adam",
        "tf.eager",
        "float64",
        "(tf.sqrt(v_hat) + self.eps)",
        "tf.sqrt(v_hat + self.eps)",
        {"step": 0, "quantity": "params", "name": "w1"},
        module="cases.keras_sequential.tf_impl",
    ),
]

PARALLEL_BLOCKS = [
    _m(
        "torch-sum-not-product",
        "parallel block adds its two branches instead of multiplying them",
        "parallel_blocks",
        "torch.eager",
        "float64",
        "return (h1 * h2).clamp(min=0)",
        "return (h1 + h2).clamp(min=0)",
        {"step": 0, "quantity": "loss"},
    ),
]

OLD_LOADER = 'DataLoader(TensorDataset(x, y), batch_size=cfg["batch_size"])'

MINIBATCH = [
    _m(
        "torch-loader-drop-last",
        "DataLoader(drop_last=True): the partial last batch of every epoch is skipped",
        "minibatch_partial",
        "torch.eager",
        "float64",
        OLD_LOADER,
        OLD_LOADER[:-1] + ", drop_last=True)",
        {"step": 7, "quantity": "loss"},
        module="cases.minibatch.torch_impl",
    ),
    _m(
        "torch-mean-over-nominal-batch",
        "the partial last batch's loss averaged over the full batch size",
        "minibatch_partial",
        "torch.eager",
        "float64",
        "loss = F.mse_loss(self.model(x_batch), y_batch)",
        'loss = F.mse_loss(self.model(x_batch), y_batch, reduction="sum") / (8 * y_batch.shape[1])',
        {"step": 7, "quantity": "loss"},
        module="cases.minibatch.torch_impl",
    ),
    _m(
        "torch-loader-shuffle",
        "DataLoader(shuffle=True) where the reference takes the batches in order",
        "minibatch",
        "torch.eager",
        "float64",
        OLD_LOADER,
        OLD_LOADER[:-1] + ", shuffle=True)",
        {"step": 0, "quantity": "loss"},
        module="cases.minibatch.torch_impl",
    ),
    _m(
        "tf-data-drop-remainder",
        "tf.data's batch(drop_remainder=True): the partial last batch is skipped",
        "minibatch_partial",
        "tf.function",
        "float64",
        'dataset.batch(cfg["batch_size"])',
        'dataset.batch(cfg["batch_size"], drop_remainder=True)',
        {"step": 7, "quantity": "loss"},
        module="cases.minibatch.tf_impl",
    ),
]

KERAS = [
    Mutant(
        "keras-fit-shuffle",
        "model.fit left to shuffle (its default), porting a torch loop over an unshuffled "
        "DataLoader",
        "minibatch",
        "keras.fit",
        "float64",
        (
            Patch("shuffle=False,", "shuffle=True,"),
            # shuffling needs a seed under TensorFlow's op determinism, as a script would set it
            Patch(
                "    with backend.floatx(dtype):\n        model.fit(",
                "    keras.utils.set_random_seed(0)\n    with backend.floatx(dtype):\n"
                "        model.fit(",
            ),
        ),
        {"step": 0, "quantity": "loss"},
        module="cases.minibatch.keras_fit_impl",
    ),
    _m(
        "keras-fit-default-batch-size",
        "model.fit without batch_size: Keras's default of 32, not the DataLoader's 8",
        "minibatch",
        "keras.fit",
        "float64",
        'batch_size=cfg["batch_size"],',
        "",
        {"step": 0, "quantity": "loss"},
        module="cases.minibatch.keras_fit_impl",
    ),
]

#: resnet18's port to Keras with a framework's default where torchvision's differs
#: (BatchNorm eps 1e-3 against 1e-5, momentum 0.99 as Keras counts it against torch's 0.1, and
#: the kernel and tensor layouts; keras/src/layers/normalization/batch_normalization.py, torch's
#: BatchNorm2d docs, pytorch/vision#8250): each must be found at the right
#: layer, named by the first divergence (an activation, or the BatchNorm state). Two steps
#: each: every one shows at step 0.
RESNET18 = [
    Mutant(
        "keras-resnet-same-padding",
        "padding='same' with stride 2 (TF pads bottom/right; torchvision symmetrically)",
        "resnet18",
        "keras.tensorflow",
        "float64",
        (
            Patch("    if padding:\n", "    if padding and stride == 1:\n"),
            Patch('        padding="valid",', '        padding="same" if stride > 1 else "valid",'),
        ),
        {"step": 0, "quantity": "activations", "name": "conv1"},
        steps=2,
    ),
    _m(
        "keras-resnet-bn-default-eps",
        "BatchNormalization with Keras's default epsilon 1e-3 (torch's is 1e-5)",
        "resnet18",
        "keras.tensorflow",
        "float64",
        "momentum=0.9, epsilon=1e-5, name=",
        "momentum=0.9, name=",
        {"step": 0, "quantity": "activations", "name": "bn1"},
        steps=2,
    ),
    _m(
        "keras-resnet-bn-torch-momentum",
        "BatchNormalization momentum written torch-style, 0.1 (Keras weighs the old value)",
        "resnet18",
        "keras.tensorflow",
        "float64",
        "momentum=0.9, epsilon=1e-5, name=",
        "momentum=0.1, epsilon=1e-5, name=",
        {"step": 0, "quantity": "state", "name": "bn1.running_mean"},
        steps=2,
    ),
    _m(
        "keras-resnet-kernel-transposed",
        "a checkpoint's OIHW kernels loaded with numpy's .T (WHIO, not HWIO: square kernels "
        "load without a shape error)",
        "resnet18",
        "keras.tensorflow",
        "float64",
        "variable.assign(channels_last(name, canonical[name]))",
        "variable.assign(canonical[name].T if canonical[name].ndim == 4 else "
        "channels_last(name, canonical[name]))",
        {"step": 0, "quantity": "activations", "name": "conv1"},
        steps=2,
    ),
]

_RESNET18_TORCH_STEP = (
    "        self.optimizer.zero_grad()\n        logits = self.forward_recorded()\n"
)


def _late(id: str, kind: str, body: str, step: int) -> Mutant:
    """A bug in resnet18's torch port that starts at ``step``, after the float32 horizon
    (step 2): free-running it passes unseen; resynchronised it fails at its step.
    ``self.calls`` counts the port's steps from 1."""
    counted = "        self.calls = getattr(self, 'calls', 0) + 1\n" + body + _RESNET18_TORCH_STEP
    return Mutant(
        id,
        kind,
        "resnet18",
        "torch.eager",
        "float32",
        (Patch(_RESNET18_TORCH_STEP, counted),),
        {"step": step},
        steps=6,
        resync=True,
    )


#: bugs that start after resnet18's float32 horizon, found by resynchronised stepping
RESNET18_LATE_TORCH = [
    _late(
        "torch-resnet-lr-doubled-late",
        "learning rate doubled from step 3",
        "        if self.calls == 4:\n"
        "            for group in self.optimizer.param_groups:\n"
        "                group['lr'] *= 2\n",
        3,
    ),
    _late(
        "torch-resnet-momentum-zeroed-late",
        "momentum buffers zeroed at step 4",
        "        if self.calls == 5:\n"
        "            for state in self.optimizer.state.values():\n"
        "                state['momentum_buffer'].zero_()\n",
        4,
    ),
    _late(
        "torch-resnet-batchnorm-frozen-late",
        "BatchNorm's running statistics frozen from step 3",
        "        if self.calls == 4:\n"
        "            for module in self.net.modules():\n"
        "                if isinstance(module, torch.nn.BatchNorm2d):\n"
        "                    module.momentum = 0.0\n",
        3,
    ),
]

_RESNET18_KERAS_STEP = (
    "    def run_step(self) -> None:\n"
    "        self.last = self.evaluation = None  # not held through this step (45 MB in float32)\n"
)


def _late_keras(id: str, kind: str, body: str, step: int) -> Mutant:
    """A bug in resnet18's Keras port (keras.tensorflow, float32) that starts at ``step``,
    after the float32 horizon: ``_late``'s torch bugs, in Keras's terms. The cell is explained
    (Keras's biased moving variance), so resynchronised stepping follows the explanation's
    variant; the bug shows at its step all the same. ``self.calls`` counts steps from 1."""
    head, call = _RESNET18_KERAS_STEP.split("\n", 1)
    counted = f"{head}\n        self.calls = getattr(self, 'calls', 0) + 1\n{body}{call}"
    return Mutant(
        id,
        kind,
        "resnet18",
        "keras.tensorflow",
        "float32",
        (Patch(_RESNET18_KERAS_STEP, counted),),
        {"step": step},
        steps=6,
        resync=True,
    )


#: the same late bugs in the Keras port (keras.tensorflow)
RESNET18_LATE_KERAS = [
    _late_keras(
        "keras-resnet-lr-doubled-late",
        "learning rate doubled from step 3",
        "        if self.calls == 4:\n"
        "            self.optimizer.learning_rate.assign(self.optimizer.learning_rate * 2)\n",
        3,
    ),
    _late_keras(
        "keras-resnet-momentum-zeroed-late",
        "momentum slots zeroed at step 4",
        "        if self.calls == 5:\n"
        "            for momentum in self.optimizer.momentums:\n"
        "                momentum.assign(ops.zeros_like(momentum))\n",
        4,
    ),
    _late_keras(
        "keras-resnet-batchnorm-frozen-late",
        "BatchNorm's moving statistics frozen from step 3 (Keras's momentum 1: all old value)",
        "        if self.calls == 4:\n"
        "            for layer in self.model.layers:\n"
        "                if isinstance(layer, layers.BatchNormalization):\n"
        "                    layer.momentum = 1.0\n",
        3,
    ),
]

_RESNET18_JAX_STEP = (
    "        out = self.step(self.params, self.buffers, self.stats, self.x, self.y)\n"
    "        self.loss, self.grads, self.params, self.buffers, self.stats = out[:5]\n"
)


def _late_jax(id: str, kind: str, before: str, after: str, step: int, note: str = "") -> Mutant:
    """A bug in resnet18's JAX port (jax.jit) that starts at ``step``, as ``_late``'s: planted
    on the host side of the jitted step, ``before`` or ``after`` it in ``run_step`` (the step
    stays one trace, with no Python control flow inside it). ``self.calls`` counts from 1."""
    counted = "        self.calls = getattr(self, 'calls', 0) + 1\n" + before + _RESNET18_JAX_STEP
    return Mutant(
        id,
        kind,
        "resnet18",
        "jax.jit",
        "float32",
        (Patch(_RESNET18_JAX_STEP, counted + after),),
        {"step": step},
        steps=6,
        note=note,
        # the JAX case modules live in the plugin (``JaxBackend.implementation_module``)
        module="equiv_jax.cases.resnet18",
        resync=True,
    )


#: the same late bugs in the JAX port (jax.jit)
RESNET18_LATE_JAX = [
    _late_jax(
        "jax-resnet-lr-doubled-late",
        "learning rate doubled from step 3",
        "",
        "        if self.calls >= 4:\n"
        "            lr = self.optimizer.lr\n"
        "            self.params = jax.tree.map(\n"
        "                lambda p, b: p - lr * b, self.params, self.buffers\n"
        "            )\n",
        3,
        note="the jitted step bakes its learning rate in: the step's update is applied once "
        "more on the host, p - 2 * lr * buf",
    ),
    _late_jax(
        "jax-resnet-momentum-zeroed-late",
        "momentum buffers zeroed at step 4",
        "        if self.calls == 5:\n"
        "            self.buffers = jax.tree.map(jnp.zeros_like, self.buffers)\n",
        "",
        4,
    ),
    _late_jax(
        "jax-resnet-batchnorm-frozen-late",
        "BatchNorm's running statistics frozen from step 3",
        "        frozen = self.stats\n",
        "        if self.calls >= 4:\n            self.stats = frozen\n",
        3,
    ),
]

RESNET18_LATE = [*RESNET18_LATE_TORCH, *RESNET18_LATE_KERAS, *RESNET18_LATE_JAX]

CATALOGUE: list[Mutant] = [
    *TORCH,
    *TENSORFLOW,
    *PARALLEL_BLOCKS,
    *MINIBATCH,
    *KERAS,
    *RESNET18,
    *RESNET18_LATE,
]
