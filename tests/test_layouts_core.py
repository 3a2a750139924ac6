"""``equiv.layouts.core``: a layout checks itself when declared, converts both ways, refuses to
invert a derived tensor (naming it), compares derived quantities and their gradients honestly,
and the activation layouts move axes. Plain numpy: no framework is needed here."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from equiv.layouts import (
    SAME,
    TIME_MAJOR,
    Layout,
    LayoutError,
    NotInvertible,
    Rule,
    channels_last,
    compose,
    copy,
    derived,
    keras_lstm,
    pack,
    summed,
    torch_linear,
    torch_lstm,
    transpose,
)
from equiv.layouts.core import Observable

ROOT = Path(__file__).resolve().parents[1]
FRAMEWORKS = ("torch", "keras", "tensorflow", "jax", "flax")


def draw(layout: Layout, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {n: rng.standard_normal(s) for n, s in layout.canonical.items()}


def linear_like(rules, framework=None) -> Layout:
    return Layout(
        "test.Linear(3, 2)",
        {"kernel": (3, 2), "bias": (2,)},
        framework or {"weight": (2, 3), "bias": (2,)},
        tuple(rules),
    )


# -- no framework ---------------------------------------------------------------------------


def test_layouts_import_with_no_framework_installed():
    """Every framework made unimportable (``sys.modules[name] = None``): the package and all its
    modules import, and build every standard layout."""
    code = (
        "import sys\n"
        f"for name in {FRAMEWORKS!r}: sys.modules[name] = None\n"
        "import equiv.layouts as L\n"
        "L.torch_lstm(3, 4); L.keras_gru(3, 4); L.keras_multi_head_attention(6, 2)\n"
        "L.keras_conv(2, 4, 3); L.flax_batch_norm(3); L.keras_padding(1, 3, 2)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_no_module_imports_a_framework_at_top_level():
    for path in sorted((ROOT / "equiv" / "layouts").glob("*.py")):
        for node in ast.parse(path.read_text()).body:
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            assert not [n for n in names if n.split(".")[0] in FRAMEWORKS], path.name


# -- declaration-time checks ----------------------------------------------------------------


def test_a_right_declaration_converts_both_ways_bit_for_bit():
    layout = linear_like([transpose("kernel", "weight", (1, 0)), copy("bias", "bias")])
    params = draw(layout)
    native = layout.to_framework(params)
    assert np.array_equal(native["weight"], params["kernel"].T)
    assert native["weight"].flags.c_contiguous  # torch.from_numpy and set_weights take it
    back = layout.to_canonical(native)
    assert list(back) == ["kernel", "bias"]
    assert all(np.array_equal(back[n], params[n]) for n in params)
    layout.verify()


def test_a_canonical_parameter_left_unmapped_is_an_error():
    with pytest.raises(
        LayoutError, match=r"^test.Linear\(3, 2\): canonical 'bias' is mapped to no"
    ):
        linear_like([transpose("kernel", "weight", (1, 0))], {"weight": (2, 3)})


def test_a_parameter_mapped_twice_is_an_error():
    with pytest.raises(LayoutError, match="canonical 'bias' is mapped twice"):
        linear_like(
            [transpose("kernel", "weight", (1, 0)), copy("bias", "bias"), copy("bias", "extra")],
            {"weight": (2, 3), "bias": (2,), "extra": (2,)},
        )


def test_a_shape_mismatch_is_an_error_naming_the_tensor():
    """The kernel copied untransposed into torch's (out, in) weight."""
    with pytest.raises(
        LayoutError, match=r"framework 'weight' is \(2, 3\), the rule makes \(3, 2\)"
    ):
        linear_like([copy("kernel", "weight"), copy("bias", "bias")])


def test_other_declaration_errors_are_named():
    with pytest.raises(LayoutError, match="reads 'kernal', not a canonical parameter"):
        linear_like([copy("kernal", "weight"), copy("bias", "bias")])
    with pytest.raises(LayoutError, match="makes 'wieght', not a declared framework tensor"):
        linear_like([transpose("kernel", "wieght", (1, 0)), copy("bias", "bias")])
    with pytest.raises(LayoutError, match="framework 'weight' is made by two rules"):
        linear_like([transpose("kernel", "weight", (1, 0)), copy("bias", "weight")])
    with pytest.raises(LayoutError, match="framework 'extra' is made by no rule"):
        linear_like(
            [transpose("kernel", "weight", (1, 0)), copy("bias", "bias")],
            {"weight": (2, 3), "bias": (2,), "extra": (1,)},
        )
    with pytest.raises(LayoutError, match="give forward and inverse"):
        copy("a", "b", forward=np.transpose)


