"""Wall-clock budgets for SymPy work that may not terminate quickly (solve, simplify, printing).

Two kinds, one mechanism:

* a **local** budget (:func:`time_budget`, :func:`attempt`) bounds one search or simplification;
  when it runs out the caller keeps a plainer form (:class:`BudgetExceeded` is caught there);
* a **total** budget (:func:`total_budget`) bounds a whole piece of work (deriving and printing a
  spec); when it runs out the work stops with :class:`~symgrad.errors.BudgetError`, which no
  local budget catches. A local budget never outlasts an enclosing one, and when a local budget
  is cut short because the total ran out, the total's error is raised (so a shortened search
  never yields a different, cached, result).

The clock interrupts running Python code with ``SIGALRM``, which only the main thread receives.
In another thread the budgets are checked only when a budgeted step starts
(:func:`check_total`); :mod:`symgrad.runtime.bounded` therefore runs budgeted work started off
the main thread in a child process, whose main thread has the clock.

The default total is :data:`DEFAULT_TOTAL_SECONDS` seconds, overridden by the environment
variable ``SYMGRAD_TIME_BUDGET`` (seconds) or the ``seconds`` argument.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from dataclasses import dataclass

from ..errors import BudgetError

#: The total budget of one derivation with its printing, in seconds.
DEFAULT_TOTAL_SECONDS = 60.0
#: The environment variable that overrides :data:`DEFAULT_TOTAL_SECONDS`.
TOTAL_ENV = "SYMGRAD_TIME_BUDGET"
#: After the total runs out, how often the error is raised again (SymPy swallows some errors).
_REFIRE_SECONDS = 0.05

__all__ = [
    "DEFAULT_TOTAL_SECONDS",
    "TOTAL_ENV",
    "BudgetError",
    "BudgetExceeded",
    "attempt",
    "check_total",
    "clock_available",
    "remaining",
    "time_budget",
    "total_budget",
    "total_seconds",
]


class BudgetExceeded(Exception):
    """Raised inside a :func:`time_budget` block when its (local) time is up."""


@dataclass
class _Frame:
    deadline: float  # time.monotonic()
    seconds: float
    total: bool
    what: str
    foreign: bool = False  # a timer someone else had set before our first budget


class _State(threading.local):
    def __init__(self) -> None:
        self.stack: list[_Frame] = []
        self.previous_handler = None
        self.previous_left = 0.0
        self.previous_started = 0.0


_state = _State()
_HERE = os.path.normcase(os.path.abspath(__file__))


def clock_available() -> bool:
    """Whether budgets can interrupt running code here (the main thread, with ``setitimer``)."""
    return hasattr(signal, "setitimer") and threading.current_thread() is threading.main_thread()


def total_seconds(seconds: float | None = None) -> float:
    """The total budget: ``seconds``, else ``$SYMGRAD_TIME_BUDGET``, else the default."""
    if seconds is not None:
        value, source = seconds, "the time budget"
    else:
        text = os.environ.get(TOTAL_ENV, "").strip()
        if not text:
            return DEFAULT_TOTAL_SECONDS
        source = f"{TOTAL_ENV}={text!r}"
        try:
            value = float(text)
        except ValueError:
            raise BudgetError(f"{source}: expected a number of seconds, such as 60") from None
    if not (value > 0 and value < 1e7):  # also refuses NaN
        raise BudgetError(f"{source}: expected a positive number of seconds, got {value!r}")
    return float(value)


def remaining() -> float | None:
    """Seconds left of the innermost total budget of this thread (None when there is none)."""
    totals = [f.deadline for f in _state.stack if f.total]
    return None if not totals else max(0.0, min(totals) - time.monotonic())


def _total_message(frame: _Frame) -> str:
    return (
        f"{frame.what} ran past its {frame.seconds:g} s time budget; simplify the custom "
        f"expressions, or raise the budget with {TOTAL_ENV}=SECONDS"
    )


def check_total() -> None:
    """Raise :class:`BudgetError` when a total budget of this thread has run out."""
    now = time.monotonic()
    for frame in _state.stack:
        if frame.total and frame.deadline <= now:
            raise BudgetError(_total_message(frame))


def _ours_or_unsafe(frame) -> bool:
    """Whether an exception raised now would be lost or would break our own bookkeeping.

    Our own code (entering and leaving a budget) must not be interrupted, and an exception
    raised inside a garbage-collector or weakref callback, or a ``__del__``, is swallowed by
    Python ("exception ignored"): wait until we are out of it.
    """
    f = frame
    for depth in range(3):  # such a callback is the innermost code when the signal lands
        if f is None:
            break
        code = f.f_code
        if depth == 0 and os.path.normcase(code.co_filename) == _HERE:
            return True
        if code.co_name == "__del__" or code.co_name.endswith("callback"):
            return True
        f = f.f_back
    return False


def _arm(now: float | None = None) -> None:
    """Set the timer to the earliest deadline on the stack (at least a tick away)."""
    now = time.monotonic() if now is None else now
    earliest = min(f.deadline for f in _state.stack)
    signal.setitimer(signal.ITIMER_REAL, max(earliest - now, 1e-3))


def _on_alarm(signum, frame) -> None:  # noqa: ARG001
    stack = _state.stack
    if not stack:
        return
    if _ours_or_unsafe(frame):
        signal.setitimer(signal.ITIMER_REAL, 0.005)
        return
    now = time.monotonic()
    if stack[0].foreign and stack[0].deadline <= now:
        # the earlier timer's time: hand the signal to its handler, once
        del stack[0]
        _state.previous_left = 0.0
        handler = _state.previous_handler
        if stack:
            _arm(now)
        if callable(handler):
            handler(signum, frame)
        return
    for f in stack:  # the outermost expired total wins: no local budget may catch it
        if f.total and f.deadline <= now:
            signal.setitimer(signal.ITIMER_REAL, _REFIRE_SECONDS)
            raise BudgetError(_total_message(f))
    for f in reversed(stack):
        if f.deadline <= now:
            # raised again soon if a broad ``except`` in SymPy swallows it
            signal.setitimer(signal.ITIMER_REAL, _REFIRE_SECONDS)
            raise BudgetExceeded(f"over the {f.seconds:g} s budget")
    _arm(now)  # woke early


class _Budget:
    """The context manager behind :func:`time_budget` and :func:`total_budget`."""

    def __init__(self, seconds: float, total: bool, what: str, left: float | None = None) -> None:
        self.seconds = seconds
        self.left = seconds if left is None else min(left, seconds)
        self.total = total
        self.what = what
        self.frame: _Frame | None = None
        self.clock = False

    def __enter__(self) -> _Budget:
        check_total()
        if self.seconds <= 0 and not self.total:
            return self  # no local limit
        self.clock = clock_available()
        now = time.monotonic()
        self.frame = _Frame(now + self.left, self.seconds, self.total, self.what)
        stack = _state.stack
        if self.clock and not stack:
            # the first budget of the stack takes the signal over; a timer someone else set
            # (pytest-timeout, ...) is kept as the bottom deadline and restored afterwards
            _state.previous_handler = signal.getsignal(signal.SIGALRM)
            _state.previous_left, _ = signal.getitimer(signal.ITIMER_REAL)
            _state.previous_started = now
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, _on_alarm)
            if _state.previous_left:
                left = _state.previous_left
                stack.append(_Frame(now + left, left, False, "", foreign=True))
        stack.append(self.frame)
        if self.clock:
            _arm(now)
        return self

    def __exit__(self, *exc) -> None:
        if self.frame is None:
            return
        stack = _state.stack
        if self.clock:
            signal.setitimer(signal.ITIMER_REAL, 0)
        if self.frame in stack:
            stack.remove(self.frame)
        if not self.clock:
            return
        if any(not f.foreign for f in stack):
            _arm()
            return
        # the last of our budgets: give the signal back, and any earlier timer what it has left
        stack.clear()
        signal.signal(signal.SIGALRM, _state.previous_handler or signal.SIG_DFL)
        if _state.previous_left:
            used = time.monotonic() - _state.previous_started
            signal.setitimer(signal.ITIMER_REAL, max(_state.previous_left - used, 1e-3))
        _state.previous_handler = None
        _state.previous_left = 0.0


def time_budget(seconds: float) -> _Budget:
    """Interrupt the block with :class:`BudgetExceeded` after ``seconds`` (a local budget).

    Interrupts running code in the main thread only; elsewhere the block runs without a limit
    (an expired total budget is still reported when the block starts). Budgets nest: an inner
    budget never extends an outer one.
    """
    return _Budget(seconds, False, "")


def total_budget(
    seconds: float | None = None, what: str = "the derivation", left: float | None = None
) -> _Budget:
    """Stop the block with :class:`~symgrad.errors.BudgetError` after ``seconds`` in all.

    ``seconds`` defaults to ``$SYMGRAD_TIME_BUDGET``, else :data:`DEFAULT_TOTAL_SECONDS`.
    ``what`` starts the error message (``"deriving xor"``); ``left``, when given, is what is
    left of the budget (part of it was spent elsewhere): the block stops after that.
    """
    return _Budget(total_seconds(seconds), True, what, left)


def attempt(seconds: float, fn, *args, default=None, **kwargs):
    """Return ``fn(*args, **kwargs)``, or ``default`` when it exceeds its budget or fails.

    An exhausted total budget is not a failure of ``fn``: its error propagates.
    """
    try:
        with time_budget(seconds):
            return fn(*args, **kwargs)
    except BudgetExceeded:
        return default
    except (ValueError, TypeError, NotImplementedError, ZeroDivisionError, RecursionError):
        return default
