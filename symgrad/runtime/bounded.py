"""Deriving and printing within one budget, from any thread.

A spec's custom expressions can make SymPy work for minutes and print megabytes. The text
producers here (the derivation as LaTeX, markdown, text or HTML; the generated module) give the
whole job one time budget and cap what it prints:

* time: :data:`~symgrad.calculus.budget.DEFAULT_TOTAL_SECONDS` (60 s) in all, or
  ``$SYMGRAD_TIME_BUDGET``, or the ``budget`` argument;
* size: :data:`MAX_MODULE_BYTES` of generated source, :data:`MAX_DERIVATION_BYTES` of LaTeX,
  markdown or text, :data:`MAX_PAGE_BYTES` of HTML;
* memory, off the main thread: :data:`CHILD_MEMORY_BYTES` of address space (or
  ``$SYMGRAD_MAX_MEMORY`` when that is less).

In the main thread the work runs in this process, interrupted by ``SIGALRM`` when the time is
up. Python delivers signals to the main thread only, so work started from another thread (a web
server, a notebook worker, a thread pool) runs in a child process instead (a fresh interpreter,
``python -I``, with this process's ``sys.path``), which has its own main thread and clock and
is killed if it outlives the budget. Its result is cached here by spec hash, so asking again is
cheap. Either way a budget that runs out raises :class:`~symgrad.errors.BudgetError` and an
oversized result :class:`~symgrad.errors.LimitError`, each with one line saying what to change.
"""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
import threading
import time
from collections import OrderedDict
from typing import TYPE_CHECKING

from ..calculus.budget import TOTAL_ENV, clock_available, total_budget, total_seconds
from ..errors import BudgetError, ExpressionError, LimitError, SpecError, SymgradError
from ..spec import Spec, load_spec, spec_from_dict
from .limits import format_bytes, memory_limit_bytes

if TYPE_CHECKING:
    from ..derivation import Derivation

#: Largest generated module, in bytes of UTF-8 (the examples need under 100 kB).
MAX_MODULE_BYTES = 2_000_000
#: Largest derivation as LaTeX, markdown or text, in bytes (the examples need under 100 kB).
MAX_DERIVATION_BYTES = 1_000_000
#: Largest HTML page (it holds the derivation as MathML, the generated module and a picture).
MAX_PAGE_BYTES = 8_000_000
#: Address space of the child process that works for another thread.
CHILD_MEMORY_BYTES = 4 * 2**30
#: Seconds the child may take beyond the budget to start up and to report before it is killed.
CHILD_GRACE_SECONDS = 5.0
#: Formats of :func:`derivation_text`.
FORMATS = ("latex", "markdown", "text", "html")
#: the notations a derivation can be printed in (``auto``: seed 002's for a node graph); the
#: same as ``derivation.nodes.NOTATIONS``, not imported from there so that this module (and the
#: CLI's argument checks) does not load SymPy (tests/test_graph.py checks they agree)
NOTATIONS = ("auto", "symgrad", "seed002")

_CACHE: OrderedDict[tuple, str] = OrderedDict()
_CACHE_SIZE = 64
_CACHE_LOCK = threading.Lock()


def _cap(text: str, kind: str, fmt: str) -> None:
    limit = (
        MAX_MODULE_BYTES
        if kind == "module"
        else (MAX_PAGE_BYTES if fmt == "html" else MAX_DERIVATION_BYTES)
    )
    size = len(text.encode("utf-8"))
    if size > limit:
        what = "the generated module" if kind == "module" else f"the derivation ({fmt})"
        raise LimitError(
            f"{what} would be {format_bytes(size)}, more than the {format_bytes(limit)} "
            "limit; simplify the custom expressions"
        )


def _produce(
    kind: str,
    spec: Spec,
    fmt: str,
    standalone: bool,
    spec_file: str | None,
    producer: str | None = None,
    notation: str = "auto",
) -> str:
    """The text itself (no budget here: the callers set it).

    ``producer`` ("symgrad.module:function", called as ``function(spec, spec_file=...)``) lets a
    module above this one (the HTML page) run its work under the same budget without this module
    importing it; the child process resolves it by name.
    """
    if producer is not None:
        module, _, name = producer.partition(":")
        if not module.startswith("symgrad."):
            raise ValueError(f"producer {producer!r} is not part of symgrad")
        return getattr(importlib.import_module(module), name)(spec, spec_file=spec_file)
    if kind == "module":
        from ..codegen import generate_source

        return generate_source(spec, spec_file=spec_file)
    from ..derivation import derive
    from ..derivation.nodes import apply_notation
    from ..printers.render import render

    return render(apply_notation(derive(spec), notation), fmt, standalone=standalone)


def _what(kind: str, spec: Spec) -> str:
    return f"{'generating the module of' if kind == 'module' else 'deriving'} {spec.name!r}"


