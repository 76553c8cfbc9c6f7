"""The benchmark harness: symgrad's generated trainers against hand-written code and peers.

Run from the repository root::

    python -m benchmarks.peers --quick     # smoke run, seconds; writes results/peers_quick.*
    python -m benchmarks.peers             # full run, a few minutes on 2 cores
    python -m benchmarks.peers --generated mypkg.mymod:generated_epoch   # add the generated one
    python -m benchmarks.peers --generated benchmarks.symgrad_contestant:generated_epoch
        # symgrad: rows "generated" (fit(track=False)) and "generated fit()" (default metrics)

For every configuration each contestant gets the same data and the same initial parameters
(seeded NumPy), runs one warm-up epoch, then timed epochs from fresh copies; the table gives the
best time, its ratio to the hand NumPy trainer, the matrix-multiply floor over that time, the
nominal GFLOP/s (6 x parameters x samples) and the largest parameter difference from the hand
NumPy trainer after one float64 epoch. Results go to ``benchmarks/results/peers.{json,md}``.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import importlib
import importlib.metadata
import json
import os
import platform
import resource
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .baselines import (
    AutogradContestant,
    Contestant,
    HandNumpyContestant,
    HessianProblem,
    JaxScanContestant,
    JaxStepContestant,
    Net,
    Params,
    SklearnContestant,
    TextbookContestant,
    TorchEagerContestant,
    UnavailableError,
    _import_torch,
    check_hessians,
    copy_params,
    hessian_contestants,
    max_abs_diff,
    set_threads,
)

RESULTS_DIR = Path(__file__).resolve().parent / "results"
REFERENCE = "hand NumPy"


# ---------------------------------------------------------------------------------------------
# Configurations


@dataclass(frozen=True)
class Config:
    """One benchmark configuration: the network, the SGD settings and the data set size.

    ``data`` is ``"mnist"`` (synthetic MNIST-shaped images and one-hot labels) or ``"xor"``
    (the four XOR points, tiled to ``n`` samples so that an epoch has ``n / 4`` steps).
    """

    key: str
    title: str
    net: Net
    n: int
    n_quick: int
    data: str = "mnist"


CONFIGS: tuple[Config, ...] = (
    Config(
        "a",
        "[784, 30, 10] sigmoid/sigmoid, mse, batch 10, float64, eta 3.0",
        Net((784, 30, 10), ("sigmoid", "sigmoid"), "mse", "float64", 10, 3.0),
        n=10_000,
        n_quick=1_000,
    ),
    Config(
        "b",
        "[784, 30, 10] sigmoid/sigmoid, mse, batch 128, float32, eta 3.0",
        Net((784, 30, 10), ("sigmoid", "sigmoid"), "mse", "float32", 128, 3.0),
        n=10_000,
        n_quick=1_000,
    ),
    Config(
        "c",
        "[784, 512, 512, 10] relu/relu/softmax, cross-entropy, batch 256, float32, eta 0.1",
        Net((784, 512, 512, 10), ("relu", "relu", "softmax"), "cross_entropy", "float32", 256, 0.1),
        n=10_000,
        n_quick=600,
    ),
    Config(
        "d",
        "[2, 2, 1] sigmoid/sigmoid (XOR), mse, batch 4, float64, eta 3.0",
        Net((2, 2, 1), ("sigmoid", "sigmoid"), "mse", "float64", 4, 3.0),
        n=4_096,
        n_quick=256,
        data="xor",
    ),
)

#: The Hessian problems: (problem, n samples, n samples in quick mode).
HESSIAN_PROBLEMS: tuple[tuple[HessianProblem, int, int], ...] = (
    (HessianProblem("logistic regression d=100", (100, 1), ("sigmoid",), "log_loss"), 5000, 500),
    (HessianProblem("tanh net [10, 16, 1]", (10, 16, 1), ("tanh", "identity"), "mse"), 1000, 200),
)


def spec_dict(net: Net, name: str = "bench") -> dict[str, Any]:
    """The symgrad spec (as read from ``net.yaml``) describing ``net``'s work."""
    return {
        "name": name,
        "inputs": net.sizes[0],
        "layers": [{"units": u, "activation": a} for u, a in zip(net.sizes[1:], net.activations)],
        "loss": net.loss,
        "optimizer": {"name": "sgd", "learning_rate": net.eta, "batch_size": net.batch_size},
        "dtype": net.dtype,
    }


