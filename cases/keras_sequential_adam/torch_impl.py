"""keras_sequential_adam in PyTorch: keras_sequential's code; ``torch.optim.Adam`` is chosen
from the case config."""

from cases.keras_sequential.torch_impl import build

__all__ = ["build"]
