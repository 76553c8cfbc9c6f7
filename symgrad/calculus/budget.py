"""A wall-clock budget for SymPy work that may not terminate quickly (solve, simplify)."""

from __future__ import annotations

import contextlib
import signal
import threading
import time
from collections.abc import Iterator


class BudgetExceeded(Exception):
    """Raised inside a :func:`time_budget` block when its time is up."""


@contextlib.contextmanager
def time_budget(seconds: float) -> Iterator[None]:
    """Interrupt the block with :class:`BudgetExceeded` after ``seconds``.

    Uses ``SIGALRM`` in the main thread (the only place Python can interrupt running
    SymPy code); elsewhere the block runs without a limit. Budgets nest: an inner
    budget never extends an outer one.
    """
    main = threading.current_thread() is threading.main_thread()
    if not main or not hasattr(signal, "setitimer") or seconds <= 0:
        yield
        return
    previous_handler = signal.getsignal(signal.SIGALRM)
    previous_left, _ = signal.getitimer(signal.ITIMER_REAL)

    def _raise(signum, frame):  # noqa: ARG001
        # An exception raised inside a garbage-collector or weakref callback, or a __del__, is
        # swallowed by Python ("exception ignored"): wait until we are out of it.
        f = frame
        for _ in range(3):  # such a callback is the innermost code when the signal lands
            if f is None:
                break
            name = f.f_code.co_name
            if name == "__del__" or name.endswith("callback"):
                signal.setitimer(signal.ITIMER_REAL, 0.01)
                return
            f = f.f_back
        raise BudgetExceeded(f"over the {seconds:g} s budget")

    use = seconds if previous_left == 0 else min(seconds, previous_left)
    signal.signal(signal.SIGALRM, _raise)
    signal.setitimer(signal.ITIMER_REAL, use)
    started = time.monotonic()
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous_handler)
        if previous_left:
            # Give the outer budget back what it had left, less what we used (at least a tick).
            used = time.monotonic() - started
            signal.setitimer(signal.ITIMER_REAL, max(previous_left - used, 1e-3))


def attempt(seconds: float, fn, *args, default=None, **kwargs):
    """Return ``fn(*args, **kwargs)``, or ``default`` when it exceeds its budget or fails."""
    try:
        with time_budget(seconds):
            return fn(*args, **kwargs)
    except BudgetExceeded:
        return default
    except (ValueError, TypeError, NotImplementedError, ZeroDivisionError, RecursionError):
        return default