def test_every_error_is_one_line():
    with pytest.raises(LayoutError) as caught:
        linear_like([copy("kernel", "weight"), copy("bias", "bias")])
    assert "\n" not in str(caught.value)


# -- conversion-time checks -----------------------------------------------------------------


def test_conversions_check_names_and_shapes():
    layout = torch_linear(3, 2)
    params = draw(layout)
    with pytest.raises(LayoutError, match=r"canonical 'bias' is missing"):
        layout.to_framework({"kernel": params["kernel"]})
    with pytest.raises(LayoutError, match=r"canonical 'scale' is not in this layout"):
        layout.to_framework({**params, "scale": params["bias"]})
    with pytest.raises(
        LayoutError, match=r"canonical 'kernel' has shape \(2, 3\), expects \(3, 2\)"
    ):
        layout.to_framework({**params, "kernel": params["kernel"].T})
    native = layout.to_framework(params)
    with pytest.raises(
        LayoutError, match=r"framework 'weight' has shape \(3, 2\), expects \(2, 3\)"
    ):
        layout.to_canonical({**native, "weight": native["weight"].T})


def test_ignored_framework_tensors_are_accepted_and_dropped():
    from equiv.layouts import torch_batch_norm

    layout = torch_batch_norm(3)
    native = layout.to_framework(draw(layout))
    back = layout.to_canonical({**native, "num_batches_tracked": np.array(4)})
    assert set(back) == {"gamma", "beta", "running_mean", "running_var"}


# -- derived tensors ------------------------------------------------------------------------


def test_a_summed_bias_is_not_inverted_and_the_error_names_it():
    layout = keras_lstm(3, 4)
    native = layout.to_framework(draw(layout))
    with pytest.raises(NotInvertible) as caught:
        layout.to_canonical(native)
    message = str(caught.value)
    assert "'bias_ih'" in message and "lstm_cell/bias" in message
    assert "bias_ih+bias_hh" in message and "\n" not in message
    assert not layout.invertible and torch_lstm(3, 4).invertible


def test_observed_and_observables_compare_the_sum_not_a_split():
    layout = keras_lstm(3, 4)
    params = draw(layout)
    observed = layout.observed(layout.to_framework(params))
    expected = layout.observables(params)
    assert list(observed) == list(expected) == ["kernel_ih", "kernel_hh", "bias_ih+bias_hh"]
    assert all(np.array_equal(observed[k], expected[k]) for k in expected)
    # another split of the same sum is observed the same: the comparison cannot tell them
    # apart, as the framework cannot
    moved = {**params, "bias_ih": params["bias_ih"] + 1.0, "bias_hh": params["bias_hh"] - 1.0}
    assert np.allclose(layout.observables(moved)["bias_ih+bias_hh"], expected["bias_ih+bias_hh"])


def test_the_gradient_of_a_sum_is_each_parts_gradient():
    layout = keras_lstm(3, 4)
    grads = {n: np.random.default_rng(1).standard_normal(s) for n, s in layout.framework.items()}
    canonical = layout.grads_to_canonical(grads)
    assert list(canonical) == ["kernel_ih", "kernel_hh", "bias_ih", "bias_hh"]
    assert np.array_equal(canonical["bias_ih"], grads["lstm_cell/bias"])
    assert np.array_equal(canonical["bias_hh"], grads["lstm_cell/bias"])
    with pytest.raises(NotInvertible, match="use grads_to_canonical"):
        layout.grads_to_framework(canonical)


def test_a_parameter_feeding_two_tensors_gets_the_sum_of_their_gradients():
    """A tied parameter: the framework holds ``a`` as it is and inside a sum ``a+b``."""
    layout = Layout(
        "test.Tied",
        {"a": (2,), "b": (2,)},
        {"a": (2,), "a+b": (2,)},
        (copy("a", "a"), summed(("a", "b"), "a+b", "a test")),
    )
    layout.verify()
    # b is (a+b) - a, but a subtraction is no index map: the layout does not invert it
    assert not layout.invertible
    grads = {"a": np.ones(2), "a+b": np.full(2, 2.0)}
    assert np.array_equal(layout.grads_to_canonical(grads)["a"], np.full(2, 3.0))


def test_derived_rules_must_say_what_is_observed():
    with pytest.raises(LayoutError, match="declare what the framework can observe"):
        derived(("a", "b"), ("c",), lambda a, b: (a + b,), lambda g: (g, g), (), "why")


# -- verify(): the self-check catches a wrong rule ------------------------------------------


