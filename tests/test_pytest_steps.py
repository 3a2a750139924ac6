"""How many steps the pytest plugin's matrix runs: --equiv-steps, else the ini's equiv_steps,
else each case's own. This repository's pyproject sets 10 for the test suite (issues 10, 12)."""

import re
from pathlib import Path
from types import SimpleNamespace

import pytest

try:
    import tomllib
except ImportError:  # Python 3.10: pytest depends on tomli there
    import tomli as tomllib

from equiv.cli.pytest_plugin import _options


class FakeConfig:
    def __init__(self, cli_steps, ini_steps):
        self.values = {"--equiv-steps": cli_steps}
        self.ini = ini_steps
        self.option = SimpleNamespace(numprocesses=None)  # not under pytest-xdist

    def getoption(self, name, default=None):
        defaults = {"--equiv-seed": 0, "--equiv-threads": 1, "--equiv-bench-rounds": 0}
        return self.values.get(name, defaults.get(name, default))

    def getini(self, name):
        assert name in ("equiv_steps", "equiv_reproducibility")
        return self.ini if name == "equiv_steps" else True


@pytest.mark.parametrize(
    ("cli", "ini", "steps"),
    [(None, "", None), (None, "50", 50), (7, "50", 7), (None, " 12 ", 12)],
)
def test_the_command_line_wins_over_the_ini_which_wins_over_the_case(cli, ini, steps):
    assert _options(FakeConfig(cli, ini)).steps == steps


@pytest.mark.parametrize("ini", ["fifty", "0", "-3"])
def test_a_bad_ini_step_count_is_a_usage_error(ini):
    with pytest.raises(pytest.UsageError, match="equiv_steps|--equiv-steps"):
        _options(FakeConfig(None, ini))


def test_this_repository_runs_its_matrix_at_10_steps(pytestconfig):
    assert _options(pytestconfig).steps == (pytestconfig.getoption("--equiv-steps") or 10)


def test_this_repository_skips_the_informative_reproducibility_rerun_in_its_matrix(pytestconfig):
    """pyproject's equiv_reproducibility = false (CI's time budget); run_cell's default and
    `equiv run` keep the check (tests/test_determinism.py)."""
    from equiv.running.runner import RunOptions

    assert _options(pytestconfig).check_reproducible is False
    assert RunOptions().check_reproducible is True


def test_verdict_only_options_drop_what_no_verdict_reads_and_keep_what_is_asked():
    from equiv.running.runner import RunOptions

    options = RunOptions.verdict_only(steps=3, timeout_s=8, check_reproducible=True)
    assert (options.bench_rounds, options.keep_trajectories) == (0, False)
    assert (options.steps, options.timeout_s, options.check_reproducible) == (3, 8, True)
    assert RunOptions.verdict_only().check_reproducible is False


def test_a_case_is_slow_on_the_backends_its_patterns_name():
    from equiv.contract.case import get_case

    resnet = get_case("resnet18")
    assert resnet.slow_on("jax.eager") and resnet.slow_on("keras.jax")
    assert not resnet.slow_on("keras.torch") and not get_case("two_layer_mlp").slow_on("jax.jit")


def test_the_docs_state_the_suites_step_count():
    """docs/adding-a-case.md said 30 after pyproject's equiv_steps went to 10: each sentence
    "the test suite runs every cell for N steps" of the README and the case guide says the
    pyproject's count."""
    root = Path(__file__).resolve().parents[1]
    pyproject = tomllib.loads((root / "pyproject.toml").read_text())
    steps = int(pyproject["tool"]["pytest"]["ini_options"]["equiv_steps"])
    claim = re.compile(r"test suite(?: \([^)]*\))? runs every (?:matrix )?cell for (\d+) steps")
    for doc in ("README.md", "docs/adding-a-case.md"):
        text = " ".join((root / doc).read_text().split())
        said = [int(n) for n in claim.findall(text)]
        assert said and set(said) == {steps}, f"{doc} says {said} steps; pyproject: {steps}"