def _run(
    kind: str,
    spec: Spec | str | os.PathLike,
    *,
    fmt: str = "latex",
    standalone: bool = False,
    spec_file: str | None = None,
    budget: float | None = None,
    producer: str | None = None,
    notation: str = "auto",
) -> str:
    if not isinstance(spec, Spec):
        spec = load_spec(spec)
    seconds = total_seconds(budget)
    if clock_available():
        with total_budget(seconds, _what(kind, spec)):
            text = _produce(kind, spec, fmt, standalone, spec_file, producer, notation)
        _cap(text, kind, fmt)
        return text
    key = (kind, spec.digest(), fmt, standalone, spec_file, producer, notation)
    with _CACHE_LOCK:
        if key in _CACHE:
            _CACHE.move_to_end(key)
            return _CACHE[key]
    text = _in_child(kind, spec, fmt, standalone, spec_file, seconds, producer, notation)
    with _CACHE_LOCK:
        _CACHE[key] = text
        while len(_CACHE) > _CACHE_SIZE:
            _CACHE.popitem(last=False)
    return text


def module_source(
    spec: Spec | str | os.PathLike, spec_file: str | None = None, *, budget: float | None = None
) -> str:
    """The generated trainer module of ``spec``, derived and printed within ``budget`` seconds.

    Raises:
        BudgetError: the work ran past ``budget`` (default ``$SYMGRAD_TIME_BUDGET`` or 60 s), or
            past the child's memory limit.
        LimitError: the module would be larger than :data:`MAX_MODULE_BYTES`.
    """
    return _run("module", spec, spec_file=spec_file, budget=budget)


def derivation_text(
    spec: Spec | str | os.PathLike,
    fmt: str = "latex",
    *,
    standalone: bool = False,
    spec_file: str | None = None,
    budget: float | None = None,
    producer: str | None = None,
    notation: str = "auto",
) -> str:
    """The derivation of ``spec`` as ``latex``, ``markdown``, ``text`` or ``html``, within budget.

    ``notation="seed002"`` puts the network traced node by node in seed 002's notation first
    (:mod:`symgrad.derivation.nodes`).

    HTML needs its ``producer`` (see :func:`_produce`); :func:`symgrad.runtime.page.bounded_page`
    passes it.

    Raises:
        BudgetError: as :func:`module_source`.
        LimitError: the text would be larger than :data:`MAX_DERIVATION_BYTES`
            (:data:`MAX_PAGE_BYTES` for HTML).
    """
    if fmt not in FORMATS:
        raise ValueError(f"fmt must be one of {', '.join(FORMATS)}, not {fmt!r}")
    if fmt == "html" and producer is None:
        raise ValueError("HTML is produced by symgrad.runtime.page.bounded_page")
    if notation not in NOTATIONS:
        raise ValueError(f"notation must be one of {', '.join(NOTATIONS)}, not {notation!r}")
    return _run(
        "derivation",
        spec,
        fmt=fmt,
        standalone=standalone,
        spec_file=spec_file,
        budget=budget,
        producer=producer,
        notation=notation,
    )


# ---------------------------------------------------------------------------------------
# The library's entry points: ``symgrad.derive`` and ``symgrad.generate_source``


def derive(spec: Spec | str | os.PathLike, *, budget: float | None = None) -> Derivation:
    """The :class:`~symgrad.derivation.Derivation` of ``spec`` (a Spec or a YAML path), derived
    within ``budget`` seconds (default ``$SYMGRAD_TIME_BUDGET`` or 60 s) from any thread.

    In the main thread the derivation runs here under the ``SIGALRM`` budget. In another thread
    it is first derived and printed in a child process with the budget and the memory limit (the
    SymPy objects themselves do not travel between processes: their pickles lose the order
    SymPy prints them in); only when that finished in time is the same deterministic work done
    here, so a spec that would run away is refused before it can take this process. The child's
    result is cached by spec hash: a second call for the same spec only derives here.

    Raises:
        BudgetError: the work ran past ``budget``, or past the child's memory limit.
        LimitError: its printed form would be larger than :data:`MAX_DERIVATION_BYTES`.
    """
    from ..derivation import derive as _derive

    if not isinstance(spec, Spec):
        spec = load_spec(spec)
    if clock_available():
        with total_budget(total_seconds(budget), _what("derivation", spec)):
            return _derive(spec)
    _run("derivation", spec, fmt="text", budget=budget)  # bounded proof that it terminates
    return _derive(spec)


def generate_source(
    spec: Spec | str | os.PathLike, spec_file: str | None = None, *, budget: float | None = None
) -> str:
    """The trainer module's source for ``spec`` (a Spec or a YAML path), derived and printed
    within ``budget`` seconds from any thread (see :func:`module_source`); ``spec_file`` is the
    path the module's header names (default: the path given, else ``<name>.yaml``)."""
    from ..codegen.generate import spec_and_file

    return module_source(*spec_and_file(spec, spec_file), budget=budget)


