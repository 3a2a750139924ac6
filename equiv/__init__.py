"""equiv: a cross-framework equivalence test harness.

The subpackages are the pipeline, in the order data flows through it (each imports only those
before it; ``tests/test_architecture.py`` holds the order):

- ``contract``: what a case, a backend, a trainer and a step record are;
- ``reference``: the numpy ground truth (layers, optimizers, rounding, the reference trainer);
- ``backends``: one adapter per framework, found through entry points;
- ``support``: scaffolding for the case code of each framework;
- ``tolerance``: per-step tolerances derived from the reference's own rounding, and their store;
- ``checking``: comparison with the reference, verdicts, and where a failure starts;
- ``results``: the parity document (JSON), the run's journal and its durations;
- ``report``: the HTML report, from the parity document alone;
- ``running``: a cell, the matrix, worker processes, benchmarks, a run's outputs;
- ``quality``: equiv checking itself: planted bugs, seed sweeps, conformance kits;
- ``cli``: the ``equiv`` command and the pytest plugin.

The modules at the top level (``equiv.case``, ``equiv.records``, ``equiv.layers``, ...) are
the public API: stable import paths for case and backend packages (``docs/api.md``).
Importing this package imports no deep-learning framework: backends import theirs lazily.
"""

__version__ = "0.1.0"
