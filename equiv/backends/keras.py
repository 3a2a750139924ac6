"""Keras 3 adapter: one backend per Keras backend (tensorflow, torch, jax), one case file.

Keras picks its backend once per process, when it is first imported (``KERAS_BACKEND``), so
``keras.torch`` and ``keras.jax`` always run in a worker process of their own; ``keras.tensorflow``
may share a process with the ``tf.*`` backends as long as nothing imported Keras with another
backend first. Layout: a ``Dense`` kernel is (in, out), the canonical layout, so nothing is
transposed.

Keras 3 has no backend-neutral gradient (``opt.minimize`` is gone, and a custom ``train_step``
is written per backend), so the adapter supplies the one backend-specific piece,
``value_and_grad``: ``tf.GradientTape`` on TensorFlow, ``torch.autograd.grad`` on torch, and
``jax.value_and_grad`` over the variables' values (a ``StatelessScope``, as ``stateless_call``
does) on jax. Everything else in the case code (layers, losses, ``apply_gradients``) is the
same Keras code on all three.

``value_and_grad_fn`` makes that gradient function once, for a loss that is a function of its
variables alone: the ones it differentiates and ``state``, those it only reads (as Keras's own
``stateless_call`` takes trainable and non-trainable variables). On TensorFlow and torch it is
``value_and_grad`` as above. On jax the loss goes under ``jax.checkpoint``, with every variable's
value as an argument: eager JAX compiles each primitive once per set of parameters, a ``cond``'s
parameters are its branch jaxprs, and ``ops.cond`` (``lax.cond``) differentiated op by op builds
new ones every step, so every step compiled two XLA programs (a static_graph_step step took
65-90 ms, 8-9 ms staged). ``jax.checkpoint`` traces the loss once (cached by the function and
the argument types) and JAX differentiates that jaxpr once; its equations are still dispatched
one by one, eagerly, each compiled once (the fix of the plain JAX backend's static_graph_step,
plugins/equiv-jax). Since the trace is kept, reading a variable that is not passed would freeze
its value into it: that raises. Only the case whose loss has a ``cond`` uses it
(static_graph_step); the others call ``value_and_grad`` every step, so their Keras code runs
every step, as in a Keras user's eager loop.

Two float64 traps handled here: Keras creates an optimizer's learning rate as a variable of
``floatx()`` (float32 by default), so SGD on float64 weights would step with a float32-rounded
learning rate; ``floatx(dtype)`` scopes the optimizer's construction. And jax is float32-only
unless ``jax_enable_x64`` is set before arrays are made. Not worked around, since it is what
the float64 cells are there to show: Keras 3.15 demotes float64 to float32 in the ops that
use its ``result_type`` on non-TF backends (``ops.matmul``, so ``Dense``, and binary ops on
torch, keras-team/keras#23704; ``ops.mean``, so ``MeanSquaredError``, on jax). ``keras.torch``
declares it below (its float64 cells are held to float32 precision, docs/verdicts.md); the
jax one is declared by the cases that use ``MeanSquaredError``.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import os
import sys
import weakref
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np

from equiv.backends.tensorflow import (
    TF_OPTIONAL_IMPORTS,
    XLA_SINGLE_THREAD,
    add_xla_flag,
    configure_tensorflow,
    tensorflow_version,
)
from equiv.contract.backend import Backend, CellSkip
from equiv.contract.case import Explanation

#: which ``pip install 'equiv[...]'`` extra brings each module (Keras 3 comes with tensorflow)
EXTRA = {"keras": "tensorflow", "tensorflow": "tensorflow", "torch": "torch", "jax": "jax"}


class KerasBackend(Backend):
    framework = "keras"
    impl_file = "keras_impl"
    keras_backend = ""
    case_helpers = ("floatx", "value_and_grad", "value_and_grad_fn")

    def __init__(self) -> None:
        super().__init__()
        self.trainers: weakref.WeakSet = weakref.WeakSet()

    @property
    def requires(self) -> tuple[str, ...]:  # type: ignore[override]
        return ("keras", self.keras_backend)

    def versions(self) -> dict[str, str]:
        from importlib.metadata import version

        out = {"keras": version("keras")}
        if self.keras_backend == "tensorflow":
            out["tensorflow"] = tensorflow_version()
        else:
            out[self.keras_backend] = version(self.keras_backend)
        return out

    def imported_backend(self) -> str | None:
        """The backend of the Keras already imported in this process, if any."""
        keras = sys.modules.get("keras")
        return keras.backend.backend() if keras is not None else None

    def availability(self) -> str | None:
        for name in self.requires:
            if importlib.util.find_spec(name) is None:
                return f"{name} is not installed (pip install 'equiv[{EXTRA[name]}]')"
        if self.needs_own_process:
            return None  # always runs in a worker with KERAS_BACKEND set
        current = self.imported_backend()
        if current is not None and current != self.keras_backend:
            return (
                f"Keras was already imported in this process with backend {current!r}; "
                f"{self.id} needs a process of its own (--isolate backend)"
            )
        return None  # not imported yet: ``configure`` sets KERAS_BACKEND before importing it

    def configure(self, threads: int) -> None:
        if "keras" not in sys.modules:  # neither the caller's KERAS_BACKEND nor keras.json
            os.environ["KERAS_BACKEND"] = self.keras_backend
        self.configure_framework(threads)
        import keras  # noqa: F401

    def configure_framework(self, threads: int) -> None:  # noqa: B027 - per backend
        pass

    def build_trainer(self, spec, state, module):
        current = self.imported_backend()
        if current != self.keras_backend:
            raise CellSkip(
                f"Keras runs on {current!r} in this process, not {self.keras_backend!r}: "
                f"{self.id} needs its own process (KERAS_BACKEND={self.keras_backend})"
            )
        trainer = super().build_trainer(spec, state, module)
        self.trainers.add(trainer)
        return trainer

    def to_native(self, array: np.ndarray):
        from keras import ops

        array = np.array(array, copy=True)
        return ops.convert_to_tensor(array, dtype=str(array.dtype))

    def to_numpy(self, value: Any) -> np.ndarray:
        import keras

        if isinstance(value, keras.Variable):
            value = value.value
        # The native ways out: ``np.array`` on a tf.Variable is deprecated (numpy-1 __array__).
        if hasattr(value, "detach"):
            value = value.detach().cpu()
        if hasattr(value, "numpy"):
            value = value.numpy()
        return np.array(value, copy=True)

    @contextlib.contextmanager
    def floatx(self, dtype: str) -> Iterator[None]:
        """Keras's default float type set to ``dtype`` for what is built inside (optimizers)."""
        import keras

        before = keras.config.floatx()
        keras.config.set_floatx(dtype)
        try:
            yield
        finally:
            keras.config.set_floatx(before)

    def value_and_grad(
        self, loss_fn: Callable[[], Any], variables: Sequence, has_aux: bool = False
    ) -> tuple[Any, list]:
        """``loss_fn()`` and its gradient with respect to ``variables`` (zeros where the loss
        does not depend on one), computed by the backend's own autodiff.

        ``has_aux``: ``loss_fn`` returns ``(loss, aux)``, and the value returned is ``(loss,
        aux)`` (as ``jax.value_and_grad(has_aux=True)``): what the forward pass computed besides
        the loss (activations, the new state of ``stateless_call``), read out of the trace on
        jax, where a value kept from inside it would be a leaked tracer."""
        raise NotImplementedError

    def value_and_grad_fn(
        self, loss_fn: Callable[[], Any], variables: Sequence, state: Sequence = ()
    ) -> Callable[[], tuple[Any, list]]:
        """A function of no arguments returning ``value_and_grad(loss_fn, variables)``, made once
        for a ``loss_fn`` that reads no variables but ``variables`` and ``state`` (read, not
        differentiated), and otherwise only what never changes (module docstring: on jax the
        loss is traced once)."""
        return lambda: self.value_and_grad(loss_fn, variables)


