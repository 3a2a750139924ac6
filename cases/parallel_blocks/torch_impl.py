"""parallel_blocks in PyTorch: the seed's program, a custom ``nn.Module`` inside ``nn.Sequential``.

``ParallelBlock`` is the seed's module as written (two ``nn.Linear``, the product clamped at 0);
the model is ``nn.Sequential(ParallelBlock, ParallelBlock, Linear)``, the loss ``F.mse_loss``
and the optimizer ``torch.optim.Adam`` with the case's lr, betas and eps (keras_sequential's
``make_optimizer``). The mode is applied to the model: ``torch.jit.script`` compiles the custom
module's ``forward`` from its source (its argument is a Tensor by default, so it needs no
annotation), ``torch.compile`` traces it. ``layout`` names each ``nn.Linear`` by its module
path (``0.linear1``: its (out, in) weight is the canonical (in, out) kernel transposed).
"""

import torch
import torch.nn.functional as F

from cases.keras_sequential.torch_impl import make_optimizer
from cases.parallel_blocks.spec import layer_sizes
from equiv import layouts
from equiv.support.torch_port import port


class ParallelBlock(torch.nn.Module):
    def __init__(self, D_in, D_out):
        super().__init__()
        self.linear1 = torch.nn.Linear(D_in, D_out)
        self.linear2 = torch.nn.Linear(D_in, D_out)

    def forward(self, x):
        h1 = self.linear1(x)
        h2 = self.linear2(x)
        return (h1 * h2).clamp(min=0)


#: each ``nn.Linear``'s module path -> its canonical kernel and bias (``spec.PARAM_NAMES``)
LINEARS = {
    "0.linear1": ("p1_w1", "p1_b1"),
    "0.linear2": ("p1_w2", "p1_b2"),
    "1.linear1": ("p2_w1", "p2_b1"),
    "1.linear2": ("p2_w2", "p2_b2"),
    "2": ("out_w", "out_b"),
}


def layout(cfg):
    """The model's ``state_dict`` (``0.linear1.weight`` ...) under the case's names."""
    sizes = dict(zip(LINEARS, layer_sizes(cfg), strict=True))
    model = layouts.compose(
        "parallel_blocks", {path: layouts.torch_linear(*sizes[path]) for path in LINEARS}
    )
    return model.named(
        {
            f"{path}.{part}": name
            for path, names in LINEARS.items()
            for part, name in zip(("kernel", "bias"), names, strict=True)
        }
    )


def build(state, backend):
    cfg = state.config
    model = torch.nn.Sequential(
        ParallelBlock(cfg["D_in"], cfg["H"]),
        ParallelBlock(cfg["H"], cfg["H"]),
        torch.nn.Linear(cfg["H"], cfg["D_out"]),
    )
    return port(
        state,
        backend,
        model,
        layout=layout(cfg),
        loss=F.mse_loss,
        optimizer=lambda params: make_optimizer(params, cfg),
    )
