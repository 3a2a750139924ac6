"""PyTorch adapter: modes eager, jit (``torch.jit.script``) and compile (``torch.compile``).

Layout: ``nn.Linear.weight`` is (out, in); the canonical kernel is (in, out), so
``linear_weight`` / ``canonical_kernel`` transpose. Determinism: ``use_deterministic_algorithms``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import numpy as np

from equiv.contract.backend import Backend


class TorchBackend(Backend):
    framework = "torch"
    impl_file = "torch_impl"
    requires = ("torch",)
    case_helpers = ("linear_weight", "canonical_kernel")

    def configure(self, threads: int) -> None:
        import torch

        self.deterministic(torch)
        if torch.get_num_threads() != threads:
            torch.set_num_threads(threads)
        # Inter-op threads can only be set before the first parallel work; kept as they are then.
        with contextlib.suppress(RuntimeError):
            torch.set_num_interop_threads(threads)

    @staticmethod
    def deterministic(torch) -> None:
        """``torch.use_deterministic_algorithms(True)`` without its first line, which imports
        ``torch._inductor.config`` (and with it dynamo and inductor: ~5 s, measured with
        ``python -X importtime``) only to set inductor's own flag. Eager and TorchScript never
        read that flag; ``torch.compile`` sets it through the public call
        (``TorchCompile.deterministic``)."""
        torch._C._set_deterministic_algorithms(True, warn_only=False)

    def to_native(self, array: np.ndarray):
        import torch

        return torch.from_numpy(np.array(array, copy=True))

    def to_numpy(self, value: Any) -> np.ndarray:
        return value.detach().cpu().numpy().copy()

    def synchronize(self) -> None:
        import torch

        if torch.cuda.is_available():
            torch.cuda.synchronize()

    def linear_weight(self, kernel: np.ndarray):
        """Canonical (in, out) kernel -> ``nn.Linear.weight`` layout (out, in)."""
        return self.to_native(np.ascontiguousarray(kernel.T))

    def canonical_kernel(self, weight) -> np.ndarray:
        """``nn.Linear.weight`` (out, in) -> the canonical (in, out) kernel, as numpy."""
        return np.ascontiguousarray(self.to_numpy(weight).T)


class TorchEager(TorchBackend):
    id = "torch.eager"
    mode = "eager"


class TorchJit(TorchBackend):
    id = "torch.jit"
    mode = "jit"
    compiled = True

    def transform(self, fn: Callable) -> Callable:
        import torch

        self.traces += 1
        return torch.jit.script(fn)


class TorchCompile(TorchBackend):
    id = "torch.compile"
    mode = "compile"
    compiled = True

    @staticmethod
    def deterministic(torch) -> None:
        torch.use_deterministic_algorithms(True)

    def configure(self, threads: int) -> None:
        super().configure(threads)
        import torch._dynamo

        # torch.autograd.grad inside a compiled step (static_graph_step) needs this switch.
        torch._dynamo.config.trace_autograd_ops = True

    def transform(self, fn: Callable) -> Callable:
        import torch
        import torch._dynamo
        from torch._inductor.compile_fx import compile_fx

        # Every build starts from an empty cache: otherwise cells that share a function pile up
        # cache entries until dynamo's recompile limit silently falls back to eager (seen in a
        # 20-seed sweep), and the trace count would depend on which cells ran before.
        torch._dynamo.reset()

        def counting_inductor(graph_module, example_inputs):
            self.traces += 1
            return compile_fx(graph_module, example_inputs)

        return torch.compile(fn, backend=counting_inductor)


class TorchManual(TorchBackend):
    """The seed's first program: torch tensors with gradients written by hand, no autograd.
    Only cases with a ``torch_manual_impl`` run in it (two_layer_mlp); the others skip."""

    id = "torch.manual"
    mode = "manual"
    impl_file = "torch_manual_impl"


def backends() -> list[Backend]:
    return [TorchEager(), TorchJit(), TorchCompile(), TorchManual()]
