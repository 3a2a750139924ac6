"""Support for case code: the scaffolding around the idiom under test, one module per framework.

A case's implementation file should read as the port it tests: its model, its training step,
the autograd call, and ``build``. What every implementation of a framework does besides
(turning the canonical state into native values, the TF1 ``Session`` plumbing, loading Keras
weights, reporting a step in the canonical layout) is written once here, named like the
implementation files it serves:

- ``equiv.support.records``: a ``StepRecord`` from a step's native values (any framework);
- ``equiv.support.draws``: the data and initial parameters that specs draw (numpy only);
- ``equiv.support.torch``, ``equiv.support.tf``, ``equiv.support.keras``: trainer bases and
  helpers for each framework. Each imports its framework (or is only ever imported by case code
  of that framework), so this package imports none of them: ``import equiv.support`` and the
  two neutral modules work without any framework installed.

A planted bug (``equiv.quality.mutants``) is a change to a case file, never to this package: the
code
here is the harness's, the code in the case files is the port under test.
"""
