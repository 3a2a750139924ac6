"""The case conformance kit (``equiv.quality.conformance.CaseConformance``) passes a correct case
and fails
planted wrong ones.

``TestTwoLayerMlp`` runs the kit on a built-in case, as a case author runs it on theirs: the
reference against finite differences, the draw, the gradients, the records of a spread of
backends (one of them in a process of its own), and the selftest catalogue's planted bugs of
two_layer_mlp (one definition of each plant) plus one written here, each of which must be
caught. The tests after it plant a broken reference, draw, record and plant into a small case
of an installed package (``tests/fixtures/case_plugin``) and watch the relevant check fail; the
last runs the kit from a case package's own test file in a pytest subprocess.
"""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import textwrap
import types
import xml.etree.ElementTree as ET

import numpy as np
import pytest
from nested_pytest import TOY_SITE, child_environment

from equiv.quality.conformance import CaseConformance
from equiv.quality.mutants import CATALOGUE

#: the selftest's plants in two_layer_mlp's own files, per backend: (old, new) pairs
CATALOGUE_PLANTS: dict[str, list] = {}
for _mutant in CATALOGUE:
    if _mutant.case == "two_layer_mlp" and _mutant.module is None:
        CATALOGUE_PLANTS.setdefault(_mutant.backend, []).append(
            [(p.old, p.new) for p in _mutant.patches]
        )


class TestTwoLayerMlp(CaseConformance):
    case_name = "two_layer_mlp"
    #: a spread, not all fifteen (the matrix runs every backend; CI's time budget): the
    #: reference itself, torch eager and by hand, Keras on torch (a process of its own) and
    #: jax.jit
    backends = ("numpy", "torch.eager", "torch.manual", "keras.torch", "jax.jit")
    plants = {
        **CATALOGUE_PLANTS,
        "torch.eager": [
            *CATALOGUE_PLANTS.get("torch.eager", []),
            ("self.w2 -= self.lr * self.w2.grad", "self.w2 -= 0.5 * self.lr * self.w2.grad"),
            [  # a plant of two changes: the learning rate doubled for both weights
                ("self.w1 -= self.lr * self.w1.grad", "self.w1 -= 2 * self.lr * self.w1.grad"),
                ("self.w2 -= self.lr * self.w2.grad", "self.w2 -= 2 * self.lr * self.w2.grad"),
            ],
        ],
    }


def test_the_catalogue_gives_plants_on_several_backends():
    assert {"torch.eager", "torch.manual", "tf.v1graph"} <= set(CATALOGUE_PLANTS)


def test_a_plant_is_one_change_or_several():
    from equiv.quality.conformance import plant_patches

    one = plant_patches(("a", "b"))
    two = plant_patches([("a", "b"), ("c", "d")])
    assert [(p.old, p.new) for p in one] == [("a", "b")]
    assert [(p.old, p.new) for p in two] == [("a", "b"), ("c", "d")]


# -- the kit can fail: planted wrong cases, checked by direct calls ----------------------------


@pytest.fixture
def toy(monkeypatch):
    """The installed toy case, made known to this process's discovery for this test only
    (discovery has run before the package comes on the path, so it does not find it itself)."""
    from equiv.contract.case import case_catalog

    catalog = case_catalog()
    monkeypatch.syspath_prepend(str(TOY_SITE))
    from equiv_toycase.toy_mlp.spec import SPEC

    monkeypatch.setitem(catalog.cases, SPEC.name, SPEC)
    monkeypatch.setitem(catalog.origins, SPEC.name, "plugin 'toycase' (test fixture)")
    return SPEC


class ToyKit(CaseConformance):
    case_name = "toy_mlp"
    backends = ("numpy",)


def kit_with(spec=None, reference=None, **attrs) -> CaseConformance:
    """The toy kit with the case's spec or reference module replaced."""
    kit = type("PlantedKit", (ToyKit,), attrs)()
    if spec is not None:
        kit.case_spec = lambda: spec
    if reference is not None:
        kit.reference_module = lambda _spec: reference
    return kit


def wrapped_reference(spec, change) -> types.SimpleNamespace:
    """The toy's reference with ``change(loss, grads)`` applied to what it returns."""
    import importlib

    real = importlib.import_module(spec.module_name("reference"))

    def forward_backward(*args, **kwargs):
        loss, grads, branch = real.forward_backward(*args, **kwargs)
        return change(loss, dict(grads)) + (branch,)

    return types.SimpleNamespace(forward_backward=forward_backward)


def test_the_honest_toy_passes_the_kit(toy, request):
    kit = ToyKit()
    kit.test_the_case_is_discovered()
    kit.test_reference_matches_finite_differences()
    kit.test_draw_is_deterministic()
    kit.test_every_parameter_gets_a_gradient()
    for dtype in ("float64", "float32"):
        kit.test_records_are_canonical("numpy", dtype)


def test_a_wrong_backward_fails_the_finite_difference_check(toy):
    halved = wrapped_reference(toy, lambda loss, g: (loss, {**g, "w2": 0.5 * g["w2"]}))
    with pytest.raises(AssertionError, match=r"d loss / d w2"):
        kit_with(reference=halved).test_reference_matches_finite_differences()