def make_data(cfg: Config, n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Seeded float64 data ``X (n, n_0)``, ``Y (n, n_L)`` for ``cfg``.

    MNIST-shaped: about 19 % of the 784 "pixels" are ink with a value in (0, 1), the rest 0;
    the labels come from a fixed random linear teacher and are one-hot encoded.
    """
    rng = np.random.default_rng(seed)
    if cfg.data == "xor":
        base_x = np.array([[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0]])
        base_y = np.array([[0.0], [1.0], [1.0], [0.0]])
        reps = -(-n // 4)
        return np.tile(base_x, (reps, 1))[:n].copy(), np.tile(base_y, (reps, 1))[:n].copy()
    d, k = cfg.net.sizes[0], cfg.net.sizes[-1]
    X = rng.random((n, d)) * (rng.random((n, d)) < 0.19)
    teacher = rng.standard_normal((d, k))
    labels = np.argmax(X @ teacher, axis=1)
    return X, np.eye(k)[labels]


def init_params(net: Net, seed: int = 1) -> Params:
    """Seeded float64 initial parameters: ``W ~ N(0, g^2/n_in)``, ``b ~ N(0, 0.1^2)``.

    ``g`` is sqrt(2) for relu layers (He), 1 otherwise (Nielsen's improved initialisation).
    """
    rng = np.random.default_rng(seed)
    params = []
    for n_in, n_out, act in zip(net.sizes[:-1], net.sizes[1:], net.activations):
        gain = np.sqrt(2.0) if act == "relu" else 1.0
        W = rng.standard_normal((n_out, n_in)) * (gain / np.sqrt(n_in))
        b = rng.standard_normal(n_out) * 0.1
        params.append((W, b))
    return params


# ---------------------------------------------------------------------------------------------
# The contestants' registry

#: name -> factory(net) -> Contestant (raising UnavailableError when it cannot run the net).
#: Add an entry to benchmark one more contestant; "hand NumPy" is the reference and runs first.
CONTESTANTS: dict[str, Callable[[Net], Contestant]] = {
    REFERENCE: HandNumpyContestant,
    "textbook loop": TextbookContestant,
    "torch eager": TorchEagerContestant,
    "jax jit step": JaxStepContestant,
    "jax jit epoch (scan)": JaxScanContestant,
    "HIPS autograd": AutogradContestant,
    "sklearn MLP partial_fit": SklearnContestant,
}


def _numba_factory(tracked: bool) -> Callable[[Net], Contestant]:
    """symgrad's Numba backend (``load_trainer(spec, backend="numba")``) through the same hook
    as "generated": ``fit(track=False)``, or the default ``fit()`` when ``tracked``."""

    def factory(net: Net) -> Contestant:
        try:
            import numba  # noqa: F401
        except ImportError:
            raise UnavailableError("numba is not installed (pip install symgrad[numba])") from None
        from .symgrad_contestant import numba_epoch, numba_epoch_tracked

        return GeneratedContestant(net, numba_epoch_tracked if tracked else numba_epoch)

    return factory


#: the Numba backend's rows, right after the reference (the first call compiles, or loads
#: Numba's disk cache, in the warm-up epoch; see ``numba_compile`` in the report)
CONTESTANTS = {
    REFERENCE: CONTESTANTS[REFERENCE],
    "symgrad numba": _numba_factory(False),
    "symgrad numba fit()": _numba_factory(True),
    **CONTESTANTS,
}


def register_contestant(name: str, factory: Callable[[Net], Contestant], first: bool = False):
    """Add (or replace) a contestant; ``first`` puts it right after the reference."""
    CONTESTANTS.pop(name, None)
    if not first:
        CONTESTANTS[name] = factory
        return
    items = list(CONTESTANTS.items())
    CONTESTANTS.clear()
    CONTESTANTS.update(items[:1] + [(name, factory)] + items[1:])


# ==== HOOK: symgrad's generated trainer ======================================================
# The generator's side provides
#     generated_epoch(spec_dict, params, X, Y, batch_size) -> params or None
# which runs one epoch of the spec's SGD over X (n, n_0), Y (n, n_L) in order, on params, a
# list of (W (out, in), b (out,)) NumPy arrays of the spec's dtype, updating them in place
# (or returning the new list). Plug it in with register_generated(generated_epoch), or from the
# command line with --generated module:function. Nothing else in this file needs to change.


class GeneratedContestant(Contestant):
    """symgrad's generated trainer, called through ``generated_epoch``."""

    name = "generated"

    def __init__(self, net: Net, generated_epoch: Callable[..., Any]) -> None:
        super().__init__(net)
        self.generated_epoch = generated_epoch
        self.spec = spec_dict(net, "bench")

    def setup(self, params, X, Y):
        dt = self.net.np_dtype
        return (
            copy_params(params, dt),
            np.ascontiguousarray(X, dtype=dt),
            np.ascontiguousarray(Y, dtype=dt),
        )

    def epoch(self, state):
        params, X, Y = state
        out = self.generated_epoch(self.spec, params, X, Y, self.net.batch_size)
        return (list(out) if out is not None else params), X, Y


def register_generated(generated_epoch: Callable[..., Any]) -> None:
    """Benchmark ``generated_epoch`` as the contestant "generated", and each of its
    ``variants`` (an optional dict: suffix -> function of the same signature, e.g. the default
    ``fit()`` with its metrics beside ``fit(track=False)``) as "generated <suffix>"."""
    variants = getattr(generated_epoch, "variants", None) or {}
    for suffix, fn in reversed(list(variants.items())):
        register_contestant(
            f"generated {suffix}", lambda net, fn=fn: GeneratedContestant(net, fn), first=True
        )
    register_contestant(
        "generated", lambda net: GeneratedContestant(net, generated_epoch), first=True
    )


def _load_callable(target: str) -> Callable[..., Any]:
    module, _, attr = target.partition(":")
    if not module or not attr:
        raise SystemExit(f"--generated wants module:function, got {target!r}")
    return getattr(importlib.import_module(module), attr)


# ---------------------------------------------------------------------------------------------
# Timing and agreement


@dataclass
class Timing:
    """Seconds of the timed runs (after the warm-up) and what the last run returned.

    ``wall`` holds wall-clock seconds (``time.perf_counter``), ``cpu`` the CPU seconds of this
    process, all threads (``time.process_time``), ``others`` the cores that other processes
    kept busy during each run (None where unknown); ``clock`` says which of wall and cpu
    ``runs``, ``best`` and ``median`` report.
    """

    wall: list[float]
    cpu: list[float]
    warmup: list[float]
    result: Any = dataclasses.field(default=None, repr=False)
    clock: str = "wall"
    others: list[float | None] = dataclasses.field(default_factory=list)

    @property
    def runs(self) -> list[float]:
        """The timed runs on the chosen clock."""
        return self.cpu if self.clock == "cpu" else self.wall

    @property
    def best(self) -> float:
        """The fastest run."""
        return min(self.runs)

    @property
    def median(self) -> float:
        """The median run."""
        return statistics.median(self.runs)

    @property
    def others_at_best(self) -> float | None:
        """Cores other processes kept busy during the fastest run."""
        if not self.others:
            return None
        return self.others[self.runs.index(self.best)]

    def add(self, wall: float, cpu: float, others: float | None, result: Any) -> None:
        """Record one timed run."""
        self.wall.append(wall)
        self.cpu.append(cpu)
        self.others.append(others)
        self.result = result


#: The clock that :func:`time_contestant` reports by default ("wall" or "cpu").
CLOCK = "wall"


def _timed_call(
    fn: Callable[..., Any], setup: Callable[[], Any] | None
) -> tuple[float, float, float | None, Any]:
    """``fn(setup())`` (or ``fn()``): (wall s, CPU s, others' cores, result); gc off meanwhile."""
    arg = setup() if setup is not None else None
    gc_was_on = gc.isenabled()
    gc.disable()
    try:
        with CpuMeter() as meter:
            c0 = time.process_time()
            t0 = time.perf_counter()
            out = fn(arg) if setup is not None else fn()
            elapsed = time.perf_counter() - t0
            cpu = time.process_time() - c0
    finally:
        if gc_was_on:
            gc.enable()
    return elapsed, cpu, meter.others, out


def time_contestant(
    fn: Callable[..., Any],
    repeats: int = 5,
    *,
    setup: Callable[[], Any] | None = None,
    warmup: int = 1,
    max_seconds: float | None = None,
    clock: str | None = None,
) -> Timing:
    """Time ``fn`` with ``time.perf_counter``: ``warmup`` untimed calls, then ``repeats`` runs.

    With ``setup``, every call (warm-up included) is ``fn(setup())`` and only ``fn`` is timed, so
    each run starts from fresh state. The garbage collector is off while ``fn`` runs (as in
    ``timeit``). Runs stop early, after at least one, once ``max_seconds`` have been spent.
    Both clocks are recorded; ``clock`` (default :data:`CLOCK`) picks the one reported.
    """
    timing = Timing(wall=[], cpu=[], warmup=[], clock=clock or CLOCK)
    for _ in range(warmup):
        timing.warmup.append(_timed_call(fn, setup)[0])
    started = time.perf_counter()
    for _ in range(max(1, repeats)):
        timing.add(*_timed_call(fn, setup))
        if max_seconds is not None and time.perf_counter() - started > max_seconds:
            break
    return timing


def time_interleaved(
    entries: dict[str, tuple[Callable[..., Any], Callable[[], Any] | None]],
    rounds: int = 5,
    *,
    max_seconds: float | None = None,
    clock: str | None = None,
    into: dict[str, Timing | Exception] | None = None,
) -> dict[str, Timing | Exception]:
    """Time several functions in interleaved rounds, so slow drifts of the machine hit all alike.

    ``entries`` maps names to ``(fn, setup)`` as for :func:`time_contestant`. Each gets one
    warm-up call, then every round times each once (the order rotates from round to round);
    an entry that has spent ``max_seconds`` in timed runs sits out the later rounds. An entry
    that raises is reported as its exception and dropped. With ``into`` (an earlier result),
    its timings are extended (no new warm-up) and the budget counts per call.
    """
    out: dict[str, Timing | Exception] = into if into is not None else {}
    spent_before = {k: sum(v.wall) for k, v in out.items() if isinstance(v, Timing)}
    for name, (fn, setup) in entries.items():
        if name in out:
            continue
        try:
            timing = Timing(wall=[], cpu=[], warmup=[], clock=clock or CLOCK)
            timing.warmup.append(_timed_call(fn, setup)[0])
            out[name] = timing
        except Exception as exc:  # noqa: BLE001 - a failing peer must not stop the others
            out[name] = exc
    live = [k for k, v in out.items() if isinstance(v, Timing)]
    for r in range(max(1, rounds)):
        order = live[r % len(live) :] + live[: r % len(live)] if live else []
        for name in order:
            timing = out[name]
            if not isinstance(timing, Timing):
                continue
            spent = sum(timing.wall) - spent_before.get(name, 0.0)
            if max_seconds is not None and spent > max_seconds and len(timing.wall) > 0:
                continue
            fn, setup = entries[name]
            try:
                timing.add(*_timed_call(fn, setup))
            except Exception as exc:  # noqa: BLE001
                out[name] = exc
    return out


def check_agreement(results: dict[str, Params], reference: str = REFERENCE) -> dict[str, float]:
    """Print and return the max abs parameter difference of every contestant from ``reference``.

    ``results`` maps contestant names to their parameters after one epoch (float64 runs).
    """
    ref = results[reference]
    diffs = {}
    for name, params in results.items():
        diffs[name] = max_abs_diff(params, ref)
        print(f"    max |dparam| {name:<26} vs {reference}: {diffs[name]:.3e}")
    return diffs


# ---------------------------------------------------------------------------------------------
# Contention: this machine may be shared, and 2 busy cores make BLAS timings meaningless


def _cpu_counters() -> tuple[float, float, float, float] | None:
    """(wall s, busy CPU s of the whole machine, CPU s of this process, steal s), or None."""
    try:
        with open("/proc/stat") as fh:
            fields = [int(v) for v in fh.readline().split()[1:9]]
    except (OSError, ValueError):
        return None
    tick = os.sysconf("SC_CLK_TCK")
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields
    own = resource.getrusage(resource.RUSAGE_SELF)
    return (
        time.perf_counter(),
        (user + nice + system + irq + softirq) / tick,
        own.ru_utime + own.ru_stime,
        steal / tick,
    )


class CpuMeter:
    """Cores kept busy by *other* processes (and stolen by the hypervisor) over a stretch.

    Used as a context manager; afterwards ``others`` and ``steal`` are average core counts
    (None where /proc/stat cannot be read). Resolution is the kernel tick (10 ms).
    """

    others: float | None = None
    steal: float | None = None

    def __enter__(self) -> CpuMeter:
        self._start = _cpu_counters()
        return self

    def __exit__(self, *exc: object) -> None:
        end = _cpu_counters()
        if self._start is None or end is None:
            return
        wall = max(end[0] - self._start[0], 1e-9)
        busy, own = end[1] - self._start[1], end[2] - self._start[2]
        self.others = max(0.0, (busy - own) / wall)
        self.steal = (end[3] - self._start[3]) / wall


def wait_until_quiet(max_wait: float, threshold: float = 0.15) -> float | None:
    """Wait (at most ``max_wait`` s) for a second in which other processes use < threshold cores.

    Returns the last measured load of the others (cores), None where it cannot be measured.
    """
    deadline = time.perf_counter() + max_wait
    while True:
        with CpuMeter() as meter:
            time.sleep(1.0)
        if meter.others is None or meter.others < threshold:
            return meter.others
        if time.perf_counter() >= deadline:
            print(f"  (machine still busy: other processes use {meter.others:.2f} cores)")
            return meter.others
        time.sleep(2.0)


#: Above this many cores kept busy by other processes, a row is flagged in the report.
BUSY_LIMIT = 0.2


# ---------------------------------------------------------------------------------------------
# The matrix-multiply floor


def gemm_floor_epochs(net: Net, X: np.ndarray) -> dict[str, Callable[[], None]]:
    """Epochs of only the GEMMs at the trainer's shapes, with preallocated outputs.

    Per layer and batch: forward ``A @ W.T``, backward ``delta @ W``, gradient ``delta.T @ A``
    (all through ``np.dot(..., out=)``, as the hand trainer calls them). ``"floor"`` leaves out
    the backward GEMM of the first layer, which no trainer needs (the input gets no delta);
    ``"3 per layer"`` keeps it.
    """
    rng = np.random.default_rng(2)
    dt = net.np_dtype
    s = net.sizes
    L = len(s) - 1
    X = np.ascontiguousarray(X, dtype=dt)
    Ws = [rng.standard_normal((s[i + 1], s[i])).astype(dt) for i in range(L)]
    n, m = X.shape[0], net.batch_size
    bufs: dict[int, dict[str, list[np.ndarray]]] = {}
    for size in {min(m, n - start) for start in range(0, n, m)}:
        bufs[size] = {
            "Z": [np.empty((size, s[i + 1]), dt) for i in range(L)],
            "D": [rng.standard_normal((size, s[i + 1])).astype(dt) for i in range(L)],
            "dA": [np.empty((size, s[i]), dt) for i in range(L)],
            "gW": [np.empty((s[i + 1], s[i]), dt) for i in range(L)],
        }

    def epoch(first_backward: bool) -> None:
        for start in range(0, n, m):
            xb = X[start : start + m]
            buf = bufs[xb.shape[0]]
            Z, D, dA, gW = buf["Z"], buf["D"], buf["dA"], buf["gW"]
            prev = xb
            for i in range(L):
                np.dot(prev, Ws[i].T, out=Z[i])
                prev = Z[i]
            for i in range(L - 1, -1, -1):
                np.dot(D[i].T, Z[i - 1] if i else xb, out=gW[i])
                if i or first_backward:
                    np.dot(D[i], Ws[i], out=dA[i])

    return {"floor": lambda: epoch(False), "3 per layer": lambda: epoch(True)}


def gemm_floor(
    net: Net, X: np.ndarray, repeats: int, max_seconds: float | None = None
) -> dict[str, Timing]:
    """Time :func:`gemm_floor_epochs`; a :class:`Timing` for "floor" and "3 per layer"."""
    return {
        name: time_contestant(fn, repeats, max_seconds=max_seconds)
        for name, fn in gemm_floor_epochs(net, X).items()
    }


# ---------------------------------------------------------------------------------------------
# Running


def _row(cfg: Config, name: str, **fields: Any) -> dict[str, Any]:
    row = {"config": cfg.key, "contestant": name, "seconds": None, "median": None}
    row.update(fields)
    return row


@dataclass
class ConfigRun:
    """One configuration being benchmarked: its data, contestants and timings so far."""

    cfg: Config
    n: int
    X64: np.ndarray
    Y64: np.ndarray
    p64: Params
    X: np.ndarray
    Y: np.ndarray
    p0: Params
    chosen: list[str]
    contestants: dict[str, Contestant]
    skipped: dict[str, str]
    entries: dict[str, tuple[Callable[..., Any], Callable[[], Any] | None]]
    timings: dict[str, Timing | Exception] = dataclasses.field(default_factory=dict)


def prepare_config(cfg: Config, n: int, names: list[str] | None = None) -> ConfigRun:
    """Make the data and parameters of ``cfg`` and build its contestants and GEMM floor."""
    net = cfg.net
    X64, Y64 = make_data(cfg, n)
    p64 = init_params(net)
    dt = net.np_dtype
    X = np.ascontiguousarray(X64, dtype=dt)
    Y = np.ascontiguousarray(Y64, dtype=dt)
    p0 = copy_params(p64, dt)
    chosen = [k for k in CONTESTANTS if names is None or k in names or k == REFERENCE]
    contestants: dict[str, Contestant] = {}
    skipped: dict[str, str] = {}
    for name in chosen:
        try:
            contestants[name] = CONTESTANTS[name](net)
        except UnavailableError as exc:
            skipped[name] = str(exc)
    entries: dict[str, tuple[Callable[..., Any], Callable[[], Any] | None]] = {
        name: (c.epoch, lambda c=c: c.setup(p0, X, Y)) for name, c in contestants.items()
    }
    for k, fn in gemm_floor_epochs(net, X).items():
        entries[f"GEMM {k}"] = (fn, None)
    return ConfigRun(cfg, n, X64, Y64, p64, X, Y, p0, chosen, contestants, skipped, entries)


def time_config(run: ConfigRun, rounds: int, max_seconds: float | None) -> None:
    """Add ``rounds`` interleaved rounds of timings to ``run``."""
    print(f"  ({run.cfg.key}) {rounds} round(s)", flush=True)
    time_interleaved(run.entries, rounds, max_seconds=max_seconds, into=run.timings)


def finish_config(run: ConfigRun, agree_n: int) -> dict[str, Any]:
    """Check the float64 agreement and assemble the record of ``run``."""
    cfg, net, n = run.cfg, run.cfg.net, run.n
    print(f"\n== ({cfg.key}) {cfg.title}, n = {n}", flush=True)
    flops = 6.0 * net.n_params * n
    rows: list[dict[str, Any]] = []
    finals: dict[str, Params] = {}
    same_work: dict[str, bool] = {}
    for name in run.chosen:
        if name in run.skipped:
            print(f"  {name:<26} skipped: {run.skipped[name]}", flush=True)
            rows.append(_row(cfg, name, skipped=run.skipped[name]))
            continue
        timing = run.timings[name]
        if isinstance(timing, Exception):
            print(f"  {name:<26} FAILED: {timing!r}", flush=True)
            rows.append(_row(cfg, name, error=repr(timing)))
            continue
        contestant = run.contestants[name]
        finals[name] = contestant.to_numpy(timing.result)
        same_work[name] = contestant.same_work
        rows.append(
            _row(
                cfg,
                name,
                seconds=timing.best,
                median=timing.median,
                runs=timing.runs,
                wall_best=min(timing.wall),
                cpu_best=min(timing.cpu),
                warmup=timing.warmup,
                gflops=flops / timing.best / 1e9,
                same_work=contestant.same_work,
                note=contestant.note,
                others_cores=timing.others_at_best,
                others_runs=timing.others,
            )
        )
        busy = timing.others_at_best
        busy_text = "" if busy is None else f", others busy {busy:.2f} cores"
        print(
            f"  {name:<26} best {timing.best:.4f} s  median {timing.median:.4f} s  "
            f"(warm-up {timing.warmup[0]:.3f} s, {len(timing.runs)} runs{busy_text})",
            flush=True,
        )
    floors = {k: run.timings[f"GEMM {k}"] for k in ("floor", "3 per layer")}
    for t in floors.values():
        if isinstance(t, Exception):
            raise t
    floor = floors["floor"].best
    print(
        f"  GEMM floor {floor:.4f} s (3 per layer: {floors['3 per layer'].best:.4f} s)", flush=True
    )
    # Agreement after one float64 epoch. Float64 configurations reuse the timed runs; float32
    # ones run again in float64 on the first agree_n samples.
    if net.dtype == "float64":
        agree = {k: v for k, v in finals.items() if same_work.get(k)}
        agreement_n = n
    else:
        agreement_n = min(n, agree_n)
        net64 = dataclasses.replace(net, dtype="float64")
        Xa, Ya = run.X64[:agreement_n], run.Y64[:agreement_n]
        agree = {}
        for name in finals:
            if not same_work.get(name):
                continue
            contestant = CONTESTANTS[name](net64)
            agree[name] = contestant.to_numpy(contestant.epoch(contestant.setup(run.p64, Xa, Ya)))
    print(f"  agreement (float64, one epoch over {agreement_n} samples):")
    diffs = check_agreement(agree) if REFERENCE in agree else {}
    ref_final = finals.get(REFERENCE)
    own_dtype = {k: max_abs_diff(v, ref_final) for k, v in finals.items()} if ref_final else {}
    hand = next((r["seconds"] for r in rows if r["contestant"] == REFERENCE), None)
    for r in rows:
        name = r["contestant"]
        r["max_dparam_f64"] = diffs.get(name)
        r["max_dparam_own_dtype"] = own_dtype.get(name)
        if r["seconds"]:
            r["ratio_to_hand"] = r["seconds"] / hand if hand else None
            r["pct_of_floor"] = 100.0 * floor / r["seconds"]
    return {
        "key": cfg.key,
        "title": cfg.title,
        "sizes": list(net.sizes),
        "activations": list(net.activations),
        "loss": net.loss,
        "dtype": net.dtype,
        "batch_size": net.batch_size,
        "eta": net.eta,
        "n": n,
        "n_params": net.n_params,
        "nominal_flops": flops,
        "agreement_n": agreement_n,
        "gemm_floor_s": floor,
        "gemm_floor_gflops": flops / floor / 1e9,
        "gemm_3_per_layer_s": floors["3 per layer"].best,
        "gemm_others_cores": floors["floor"].others_at_best,
        "gemm_floor_runs": floors["floor"].runs,
        "rows": rows,
    }


def run_config(
    cfg: Config,
    n: int,
    repeats: int,
    max_seconds: float,
    agree_n: int,
    names: list[str] | None = None,
) -> dict[str, Any]:
    """Time every contestant on ``cfg`` and check their float64 agreement; return the record.

    The contestants and the GEMM floor are timed in ``repeats`` interleaved rounds (see
    :func:`time_interleaved`); each row reports its best run.
    """
    run = prepare_config(cfg, n, names)
    time_config(run, repeats, max_seconds)
    return finish_config(run, agree_n)


def prepare_hessians(quick: bool) -> list[dict[str, Any]]:
    """Data, parameters and (compiled, warmed-up) contestants of every Hessian problem."""
    out = []
    for problem, n_full, n_quick in HESSIAN_PROBLEMS:
        n = n_quick if quick else n_full
        rng = np.random.default_rng(3)
        d, k = problem.sizes[0], problem.sizes[-1]
        X = rng.standard_normal((n, d))
        theta = rng.standard_normal(problem.n_params) * 0.3
        if problem.loss == "log_loss":
            Y = (rng.random((n, k)) < 0.5).astype(np.float64)
        else:
            Y = rng.standard_normal((n, k))
        fns = hessian_contestants(problem, theta, X, Y)
        entries = {k: (f, None) for k, f in fns.items() if not isinstance(f, str)}
        out.append({"problem": problem, "n": n, "fns": fns, "entries": entries, "timings": {}})
    return out


def time_hessians(runs: list[dict[str, Any]], rounds: int, max_seconds: float | None) -> None:
    """Add ``rounds`` interleaved rounds of timings to every Hessian problem."""
    for h in runs:
        time_interleaved(h["entries"], rounds, max_seconds=max_seconds, into=h["timings"])


def finish_hessians(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Check that the Hessians agree to 1e-10 and assemble the records."""
    out = []
    for h in runs:
        problem, n, fns, timings = h["problem"], h["n"], h["fns"], h["timings"]
        print(f"\n== Hessian: {problem.name}, {problem.n_params} parameters, n = {n}", flush=True)
        rows = []
        results = {}
        for name, fn in fns.items():
            timing = timings.get(name)
            if isinstance(fn, str) or isinstance(timing, Exception):
                why = fn if isinstance(fn, str) else f"failed: {timing!r}"
                rows.append({"contestant": name, "skipped": why})
                continue
            results[name] = np.asarray(timing.result, dtype=np.float64)
            rows.append(
                {
                    "contestant": name,
                    "seconds": timing.best,
                    "median": timing.median,
                    "wall_best": min(timing.wall),
                    "cpu_best": min(timing.cpu),
                    "warmup": timing.warmup,
                    "others_cores": timing.others_at_best,
                }
            )
            print(f"  {name:<26} best {timing.best * 1e3:9.3f} ms", flush=True)
        error = None
        try:
            diffs = check_hessians(results, tol=1e-10)
        except AssertionError as exc:
            error = str(exc)
            print(f"  HESSIANS DISAGREE: {exc}", flush=True)
            ref = next(k for k in results if k.startswith("hand"))
            diffs = {k: float(np.max(np.abs(v - results[ref]))) for k, v in results.items()}
        hand = next(r["seconds"] for r in rows if r["contestant"].startswith("hand"))
        for r in rows:
            r["max_dH"] = diffs.get(r["contestant"])
            if r.get("seconds"):
                r["ratio_to_hand"] = r["seconds"] / hand
        print("  max |dH| vs hand: " + ", ".join(f"{k} {v:.1e}" for k, v in diffs.items()))
        out.append(
            {
                "problem": problem.name,
                "sizes": list(problem.sizes),
                "n": n,
                "n_params": problem.n_params,
                "error": error,
                "rows": rows,
            }
        )
    return out


def run_hessians(quick: bool, repeats: int, max_seconds: float) -> list[dict[str, Any]]:
    """Time every Hessian contestant (interleaved rounds) and check they agree to 1e-10."""
    runs = prepare_hessians(quick)
    time_hessians(runs, repeats, max_seconds)
    return finish_hessians(runs)


def environment() -> dict[str, Any]:
    """Versions, BLAS kernels and threads, for the record."""
    env: dict[str, Any] = {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "numpy": np.__version__,
        "OPENBLAS_CORETYPE": os.environ.get("OPENBLAS_CORETYPE"),
        "OPENBLAS_L2_SIZE": os.environ.get("OPENBLAS_L2_SIZE"),
    }
    for mod, dist in (
        ("torch", "torch"),
        ("jax", "jax"),
        ("autograd", "autograd"),
        ("sklearn", "scikit-learn"),
    ):
        try:
            importlib.import_module(mod)
            env[mod] = importlib.metadata.version(dist)
        except (ImportError, importlib.metadata.PackageNotFoundError):
            env[mod] = None
    env["loadavg_at_end"] = os.getloadavg()
    if env["torch"]:
        env["torch_threads"] = _import_torch().get_num_threads()
    try:
        from threadpoolctl import threadpool_info

        env["threadpools"] = [
            {k: v for k, v in info.items() if k != "filepath"}
            | {"file": Path(info["filepath"]).name}
            for info in threadpool_info()
        ]
    except ImportError:
        env["threadpools"] = None
    try:
        with open("/proc/cpuinfo") as fh:
            names = [ln.split(":", 1)[1].strip() for ln in fh if ln.startswith("model name")]
        env["cpu"] = names[0] if names else None
    except OSError:
        env["cpu"] = platform.processor()
    return env


# ---------------------------------------------------------------------------------------------
# Reports


def _fmt(x: float | None, spec: str) -> str:
    return "—" if x is None else format(x, spec)


def _seconds(x: float | None) -> str:
    return "—" if x is None else f"{x:.4g}"


def write_markdown(record: dict[str, Any], path: Path) -> str:
    """Write the Markdown report; return its text."""
    env = record["environment"]
    blas = ", ".join(
        f"{t.get('internal_api')} {t.get('version')} ({t.get('architecture')}, "
        f"{t.get('num_threads')} threads, {t.get('file')})"
        for t in env.get("threadpools") or []
        if t.get("user_api") == "blas"
    )
    clock = record.get("clock", "wall")
    threads = record.get("threads") or env["cpu_count"]
    other = "CPU s" if clock == "wall" else "wall s"
    clock_words = (
        "wall-clock time"
        if clock == "wall"
        else "CPU time of the process, all threads, which other processes on the machine "
        "barely disturb"
    )
    lines = [
        "# symgrad vs peers: one epoch of mini-batch SGD",
        "",
        f"**Clock: {clock}** ({clock_words}); **{threads} thread(s)** for every library.",
        "",
        f"Mode: {'quick (smoke)' if record['quick'] else 'full'}. Machine: {env.get('cpu')}, "
        f"{env['cpu_count']} cores; Python {env['python']}, NumPy {env['numpy']} "
        f"(BLAS: {blas or 'unknown'}), torch {env['torch']} ({env.get('torch_threads')} threads), "
        f"jax {env['jax']}, autograd {env['autograd']}, scikit-learn {env['sklearn']}. "
        f"OPENBLAS_CORETYPE={env['OPENBLAS_CORETYPE']}, "
        f"OPENBLAS_L2_SIZE={env['OPENBLAS_L2_SIZE']}; load average at start "
        f"{', '.join(f'{x:.2f}' for x in env['loadavg_at_start'])}.",
        "",
        f"Seconds per epoch are the best of {record.get('passes')} pass(es) x "
        f"{record.get('rounds_per_pass')} interleaved round(s) of timed runs (every contestant "
        "and the GEMM floor of a configuration take turns, and the passes go over all "
        "configurations, so that slow spells of the machine hit every row alike; slow rows sit "
        "out rounds once they have used their time budget), each from fresh parameters, after "
        "one warm-up epoch (JAX compiles in its warm-up). *x hand* is the time over the hand "
        "NumPy trainer's. *GEMM floor %* is "
        "the time of only the epoch's matrix products (forward A@W.T, backward delta@W except "
        "for the first layer, gradient delta.T@A; preallocated outputs) over the contestant's "
        "time. GFLOP/s is nominal: 6 x parameters x samples per epoch. max |dparam| is the "
        "largest parameter difference from the hand NumPy trainer after one float64 epoch "
        "(float32 configurations are re-run in float64 on their first samples for this). "
        "*others busy* is the average number of cores other processes kept busy while the row "
        "was measured (from /proc/stat): this machine has 2 cores and may be shared, and BLAS "
        "threads slow down badly when they must share them, so a row with others busy above "
        "about 0.2 cores is not to be trusted.",
        "",
    ]
    busy_rows = [
        f"({c['key']}) {r['contestant']}"
        for c in record["configs"]
        for r in c["rows"]
        if (r.get("others_cores") or 0) > BUSY_LIMIT
    ]
    if busy_rows:
        lines += [
            f"**Warning:** other processes were busy during {len(busy_rows)} row(s): "
            + ", ".join(busy_rows)
            + (
                ". Their wall-clock times are inflated."
                if clock == "wall"
                else ". CPU times are little affected (one thread per library: no thread waits "
                "for another), but cache sharing and context switches still add a little; "
                "the wall-clock column is inflated."
            ),
            "",
        ]
    for cfg in record["configs"]:
        lines += [
            f"## ({cfg['key']}) {cfg['title']}",
            "",
            f"n = {cfg['n']} samples, {cfg['n_params']} parameters; GEMM floor "
            f"{_seconds(cfg['gemm_floor_s'])} s ({cfg['gemm_floor_gflops']:.1f} GFLOP/s; with "
            f"the first layer's backward GEMM: {_seconds(cfg['gemm_3_per_layer_s'])} s); "
            f"agreement over {cfg['agreement_n']} samples in float64.",
            "",
            f"| config | contestant | s/epoch | median | {other} | x hand NumPy | GEMM floor % "
            "| GFLOP/s | max \\|dparam\\| vs hand (f64) | others busy | notes |",
            "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
        ]
        for r in cfg["rows"]:
            if r.get("seconds") is None:
                why = r.get("skipped") or r.get("error") or ""
                lines.append(
                    f"| {cfg['key']} | {r['contestant']} | — | — | — | — | — | — | — | — "
                    f"| skipped: {why} |"
                )
                continue
            dparam = _fmt(r.get("max_dparam_f64"), ".1e")
            if not r.get("same_work", True):
                dparam = "not the same work"
            lines.append(
                f"| {cfg['key']} | {r['contestant']} | {_seconds(r['seconds'])} "
                f"| {_seconds(r.get('median'))} "
                f"| {_seconds(r.get('cpu_best' if clock == 'wall' else 'wall_best'))} "
                f"| {_fmt(r.get('ratio_to_hand'), '.2f')} | {_fmt(r.get('pct_of_floor'), '.1f')} "
                f"| {_fmt(r.get('gflops'), '.2f')} | {dparam} "
                f"| {_fmt(r.get('others_cores'), '.2f')} | {r.get('note', '')} |"
            )
        lines.append("")
    nc = record.get("numba_compile")
    if nc:
        lines += ["## symgrad numba: first-call compile time", ""]
        if "error" in nc:
            lines += [f"Not measured: {nc['error']}", ""]
        else:
            lines += [
                f"{nc['spec']}, two fresh processes sharing a new, empty NUMBA_CACHE_DIR; "
                "*compile* is the first fit (256 samples, one epoch) less the second fit of the "
                "same process; *load_trainer* derives and generates the module.",
                "",
                "| process | load_trainer s | first fit s | first fit CPU s | second fit s "
                "| compile s |",
                "| --- | ---: | ---: | ---: | ---: | ---: |",
            ]
            for run, label in (("cold", "first (empty cache)"), ("cached", "second (cached)")):
                r = nc[run]
                lines.append(
                    f"| {label} | {r['load_trainer_s']:.2f} | {r['first_fit_s']:.2f} "
                    f"| {r.get('first_fit_cpu_s', float('nan')):.2f} | {r['second_fit_s']:.4f} "
                    f"| {r['compile_s']:.2f} |"
                )
            lines.append("")
    if record.get("hessians"):
        lines += [
            "## Full Hessians over the flattened parameters (float64)",
            "",
            "Order W1 (row-major), b1, W2, b2; cost averaged over n, no regulariser. JAX "
            "functions are jitted and warmed up; the time is the best of the timed runs. "
            "All must agree with the hand Hessian to 1e-10.",
            "",
            "| problem | contestant | seconds | x hand | max \\|dH\\| vs hand | others busy |",
            "| --- | --- | ---: | ---: | ---: | ---: |",
        ]
        for h in record["hessians"]:
            label = f"{h['problem']} (P = {h['n_params']}, n = {h['n']})"
            for r in h["rows"]:
                if r.get("seconds") is None:
                    lines.append(
                        f"| {label} | {r['contestant']} | — | — | {r.get('skipped')} | — |"
                    )
                    continue
                lines.append(
                    f"| {label} | {r['contestant']} | {r['seconds'] * 1e3:.3f} ms "
                    f"| {_fmt(r.get('ratio_to_hand'), '.2f')} | {_fmt(r.get('max_dH'), '.1e')} "
                    f"| {_fmt(r.get('others_cores'), '.2f')} |"
                )
            if h.get("error"):
                lines.append(f"\n**Disagreement:** {h['error']}\n")
        lines.append("")
    text = "\n".join(lines)
    path.write_text(text, encoding="utf-8")
    return text


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; exit status 1 if any agreement check fails."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.peers", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small n, few repeats (smoke run)")
    parser.add_argument("--configs", default="abcd", help="which configurations, e.g. 'ac'")
    parser.add_argument("--contestants", help="comma-separated names (hand NumPy always runs)")
    parser.add_argument(
        "--repeats", type=int, help="interleaved timing rounds per pass (default 3, 2)"
    )
    parser.add_argument(
        "--passes", type=int, help="passes over all configurations (default 3, 1 with --quick)"
    )
    parser.add_argument("--max-seconds", type=float, default=20.0, help="timing budget per row")
    parser.add_argument("--agree-n", type=int, default=2048, help="samples of float64 re-runs")
    parser.add_argument("--no-hessians", action="store_true", help="skip the Hessian benchmark")
    parser.add_argument("--generated", help="module:function of generated_epoch to benchmark")
    parser.add_argument(
        "--wait-quiet",
        type=float,
        default=None,
        help="before each section wait up to this many seconds for other processes to go "
        "quiet (default 60, 0 with --quick or --clock cpu)",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="threads for every library (default: all cores); with 1 the report also names "
        "its files peers_1thread.*",
    )
    parser.add_argument(
        "--clock",
        choices=("wall", "cpu"),
        default=None,
        help="what s/epoch measures: wall-clock time, or this process's CPU time (all "
        "threads; robust to other processes on a shared machine when single-threaded). "
        "Default: cpu with --threads 1, else wall",
    )
    parser.add_argument("--out-dir", type=Path, default=RESULTS_DIR)
    args = parser.parse_args(argv)
    global CLOCK
    CLOCK = args.clock or ("cpu" if args.threads == 1 else "wall")
    set_threads(args.threads)
    for mod in ("torch", "jax", "autograd", "sklearn.neural_network"):
        try:  # load every library now, so that the thread limits reach all their pools
            importlib.import_module(mod)
        except ImportError:
            pass
    set_threads(args.threads)
    if args.generated:
        register_generated(_load_callable(args.generated))
    repeats = args.repeats or (2 if args.quick else 3)
    names = [s.strip() for s in args.contestants.split(",")] if args.contestants else None
    started = time.perf_counter()
    loadavg_at_start = os.getloadavg()
    record: dict[str, Any] = {
        "quick": args.quick,
        "clock": CLOCK,
        "threads": args.threads,
        "passes": None,
        "rounds_per_pass": repeats,
        "configs": [],
    }
    relaxed = args.quick or CLOCK == "cpu"  # CPU time barely feels other processes
    wait = args.wait_quiet if args.wait_quiet is not None else (0.0 if relaxed else 60.0)
    passes = args.passes or (1 if args.quick else 3)
    runs = [
        prepare_config(cfg, cfg.n_quick if args.quick else cfg.n, names)
        for cfg in CONFIGS
        if cfg.key in args.configs
    ]
    hessian_runs = [] if args.no_hessians else prepare_hessians(args.quick)
    # Passes over every configuration, each of `repeats` interleaved rounds: every row's runs
    # are spread over the whole benchmark, so a slow spell of a shared machine hits all rows.
    for p in range(passes):
        print(f"\npass {p + 1} of {passes}", flush=True)
        if wait:
            wait_until_quiet(wait)
        for run in runs:
            time_config(run, repeats, args.max_seconds / passes)
        time_hessians(hessian_runs, repeats, args.max_seconds / passes)
    record["configs"] = [finish_config(run, args.agree_n) for run in runs]
    if any("symgrad numba" in run.contestants for run in runs) and not args.quick:
        from .symgrad_contestant import compile_times

        print("\nnumba: first-call compile time (cold cache, then cached)", flush=True)
        try:
            record["numba_compile"] = compile_times()
        except Exception as exc:  # reported, not fatal: the table stands without it
            record["numba_compile"] = {"error": f"{type(exc).__name__}: {exc}"}
    if hessian_runs:
        record["hessians"] = finish_hessians(hessian_runs)
    record["passes"] = passes
    # Read last: threadpoolctl's introspection of the loaded libraries stays out of the timings.
    record["environment"] = environment() | {"loadavg_at_start": loadavg_at_start}
    record["wall_seconds"] = time.perf_counter() - started
    args.out_dir.mkdir(parents=True, exist_ok=True)
    stem = "peers_quick" if args.quick else "peers"
    if args.threads:
        stem += f"_{args.threads}thread"
    json_path, md_path = args.out_dir / f"{stem}.json", args.out_dir / f"{stem}.md"
    json_path.write_text(json.dumps(record, indent=1, default=float) + "\n", encoding="utf-8")
    write_markdown(record, md_path)
    print(f"\nwrote {json_path} and {md_path} ({record['wall_seconds']:.0f} s)")
    bad_params = [
        (c["key"], r["contestant"], r["max_dparam_f64"])
        for c in record["configs"]
        for r in c["rows"]
        if r.get("max_dparam_f64") is not None and r["max_dparam_f64"] > 1e-8
    ]
    bad_hessians = [h["problem"] for h in record.get("hessians", []) if h["error"]]
    for key, name, diff in bad_params:
        print(f"DISAGREEMENT: ({key}) {name} differs from {REFERENCE} by {diff:.3e}")
    return 1 if bad_params or bad_hessians else 0


if __name__ == "__main__":
    raise SystemExit(main())
