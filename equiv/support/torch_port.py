"""A torch port in one call: ``port(state, backend, model, layout=, loss=, optimizer=)``.

A torch case file then holds what is under test, its model, its loss and its optimizer, and a
``Layout`` (``equiv.layouts``) that says how the model's ``state_dict`` holds the case's
canonical parameters; ``port`` does the rest, the same way for every model:

- checks the model against the layout when the port is built, with a one-line
  ``LayoutError``: a model tensor the layout does not map (but ``layout.ignored``), a layout
  tensor the model lacks, a shape that disagrees, a trained tensor that is a buffer;
- moves the model to the cell's dtype, loads ``layout.to_framework`` of the canonical
  parameters (and non-trainable state) into its tensors by name, then applies the mode
  (``backend.transform(model)``: ``torch.jit.script``, ``torch.compile``, eager as it is);
- ``run_step``: ``zero_grad``, the forward of the transformed model on the data keys
  ``inputs``, ``loss(output, target)``, ``backward``, ``optimizer.step()``;
- ``record``: the loss before the update, the gradients through
  ``layout.grads_to_canonical``, the parameters through ``layout.observed`` (canonical names
  where the layout is invertible, the observables' names where it ties parameters), the
  layout's state entries, and each layer's output (below);
- ``load_state``: parameters, state and the optimizer's slots (``momentum/<p>``, ``m/<p>``,
  ``v/<p>``, ``t``) through the layout, as the parameters go, in place.

Activations: forward hooks on the modules ``layout.layers`` names (compose the layout with
module paths as prefixes, ``{"fc1": torch_linear(...)}``), recorded under that name during the
training forward itself (no extra pass) and converted by the layer's ``outputs`` activation
layout; ``activations={"relu1": "1"}`` adds a parameterless module, ``{"attn": None}`` drops
one. Only the names in the case's ``spec.activation_names`` are compared. Hooks registered
before ``torch.compile`` are traced into its graph. ``torch.jit.script`` runs no Python hook,
but it compiles a hook written in TorchScript: for a module of one tensor in and one tensor out
(``Linear``, ``LayerNorm``, ``GELU``, a custom block with ``forward(self, x)``) the port
registers one that keeps the output in a non-persistent buffer of the module, read after the
step; other modules (``nn.MultiheadAttention``) are not recorded under ``torch.jit``, and
where ``activation_names`` lists one of them the trainer declares its activations
``not_observed``.

Like ``equiv.support.torch`` it imports torch inside functions only.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

import equiv.support.torch as torch_support
from equiv.contract.records import CaseState, StepRecord, TrainingState
from equiv.contract.trainer import StateNotLoadable
from equiv.layouts.core import SAME, Activation, Layout, LayoutError, NotInvertible

if TYPE_CHECKING:
    from equiv.backends.torch import TorchBackend

#: the optimizer slots of ``TrainingState.optimizer``, each ``<slot>/<param>``, and ``t``
SLOTS = ("momentum", "m", "v")
#: the buffer a TorchScript hook keeps a module's output in (``torch.jit`` only)
KEPT = "_equiv_output"


def checked_tensors(model: Any, layout: Layout) -> dict[str, Any]:
    """The model's tensors by ``state_dict`` name (the parameters and buffers themselves),
    after checking them against ``layout``; a ``LayoutError`` of one line otherwise."""
    import torch

    where = f"model {type(model).__name__} against layout {layout.name!r}"
    tensors = model.state_dict(keep_vars=True)
    for name in tensors:
        if name not in layout.framework and name not in layout.ignored:
            raise LayoutError(f"{where}: model tensor {name} is not in the layout")
    trainable = set(layout.trainable)
    for name, shape in layout.framework.items():
        if name not in tensors:
            raise LayoutError(f"{where}: layout tensor {name} {shape} is not in the model")
        tensor = tensors[name]
        if tuple(tensor.shape) != shape:
            raise LayoutError(
                f"{where}: model tensor {name} is {tuple(tensor.shape)}, layout says {shape}"
            )
        trained = isinstance(tensor, torch.nn.Parameter) and tensor.requires_grad
        if trained != (name in trainable):
            held = "a trained parameter" if trained else "not a trained parameter"
            says = "state" if trained else "trained"
            raise LayoutError(f"{where}: model tensor {name} is {held}, layout says {says}")
    return tensors


class PortTrainer:
    """The trainer of ``model`` (an ``nn.Module``) for one cell: ``run_step``, ``record``,
    ``load_state``; ``layout``, ``module`` (the model as given, loaded), ``model`` (it in the
    backend's mode), ``optimizer``.

    ``layout``: the model's ``state_dict`` names against the case's canonical names
    (``spec.param_names``, and ``spec.state_names`` as the layout's ``state``).
    ``loss(output, target) -> scalar tensor``; ``optimizer(model.parameters())`` -> a
    ``torch.optim`` optimizer. ``inputs``: the model's positional arguments, each a data key
    of ``state.data`` or a value passed as it is (a mask); ``target``: the data key of the
    target (None: ``loss(output)``). ``activations``: canonical name -> module path, added to
    the layout's layers (None drops one); ``activation_names``: the case's
    ``spec.activation_names``, the ones compared (every layer is recorded where the mode
    allows; where it cannot record one of these, the trainer says so in ``not_observed``)."""

    not_observed: dict[str, str] = {}

    def __init__(
        self,
        state: CaseState,
        backend: TorchBackend,
        model: Any,
        *,
        layout: Layout,
        loss: Callable[..., Any],
        optimizer: Callable[[Iterable[Any]], Any],
        inputs: Sequence[Any] = ("x",),
        target: str | None = "y",
        activations: Mapping[str, str | None] | None = None,
        activation_names: Iterable[str] = (),
    ):
        import torch

        self.backend, self.layout, self.loss_fn, self.dtype = backend, layout, loss, state.dtype
        module = model.to(getattr(torch, state.dtype))
        self.tensors = checked_tensors(module, layout)
        if unknown := [n for n in state.params if n not in layout.params]:
            raise LayoutError(f"layout {layout.name!r}: the case's {unknown[0]} is not in it")
        initial = state.resume.state if state.resume is not None else {}
        self.load(state.params, initial)
        self.inputs = [
            backend.to_native(state.data[k]) if isinstance(k, str) else k for k in inputs
        ]
        self.target = backend.to_native(state.data[target]) if target is not None else None
        paths = layer_paths(layout, activations)
        self.recorder = Recorder(module, paths, scripted=backend.mode == "jit")
        self.module = module
        self.model = self.recorder.transform(backend)
        self.optimizer = optimizer(module.parameters())
        if missing := [n for n in activation_names if n not in self.recorder.recorded]:
            self.not_observed = {"activations": self.recorder.why(missing[0])}
        if state.resume is not None:
            self.load_state(state.resume)

    # -- loading ------------------------------------------------------------------------------

    def framework(self) -> dict[str, np.ndarray]:
        """The layout's tensors of the model, as numpy."""
        return {n: self.backend.to_numpy(self.tensors[n]) for n in self.layout.framework}

    def load(self, params: Mapping[str, np.ndarray], state: Mapping[str, np.ndarray]) -> None:
        """Canonical parameters and state into the model's tensors, in place, through the
        layout; state the layout has but ``state`` lacks stays the model's own."""
        import torch

        held = {}
        if missing := [n for n in self.layout.state if n not in state]:
            observed = self.layout.observed(self.framework())
            held = {n: observed[n] for n in missing}
        arrays = self.layout.to_framework({**params, **held, **state})
        with torch.no_grad():
            for name, value in arrays.items():
                self.tensors[name].copy_(self.backend.to_native(value))

    def load_state(self, resume: TrainingState) -> None:
        """The reference's training state into the running port, in place: parameters and
        non-trainable state through the layout, and the optimizer's slots converted to the
        framework's tensors as gradients are (``grads_to_framework``), then handed to
        ``equiv.support.torch.load_optimizer`` by tensor name. The compiled model, the gradient
        buffers and the optimizer's settings stay the port's own."""
        layout = self.layout
        unknown = [n for n in resume.params if n not in layout.params]
        unknown += [n for n in resume.state if n not in layout.state]
        if unknown:
            raise StateNotLoadable(f"layout {layout.name!r} has no {', '.join(unknown[:5])}")
        self.load(resume.params, resume.state)
        by_slot: dict[str, dict[str, np.ndarray]] = {}
        for key, value in resume.optimizer.items():
            slot, _, name = key.partition("/")
            if key != "t" and (slot not in SLOTS or name not in layout.params):
                raise StateNotLoadable(f"no torch.optim state of this port holds {key}")
            if key != "t":
                by_slot.setdefault(slot, {})[name] = value
        native: dict[str, np.ndarray] = (
            {"t": resume.optimizer["t"]} if "t" in resume.optimizer else {}
        )
        for slot, values in by_slot.items():
            try:
                framework = layout.grads_to_framework(values)
            except (NotInvertible, LayoutError) as exc:
                raise StateNotLoadable(f"optimizer slot {slot}: {exc}") from exc
            native.update({f"{slot}/{n}": v for n, v in framework.items()})
        named = {n: (self.tensors[n], False) for n in layout.trainable}
        torch_support.load_optimizer(self.backend, named, self.optimizer, native)

    # -- stepping -----------------------------------------------------------------------------

    def run_step(self) -> None:
        self.optimizer.zero_grad()
        self.recorder.start()
        output = self.model(*self.inputs)
        loss = self.loss_fn(output) if self.target is None else self.loss_fn(output, self.target)
        loss.backward()
        self.optimizer.step()
        self.loss = loss.detach()

    def record(self) -> StepRecord:
        layout, to_numpy = self.layout, self.backend.to_numpy
        grads = {}
        for name in layout.trainable:
            grad = self.tensors[name].grad
            unused = np.zeros(layout.framework[name], self.dtype)  # not in the forward
            grads[name] = to_numpy(grad) if grad is not None else unused
        observed = layout.observed(self.framework())
        return StepRecord(
            loss=to_numpy(self.loss)[()],
            grads=layout.grads_to_canonical(grads),
            params={n: v for n, v in observed.items() if n not in layout.state},
            activations=self.recorder.values(to_numpy),
            state={n: observed[n] for n in layout.state if n in observed},
        )


# -- activations ----------------------------------------------------------------------------


def layer_paths(
    layout: Layout, activations: Mapping[str, str | None] | None
) -> dict[str, tuple[str, Activation]]:
    """Canonical activation name -> (module path, its output's activation layout): the
    layout's layers, then ``activations`` (a path of None drops a name)."""
    paths = {name: (name, layer.outputs) for name, layer in layout.layers.items()}
    for name, path in (activations or {}).items():
        if path is None:
            paths.pop(name, None)
        else:
            layer = layout.layers.get(path)
            paths[name] = (path, layer.outputs if layer is not None else SAME)
    return paths


def one_tensor_module(module: Any) -> bool:
    """Whether ``forward`` takes one tensor and returns one (unannotated counts as a tensor,
    as TorchScript reads it): the modules a TorchScript hook of one signature can record."""
    import torch

    tensor = (inspect.Parameter.empty, torch.Tensor, "Tensor", "torch.Tensor")
    signature = inspect.signature(type(module).forward)
    args = list(signature.parameters.values())[1:]
    return (
        len(args) == 1
        and args[0].kind is inspect.Parameter.POSITIONAL_OR_KEYWORD
        and args[0].annotation in tensor
        and signature.return_annotation in tensor
    )


def scripted_hook() -> Callable[..., None]:
    """A forward hook TorchScript compiles: the module's output into its ``KEPT`` buffer."""
    import torch

    def keep_output(self: torch.nn.Module, input: tuple[torch.Tensor], output: torch.Tensor):
        self._equiv_output = torch.clone(output.detach())

    return keep_output


class Recorder:
    """Forward hooks on the named modules; ``values`` after a step: each one's output of that
    step's forward. Python hooks in eager and ``torch.compile`` mode (registered before the
    transform, so that dynamo traces them), TorchScript hooks under ``torch.jit``."""

    def __init__(self, model: Any, paths: dict[str, tuple[str, Activation]], scripted: bool):
        self.root, self.paths, self.scripted = model, paths, scripted
        self.kept: dict[str, Any] = {}
        self.skipped: dict[str, str] = {}
        self.handles: list[Any] = []
        self.modules: dict[str, Any] = {}
        for name, (path, _) in paths.items():
            try:
                module = model.get_submodule(path)
            except AttributeError:
                raise LayoutError(
                    f"activation {name}: the model has no submodule {path!r} (compose the "
                    "layout with module paths, or drop it with activations={name: None})"
                ) from None
            if scripted and not one_tensor_module(module):
                self.skipped[name] = f"{type(module).__name__} is not one tensor in, one out"
                continue
            self.modules[name] = module
        if scripted:
            self._script_hooks()
        else:
            for name, module in self.modules.items():
                self.handles.append(module.register_forward_hook(self._hook(name)))

    @property
    def recorded(self) -> tuple[str, ...]:
        return tuple(self.modules)

    def why(self, name: str) -> str:
        reason = self.skipped.get(name, "no hook recorded it")
        return (
            f"torch.jit runs TorchScript hooks only, of one signature: {name} is not recorded "
            f"({reason})"
        )

    def _hook(self, name: str) -> Callable[..., None]:
        def keep(module, inputs, output):
            if isinstance(output, tuple | list):
                output = output[0]
            self.kept[name] = output.detach().clone()

        return keep

    def _script_hooks(self) -> None:
        import torch

        hook = scripted_hook()
        for module in {id(m): m for m in self.modules.values()}.values():
            module.register_buffer(KEPT, torch.zeros(0), persistent=False)
            self.handles.append(module.register_forward_hook(hook))

    def transform(self, backend: TorchBackend) -> Any:
        """The model in the backend's mode, with the hooks; a model TorchScript cannot compile
        with them is compiled without (its activations then unrecorded, and said why)."""
        try:
            transformed = backend.transform(self.root)
        except Exception as exc:  # TorchScript refused a hook's signature
            if not (self.scripted and self.modules):
                raise
            for handle in self.handles:
                handle.remove()
            for module in self.modules.values():
                module._buffers.pop(KEPT, None)
            reason = f"TorchScript did not compile the hooks: {str(exc).splitlines()[0]}"
            self.skipped = {name: reason for name in self.paths}
            self.modules = {}
            transformed = backend.transform(self.root)
        self.transformed = transformed
        return transformed

    def start(self) -> None:
        # a fresh dict each forward: torch.compile guards on the dict's keys
        self.kept = {}

    def values(self, to_numpy: Callable[[Any], np.ndarray]) -> dict[str, np.ndarray]:
        out = {}
        for name in self.modules:
            if self.scripted:
                module = self.transformed
                for part in self.paths[name][0].split("."):
                    module = getattr(module, part) if part else module
                value = getattr(module, KEPT)
            else:
                value = self.kept.get(name)
            if value is not None and value.numel():
                out[name] = self.paths[name][1].to_canonical(to_numpy(value))
        return out


#: ``port(state, backend, model, layout=..., loss=..., optimizer=...)``: a torch port's trainer
port = PortTrainer
