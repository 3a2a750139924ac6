"""What a run learns beyond its verdict: where a failure starts and whether it is a one-step
bug (``localize``), and whether the implementation repeats itself bit for bit
(``reproducible``)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from equiv.backends.reference_port import reference_trainer
from equiv.checking.compare import RECORD_GROUPS, Check, Comparison
from equiv.contract.records import Localization, StepRecord
from equiv.contract.trainer import StateNotLoadable
from equiv.tolerance.policy import calibrate_state


def localize(spec, backend, module, state, main: Comparison, trainer=None) -> Localization:
    """Name the phase that disagrees first and tell a one-step bug from accumulated drift by
    re-running the failing step from the reference's own state (teacher forcing).

    ``trainer``, the cell's running port: where it can load the reference's whole training
    state (``load_state``: optimizer and model state included) the step is re-run in it, as
    it stands; otherwise a fresh port is built from the reference's parameters, which only a
    run that carries nothing else (SGD without momentum, no non-trainable state) can start
    from. A port with a data pipeline has run past the step by now, and its position is its
    own (not canonical): a fresh port is built and its own steps take its pipeline to the
    failing step; then it loads the state there."""
    div = main.first_divergence
    step, phase = div.step, div.phase or div.quantity
    where = {"step": step, "phase": phase, "quantity": div.quantity, "name": div.name}
    if step == 0:
        return Localization(
            **where, diagnosis=f"wrong at the very first step, in the {phase} phase"
        )
    in_place = callable(getattr(trainer, "load_state", None))
    why_not = _not_forced(spec, in_place)
    if why_not:
        return Localization(
            **where,
            diagnosis=f"first wrong at step {step} ({phase}); not teacher-forced: {why_not}",
        )
    reference = reference_trainer(spec, state.astype("float64"))
    for _ in range(step):
        reference.run_step()
    resume = reference.training_state().astype(state.dtype)
    forced = state.resumed(resume)
    if in_place:
        if "batch_size" in spec.config:  # the running port's pipeline is past the step
            trainer = backend.build_trainer(spec, state, module)
            for _ in range(step):
                trainer.run_step()
        try:
            trainer.load_state(resume)
        except StateNotLoadable as exc:
            return Localization(
                **where,
                diagnosis=f"first wrong at step {step} ({phase}); not teacher-forced: {exc}",
            )
    else:  # a fresh port starts from the parameters and, branching, the previous loss
        config = dict(state.config)
        if spec.branching:
            config["initial_prev_loss"] = resume.prev_loss
        trainer = backend.build_trainer(spec, replace(forced, config=config), module)
    check = Check(
        "teacher-forced",
        reference_trainer(spec, forced.astype("float64")),
        # at the precision the state's config holds its cell to: a declared variant's
        # compute_dtype (localized against that variant), else the cell's own dtype
        Comparison(
            spec,
            calibrate_state(spec, forced, 1, forced.config.get("compute_dtype", "")),
            state.dtype,
        ),
    )
    check.comparison.leave_out(main.not_observed)
    trainer.run_step()
    check.reference.run_step()
    check.comparison.add(0, trainer.record(), check.reference.record())
    return _verdict(where, check.comparison.first_divergence)


def _not_forced(spec, in_place: bool) -> str | None:
    """Why the failing step cannot be re-run from the reference's state, or None."""
    if in_place:
        return None
    if spec.config.get("optimizer", "sgd") != "sgd" or spec.config.get("momentum"):
        return (
            "the port cannot load the optimizer's state (no load_state), and a fresh one "
            "starts it empty"
        )
    if spec.state_names:
        return "the port cannot load the model's non-trainable state (no load_state)"
    if "batch_size" in spec.config:  # a fresh port from the parameters starts at batch 0
        return "the port cannot load a state (no load_state) at its pipeline's position"
    return None


def _verdict(where: dict, again) -> Localization:
    step = where["step"]
    if again:
        diagnosis = (
            f"a one-step bug: started from the reference's own state at step {step}, the "
            f"implementation's {again.phase or again.quantity} phase disagrees at once"
        )
    else:
        diagnosis = (
            f"not a one-step bug: from the reference's state at step {step} the step is right; "
            "the divergence comes from state carried across steps (for example gradients that "
            "are not reset) or from drift accumulated over earlier steps"
        )
    return Localization(**where, diagnosis=diagnosis, forced=True, forced_divergence=again)


def fingerprint(record: StepRecord) -> tuple:
    """A record's bits in a few bytes (XXH3 digests, ``equiv.checking.steplog``): equal
    fingerprints are bitwise equal records. The reproducibility check keeps these of a cell's
    first steps, not the records (five of resnet18's were 0.9 GB in a float64 cell)."""
    from equiv.checking.steplog import digest

    arrays = tuple(
        (group, name, digest(value))
        for group in RECORD_GROUPS
        for name, value in sorted(getattr(record, group).items())
    )
    return digest(np.asarray(record.loss)), record.branch, arrays


def reproducible(spec, backend, module, state, early: list[tuple]) -> bool | None:
    """Whether a second, fresh run gives bitwise the same first steps (``early``: the first
    run's ``fingerprint`` of each)."""
    if not early:
        return None
    trainer = backend.build_trainer(spec, state, module)
    for first in early:
        trainer.run_step()
        if fingerprint(trainer.record()) != first:
            return False
    return True


def first_difference(a: StepRecord, b: StepRecord) -> str | None:
    """Where two records of one step first differ bitwise, in words; None when they are the
    same bits (the one bitwise comparison of records: the runner's reproducibility check and
    the conformance kit's determinism test)."""
    if np.asarray(a.loss).tobytes() != np.asarray(b.loss).tobytes():
        return f"loss ({a.loss!r} vs {b.loss!r})"
    if a.branch != b.branch:
        return f"branch ({a.branch} vs {b.branch})"
    for group in RECORD_GROUPS:
        x, y = getattr(a, group), getattr(b, group)
        if x.keys() != y.keys():
            return f"{group} names ({sorted(x)} vs {sorted(y)})"
        for name in x:
            if np.asarray(x[name]).tobytes() != np.asarray(y[name]).tobytes():
                diff = np.max(np.abs(np.asarray(x[name], float) - np.asarray(y[name], float)))
                return f"{group}/{name} (max difference {diff:.3g})"
    return None


def bitwise_equal(a: StepRecord, b: StepRecord) -> bool:
    return first_difference(a, b) is None
