"""TensorFlow adapter: modes eager, function (``tf.function``), xla (``jit_compile=True``) and
v1graph (a TF 1.0 ``tf.Graph`` run in a ``Session``).

Layout: TF variables hold the canonical (in, out) kernels as they are. Determinism:
``enable_op_determinism``. Threads: TF fixes its intra/inter-op pools when its context first
initialises, so ``configure`` can only set them before any TF work in the process; a TF1
``Session`` takes its own thread counts, so v1graph cells always get the asked number. XLA's
CPU kernels ignore both pools: with one thread, ``--xla_cpu_multi_thread_eigen=false`` in
``XLA_FLAGS`` (read when XLA first compiles) keeps tf.xla on one thread too, as equiv-jax does.
TensorFlow is imported inside methods only: ``equiv list`` and torch-only runs never load it.
"""

from __future__ import annotations

import functools
import os
import warnings
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from equiv.contract.backend import Backend

#: TF's C++ INFO and WARNING logs (its start-up lines) bury the progress lines. Logging only:
#: nothing here may change numerics (``TF_ENABLE_ONEDNN_OPTS=0`` would). Not in ``worker_env``,
#: which a worker imposes: a value the user set is theirs to keep (``logging_defaults``). The
#: banners TF logs as its libraries load, whatever these say, are left out of a worker's stderr
#: by ``equiv.running.workers.BANNERS``.
_QUIET = {"TF_CPP_MIN_LOG_LEVEL": "2"}
#: distributions that provide the ``tensorflow`` module (the CPU build is ``tensorflow-cpu``)
TF_DISTRIBUTIONS = ("tensorflow", "tensorflow-cpu", "tensorflow-gpu", "tensorflow-intel")


def tensorflow_version() -> str:
    """From package metadata, so that recording versions never imports TensorFlow."""
    from importlib.metadata import PackageNotFoundError, version

    for dist in TF_DISTRIBUTIONS:
        try:
            return version(dist)
        except PackageNotFoundError:
            continue
    import tensorflow as tf

    return tf.__version__


#: XLA's CPU kernels (tf.xla's compiled steps) run Eigen on a thread pool of their own, sized by
#: the machine, not by TF's intra-op setting; this flag makes them single-threaded. Without it a
#: tf.xla float64 step gave other bits in a process where JAX had set it first (equiv-jax does,
#: for --threads 1) than in one of its own, and would depend on the core count.
XLA_SINGLE_THREAD = "--xla_cpu_multi_thread_eigen=false"


def add_xla_flag(flag: str) -> None:
    """Append ``flag`` to XLA_FLAGS unless there; XLA reads it when it first compiles."""
    current = os.environ.get("XLA_FLAGS", "").split()
    if flag not in current:
        os.environ["XLA_FLAGS"] = " ".join([*current, flag])


def logging_defaults(environ: Mapping[str, str]) -> dict[str, str]:
    """The logging variables to set before TF is imported: those ``environ`` lacks."""
    return {key: value for key, value in _QUIET.items() if key not in environ}


def configure_tensorflow(threads: int) -> None:
    """Deterministic kernels and ``threads`` intra/inter-op threads, as far as TF allows."""
    os.environ.update(logging_defaults(os.environ))
    if threads == 1:
        add_xla_flag(XLA_SINGLE_THREAD)
    import tensorflow as tf

    tf.config.experimental.enable_op_determinism()
    threading = tf.config.threading
    for get, set_ in (
        (threading.get_intra_op_parallelism_threads, threading.set_intra_op_parallelism_threads),
        (threading.get_inter_op_parallelism_threads, threading.set_inter_op_parallelism_threads),
    ):
        if get() == threads:
            continue
        try:
            set_(threads)
        except RuntimeError:  # TF already initialised in this process: its pools are fixed
            warnings.warn(
                f"TensorFlow was initialised before equiv configured it: {set_.__name__} "
                f"stays {get() or 'default'} instead of {threads}",
                RuntimeWarning,
                stacklevel=2,
            )


#: What ``import tensorflow`` pulls in only because it is installed, measured with ``python -X
#: importtime`` (TF 2.21, Keras 3.15): jax, from TF Lite's converter (``tensorflow.lite.python.
#: util``, in a try/except ImportError), and matplotlib, from Keras's image gallery utilities
#: (``keras.src.visualization``, likewise optional). Together 2-6 s and ~150 MB per TF process.
TF_OPTIONAL_IMPORTS = ("jax", "matplotlib")


class TFBackend(Backend):
    framework = "tensorflow"
    impl_file = "tf_impl"
    requires = ("tensorflow",)
    worker_hides = TF_OPTIONAL_IMPORTS

    def __init__(self) -> None:
        super().__init__()
        self.threads = os.cpu_count() or 1

    def versions(self) -> dict[str, str]:
        return {"tensorflow": tensorflow_version()}

    def configure(self, threads: int) -> None:
        self.threads = threads
        configure_tensorflow(threads)

    def to_native(self, array: np.ndarray):
        import tensorflow as tf

        return tf.constant(np.array(array, copy=True))

    def to_numpy(self, value: Any) -> np.ndarray:
        if hasattr(value, "numpy"):
            value = value.numpy()
        return np.array(value, copy=True)


class TFEager(TFBackend):
    id = "tf.eager"
    mode = "eager"


class TFFunction(TFBackend):
    id = "tf.function"
    mode = "function"
    compiled = True
    jit_compile = False

    def transform(self, fn: Callable) -> Callable:
        import tensorflow as tf

        @functools.wraps(fn)
        def counted(*args, **kwargs):
            self.traces += 1  # a Python side effect: runs when TF traces, not when it replays
            return fn(*args, **kwargs)

        return tf.function(counted, jit_compile=self.jit_compile)


class TFXla(TFFunction):
    id = "tf.xla"
    mode = "xla"
    jit_compile = True


class TFV1Graph(TFBackend):
    """The step is a graph built once (one trace) and replayed by ``Session.run``; the case code
    builds the graph itself, since placeholders and ``tf.gradients`` are its own idiom."""

    id = "tf.v1graph"
    mode = "v1graph"
    compiled = True
    case_helpers = ("new_graph", "session")

    def to_native(self, array: np.ndarray) -> np.ndarray:
        return np.array(array, copy=True)  # a Session is fed and answers numpy arrays

    def new_graph(self):
        """A fresh ``tf.Graph`` for one trainer: its ops never touch eager mode elsewhere."""
        import tensorflow as tf

        self.traces += 1
        return tf.Graph()

    def session(self, graph):
        """A ``tf.compat.v1.Session`` on ``graph`` with this backend's thread counts (the ones
        every other backend of the run gets)."""
        import tensorflow as tf

        config = tf.compat.v1.ConfigProto(
            intra_op_parallelism_threads=self.threads,
            inter_op_parallelism_threads=self.threads,
        )
        return tf.compat.v1.Session(graph=graph, config=config)


def backends() -> list[Backend]:
    return [TFEager(), TFFunction(), TFXla(), TFV1Graph()]