class KerasTensorFlow(KerasBackend):
    id = "keras.tensorflow"
    keras_backend = "tensorflow"
    worker_env = {"KERAS_BACKEND": "tensorflow"}  # TF's logging: configure_tensorflow
    worker_hides = TF_OPTIONAL_IMPORTS

    def configure_framework(self, threads: int) -> None:
        configure_tensorflow(threads)

    def value_and_grad(self, loss_fn, variables, has_aux=False):
        import tensorflow as tf

        with tf.GradientTape() as tape:
            value = loss_fn()
        loss = value[0] if has_aux else value
        grads = tape.gradient(loss, variables)  # Keras variables: None where unconnected
        grads = [
            tf.zeros(v.shape, v.dtype) if g is None else g
            for v, g in zip(variables, grads, strict=True)
        ]
        return value, grads


class KerasFit(KerasTensorFlow):
    """Keras's own training loop: ``model.compile`` and ``model.fit`` (on Keras's TensorFlow
    backend, the one most ``fit`` users run), for the cases that have a ``keras_fit_impl``.

    ``fit`` batches the data itself (``batch_size``, ``shuffle``, a partial last batch) and
    applies its gradients inside its train step, where no callback sees them: a fit trainer
    declares them ``not_observed`` and they are never compared. ``stepped_fit`` runs ``fit``
    one batch per harness step (``equiv.backends.keras_fit``)."""

    id = "keras.fit"
    mode = "fit"
    impl_file = "keras_fit_impl"
    case_helpers = ("stepped_fit",)

    def stepped_fit(self, owner: object, start_fit: Callable, observe: Callable):
        """``start_fit(callback)`` (a call of ``model.fit`` with ``callback`` among its
        callbacks) run one batch per ``.step()``, which returns ``observe(logs)``; it ends
        when ``owner`` is collected. Neither function may hold ``owner``."""
        from equiv.backends.keras_fit import stepped_fit

        return stepped_fit(owner, start_fit, observe)


