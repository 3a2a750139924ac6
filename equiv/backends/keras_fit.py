"""``model.fit`` one batch at a time, so that the harness can compare it step by step.

``fit`` owns its training loop: it batches the data, runs its compiled train step and calls
callbacks, and returns only when every epoch is done. The harness compares in lockstep, one
step at a time. ``SteppedFit`` runs ``fit`` in a thread of its own whose callback waits, before
each batch, until the harness asks for the next step, and hands back what it observed after the
batch (parameters from the model, the loss from ``fit``'s logs). Nothing of ``fit`` is
replaced: its data adapter, batching, train function and optimizer run as in a user's call.

The loss ``fit`` logs is a running mean over the epoch (its loss tracker is a ``Mean`` weighted
by batch size). The callback resets the model's metrics before each batch, so the logged loss is
that batch's: total / count = (loss * n) / n, which is the batch's loss exactly when n is a
power of two (the cases' batches of 8 and 4) and within one rounding otherwise.

When a ``fit`` call has run all its epochs, the thread calls ``fit`` again (the next epochs),
so a trainer can take more steps than one call's worth, as the benchmark does. ``close`` (also
run when the trainer is garbage-collected) ends the thread: the waiting callback raises.
"""

from __future__ import annotations

import queue
import threading
import weakref
from collections.abc import Callable
from typing import Any

#: how long a step waits for ``fit`` to finish a batch before it gives up
STEP_TIMEOUT_S = 600.0


class FitStopped(Exception):
    """Raised inside ``fit`` (from the waiting callback) to end a stepped fit."""


class SteppedFit:
    """Runs ``start_fit(callback)`` (which calls ``model.fit(..., callbacks=[callback])``) in a
    thread, one batch per ``step()``; ``observe(logs)`` is what a step returns."""

    def __init__(self, start_fit: Callable[[Any], Any], observe: Callable[[dict], Any]):
        self._go = threading.Semaphore(0)
        self._results: queue.SimpleQueue = queue.SimpleQueue()
        self._stop = threading.Event()
        callback = _lockstep_callback(self._go, self._stop, self._results, observe)
        self._thread = threading.Thread(
            target=_fit_forever,
            args=(start_fit, callback, self._stop, self._results),
            name="equiv-stepped-fit",
            daemon=True,
        )
        self._started = False

    def step(self) -> Any:
        """Let ``fit`` run one batch; what ``observe`` made of it."""
        if self._stop.is_set():
            raise RuntimeError("this stepped fit was closed")
        if not self._started:
            self._thread.start()
            self._started = True
        self._go.release()
        try:
            kind, payload = self._results.get(timeout=STEP_TIMEOUT_S)
        except queue.Empty:
            raise TimeoutError(f"model.fit ran no batch in {STEP_TIMEOUT_S:.0f} s") from None
        if kind == "error":
            raise payload
        return payload

    def close(self) -> None:
        self._stop.set()
        self._go.release()
        if self._started and self._thread is not threading.current_thread():
            self._thread.join(timeout=30)


def stepped_fit(owner: object, start_fit, observe) -> SteppedFit:
    """A ``SteppedFit`` closed when ``owner`` (the trainer) is collected, so that a dropped
    trainer leaves no thread waiting inside ``fit``."""
    fit = SteppedFit(start_fit, observe)
    weakref.finalize(owner, fit.close)
    return fit


def _fit_forever(start_fit, callback, stop: threading.Event, results) -> None:
    try:
        while not stop.is_set():
            start_fit(callback)
    except FitStopped:
        pass
    except BaseException as exc:  # handed to the step that waits for it
        results.put(("error", exc))


def _lockstep_callback(go, stop, results, observe):
    import keras

    class Lockstep(keras.callbacks.Callback):
        def on_train_batch_begin(self, batch, logs=None):
            go.acquire()
            if stop.is_set():
                raise FitStopped
            self.model.reset_metrics()  # the next logged loss is this batch's alone

        def on_train_batch_end(self, batch, logs=None):
            try:
                results.put(("step", observe(logs or {})))
            except BaseException as exc:
                results.put(("error", exc))
                raise FitStopped from exc

    return Lockstep()