def test_a_draw_from_numpys_global_generator_fails(toy):
    def global_draw(rng, cfg):
        data, params = toy.draw(rng, cfg)
        return data, {**params, "w2": np.random.standard_normal(params["w2"].shape)}

    kit = kit_with(spec=dataclasses.replace(toy, draw=global_draw))
    with pytest.raises(AssertionError, match="params/w2 differs between two draws"):
        kit.test_draw_is_deterministic()


def test_a_draw_that_ignores_its_generator_fails(toy):
    def constant_draw(rng, cfg):
        return toy.draw(np.random.default_rng(7), cfg)

    kit = kit_with(spec=dataclasses.replace(toy, draw=constant_draw))
    with pytest.raises(AssertionError, match="draw the same state"):
        kit.test_draw_is_deterministic()


def test_a_draw_with_the_parameters_out_of_order_fails(toy):
    def reordered(rng, cfg):
        data, params = toy.draw(rng, cfg)
        return data, {"w2": params["w2"], "w1": params["w1"]}

    kit = kit_with(spec=dataclasses.replace(toy, draw=reordered))
    with pytest.raises(pytest.fail.Exception, match="draw returned params"):
        kit.test_draw_is_deterministic()


@pytest.mark.parametrize(
    "change, words",
    [
        (lambda loss, g: (loss, {"w2": g["w2"]}), "gradients are named ['w2']"),
        (lambda loss, g: (loss, {**g, "w1": g["w1"].T}), "grads/w1 has shape (8, 12)"),
        (lambda loss, g: (loss, {**g, "w1": g["w1"].astype(np.float32)}), "float32"),
        (lambda loss, g: (loss, {**g, "w2": g["w2"] * np.nan}), "grads/w2 is not finite"),
    ],
)
def test_a_missing_or_malformed_gradient_fails(toy, change, words):
    kit = kit_with(reference=wrapped_reference(toy, change))
    with pytest.raises(AssertionError) as info:
        kit.test_every_parameter_gets_a_gradient()
    assert words in str(info.value)


PLANTED_BACKENDS = '''
from equiv.backends.numpy import NumpyBackend
from equiv.reference.trainer import ReferenceTrainer


class Transposed(NumpyBackend):
    """Records w1 in torch's (out, in) layout."""

    id = "planted.transposed"

    def build_trainer(self, spec, state, module):
        trainer = ReferenceTrainer(spec, state, module=module)
        record = trainer.record

        def transposed():
            r = record()
            r.params = {**r.params, "w1": r.params["w1"].T.copy()}
            return r

        trainer.record = transposed
        return trainer


class Float32(NumpyBackend):
    """Trains in float32 whatever the cell's dtype."""

    id = "planted.float32"

    def build_trainer(self, spec, state, module):
        return ReferenceTrainer(spec, state.astype("float32"), module=module)
'''


@pytest.mark.parametrize(
    "backend_id, dtype, words",
    [
        ("planted.transposed", "float32", "params/w1 has shape (8, 12), canonical (12, 8)"),
        ("planted.float32", "float64", "grads/w1 is float32 in a float64 cell"),
    ],
)
def test_records_of_the_wrong_layout_or_dtype_fail(
    toy, tmp_path, monkeypatch, backend_id, dtype, words
):
    from equiv.backends.registry import all_backends

    (tmp_path / "planted_case_backends.py").write_text(PLANTED_BACKENDS)
    monkeypatch.syspath_prepend(str(tmp_path))
    import planted_case_backends as planted

    for backend in (planted.Transposed(), planted.Float32()):
        monkeypatch.setitem(all_backends(), backend.id, backend)
    kit = kit_with()
    kit.test_records_are_canonical("numpy", dtype)  # the honest twin passes
    with pytest.raises(AssertionError, match=words.replace("(", r"\(").replace(")", r"\)")):
        kit.test_records_are_canonical(backend_id, dtype)


ZERO_GRAD = ("            self.w1.grad.zero_()\n", "")
HARMLESS = ('self.lr = state.config["lr"]', 'self.lr = state.config["lr"]  # planted: nothing')


def test_a_plant_is_caught_and_an_uncaught_one_fails(toy, request):
    pytest.importorskip("torch")
    syntax = ("return Trainer(state, backend)", "return Trainer(state, backend")
    plants = {"torch.eager": [ZERO_GRAD, HARMLESS, ("no such line", "x"), syntax]}
    kit = kit_with(backends=("torch.eager",), plants=plants, steps=5)
    kit.test_planted_bug_is_caught(("torch.eager", 0), request)
    with pytest.raises(AssertionError, match="plant 1 of torch.eager .* was not caught"):
        kit.test_planted_bug_is_caught(("torch.eager", 1), request)
    with pytest.raises(AssertionError, match="target occurs 0 times"):
        kit.test_planted_bug_is_caught(("torch.eager", 2), request)
    with pytest.raises(AssertionError, match="not valid Python"):
        kit.test_planted_bug_is_caught(("torch.eager", 3), request)


