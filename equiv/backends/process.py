"""What a process has configured for its cells: numpy's BLAS threads and each backend.

Frameworks fix some settings for the life of a process (TensorFlow's thread pools, Keras's
backend, JAX's ``XLA_FLAGS``), so each is configured once per thread count; ``ProcessConfig``
remembers which. There is one per process (``ProcessConfig.current()``): the runner, the
workers and the conformance kit all configure through it.
"""

from __future__ import annotations

from typing import ClassVar

from equiv.contract.backend import Backend


class ProcessConfig:
    _current: ClassVar[ProcessConfig | None] = None

    def __init__(self) -> None:
        self.done: set[tuple[str, int]] = set()
        #: the thread count the process's cells run with (the last one asked for)
        self.threads = 1

    @classmethod
    def current(cls) -> ProcessConfig:
        if cls._current is None:
            cls._current = cls()
        return cls._current

    def numpy(self, threads: int) -> None:
        """numpy's BLAS gets the same thread count as every framework."""
        if ("numpy", threads) not in self.done:
            from threadpoolctl import threadpool_limits

            threadpool_limits(limits=threads)
            self.done.add(("numpy", threads))

    def backend(self, backend: Backend, threads: int) -> None:
        if (backend.id, threads) not in self.done:
            backend.configure(threads)
            self.done.add((backend.id, threads))

    def prepare(self, backend: Backend, threads: int) -> None:
        """Everything a cell of ``backend`` needs configured before it runs."""
        self.threads = threads
        self.numpy(threads)
        self.backend(backend, threads)
