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
"""

from __future__ import annotations

from importlib.util import find_spec
from typing import Any

import torch
import torch.nn.functional as F

from cases.resnet18.spec import ACTIVATION_NAMES, PARAM_NAMES, STATE_NAMES, initial_state
from equiv.backends.base import CellSkip
from equiv.support.records import step_record
from equiv.support.torch import load_module_state
from equiv.support.torchvision import resnet18

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
        net = resnet18(num_classes=cfg["classes"]).to(getattr(torch, state.dtype))
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
