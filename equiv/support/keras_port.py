"""A Keras 3 port in one call: the model, its layout, its loss and optimizer (``port``).

A port written with ``port`` holds its model (a ``keras.Sequential`` or functional
``keras.Model`` built with the cell's dtype), a layout (``equiv.layouts``) and its loss and
optimizer; the rest is here, the same on the tensorflow, torch and jax backends:

- **binding** (``bind``): the layout's *framework* names are the model's variables, named
  ``f"{layer.name}/{local}"``, where ``layer`` is one of ``model.layers`` (the top-level layers)
  and ``local`` the layer's own layout's tensor name (``kernel``, ``lstm_cell/kernel``,
  ``query/kernel``, ``linear1/kernel`` for a custom layer's sub-layer): a model's layout is
  ``equiv.layouts.compose(name, {layer.name: layer_layout, ...}, framework_sep="/")``, renamed
  to the case's own canonical names with ``Layout.named``. Each layer's ``weights``, in their
  order, are matched with the layout's tensors under ``f"{layer.name}/"``, in the layout's order
  (a standard layout declares Keras's ``layer.weights`` order): each pair must agree in shape and
  in the variable's own name (``variable.name``, the last part of ``local``). A variable the
  layout does not map, a layout tensor the model lacks and a shape or name disagreement are each
  a one-line ``LayoutError``. Keras's own ``variable.path`` is not matched: it carries a
  ``Sequential``'s own name and a custom layer's auto-numbered sub-layer names.
- **the step** (``Port``, an ``equiv.support.keras.Trainer``: the optimizer built under the
  cell's ``floatx``, the backend's ``value_and_grad``, ``apply_gradients``): the forward pass is
  one ``stateless_call`` (training mode) of a second model over the same layers,
  ``keras.Model(model.inputs, [each recorded layer's output, ..., model.output])``; the loss is
  taken from its last output, so the activations cost no extra forward pass, and the new
  non-trainable values (BatchNorm's moving statistics) are assigned once after the gradient, on
  every backend (on jax an assignment inside the differentiated loss would be lost).
- **the record**, in canonical terms through the layout: gradients by
  ``layout.grads_to_canonical`` (each part of a tied tensor gets the tensor's gradient),
  parameters by ``layout.observed`` (where Keras ties parameters, Keras's LSTM ``bias`` =
  torch's ``bias_ih + bias_hh``, the observable ``lstm.bias_ih+bias_hh``, never a made-up
  split), the layout's state entries, and every mapped layer's output under its canonical
  name (the layout's ``layers`` key), converted by that layer layout's ``outputs``
  activation layout (``channels_last``: NHWC to NCHW). The harness compares only what the
  case's spec names (``activation_names``); ``Port.layout`` is the layout, for the observables.
- **load_state**, in place: parameters and state through ``layout.to_framework``, optimizer
  slots (``m/``, ``v/``, ``momentum/``) converted as gradients are: by the rule where it is
  invertible; for a derived tensor (a sum) only where its parts' slots are equal to rounding,
  as they are when every part gets the same gradient (their mean is loaded), else
  ``StateNotLoadable``; then
  ``equiv.support.keras.load_optimizer``.

This module imports keras: only Keras case code imports it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING

import keras
import numpy as np

from equiv.contract.records import CaseState, StepRecord, TrainingState
from equiv.contract.trainer import StateNotLoadable
from equiv.layouts import SAME, Layout, LayoutError
from equiv.support import keras as support

if TYPE_CHECKING:
    from equiv.backends.keras import KerasBackend

#: the optimizer slots of ``TrainingState.optimizer`` that go with a parameter
SLOTS = ("m", "v", "momentum")


def _shape(variable: keras.Variable) -> tuple[int, ...]:
    return tuple(int(n) for n in variable.shape)


def _path(layer: keras.layers.Layer, variable: keras.Variable) -> str:
    """The variable's Keras path from its layer on (a Sequential's own name left out)."""
    head, sep, tail = variable.path.partition(f"{layer.name}/")
    return sep + tail if sep else variable.path


def bind(model: keras.Model, layout: Layout) -> dict[str, keras.Variable]:
    """The model's variables by framework name (``f"{layer.name}/{local}"``), in the layout's
    order; a one-line ``LayoutError`` for a variable the layout does not map, a layout tensor
    the model lacks, a shape or a name that disagree (module docstring)."""
    bound: dict[str, keras.Variable] = {}
    for layer in model.layers:
        prefix = f"{layer.name}/"
        names = [n for n in layout.framework if n.startswith(prefix)]
        for i, variable in enumerate(layer.weights):
            if i >= len(names):
                held = f"its tensors under {prefix!r}: {names}"
                if not names:  # a model's layout composed with another separator, or none
                    held = f"none under {prefix!r}: compose the layouts with framework_sep='/'"
                raise LayoutError(
                    f"{layout.name}: the model's variable {_path(layer, variable)!r} "
                    f"{_shape(variable)} is not in the layout ({held})"
                )
            name, want, got = names[i], layout.framework[names[i]], _shape(variable)
            if want != got:
                raise LayoutError(
                    f"{layout.name}: layout tensor {name!r} is {want}, the model's variable "
                    f"{_path(layer, variable)!r} is {got}"
                )
            if name.rsplit("/", 1)[1] != variable.name:
                raise LayoutError(
                    f"{layout.name}: layout tensor {name!r} falls on the model's variable "
                    f"{_path(layer, variable)!r} (layer {layer.name!r}'s weight {i}): declare the "
                    "layer's tensors in its layer.weights order"
                )
            bound[name] = variable
    if missing := [n for n in layout.framework if n not in bound]:
        layers = [layer.name for layer in model.layers if layer.weights]
        raise LayoutError(
            f"{layout.name}: layout tensor {missing[0]!r} {layout.framework[missing[0]]} is not "
            f"in the model (its layers with variables: {layers})"
        )
    return {n: bound[n] for n in layout.framework}


def _assign(variables: Mapping[str, keras.Variable], arrays: Mapping[str, np.ndarray]) -> None:
    for name, variable in variables.items():
        dtype = keras.backend.standardize_dtype(variable.dtype)
        variable.assign(np.asarray(arrays[name], dtype=dtype))


def load(model: keras.Model, layout: Layout, canonical: Mapping[str, np.ndarray]) -> dict:
    """``bind``, then every variable assigned from ``layout.to_framework(canonical)``; the
    bound variables."""
    variables = bind(model, layout)
    _assign(variables, layout.to_framework(canonical))
    return variables


def canonical_variables(model: keras.Model, layout: Layout) -> dict[str, keras.Variable]:
    """Canonical name -> variable, for a layout whose every rule holds a canonical parameter as
    it is (Dense kernels, LayerNorm): what Keras's own loop (``model.fit``, which keeps the
    variables to itself) reads. A ``LayoutError`` for a rule that moves or computes."""
    variables = bind(model, layout)
    out = {}
    for rule in layout.rules:
        source, target = rule.sources[0], rule.targets[0]
        probe = np.arange(np.prod(layout.canonical[source]), dtype=float)
        probe = probe.reshape(layout.canonical[source])
        one = rule.invertible and len(rule.sources) == len(rule.targets) == 1
        made = rule.forward(probe)[0] if one else None
        if made is None or made.shape != probe.shape or not np.array_equal(made, probe):
            raise LayoutError(f"{layout.name}: {target!r} is not canonical {source!r} as it is")
        out[source] = variables[target]
    return out


#: how far apart (in ulps of their scale) the parts of a derived tensor may hold their slots
ROUNDING_ULPS = 8


def _one_part(rule, slots: list[np.ndarray], what: str) -> tuple[np.ndarray, ...]:
    """The framework slots of a derived rule's targets, from its parts' slots, equal to
    rounding (every part gets the same gradient; a reference computes each part's by its own
    reduction, and torch's float64 ``b_ih`` and ``b_hh`` gradients differ by an ulp): the
    targets' gradient-like arrays g such that the rule's pullback gives every part their mean
    (for a sum, the moved part itself); ``StateNotLoadable`` where the parts differ by more
    than ``ROUNDING_ULPS`` ulps of their scale, or no such g is found."""
    first = np.mean(np.stack(slots), axis=0).astype(slots[0].dtype)
    eps = np.finfo(first.dtype).eps if np.issubdtype(first.dtype, np.floating) else 0.0
    bound = ROUNDING_ULPS * eps * float(np.max(np.abs(first), initial=0.0))
    if any(float(np.max(np.abs(s - first), initial=0.0)) > bound for s in slots):
        raise StateNotLoadable(
            f"{what}: the parts {list(rule.sources)} of {list(rule.targets)} have different "
            "values, and Keras keeps one slot for their derived tensor"
        )
    made = rule.forward(first, *(np.zeros_like(s) for s in slots[1:]))
    back = rule.pullback(*made)
    if any(not np.array_equal(b, first) for b in back):
        raise StateNotLoadable(
            f"{what}: {list(rule.targets)} is derived from {list(rule.sources)} other than by a "
            "sum: its slot is not given by its parts'"
        )
    return made


def framework_slots(layout: Layout, optimizer: Mapping[str, np.ndarray]) -> dict:
    """``TrainingState.optimizer`` (canonical) with each slot in its variable's layout, under
    the framework name (``m/attn/query/kernel``), as ``load_optimizer`` takes them: converted
    as gradients are, by each rule; a derived tensor's slot from its parts' (equal to rounding).
    Anything else (``t``) as it is."""
    out = {k: v for k, v in optimizer.items() if k.partition("/")[0] not in SLOTS}
    for kind in SLOTS:
        for rule in layout.rules:
            keys = [f"{kind}/{s}" for s in rule.sources]
            if not any(k in optimizer for k in keys):
                continue  # not made yet: zeros, as before a first step
            what = f"{layout.name}: optimizer state {kind}"
            if missing := [k for k in keys if k not in optimizer]:
                raise StateNotLoadable(f"{what}: {missing[0]!r} is missing, {keys[0]!r} given")
            slots = [np.asarray(optimizer[k]) for k in keys]
            made = rule.forward(*slots) if rule.invertible else _one_part(rule, slots, what)
            out.update({f"{kind}/{t}": a for t, a in zip(rule.targets, made, strict=True)})
    return out


class Port(support.Trainer):
    """A Keras port's trainer, ``equiv.support.keras.Trainer``'s optimizer and step over the
    variables of a layout (module docstring). ``model`` (built with the cell's dtype) loaded with
    ``state.params`` through ``layout`` (its framework names ``f"{layer.name}/{local}"``, its
    canonical names the case's), trained with ``loss(y_true, y_pred)`` and the optimizer that
    ``optimizer()`` makes (called under the cell's floatx) on ``state.data[inputs]`` (the
    model's inputs, in order) against ``state.data[target]``. Every layer the layout maps
    records its output under its canonical name; ``activations`` adds or overrides
    (canonical name -> Keras layer name: a parameterless ``Activation`` layer)."""

    def __init__(
        self,
        state: CaseState,
        backend: KerasBackend,
        model: keras.Model,
        *,
        layout: Layout,
        loss: Callable,
        optimizer: Callable[[], keras.optimizers.Optimizer],
        inputs: Sequence[str] | str = ("x",),
        target: str = "y",
        activations: Mapping[str, str] | None = None,
    ):
        inputs = (inputs,) if isinstance(inputs, str) else tuple(inputs)
        self.backend, self.layout, self.dtype = backend, layout, state.dtype
        self.framework = bind(model, layout)
        own = {k: v for k, v in self.observed().items() if k in layout.state}
        _assign(self.framework, layout.to_framework({**own, **state.params}))
        trainable = {n: self.framework[n] for n in layout.trainable}
        data = {"x": state.data[inputs[0]], "y": state.data[target]}
        super().__init__(replace(state, data=data), backend, trainable, loss, optimizer, model)
        if len(inputs) > 1:
            self.x = [backend.to_native(state.data[k]) for k in inputs]
        self.recorded, self.forward = self._activation_model(model, activations or {})

    def _activation_model(self, model: keras.Model, extra: Mapping[str, str]):
        """(canonical layer name -> (output index, activation layout)), and the model over
        ``model.inputs`` whose outputs are those layers' and the model's output, last. A layer
        called more than once (shared) has no one output: it is left out (asked for, an error)."""
        if not getattr(model, "outputs", None) or len(model.outputs) != 1:
            raise LayoutError(f"{self.layout.name}: port takes a built model with one output")
        wanted = {n: n for n in self.layout.layers} | dict(extra)
        layers = {layer.name: layer for layer in model.layers}  # _inbound_nodes: its calls
        called_once = {n for n, layer in layers.items() if len(layer._inbound_nodes) == 1}
        if unknown := [n for n, k in extra.items() if k not in called_once]:
            raise LayoutError(
                f"{self.layout.name}: activation {unknown[0]!r}: the model has no layer "
                f"{extra[unknown[0]]!r} called once"
            )
        outputs, recorded = [], {}
        for layer in model.layers:
            if layer.name not in called_once:
                continue
            for name in [n for n, keras_name in wanted.items() if keras_name == layer.name]:
                sub = self.layout.layers.get(name)
                recorded[name] = (len(outputs), sub.outputs if sub is not None else SAME)
                outputs.append(layer.output)
        return recorded, keras.Model(model.inputs, [*outputs, model.outputs[0]])

    def observed(self) -> dict[str, np.ndarray]:
        """The canonical parameters (and observables) and state the variables hold now."""
        to_numpy = self.backend.to_numpy
        return self.layout.observed({n: to_numpy(v) for n, v in self.framework.items()})

    def parameters(self) -> tuple[dict, dict]:
        """(parameters, state) as the record reports them, from the variables now: a derived
        observable is state where its parts are."""
        values, sources = self.observed(), self.layout.observable_sources()
        state = self.layout.state
        is_state = {n: n in state or (n in sources and set(sources[n]) <= state) for n in values}
        params = {n: v for n, v in values.items() if not is_state[n]}
        return params, {n: v for n, v in values.items() if is_state[n]}

    def compute_loss(self):
        """The training-mode forward without side effects: (loss, (outputs, new state))."""
        forward = self.forward
        outputs, non_trainable = forward.stateless_call(
            [v.value for v in forward.trainable_variables],
            [v.value for v in forward.non_trainable_variables],
            self.x,
            training=True,
        )
        return self.loss_fn(self.y, outputs[-1]), (outputs, non_trainable)

    def run_step(self) -> None:
        self.last = None  # the last step's gradients are not held through this one
        (loss, (outputs, new_state)), grads = self.backend.value_and_grad(
            self.compute_loss, self.variables, has_aux=True
        )
        self.optimizer.apply_gradients(zip(grads, self.variables, strict=True))
        for variable, value in zip(self.forward.non_trainable_variables, new_state, strict=True):
            variable.assign(value)  # BatchNorm's moving statistics: once per step
        self.last = (loss, grads, outputs)

    def record(self) -> StepRecord:
        loss, grads, outputs = self.last
        to_numpy = self.backend.to_numpy
        grads = dict(zip(self.named, map(to_numpy, grads), strict=True))
        params, state = self.parameters()
        return StepRecord(
            # Keras on torch gives a float64 cell's loss in float32 (the keras.torch backend's
            # declared compute_dtype): the record carries it in the cell's dtype
            loss=np.asarray(to_numpy(loss), dtype=self.dtype)[()],
            grads=self.layout.grads_to_canonical(grads),
            params=params,
            branch=self.branch,
            activations={
                name: act.to_canonical(to_numpy(outputs[i]))
                for name, (i, act) in self.recorded.items()
            },
            state=state,
        )

    def load_state(self, resume: TrainingState) -> None:
        """The reference's training state, in place: parameters and state through the layout,
        the optimizer's slots converted as the gradients are (``framework_slots``)."""
        if unknown := sorted(set(resume.state) - set(self.layout.state)):
            raise StateNotLoadable(f"{self.layout.name}: it keeps no state {unknown[0]!r}")
        if missing := sorted(set(self.layout.state) - set(resume.state)):
            raise StateNotLoadable(f"{self.layout.name}: the state lacks {missing[0]!r}")
        arrays = self.layout.to_framework({**resume.params, **resume.state})
        slots = framework_slots(self.layout, resume.optimizer)
        _assign(self.framework, arrays)
        support.load_optimizer(self.optimizer, self.named, slots, resume.step)


#: ``port(state, backend, model, layout=..., loss=..., optimizer=...)``: a Keras port's trainer
port = Port
