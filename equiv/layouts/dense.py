"""Linear / Dense.

Canonical: ``kernel`` (in, out), so that y = x @ kernel + bias, and ``bias`` (out,), as equiv's
cases record them (``equiv.support.torch.linear``) and as Keras and Flax hold them. torch's
``nn.Linear`` holds ``weight`` (out, in) (torch.nn.Linear docs: y = x W^T + b): the one
transpose. A kernel loaded untransposed into a square layer has the right shape and computes
x @ kernel^T; only a numerical check catches it (``tests/test_layouts_dense.py`` plants it).
"""

from __future__ import annotations

from equiv.layouts.core import Layout, copy, transpose


def _canonical(in_features: int, out_features: int, bias: bool) -> dict[str, tuple[int, ...]]:
    shapes = {"kernel": (in_features, out_features)}
    if bias:
        shapes["bias"] = (out_features,)
    return shapes


def torch_linear(in_features: int, out_features: int, bias: bool = True) -> Layout:
    """``torch.nn.Linear(in_features, out_features, bias)``: ``weight`` (out, in), ``bias``."""
    framework = {"weight": (out_features, in_features)}
    rules = [transpose("kernel", "weight", (1, 0))]
    if bias:
        framework["bias"] = (out_features,)
        rules.append(copy("bias", "bias"))
    return Layout(
        f"torch.nn.Linear({in_features}, {out_features}, bias={bias})",
        _canonical(in_features, out_features, bias),
        framework,
        tuple(rules),
    )


def keras_dense(in_features: int, out_features: int, bias: bool = True) -> Layout:
    """``keras.layers.Dense(out_features, use_bias=bias)`` on ``in_features`` inputs:
    ``kernel`` (in, out), ``bias``: the canonical layout itself."""
    rules = [copy("kernel", "kernel")] + ([copy("bias", "bias")] if bias else [])
    shapes = _canonical(in_features, out_features, bias)
    return Layout(
        f"keras.layers.Dense({out_features}, use_bias={bias}) on {in_features}",
        shapes,
        shapes,
        tuple(rules),
    )


def flax_dense(in_features: int, out_features: int, bias: bool = True) -> Layout:
    """``flax.linen.Dense(out_features, use_bias=bias)``: ``params/kernel`` (in, out),
    ``params/bias``."""
    rules = [copy("kernel", "params/kernel")]
    if bias:
        rules.append(copy("bias", "params/bias"))
    shapes = _canonical(in_features, out_features, bias)
    return Layout(
        f"flax.linen.Dense({out_features}, use_bias={bias}) on {in_features}",
        shapes,
        {f"params/{k}": v for k, v in shapes.items()},
        tuple(rules),
    )
