"""A port as the reference: one backend's implementation of a case, run in float64 as the
ground truth in place of a numpy reference with a hand-written backward.

The port computes each step's forward pass and gradients; equiv's own update rule
(``equiv.reference.optim``, from the case config) applies them. So the reference's trajectory
is the port's arithmetic plus an update equiv controls: the tolerance policy can inject
rounding into the gradients before the update (``perturb_grads``) and into the parameters
after it, as it does with a numpy reference, and a declared explanation whose variant changes
the optimizer (Adam's epsilon-hat form, float32-rounded betas) is expressed without a
framework optimizer that has it. Before every step the port is given the reference's training
state (``load_state``), so whatever its own optimizer did at the step before is overwritten.

Which ports can be the reference (``refusal``): an eager mode (the ground truth is no
compiler's output), whose float64 is float64 (Keras 3 on torch or jax computes float64
matmuls in float32: ``Backend.float64_in_float32`` says so), with ``load_state``.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable

from equiv.backends.implementations import load_implementation
from equiv.backends.process import ProcessConfig
from equiv.backends.registry import get_backend
from equiv.contract.backend import CellSkip
from equiv.contract.case import CaseSpec
from equiv.contract.records import CaseState, StepRecord, TrainingState
from equiv.contract.trainer import check_trainer
from equiv.reference.optim import OPTIMIZER_KEYS, make_optimizer
from equiv.reference.trainer import Carrying, ReferenceTrainer


class NotAReference(ValueError):
    """A backend that cannot serve as a reference port (the message says why, in one line)."""


def refusal(backend_id: str, case: str = "") -> str | None:
    """Why ``backend_id`` cannot be a case's reference port, or None."""
    from equiv.backends.registry import all_backends

    if backend_id not in all_backends():
        return f"no backend {backend_id!r} (equiv list shows them)"
    backend = get_backend(backend_id)
    if backend.compiled or backend.mode != "eager":
        return (
            f"{backend_id} is a compiled mode: a reference port runs eagerly "
            f"({backend.framework}'s eager mode is the ground truth a compiler is checked against)"
        )
    if backend.float64_in_float32:
        return f"{backend_id} cannot compute in float64: {backend.float64_in_float32}"
    return None


def variant_refusal(spec: CaseSpec, variant: tuple) -> str | None:
    """Why a declared explanation's variant cannot be expressed on ``spec``'s reference port,
    or None: equiv's update rule reads the optimizer keys and the tolerance the
    ``compute_dtype``; any other key must be one the reference port's module reads, listed in
    its ``VARIANT_KEYS``."""
    if spec.reference_port is None:
        return None
    keys = {k for k, _ in variant} - OPTIMIZER_KEYS - {"compute_dtype"}
    if not keys:
        return None
    module = importlib.import_module(get_backend(spec.reference_port).implementation_module(spec))
    read = set(getattr(module, "VARIANT_KEYS", ()))
    if missing := sorted(keys - read):
        return (
            f"the declared explanation's variant sets {', '.join(missing)}, which the reference "
            f"port {spec.reference_port} ({module.__name__}) does not read (VARIANT_KEYS lists "
            "what a port reads; optimizer keys are applied by equiv.optim)"
        )
    return None


def reference_trainer(spec: CaseSpec, state: CaseState, **options):
    """The case's reference, stepped as a trainer: its numpy reference, or its reference port
    (``CaseSpec.reference_port``). ``options``: ``perturb_grads``, and the numpy reference's own
    (``numerics``, ``force_branches``), which a port cannot take."""
    if spec.reference_port is None:
        return ReferenceTrainer(spec, state, **options)
    if options.get("numerics") is not None or options.get("force_branches"):
        raise NotAReference(
            f"{spec.name}: a reference port ({spec.reference_port}) cannot take the numpy "
            "reference's numerics or forced branches"
        )
    return PortReference(spec, state, perturb_grads=options.get("perturb_grads"))


class PortReference(Carrying):
    """``spec.reference_port``'s trainer, stepped with equiv's update rule: the reference's
    interface (``ReferenceTrainer``'s: ``run_step``, ``record``, ``params``,
    ``training_state``, ``load_training_state``, ``load_state``)."""

    def __init__(
        self,
        spec: CaseSpec,
        state: CaseState,
        perturb_grads: Callable[[dict], dict] | None = None,
    ):
        port_id = spec.reference_port
        assert port_id is not None
        if why := refusal(port_id, spec.name):
            raise NotAReference(f"{spec.name}: --reference {port_id}: {why}")
        self.backend = backend = get_backend(port_id)
        if why := backend.availability():
            raise CellSkip(f"reference port {port_id} is not available: {why}")
        for key, value in backend.worker_env.items():
            if os.environ.get(key, value) != value:
                raise CellSkip(
                    f"reference port {port_id} needs {key}={value}, and this process runs "
                    f"{key}={os.environ[key]} (fixed per process by the framework)"
                )
        process = ProcessConfig.current()
        process.prepare(backend, process.threads)
        module = load_implementation(backend, spec)  # the unmodified source: never a mutant
        self.spec = spec
        self.perturb_grads = perturb_grads
        self.dtype = state.dtype
        self.cfg = state.config
        self.optimizer = make_optimizer(self.cfg)
        self.port = check_trainer(backend.build_trainer(spec, state, module), module.__name__)
        if not callable(getattr(self.port, "load_state", None)):
            raise NotAReference(
                f"{spec.name}: the reference port {port_id} ({module.__name__}) has no "
                "load_state: equiv gives it the reference's state before every step"
            )
        self.params = {k: v.copy() for k, v in state.params.items()}
        self.state: dict = {}
        self.prev_loss = self.cfg.get("initial_prev_loss")
        self.t = 0
        self.last: StepRecord | None = None
        if state.resume is not None:
            # a port's data position is its own: its own steps take a pipeline there
            if "batch_size" in self.cfg:
                for _ in range(state.resume.step):
                    self.port.run_step()
            self.load_training_state(state.resume)

    def run_step(self) -> None:
        # the port copies what it loads: no copy of the arrays here (resnet18's are 11M)
        self.port.load_state(
            TrainingState(
                self.t,
                self.params,
                self.optimizer.state_dict(),
                self.state,
                None if self.prev_loss is None else float(self.prev_loss),
            )
        )
        self.port.run_step()
        self.backend.synchronize()
        own = self.port.record()
        grads = {k: own.grads[k] for k in self.spec.param_names}
        if self.perturb_grads is not None:
            grads = self.perturb_grads(grads)
        self.params = self.optimizer.step(self.params, grads)
        self.state = dict(own.state)
        self.prev_loss = own.loss
        self.last = StepRecord(
            loss=own.loss,
            grads=grads,
            params=self.params,
            branch=own.branch,
            activations=own.activations,
            state=self.state,
            # the port's evaluation after its own update: equiv's update under the same
            # config, to rounding (a variant's optimizer is not applied to it)
            evaluation=own.evaluation,
        )
        self.t += 1

    def redo(self, branch: str) -> None:
        raise NotAReference(
            f"{self.spec.name}: a reference port ({self.spec.reference_port}) cannot be made to "
            f"take branch {branch!r}"
        )

    def record(self) -> StepRecord:
        assert self.last is not None, "record() before run_step()"
        return self.last