def test_verify_catches_an_inverse_that_is_not_one():
    layout = Layout(
        "test.Scaled",
        {"w": (2,)},
        {"w": (2,)},
        (copy("w", "w", lambda a: a * 2.0, lambda t: t / 3.0),),
    )
    with pytest.raises(LayoutError, match="the inverse of \\['w'\\] loses 'w'"):
        layout.verify()


def test_verify_catches_an_invertible_rule_that_computes():
    """Doubling is exactly invertible, but a gradient does not convert as the value does."""
    layout = Layout(
        "test.Doubled",
        {"w": (2,)},
        {"w": (2,)},
        (copy("w", "w", lambda a: a * 2, lambda t: t / 2),),
    )
    with pytest.raises(LayoutError, match="is not the chain rule"):
        layout.verify()


def test_verify_catches_a_wrong_pullback_and_a_wrong_observable():
    wrong_grad = derived(
        ("a", "b"),
        ("s",),
        lambda a, b: (a + b,),
        lambda g: (g, 0 * g),  # a faked split: all of the gradient on one part
        (Observable("a+b", lambda a, b: a + b, lambda s: s),),
        "a test",
    )
    wrong_obs = derived(
        ("a", "b"),
        ("s",),
        lambda a, b: (a + b,),
        lambda g: (g, g),
        (Observable("a+b", lambda a, b: a - b, lambda s: s),),
        "a test",
    )
    for rule, match in ((wrong_grad, "chain rule"), (wrong_obs, "observable 'a\\+b' differs")):
        layout = Layout("test.Sum", {"a": (3,), "b": (3,)}, {"s": (3,)}, (rule,))
        with pytest.raises(LayoutError, match=match):
            layout.verify()


def test_pack_round_trips():
    layout = Layout(
        "test.Packed",
        {"q": (2, 3), "k": (2, 3)},
        {"qk": (6, 2)},
        (
            pack(
                ("q", "k"),
                "qk",
                lambda q, k: np.concatenate([q.T, k.T]),
                lambda t: [x.T for x in np.split(t, 2)],
            ),
        ),
    )
    params = draw(layout)
    back = layout.to_canonical(layout.to_framework(params))
    assert all(np.array_equal(back[n], params[n]) for n in params)
    layout.verify()
    assert isinstance(layout.rules[0], Rule) and layout.rules[0].invertible


# -- activations ----------------------------------------------------------------------------


def test_activation_layouts_move_the_axes_and_back():
    x = np.arange(2 * 3 * 4 * 5, dtype=float).reshape(2, 3, 4, 5)
    nhwc = channels_last(2)
    assert nhwc.name == "NCHW->NHWC"
    assert nhwc.to_framework(x).shape == (2, 4, 5, 3)
    assert np.array_equal(nhwc.to_framework(x)[1, 2, 3, 0], x[1, 0, 2, 3])
    assert np.array_equal(nhwc.to_canonical(nhwc.to_framework(x)), x)
    ncw = channels_last(1)
    seq = np.arange(2 * 3 * 4).reshape(2, 3, 4)
    assert ncw.to_framework(seq).shape == (2, 4, 3)
    assert TIME_MAJOR.to_framework(seq).shape == (3, 2, 4)
    assert np.array_equal(TIME_MAJOR.to_canonical(TIME_MAJOR.to_framework(seq)), seq)
    assert SAME.to_framework(seq) is seq
    with pytest.raises(LayoutError, match="expects a 4-d array"):
        nhwc.to_framework(seq)


def test_layouts_carry_their_activation_layouts():
    from equiv.layouts import keras_conv, torch_conv

    assert keras_conv(2, 3, 3).outputs == channels_last(2)
    assert torch_conv(2, 3, 3).outputs == SAME
    assert torch_lstm(3, 4, batch_first=False).inputs == TIME_MAJOR


# -- composition ----------------------------------------------------------------------------


def test_compose_prefixes_names_and_keeps_each_layer():
    model = compose("mlp", {"0": torch_linear(3, 4), "2": torch_linear(4, 2)})
    assert model.names == ("0.weight", "0.bias", "2.weight", "2.bias")  # nn.Sequential's keys
    assert list(model.canonical) == ["0.kernel", "0.bias", "2.kernel", "2.bias"]
    params = draw(model)
    back = model.to_canonical(model.to_framework(params))
    assert all(np.array_equal(back[n], params[n]) for n in params)
    assert model.layers["2"].canonical["kernel"] == (4, 2)

    lstm = compose("enc", {"lstm": keras_lstm(3, 4)}, framework_sep="/")
    assert lstm.names[-1] == "lstm/lstm_cell/bias"
    assert list(lstm.observables(draw(lstm)))[-1] == "lstm.bias_ih+bias_hh"
    lstm.verify()
