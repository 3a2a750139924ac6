"""equiv's case conformance kit, run against both cases of this package.

For each case the kit checks that equiv discovers it (through this package's entry point),
the reference against central finite differences, that the draw is deterministic, that every
declared parameter gets a gradient, and the records of every backend that implements the case
(canonical names, shapes, the cell's dtype). On ``transformer_block`` it also plants realistic
porting bugs in each framework's file and checks that equiv catches every one; the defaults
case re-exports the same files, so its plants would be the same ones.
"""

from importlib.metadata import PackageNotFoundError, distribution

import pytest
from equiv.testing import CaseConformance

try:
    distribution("equiv-transformer")
except PackageNotFoundError:  # a checkout where the package was never installed
    pytest.skip(
        "equiv-transformer is not installed (pip install -e examples/equiv-transformer)",
        allow_module_level=True,
    )


#: one backend a framework for the kit's record checks: equiv's matrix runs every backend's
#: cells of both cases already, and each transformer cell costs seconds (CI's time budget)
KIT_BACKENDS = ("numpy", "torch.eager", "keras.tensorflow", "jax.jit")


class TestTransformerBlock(CaseConformance):
    case_name = "transformer_block"
    backends = KIT_BACKENDS
    plants = {
        "torch.eager": [
            # nn.MultiheadAttention reads (T, B, d) unless told batch_first
            (
                'nn.MultiheadAttention(d, cfg["heads"], bias=False, batch_first=True)',
                'nn.MultiheadAttention(d, cfg["heads"], bias=False, batch_first=False)',
            ),
            # the query and key kernels swapped in the layout: equal shapes, no error, and
            # the scores are transposed (under the causal mask, another function)
            (
                '**{f"attn.w{n}": f"w{n}" for n in "qkvo"},',
                '**{f"attn.w{n}": f"w{m}" for n, m in zip("qkvo", "kqvo")},',
            ),
        ],
        "keras.tensorflow": [
            # the causal mask forgotten: every position attends to the future
            ("attention(h, h, use_causal_mask=True)", "attention(h, h, use_causal_mask=False)"),
            # the query and key kernels swapped in the layout's renames: equal shapes, no
            # error, and the scores are transposed (under the causal mask, another function)
            (
                'names |= {f"attn.w{n}": f"w{n}" for n in "qkvo"}',
                'names |= {f"attn.w{n}": f"w{m}" for n, m in zip("qkvo", "kqvo")}',
            ),
        ],
        "jax.jit": [
            # heads split by a reshape alone, without moving T behind the heads
            (
                "return a.reshape(b, t, heads, d // heads).transpose(0, 2, 1, 3)",
                "return a.reshape(b, heads, t, d // heads)",
            ),
            # LayerNorm's variance taken about 0 instead of the mean
            ("jnp.square(x - mean)", "jnp.square(x)"),
        ],
    }


class TestTransformerBlockDefaults(CaseConformance):
    case_name = "transformer_block_defaults"
    backends = KIT_BACKENDS
