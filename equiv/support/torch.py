"""Support for PyTorch case code: the trainer scaffolding around the idiom under test.

A torch case file shows its model, its training step (``loss.backward()``, the update,
``zero_grad``) and ``build``. What every torch trainer does besides is here: the canonical
state as tensors, the canonical names of the parameters, and the step's record in the
canonical layout (an ``nn.Linear`` weight is (out, in), a canonical kernel (in, out)). Two
shapes of program, two bases:

- ``TensorTrainer``: the parameters are leaf tensors the case updates itself (the seed's
  "Autograd" programs, and its hand-written backward);
- ``ModuleTrainer``: an ``nn.Module`` trained by a ``torch.optim`` optimizer (the seed's
  ``nn`` programs); ``linear`` names a layer's parameters, ``load_linear`` loads them.

It needs nothing from torch beyond what the backend converts, so it imports no framework; it
is meant for torch case code only.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from equiv.contract.records import CaseState, StepRecord, TrainingState
from equiv.contract.trainer import StateNotLoadable
from equiv.support.records import step_record

if TYPE_CHECKING:
    from equiv.backends.torch import TorchBackend

#: canonical name -> (torch parameter, whether it is an (out, in) ``nn.Linear`` weight)
Named = dict[str, tuple[Any, bool]]


class TensorTrainer:
    """The canonical parameters as tensors ``self.w`` (name -> tensor, in the case's order),
    the data as ``self.x`` and ``self.y``, the learning rate as ``self.lr``.

    ``requires_grad`` makes the tensors autograd leaves; the seed's hand-written backward
    (``torch.manual``) takes plain tensors. The case's ``run_step`` leaves
    ``self.last = (loss, grads)``, ``grads`` a name -> tensor mapping (copies: the tensors'
    ``.grad`` is zeroed afterwards); ``record`` reports them with the updated ``self.w``, and
    ``self.branch``, which a case with data-dependent control flow sets to the branch taken.
    """

    branch: str | None = None

    def __init__(self, state: CaseState, backend: TorchBackend, requires_grad: bool = True):
        self.backend = backend
        self.x = backend.to_native(state.data["x"])
        self.y = backend.to_native(state.data["y"])
        self.w = {
            name: backend.to_native(value).requires_grad_(requires_grad)
            for name, value in state.params.items()
        }
        self.lr = state.config["lr"]

    def load_state(self, resume: TrainingState) -> None:
        """The reference's parameters into the tensors, in place, and the previous loss where
        the port keeps one (a branch decided on it): its type stays the port's own (a float,
        or a tensor of the port's dtype). These ports update by hand with plain SGD, so any
        optimizer or model state is refused."""
        if resume.optimizer or resume.state:
            carried = sorted(resume.optimizer)[:3] + sorted(resume.state)[:3]
            raise StateNotLoadable(
                f"{type(self).__name__} updates by hand and keeps no optimizer or model state "
                f"({', '.join(carried)})"
            )
        import torch

        with torch.no_grad():
            for name, tensor in self.w.items():
                tensor.copy_(self.backend.to_native(resume.params[name]))
        held = getattr(self, "prev_loss", None)
        if held is not None and resume.prev_loss is not None:
            if isinstance(held, torch.Tensor):
                self.prev_loss = torch.tensor(resume.prev_loss, dtype=held.dtype)
            else:
                self.prev_loss = resume.prev_loss

    def record(self) -> StepRecord:
        loss, grads = self.last
        return step_record(self.backend.to_numpy, loss, grads, self.w, self.branch)


def linear(layer: Any, kernel: str, bias: str) -> Named:
    """An ``nn.Linear``'s parameters under their canonical names: its weight as ``kernel``
    (recorded transposed to the canonical (in, out)), its bias as ``bias``."""
    return {kernel: (layer.weight, True), bias: (layer.bias, False)}


def load_linear(backend: TorchBackend, named: Named, params: Mapping[str, np.ndarray]) -> None:
    """Copies the canonical ``params`` into the ``named`` parameters: a canonical (in, out)
    kernel into an (out, in) weight through ``backend.linear_weight``, a bias as it is."""
    import torch

    with torch.no_grad():
        for name, (param, is_kernel) in named.items():
            load = backend.linear_weight if is_kernel else backend.to_native
            param.copy_(load(params[name]))


def load_optimizer(
    backend: TorchBackend, named: Named, optimizer: Any, canonical: Mapping[str, np.ndarray]
) -> None:
    """The canonical optimizer state (``TrainingState.optimizer``) as a ``torch.optim``
    optimizer's per-parameter state: SGD's ``momentum/<p>`` as ``momentum_buffer``, Adam's
    ``m/<p>``, ``v/<p>`` and ``t`` as ``exp_avg``, ``exp_avg_sq`` and ``step`` (a 0-d tensor of
    torch's scalar dtype, as ``torch.optim.Adam`` makes it). A parameter without canonical state
    gets none: its next step starts it afresh, as torch's first step does."""
    import torch

    refuse_amsgrad(optimizer)
    step_dtype = torch.float64 if torch.get_default_dtype() == torch.float64 else torch.float32
    for name, (param, is_kernel) in named.items():
        native = backend.linear_weight if is_kernel else backend.to_native
        state: dict[str, Any] = {}
        if f"momentum/{name}" in canonical:
            state["momentum_buffer"] = native(canonical[f"momentum/{name}"]).clone()
        if f"m/{name}" in canonical:
            state["step"] = torch.tensor(float(canonical["t"]), dtype=step_dtype)
            state["exp_avg"] = native(canonical[f"m/{name}"]).clone()
            state["exp_avg_sq"] = native(canonical[f"v/{name}"]).clone()
        optimizer.state.pop(param, None)
        if state:
            optimizer.state[param] = state


def refuse_amsgrad(optimizer: Any) -> None:
    """AMSGrad (``amsgrad=True``) keeps the running maximum of v, which the canonical state
    (the reference's Adam) has no value for: such a port cannot be given a state."""
    from equiv.contract.trainer import StateNotLoadable

    if any(group.get("amsgrad") for group in optimizer.param_groups):
        raise StateNotLoadable(
            "the optimizer runs AMSGrad (amsgrad=True), whose running maximum of v has no "
            "canonical state to load"
        )


def load_adam_state(
    optimizer: Any,
    to_torch: Callable[[Mapping[str, np.ndarray]], list[tuple[Any, Any]]],
    names: Iterable[str],
    canonical: Mapping[str, np.ndarray],
) -> None:
    """Adam's (or AdamW's) canonical moments and step count into ``torch.optim`` state for a
    port whose parameters are not one canonical array each (a fused ``in_proj_weight`` holds
    three): ``to_torch`` is the port's own conversion of canonical arrays by name into
    (parameter, tensor) pairs, applied to each moment as to the parameters themselves."""
    import torch

    refuse_amsgrad(optimizer)
    optimizer.state.clear()
    names = list(names)
    if f"m/{names[0]}" not in canonical:
        return  # before the first step: torch makes the state at its first step
    step_dtype = torch.float64 if torch.get_default_dtype() == torch.float64 else torch.float32
    step = float(canonical["t"])
    first = to_torch({n: canonical[f"m/{n}"] for n in names})
    second = to_torch({n: canonical[f"v/{n}"] for n in names})
    for (param, m), (same, v) in zip(first, second, strict=True):
        assert param is same
        optimizer.state[param] = {
            "step": torch.tensor(step, dtype=step_dtype),
            "exp_avg": m.clone(),
            "exp_avg_sq": v.clone(),
        }


def load_module_state(
    backend: TorchBackend,
    params: Mapping[str, Any],
    buffers: Mapping[str, Any],
    optimizer: Any,
    resume: TrainingState,
) -> None:
    """``load_state`` for a model whose torch names and layouts are the canonical ones (a
    torchvision model's ``named_parameters`` and ``named_buffers``): the parameters, the
    non-trainable state (BatchNorm's running statistics) and the optimizer's state, in place."""
    import torch

    unknown = sorted(set(resume.params) - set(params)) + sorted(set(resume.state) - set(buffers))
    if unknown:
        raise StateNotLoadable(f"no tensor of the model is named {', '.join(unknown[:5])}")
    with torch.no_grad():
        for name, value in resume.params.items():
            params[name].copy_(backend.to_native(value))
        for name, value in resume.state.items():
            buffers[name].copy_(backend.to_native(value))
    named = {name: (params[name], False) for name in resume.params}
    load_optimizer(backend, named, optimizer, resume.optimizer)


class ModuleTrainer:
    """The data as ``self.x`` and ``self.y`` and the model's parameters by canonical name
    (``named``, built with ``linear``). The case's ``run_step`` leaves the step's loss in
    ``self.loss`` and the gradients where ``backward`` puts them (each parameter's ``.grad``,
    zeroed before the next ``backward``); ``record`` reads them with the updated parameters."""

    def __init__(self, state: CaseState, backend: TorchBackend, named: Named):
        self.backend = backend
        self.x = backend.to_native(state.data["x"])
        self.y = backend.to_native(state.data["y"])
        self.named = named

    def load_state(self, resume: TrainingState) -> None:
        """The reference's training state into the running model (``named``) and its
        ``torch.optim`` optimizer (``self.optimizer``), in place: no rebuild, so a compiled
        model stays compiled and the gradient buffers stay the port's own."""
        if resume.state:
            raise StateNotLoadable(
                f"{type(self).__name__} maps parameters only, not the model's non-trainable "
                f"state ({', '.join(sorted(resume.state))})"
            )
        load_linear(self.backend, self.named, resume.params)
        optimizer = getattr(self, "optimizer", None)
        if optimizer is None and resume.optimizer:
            raise StateNotLoadable(f"{type(self).__name__} has no torch.optim optimizer to load")
        if optimizer is not None:
            load_optimizer(self.backend, self.named, optimizer, resume.optimizer)

    def canonical(self, value: Any, is_kernel: bool) -> np.ndarray:
        backend = self.backend
        return backend.canonical_kernel(value) if is_kernel else backend.to_numpy(value)

    def record(self) -> StepRecord:
        named = self.named.items()
        return step_record(
            np.asarray,
            self.backend.to_numpy(self.loss),
            {name: self.canonical(p.grad, is_kernel) for name, (p, is_kernel) in named},
            {name: self.canonical(p, is_kernel) for name, (p, is_kernel) in named},
        )