def test_a_plant_is_not_judged_where_the_case_itself_fails(toy, request, monkeypatch):
    """With the reference's loss doubled, the unplanted cell fails: the kit says so instead of
    counting the plant as caught."""
    import equiv.quality.conformance

    monkeypatch.setattr(
        equiv.quality.conformance, "_unplanted", lambda cell, seed, steps: _failed(cell)
    )
    comment = ('__all__ = ["forward_backward"]', '__all__ = ["forward_backward"]  # planted')
    kit = kit_with(plants={"numpy": [comment]})
    with pytest.raises(AssertionError, match="does not pass without the plant"):
        kit.test_planted_bug_is_caught(("numpy", 0), request)


def _failed(cell):
    from equiv.contract.records import CellResult

    return CellResult(cell=cell, status="fail", reason="planted: the case fails by itself")


def test_an_unknown_case_fails_rather_than_skips():
    kit = kit_with(spec=None)
    kit.case_name = "no_such_case"
    with pytest.raises(pytest.fail.Exception, match="equiv.cases' entry point"):
        kit.test_the_case_is_discovered()


def test_backends_default_to_those_with_an_implementation(toy):
    kit = kit_with(backends=None)
    ids = kit.backend_ids()
    assert "numpy" in ids and "torch.eager" in ids
    assert "tf.eager" not in ids  # the toy has no tf_impl
    if "jax.jit" in ids:  # the JAX plugin finds the toy's own jax_impl
        assert "equiv_jax" in sys.modules


# -- a case author's own test file, run by pytest ----------------------------------------------

AUTHOR_TESTS = """
from equiv.quality.conformance import CaseConformance


class TestToyMlp(CaseConformance):
    case_name = "toy_mlp"
    backends = ("numpy", "torch.eager")
    plants = {"torch.eager": [("self.w1.grad.zero_()", "pass")]}
    steps = 5


class TestToyMlpUncaught(CaseConformance):
    case_name = "toy_mlp"
    backends = ("torch.eager",)
    plants = {"torch.eager": [('self.lr = state.config["lr"]', 'self.lr = state.config["lr"]  #')]}
    steps = 5
"""


def test_a_case_author_runs_the_kit_from_their_own_tests(tmp_path):
    pytest.importorskip("torch")
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "test_toy_kit.py").write_text(textwrap.dedent(AUTHOR_TESTS))
    junit = tmp_path / "junit.xml"
    proc = subprocess.run(
        [
            sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:randomly",
            "--rootdir", str(tmp_path), f"--junitxml={junit}", str(tmp_path / "tests"),
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=child_environment(TOY_SITE),
        timeout=900,
    )  # fmt: skip
    assert junit.exists(), proc.stdout[-3000:] + proc.stderr[-3000:]
    outcome = {}
    for case in ET.parse(junit).getroot().iter("testcase"):
        cls = case.get("classname", "").rsplit(".", 1)[-1]
        bad = any(child.tag in ("failure", "error", "skipped") for child in case)
        outcome[f"{cls}::{case.get('name')}"] = "not passed" if bad else "passed"
    honest = {k: v for k, v in outcome.items() if k.startswith("TestToyMlp::")}
    assert len(honest) == 9 and set(honest.values()) == {"passed"}, outcome
    uncaught = outcome["TestToyMlpUncaught::test_planted_bug_is_caught[torch.eager-0]"]
    assert uncaught == "not passed", outcome


NO_PLANTS_TESTS = """
from equiv.testing import CaseConformance


class TestNoPlants(CaseConformance):
    case_name = "toy_mlp"
    backends = ("numpy",)


class TestEmptyPlants(CaseConformance):
    case_name = "toy_mlp"
    backends = ("numpy",)
    plants = {"numpy": []}


class TestPlantedBelowUnplanted(TestNoPlants):
    plants = {"numpy": [("a", "b")]}
"""


def test_a_kit_without_plants_has_no_planted_bug_test(tmp_path):
    """Not a test skipped with "got empty parameter set" (a case package's kit with no plants,
    the example package's defaults case): none at all. A subclass that plants gets it back."""
    assert ToyKit.test_planted_bug_is_caught is None
    assert callable(kit_with(plants={"numpy": [("a", "b")]}).test_planted_bug_is_caught)
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "test_kits.py").write_text(textwrap.dedent(NO_PLANTS_TESTS))
    proc = subprocess.run(
        [
            sys.executable, "-m", "pytest", "-q", "--collect-only", "-p", "no:cacheprovider",
            "--rootdir", str(tmp_path), str(tmp_path / "tests"),
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=child_environment(TOY_SITE),
        timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    planted = [line for line in proc.stdout.splitlines() if "test_planted_bug_is_caught" in line]
    assert planted == [
        "tests/test_kits.py::TestPlantedBelowUnplanted::test_planted_bug_is_caught[numpy-0]"
    ], proc.stdout
    assert "TestNoPlants::test_records_are_canonical[numpy-float64]" in proc.stdout