# ---------------------------------------------------------------------------------------
# The child process

_ERRORS = {
    "SpecError": lambda m: SpecError("", m),
    "ExpressionError": ExpressionError,
    "BudgetError": BudgetError,
    "LimitError": LimitError,
}


def _child_memory() -> int:
    return max(2**30, min(CHILD_MEMORY_BYTES, memory_limit_bytes()))


def _in_child(
    kind: str,
    spec: Spec,
    fmt: str,
    standalone: bool,
    spec_file: str | None,
    seconds: float,
    producer: str | None = None,
    notation: str = "auto",
) -> str:
    memory = _child_memory()
    request = {
        "kind": kind,
        "spec": spec.canonical(),
        "fmt": fmt,
        "standalone": standalone,
        "spec_file": spec_file,
        "producer": producer,
        "notation": notation,
        "deadline": time.time() + seconds,  # wall clock: the child's start-up counts
        "seconds": seconds,
        "memory": memory,
    }
    env = dict(os.environ)
    # one BLAS thread: the address-space limit counts every thread's reserved stack and buffers
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        env[var] = "1"
    env.pop(TOTAL_ENV, None)  # the child gets its budget in the request
    path = [p for p in sys.path if isinstance(p, str)]
    started = time.monotonic()
    code = "from symgrad.runtime.bounded import _child_main; _child_main()"
    boot = f"import sys, json; sys.path[:] = json.loads(sys.argv[1]); {code}"
    try:
        proc = subprocess.Popen(  # noqa: S603 - our own interpreter and code
            [sys.executable, "-I", "-c", boot, json.dumps(path)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
        )
    except OSError as exc:
        raise BudgetError(
            f"{_what(kind, spec)}: cannot start a child process to bound it ({exc.strerror}); "
            "call from the main thread instead"
        ) from None
    try:
        out, err = proc.communicate(
            json.dumps(request).encode(), timeout=seconds + CHILD_GRACE_SECONDS
        )
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise BudgetError(
            f"{_what(kind, spec)} ran past its {seconds:g} s time budget (the child process was "
            f"stopped after {time.monotonic() - started:.0f} s); simplify the custom "
            f"expressions, or raise the budget with {TOTAL_ENV}=SECONDS"
        ) from None
    try:
        reply = json.loads(out.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        reply = None
    if not isinstance(reply, dict):
        lines = err.decode("utf-8", "replace").strip().splitlines()
        last = lines[-1] if lines else f"exit status {proc.returncode}"
        if "MemoryError" in last or proc.returncode in (-9, 137):
            raise BudgetError(
                f"{_what(kind, spec)} ran out of its {format_bytes(memory)} memory budget"
            )
        raise RuntimeError(f"internal error: the child process failed: {last}")
    if "text" in reply:
        return reply["text"]
    make = _ERRORS.get(reply.get("error"), SymgradError)
    if reply.get("error") == "internal":
        raise RuntimeError(reply.get("message", "internal error in the child process"))
    raise make(reply.get("message", "failed"))


def _child_main() -> None:  # pragma: no cover - runs in the child process
    """Read a request on stdin, do the work under the budget, write the reply on stdout."""
    request = json.loads(sys.stdin.buffer.read().decode("utf-8"))
    try:
        import resource

        memory = int(request["memory"])
        resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
    except (ImportError, ValueError, OSError):
        pass
    kind, seconds = request["kind"], float(request["seconds"])
    what = f"{'generating the module' if kind == 'module' else 'deriving'}"
    try:
        spec = spec_from_dict(request["spec"])
        what = _what(kind, spec)
        left = float(request["deadline"]) - time.time()
        if left <= 0:
            raise BudgetError(
                f"{what} ran past its {seconds:g} s time budget (starting the child process "
                f"took it all); raise the budget with {TOTAL_ENV}=SECONDS"
            )
        with total_budget(seconds, what, left=left):
            text = _produce(
                kind,
                spec,
                request["fmt"],
                request["standalone"],
                request["spec_file"],
                request.get("producer"),
                request.get("notation", "auto"),
            )
        _cap(text, kind, request["fmt"])
        reply = {"text": text}
    except SymgradError as exc:
        reply = {"error": type(exc).__name__, "message": str(exc)}
    except MemoryError:
        reply = {
            "error": "BudgetError",
            "message": f"{what} ran out of its "
            f"{format_bytes(int(request['memory']))} memory budget; simplify the custom "
            "expressions",
        }
    except RecursionError:
        reply = {"error": "LimitError", "message": "the expressions are nested too deeply"}
    except Exception as exc:  # noqa: BLE001 - reported to the parent as an internal error
        reply = {"error": "internal", "message": f"internal error: {type(exc).__name__}: {exc}"}
    sys.stdout.write(json.dumps(reply))
    sys.stdout.flush()