class KerasTorch(KerasBackend):
    id = "keras.torch"
    keras_backend = "torch"
    worker_env = {"KERAS_BACKEND": "torch"}
    needs_own_process = True
    float64_in_float32 = (
        "Keras 3 on torch computes keras.ops.matmul (so every Dense layer) of two float64 "
        "tensors in float32 (keras/src/backend/common/dtypes.py, BIT64_TO_BIT32_DTYPE; "
        "keras-team/keras#23704)"
    )
    explanations = (
        Explanation(
            backends="keras.torch",
            dtypes="float64",
            reason=(
                "Keras 3 on torch computes keras.ops.matmul (so every Dense layer) of two "
                "float64 tensors in float32: its dtype promotion maps float64 to float32 on "
                "non-TensorFlow backends (keras/src/backend/common/dtypes.py, "
                "BIT64_TO_BIT32_DTYPE; keras-team/keras#23704)"
            ),
            variant={"compute_dtype": "float32"},
        ),
    )

    def configure_framework(self, threads: int) -> None:
        import torch

        torch.use_deterministic_algorithms(True)
        if torch.get_num_threads() != threads:
            torch.set_num_threads(threads)
        with contextlib.suppress(RuntimeError):
            torch.set_num_interop_threads(threads)

    def value_and_grad(self, loss_fn, variables, has_aux=False):
        import torch

        loss, aux = loss_fn() if has_aux else (loss_fn(), None)
        values = [v.value for v in variables]
        grads = torch.autograd.grad(loss, values, allow_unused=True)
        grads = [
            torch.zeros_like(v) if g is None else g for v, g in zip(values, grads, strict=True)
        ]
        if has_aux:  # detached, as the loss: a record or an assigned state holds no graph
            import keras

            aux = keras.tree.map_structure(
                lambda t: t.detach() if isinstance(t, torch.Tensor) else t, aux
            )
            return (loss.detach(), aux), grads
        return loss.detach(), grads


