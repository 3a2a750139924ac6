"""JAX adapter for equiv: modes ``jax.eager`` and ``jax.jit``.

Registered through the ``equiv.backends`` entry point in this package's ``pyproject.toml``;
equiv itself knows nothing of JAX. jax is imported lazily (inside methods) so that
``equiv list`` stays fast and framework-free.

- float64: JAX computes in float32 unless ``jax_enable_x64`` is on, and the flag only affects
  arrays created after it is set. ``configure`` sets it (the runner calls it before any cell)
  and ``to_native`` sets it again and refuses to return a narrower dtype than it was given.
- Determinism: XLA on CPU is deterministic for these programs; on GPU the
  ``--xla_gpu_deterministic_ops`` flag asks for deterministic reductions. float32 matmuls are
  asked for at full precision (``jax_default_matmul_precision = "highest"``), so that an
  accelerator's TF32 or bfloat16 passes cannot stand in for float32.
- Threads: XLA has no thread-count setting. With ``--threads 1`` the flag
  ``--xla_cpu_multi_thread_eigen=false`` keeps XLA's CPU kernels single-threaded; any other
  count leaves XLA on all cores. XLA reads ``XLA_FLAGS`` once, when its first backend starts:
  flags that came too late are reported as a warning, never silently dropped.
- Timing: JAX dispatches asynchronously. Trainers hand their step's outputs to ``track``;
  ``synchronize`` blocks until they are computed, so a timed step includes all of its work.
- Traces: ``jax.jit`` mode wraps the step in a function that counts its own tracing (a Python
  side effect runs only while JAX traces), so the runner can tell "traced once" from
  "retraced every step".
"""

from __future__ import annotations

import functools
import importlib.util
import os
import sys
import warnings
from collections.abc import Callable
from importlib.metadata import PackageNotFoundError, version
from typing import Any

import numpy as np
from equiv.backends.base import Backend

CASES_PACKAGE = "equiv_jax.cases"
#: the file name of a case package's own JAX implementation, beside its ``torch_impl``
IMPL_FILE = "jax_impl"


def _backends_initialized() -> bool:
    """Whether XLA has started (after which XLA_FLAGS are no longer read)."""
    if "jax" not in sys.modules:
        return False
    try:
        from jax._src import xla_bridge
    except ImportError:  # private module moved: assume the worst, so a warning is shown
        return True
    check = getattr(xla_bridge, "backends_are_initialized", None)
    return bool(check()) if check else True


def _add_xla_flags(flags: list[str]) -> list[str]:
    """Append ``flags`` to XLA_FLAGS; return those that cannot take effect any more."""
    current = os.environ.get("XLA_FLAGS", "").split()
    new = [f for f in flags if f not in current]
    if not new:
        return []
    if _backends_initialized():
        return new
    os.environ["XLA_FLAGS"] = " ".join(current + new)
    return []


def enable_x64() -> None:
    """float64 arrays need ``jax_enable_x64``; idempotent and cheap."""
    import jax

    if not jax.config.jax_enable_x64:
        jax.config.update("jax_enable_x64", True)


class JaxBackend(Backend):
    framework = "jax"
    requires = ("jax",)
    impl_file = IMPL_FILE
    case_helpers = ("track",)

    def __init__(self) -> None:
        super().__init__()
        self._pending: Any = None

    def availability(self) -> str | None:
        if importlib.util.find_spec("jax") is None:
            return "jax is not installed (pip install equiv-jax installs it)"
        return None

    def versions(self) -> dict[str, str]:
        out = {}
        for name in ("jax", "jaxlib", "equiv-jax"):
            try:
                out[name] = version(name)
            except PackageNotFoundError:
                out[name] = "unknown"
        return out

    def release_caches(self) -> None:
        """JAX keeps every compiled program and trace for the process's lifetime: after a
        resnet18 cell on keras.jax 1.5 GB of a 2.4 GB process (measured), compiled again from
        the persistent compilation cache where a later cell needs it."""
        import jax

        jax.clear_caches()

    def configure(self, threads: int) -> None:
        flags = ["--xla_gpu_deterministic_ops=true"]
        if threads == 1:
            flags.append("--xla_cpu_multi_thread_eigen=false")
        late = _add_xla_flags(flags)
        if late:  # XLA already runs: only the flags for the platform it runs on matter
            import jax

            platform = "cpu" if jax.default_backend() == "cpu" else "gpu"
            late = [f for f in late if f.startswith(f"--xla_{platform}_")]
        if late:
            warnings.warn(
                f"XLA had already started in this process; {' '.join(late)} not applied "
                f"(requested threads: {threads})",
                RuntimeWarning,
                stacklevel=2,
            )
        import jax

        enable_x64()
        jax.config.update("jax_default_matmul_precision", "highest")

    def implementation_module(self, spec) -> str:
        """A case package's own ``jax_impl`` module when it has one (a case installed from
        another package brings its JAX code along); otherwise this package's
        ``equiv_jax.cases.<name>``, where the JAX code of equiv's built-in cases lives."""
        own = spec.module_name(self.impl_file)
        try:
            found = importlib.util.find_spec(own)
        except (ImportError, ValueError):  # the case's package itself cannot be imported
            found = None
        return own if found is not None else f"{CASES_PACKAGE}.{spec.name}"

    def to_native(self, array: np.ndarray):
        import jax.numpy as jnp

        enable_x64()
        array = np.asarray(array)
        out = jnp.array(array, copy=True)
        if out.dtype != array.dtype:
            raise TypeError(f"JAX made {out.dtype} of a {array.dtype} array (jax_enable_x64 off?)")
        return out

    def to_numpy(self, value: Any) -> np.ndarray:
        return np.array(value, copy=True)

    def track(self, outputs: Any) -> None:
        """Remember a step's outputs (any pytree of arrays) for ``synchronize``."""
        self._pending = outputs

    def synchronize(self) -> None:
        if self._pending is not None:
            import jax

            jax.block_until_ready(self._pending)
            self._pending = None


class JaxEager(JaxBackend):
    id = "jax.eager"
    mode = "eager"


class JaxJit(JaxBackend):
    id = "jax.jit"
    mode = "jit"
    compiled = True

    def transform(self, fn: Callable) -> Callable:
        import jax

        @functools.wraps(fn)
        def counted(*args: Any, **kwargs: Any) -> Any:
            self.traces += 1  # runs only while JAX traces: once per new input signature
            return fn(*args, **kwargs)

        return jax.jit(counted)


def backends() -> list[Backend]:
    return [JaxEager(), JaxJit()]
