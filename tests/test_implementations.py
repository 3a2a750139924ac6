"""A cell without code skips, and its reason names the file the case's author would write."""

from __future__ import annotations

from dataclasses import replace

import pytest

from cases.two_layer_mlp.spec import SPEC
from equiv.backends.implementations import load_implementation
from equiv.contract.backend import Backend, CellSkip


class _Adapter(Backend):
    """Enough of an adapter to look for code: where, not how to run it."""

    id = "toy.eager"
    framework = "toy"
    impl_file = "toy_impl"

    def to_native(self, array):
        return array

    def to_numpy(self, value):
        return value


class _PluginAdapter(_Adapter):
    """Like equiv-jax: a case's own ``toy_impl`` if it has one, else a module of its own."""

    def implementation_module(self, spec) -> str:
        return f"toy_plugin_without_cases.{spec.name}"


def skip_reason(backend: Backend, spec) -> str:
    with pytest.raises(CellSkip) as info:
        load_implementation(backend, spec)
    return str(info.value)


def test_the_reason_names_the_case_folders_file():
    reason = skip_reason(_Adapter(), SPEC)
    assert reason == (
        "toy.eager has no implementation of two_layer_mlp: no cases/two_layer_mlp/toy_impl.py"
    )


def test_a_plugin_backend_names_the_users_file_first_and_where_it_also_looked():
    spec = replace(SPEC, name="lstm_sgd", package="my_models")
    reason = skip_reason(_PluginAdapter(), spec)
    assert reason.startswith(
        "toy.eager has no implementation of lstm_sgd: no my_models/lstm_sgd/toy_impl.py"
    )
    assert "(nor toy_plugin_without_cases.lstm_sgd, where toy.eager keeps code of its own)" in (
        reason
    )


def test_an_implementation_that_fails_inside_is_an_error_not_a_skip(tmp_path, monkeypatch):
    package = tmp_path / "broken_models" / "two_layer_mlp"
    package.mkdir(parents=True)
    (tmp_path / "broken_models" / "__init__.py").write_text("")
    (package / "__init__.py").write_text("")
    (package / "toy_impl.py").write_text("import a_module_nobody_has\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ModuleNotFoundError, match="a_module_nobody_has"):
        load_implementation(_Adapter(), replace(SPEC, package="broken_models"))
