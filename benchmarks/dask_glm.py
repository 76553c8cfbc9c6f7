"""Logistic regression on a Dask cluster: symgrad's Newton against dask-glm and scikit-learn.

    pip install -e '.[cluster]' dask-glm scikit-learn psutil
    python -m benchmarks.dask_glm                       # 10^6 rows, 1 and 2 workers
    python -m benchmarks.dask_glm --rows 10000000       # 10^7 rows (about 2.5 GB of X), to
                                                        # results/dask_glm_10000000.*
    python -m benchmarks.dask_glm --rows 20000 --quick  # smoke run

The data are synthetic and written once, chunk by chunk (never whole in memory), to a Zarr
store: X ~ N(0, 1) with ``--features`` columns, y ~ Bernoulli(sigmoid(X beta + 0.25)) for a fixed
random beta. The problem is the same for everyone: unregularised logistic regression with an
intercept (dask-glm's ``newton`` has no regulariser; dask-glm gets X with a column of ones
appended and ``normalize=False``).

Stopping rules ("the same tolerance": each solver's own rule set to gtol, and the gradient it
reaches is then measured by one common evaluator over the chunks and reported):

- symgrad Newton (cluster): ``fit(..., method="newton", tol=gtol)``: stops once
  max |grad C| <= gtol, C the mean log loss (damping 0, step 1);
- symgrad L-BFGS (cluster): ``fit(..., method="lbfgs", tol=gtol)``: SciPy's L-BFGS-B on the
  client with ``gtol`` (max |grad C| <= gtol, C the mean log loss), each value and gradient one
  round of sums over the cluster;
- symgrad Newton (one process): the generated trainer's ``newton_direction`` on the in-memory
  array, the same rule, no Dask;
- dask-glm ``newton``: stops once max |beta_k - beta_{k-1}| <= gtol (its only rule);
- dask-glm ``lbfgs``: SciPy's ``pgtol`` = gtol * n (it minimises the summed loss);
- scikit-learn ``LogisticRegression(solver="newton-cholesky", C=inf, tol=gtol)`` (no penalty)
  on the in-memory array (one machine).

Every worker runs one thread (Dask sets its BLAS to one thread); the one-process rows run with
BLAS limited to one thread too (threadpoolctl), so "1 worker" and "one process" do the same
arithmetic on the same number of cores.

Reported per method and worker count: the best wall time of ``--repeats`` fits (data already
in the workers' memory; loading is timed separately), iterations (Newton steps; for L-BFGS,
function evaluations), the final max |grad C|, the largest coefficient difference from the
reference (symgrad Newton to gtol 1e-12), and the peak resident memory of the client process
during a fit above what it held before (the largest over the repeats). Results go to
``benchmarks/results/dask_glm.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"


# -- data -----------------------------------------------------------------------------------------


def make_zarr(path: str, rows: int, features: int, chunk_rows: int, seed: int = 0) -> np.ndarray:
    """Write X (rows, features) and y (rows,) chunk by chunk; return the true beta."""
    import zarr

    beta = np.random.default_rng(seed).standard_normal(features) / math.sqrt(features)
    group = zarr.open_group(path, mode="w")
    X = group.create_array("X", shape=(rows, features), chunks=(chunk_rows, features), dtype="f8")
    y = group.create_array("y", shape=(rows,), chunks=(chunk_rows,), dtype="f8")
    for i, lo in enumerate(range(0, rows, chunk_rows)):
        hi = min(rows, lo + chunk_rows)
        rng = np.random.default_rng((seed, i))
        x = rng.standard_normal((hi - lo, features))
        p = 1.0 / (1.0 + np.exp(-(x @ beta + 0.25)))
        X[lo:hi] = x
        y[lo:hi] = (rng.random(hi - lo) < p).astype(np.float64)
    return beta


def spec(features: int) -> dict:
    return {
        "name": "bench_logistic",
        "inputs": features,
        "layers": [{"units": 1, "activation": "sigmoid"}],
        "loss": "log_loss",
        "optimizer": {"name": "newton", "learning_rate": 1.0, "damping": 0.0, "epochs": 100},
        "init": {"scheme": "normal", "seed": 0},
    }


# -- measuring -----------------------------------------------------------------------------------


class PeakRSS:
    """Peak resident memory of this process while the block runs, above its level at the start."""

    def __init__(self, every: float = 0.005) -> None:
        import psutil

        self.proc = psutil.Process()
        self.every = every

    def __enter__(self):
        self.base = self.peak = self.proc.memory_info().rss
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._watch, daemon=True)
        self.thread.start()
        return self

    def _watch(self) -> None:
        while not self.stop.is_set():
            self.peak = max(self.peak, self.proc.memory_info().rss)
            self.stop.wait(self.every)

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join()
        self.peak = max(self.peak, self.proc.memory_info().rss)
        self.mb = (self.peak - self.base) / 2**20


def grad_norm(X, y, w: np.ndarray, b: float) -> float:
    """max |grad| of the mean log loss at (w, b), computed chunk by chunk (dask arrays)."""
    import dask.array as da

    z = X @ w + b
    r = 1.0 / (1.0 + da.exp(-z)) - y
    gw, gb = da.compute(X.T @ r, r.sum())
    n = X.shape[0]
    return float(max(np.abs(gw).max(), abs(gb)) / n)


# -- the contestants ------------------------------------------------------------------------------


def run_symgrad(client, X, Y, features, gtol, method="newton"):
    from symgrad import load_spec, load_trainer
    from symgrad.runtime.cluster import fit

    model = load_trainer(load_spec(spec(features)))
    model.set_flat(np.zeros(features + 1))
    t = time.perf_counter()
    iterations = 100 if method == "newton" else 1000
    result = fit(model, X, Y, method=method, client=client, iterations=iterations, tol=gtol)
    seconds = time.perf_counter() - t
    theta = model.get_flat()
    return seconds, result.iterations, theta[:-1], theta[-1], result


def run_symgrad_local(Xn, yn, features, gtol):
    from symgrad import load_spec, load_trainer

    model = load_trainer(load_spec(spec(features)))
    model.set_flat(np.zeros(features + 1))
    Y = yn[:, None]
    t = time.perf_counter()
    steps = 0
    for steps in range(101):  # noqa: B007
        g = model.gradient_flat(Xn, Y)
        if np.abs(g).max() <= gtol:
            break
        p = model.newton_direction(Xn, Y, grad=g, damping=0.0)
        model.set_flat(model.get_flat() - p)
    seconds = time.perf_counter() - t
    theta = model.get_flat()
    return seconds, steps, theta[:-1], theta[-1]


def _counting_family():
    from dask_glm.families import Logistic

    class Counted(Logistic):
        calls = {"hessian": 0, "loss": 0}

        @staticmethod
        def hessian(Xbeta, X):
            Counted.calls["hessian"] += 1
            return Logistic.hessian(Xbeta, X)

        @staticmethod
        def pointwise_loss(beta, X, y):
            Counted.calls["loss"] += 1
            return Logistic.pointwise_loss(beta, X, y)

    return Counted


def run_dask_glm(algorithm: str, X1, y, gtol):
    from dask_glm import algorithms

    family = _counting_family()
    n = X1.shape[0]
    t = time.perf_counter()
    if algorithm == "newton":
        beta = algorithms.newton(X1, y, max_iter=100, tol=gtol, family=family, normalize=False)
        count = family.calls["hessian"]
    else:
        beta = algorithms.lbfgs(X1, y, max_iter=1000, tol=gtol * n, family=family, normalize=False)
        count = family.calls["loss"]
    seconds = time.perf_counter() - t
    beta = np.asarray(beta)
    return seconds, count, beta[:-1], beta[-1]


def run_sklearn(Xn, yn, gtol):
    from sklearn.linear_model import LogisticRegression

    clf = LogisticRegression(solver="newton-cholesky", C=np.inf, tol=gtol, max_iter=100)
    t = time.perf_counter()
    clf.fit(Xn, yn)
    seconds = time.perf_counter() - t
    return seconds, int(clf.n_iter_[0]), clf.coef_[0], float(clf.intercept_[0])


# -- the run --------------------------------------------------------------------------------------


def round_overhead(client, rounds: int = 20) -> float:
    """Seconds of one driver round on 2 rows per partition: the fixed cost of an iteration."""
    import dask.array as da

    from symgrad import load_spec, load_trainer
    from symgrad.runtime.cluster import _Driver, ship_module

    model = load_trainer(load_spec(spec(3)))
    X = da.zeros((16, 3), chunks=(2, 3))
    Y = da.zeros((16, 1), chunks=(2, 1))
    driver = _Driver(client, ship_module(model), X, Y, persist=True)
    theta = model.get_flat()
    driver.sums(theta, "hessian")
    t = time.perf_counter()
    for _ in range(rounds):
        driver.sums(theta, "hessian")
    return (time.perf_counter() - t) / rounds


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--features", type=int, default=30)
    ap.add_argument("--chunk-rows", type=int, default=125_000)
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--gtol", type=float, default=1e-8)
    ap.add_argument("--repeats", type=int, default=3, help="runs per method; the best is kept")
    ap.add_argument("--quick", action="store_true", help="smoke run: results/dask_glm_quick.*")
    ap.add_argument("--no-sklearn", action="store_true")
    args = ap.parse_args(argv)

    import dask.array as da
    from distributed import Client

    from symgrad.runtime.cluster import local_cluster

    n, d = args.rows, args.features
    rows = []
    info = {"rows": n, "features": d, "chunk_rows": args.chunk_rows, "gtol": args.gtol}
    info["cpus"] = os.cpu_count()
    info["load_average_at_start"] = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="symgrad-bench-") as tmp:
        path = os.path.join(tmp, "data.zarr")
        t = time.perf_counter()
        make_zarr(path, n, d, args.chunk_rows)
        info["write_seconds"] = time.perf_counter() - t
        reference = None
        for workers in args.workers:
            with local_cluster(workers) as cluster, Client(cluster) as client:
                X = da.from_zarr(path, component="X")
                y = da.from_zarr(path, component="y")
                Y = y[:, None]
                X1 = da.concatenate([X, da.ones((n, 1), chunks=(X.chunks[0], 1))], axis=1)
                X1 = X1.rechunk({1: -1})
                t = time.perf_counter()
                X, Y, y, X1 = client.persist([X, Y, y, X1])
                client.wait_for_workers(workers)
                from distributed import wait

                wait([X, Y, y, X1])
                info[f"load_seconds_{workers}w"] = time.perf_counter() - t
                info[f"round_overhead_seconds_{workers}w"] = round_overhead(client)
                if reference is None:
                    _, _, w_ref, b_ref, _ = run_symgrad(client, X, Y, d, 1e-12)
                    reference = np.r_[w_ref, b_ref]
                    info["reference_grad_norm"] = grad_norm(X, y, w_ref, b_ref)

                def measure(name, fn, one_thread=False, workers=workers, X=X, y=y):
                    """Best time of ``--repeats`` runs; the largest client peak among them."""
                    from threadpoolctl import threadpool_limits

                    times, peaks = [], []
                    for _ in range(args.repeats):
                        with threadpool_limits(1 if one_thread else None), PeakRSS() as mem:
                            seconds, iters, w, b, *extra = fn()
                        times.append(seconds)
                        peaks.append(mem.mb)
                    rows.append(
                        {
                            "method": name,
                            "workers": workers,
                            "seconds": min(times),
                            "all_seconds": times,
                            "iterations": iters,
                            "grad_norm": grad_norm(X, y, np.asarray(w), float(b)),
                            "coef_error": float(np.abs(np.r_[w, b] - reference).max()),
                            "client_peak_mb": max(peaks),
                        }
                    )
                    print(rows[-1], flush=True)
                    return extra

                (result,) = measure(
                    "symgrad newton (cluster)", lambda: run_symgrad(client, X, Y, d, args.gtol)
                )
                info[f"symgrad_iteration_seconds_{workers}w"] = result.history["seconds"]
                measure(
                    "symgrad lbfgs (cluster)",
                    lambda: run_symgrad(client, X, Y, d, args.gtol, method="lbfgs"),
                )
                measure("dask-glm newton", lambda: run_dask_glm("newton", X1, y, args.gtol))
                measure("dask-glm lbfgs", lambda: run_dask_glm("lbfgs", X1, y, args.gtol))
                if workers == args.workers[0]:
                    Xn, yn = X.compute(), y.compute()  # one machine: the whole array in memory
                    measure(
                        "symgrad newton (one process, no Dask)",
                        lambda: run_symgrad_local(Xn, yn, d, args.gtol),
                        one_thread=True,
                    )
                    if not args.no_sklearn:
                        measure(
                            "scikit-learn newton-cholesky",
                            lambda: run_sklearn(Xn, yn, args.gtol),
                            one_thread=True,
                        )
                    del Xn, yn
    stem = "dask_glm_quick" if args.quick else "dask_glm"
    if not args.quick and args.rows != 1_000_000:  # the default run keeps its own files
        stem += f"_{args.rows}"
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{stem}.json").write_text(json.dumps({"info": info, "rows": rows}, indent=1))
    (RESULTS / f"{stem}.md").write_text(table(info, rows))
    print(table(info, rows))
    return 0


def table(info: dict, rows: list[dict]) -> str:
    lines = [
        f"Logistic regression, n = {info['rows']:,} rows, d = {info['features']} features "
        f"(+ intercept), float64, gtol = {info['gtol']:g}; {info['cpus']} CPUs, load average at "
        f"start {info['load_average_at_start'][0]:.1f}.",
        "",
        "| method | workers | time (s) | iterations | max abs grad | coef. error | client MB |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        workers = "-" if "one process" in r["method"] or "scikit" in r["method"] else r["workers"]
        lines.append(
            f"| {r['method']} | {workers} | {r['seconds']:.2f} | {r['iterations']} | "
            f"{r['grad_norm']:.1e} | {r['coef_error']:.1e} | {r['client_peak_mb']:.0f} |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