class KerasJax(KerasBackend):
    """jax dispatches asynchronously: ``synchronize`` waits for the variables of the live
    trainers (a Keras trainer lists them in ``variables``), which a step's update writes."""

    id = "keras.jax"
    keras_backend = "jax"
    worker_env = {"KERAS_BACKEND": "jax", "JAX_ENABLE_X64": "1"}
    needs_own_process = True
    float64_in_float32 = (
        "Keras 3 on jax computes keras.ops.mean (so MeanSquaredError) and "
        "keras.ops.layer_normalization of float64 in float32: its dtype promotion maps float64 "
        "to float32 on non-TensorFlow backends (keras/src/backend/common/dtypes.py, "
        "BIT64_TO_BIT32_DTYPE); the cases that use them declare it"
    )

    def release_caches(self) -> None:
        """As equiv-jax's backends: JAX's compiled programs and traces, kept for the process's
        lifetime, held 1.5 GB of a 2.4 GB worker after one resnet18 cell (measured)."""
        import jax

        jax.clear_caches()

    def configure_framework(self, threads: int) -> None:
        # One thread: XLA's CPU kernels single-threaded, as tf.xla and equiv-jax set it. Without
        # it a keras.jax worker inherited the flag or not from the process that started it (a
        # pytest-xdist worker that had run a jax or tf.xla cell, or not), and the example's
        # transformer_block float32 cell gave other bits (max_ratio grads 4.787 against 4.724).
        if threads == 1:
            add_xla_flag(XLA_SINGLE_THREAD)
        import jax

        # XLA's CPU thread pool is fixed when jax starts; it is not set to ``threads`` here.
        jax.config.update("jax_enable_x64", True)

    def value_and_grad(self, loss_fn, variables, has_aux=False):
        import jax
        import keras

        def pure(values):
            with keras.StatelessScope(state_mapping=list(zip(variables, values, strict=True))):
                return loss_fn()

        return jax.value_and_grad(pure, has_aux=has_aux)([v.value for v in variables])

    def value_and_grad_fn(self, loss_fn, variables, state=()):
        import jax

        variables, state = list(variables), list(state)
        mapped = {id(v) for v in variables + state}
        scope_type = _strict_scope_type()

        def staged(values, state_values):
            mapping = [*zip(variables, values, strict=True), *zip(state, state_values, strict=True)]
            with scope_type(mapped, state_mapping=mapping):
                return loss_fn()

        # Every intermediate saved, as plain value_and_grad does: the checkpoint is here to trace
        # the loss once, not to recompute its forward pass in the backward one.
        saved = jax.checkpoint_policies.everything_saveable
        grad_fn = jax.value_and_grad(jax.checkpoint(staged, policy=saved))
        return lambda: grad_fn([v.value for v in variables], [v.value for v in state])

    def synchronize(self) -> None:
        import jax

        for trainer in list(self.trainers):
            jax.block_until_ready([v.value for v in getattr(trainer, "variables", ())])


@functools.cache
def _strict_scope_type():
    """A ``keras.StatelessScope`` in which reading a variable it does not map raises, instead of
    giving the variable's current value (which a kept trace would then keep for ever)."""
    import keras

    class StrictStatelessScope(keras.StatelessScope):
        def __init__(self, mapped: set[int], **kwargs):
            super().__init__(**kwargs)
            self.mapped = mapped

        def get_current_value(self, variable):
            if id(variable) not in self.mapped:
                raise ValueError(
                    f"the staged loss reads variable {variable.path!r}, which is neither "
                    "differentiated nor in its state: its value would be frozen into the trace"
                )
            return super().get_current_value(variable)

    return StrictStatelessScope


def backends() -> list[Backend]:
    return [KerasTensorFlow(), KerasFit(), KerasTorch(), KerasJax()]
