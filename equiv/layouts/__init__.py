"""Standard layer layouts: each layer family's tensors in torch, Keras 3 and Flax, declared
against one canonical layout, both ways, in plain numpy (no framework is imported here).

``equiv.layouts.core`` is the declaration (``Layout``, its rules, activation layouts); one
module per family holds its standard layouts: ``dense``, ``conv`` (with ``padding``),
``norm``, ``embedding``, ``recurrent``, ``attention``. ``docs/layouts.md`` says what each
canonical form is and what is compared where a framework ties parameters together.
"""

from __future__ import annotations

from equiv.layouts.attention import (
    flax_multi_head_attention,
    keras_multi_head_attention,
    torch_multihead_attention,
)
from equiv.layouts.conv import flax_conv, keras_conv, torch_conv
from equiv.layouts.core import (
    SAME,
    TIME_MAJOR,
    Activation,
    Layout,
    LayoutError,
    NotInvertible,
    Observable,
    Rule,
    channels_last,
    compose,
    copy,
    derived,
    pack,
    reshape,
    split,
    summed,
    transpose,
)
from equiv.layouts.dense import flax_dense, keras_dense, torch_linear
from equiv.layouts.embedding import flax_embedding, keras_embedding, torch_embedding
from equiv.layouts.norm import (
    BATCH_NORM_EPS,
    BATCH_NORM_MOMENTUM,
    LAYER_NORM_EPS,
    flax_batch_norm,
    flax_layer_norm,
    keras_batch_norm,
    keras_batch_norm_args,
    keras_layer_norm,
    keras_momentum,
    torch_batch_norm,
    torch_layer_norm,
    torch_momentum,
)
from equiv.layouts.padding import KerasPadding, keras_padding, keras_same_pads, torch_pads
from equiv.layouts.recurrent import (
    flax_gru,
    flax_lstm,
    keras_gru,
    keras_lstm,
    permute_gates,
    torch_gru,
    torch_lstm,
    unpermute_gates,
)

__all__ = [
    "BATCH_NORM_EPS",
    "BATCH_NORM_MOMENTUM",
    "LAYER_NORM_EPS",
    "SAME",
    "TIME_MAJOR",
    "Activation",
    "KerasPadding",
    "Layout",
    "LayoutError",
    "NotInvertible",
    "Observable",
    "Rule",
    "channels_last",
    "compose",
    "copy",
    "derived",
    "flax_batch_norm",
    "flax_conv",
    "flax_dense",
    "flax_embedding",
    "flax_gru",
    "flax_layer_norm",
    "flax_lstm",
    "flax_multi_head_attention",
    "keras_batch_norm",
    "keras_batch_norm_args",
    "keras_conv",
    "keras_dense",
    "keras_embedding",
    "keras_gru",
    "keras_layer_norm",
    "keras_lstm",
    "keras_momentum",
    "keras_multi_head_attention",
    "keras_padding",
    "keras_same_pads",
    "pack",
    "permute_gates",
    "reshape",
    "split",
    "summed",
    "torch_batch_norm",
    "torch_conv",
    "torch_embedding",
    "torch_gru",
    "torch_layer_norm",
    "torch_linear",
    "torch_lstm",
    "torch_momentum",
    "torch_multihead_attention",
    "torch_pads",
    "transpose",
    "unpermute_gates",
]
