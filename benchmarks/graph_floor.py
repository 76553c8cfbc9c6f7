"""What a graph costs: the generated trainer of a residual MLP against its matrix-multiply floor.

    python benchmarks/graph_floor.py                 # n = 20,000, 5 interleaved rounds
    python benchmarks/graph_floor.py --n 4000 --rounds 2

For each network (a residual MLP and the plain chain of the same widths, so the skip
connections' own cost shows as the difference), one epoch of ``fit(track=False)`` (float32,
mini-batch 128, Adam, the spec's shapes) is timed against the epoch of only its matrix products
at the trainer's shapes, with preallocated outputs (``np.dot(..., out=)``): per layer and batch
the forward product of what it reads (its sources concatenated, or one of them for ``add``:
the sum is element-wise work), the weight gradient, and the backward product of every layer
but the first (the input gets no delta). The floor's share of the epoch is what the issue asks
for: how close the trainer comes to costing only its matrix products. Contestants take turns
in every round; the best of the rounds is reported. Prints a Markdown table and writes it to
``benchmarks/results/graph_floor.md``.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import symgrad  # noqa: E402
from benchmarks import publish  # noqa: E402
from symgrad.spec import load_spec  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "graph_floor.md"
WIDTH = 256
#: a residual MLP (a stem, two blocks added back, the output reading the last block and the
#: stem: concat) and the chain of the same layer widths
RESIDUAL = {
    "name": "residual_bench",
    "inputs": 784,
    "layers": [
        {"units": WIDTH, "activation": "relu", "name": "stem"},
        {"units": WIDTH, "activation": "relu", "name": "inner1"},
        {
            "units": WIDTH,
            "activation": "relu",
            "name": "block1",
            "from": ["inner1", "stem"],
            "merge": "add",
        },
        {"units": WIDTH, "activation": "relu", "name": "inner2"},
        {
            "units": WIDTH,
            "activation": "relu",
            "name": "block2",
            "from": ["inner2", "block1"],
            "merge": "add",
        },
        {"units": 10, "activation": "softmax", "from": ["block2", "stem"]},
    ],
    "loss": "cross_entropy",
    "optimizer": {"name": "adam", "learning_rate": 0.001, "batch_size": 128, "epochs": 1},
    "init": {"scheme": "xavier", "seed": 0},
    "dtype": "float32",
}
CHAIN = {
    **RESIDUAL,
    "name": "chain_bench",
    "layers": [{"units": WIDTH, "activation": "relu"}] * 5
    + [{"units": 10, "activation": "softmax"}],
}


def floor_epoch(spec, X: np.ndarray, batch: int):
    """An epoch of only the matrix products of ``spec``'s trainer (see the module docstring)."""
    rng = np.random.default_rng(2)
    dt = np.dtype(spec.dtype)
    sizes, fans, sources = spec.sizes, spec.fan_ins, spec.sources
    L = len(spec.layers)
    Ws = [
        (rng.standard_normal((sizes[l], fans[l - 1])) / np.sqrt(fans[l - 1])).astype(dt)
        for l in range(1, L + 1)
    ]
    n = len(X)
    bufs = {}
    for m in {min(batch, n - s) for s in range(0, n, batch)}:
        bufs[m] = {
            "A": [rng.random((m, fans[l - 1])).astype(dt) for l in range(1, L + 1)],
            "Z": [np.empty((m, sizes[l]), dt) for l in range(1, L + 1)],
            "D": [(rng.standard_normal((m, sizes[l])) / m).astype(dt) for l in range(1, L + 1)],
            "dA": [np.empty((m, fans[l - 1]), dt) for l in range(1, L + 1)],
            "gW": [np.empty((sizes[l], fans[l - 1]), dt) for l in range(1, L + 1)],
        }
    concat = [len(src) > 1 and layer.merge == "concat" for layer, src in zip(spec.layers, sources)]

    def epoch() -> None:
        for start in range(0, n, batch):
            xb = X[start : start + batch]
            b = bufs[len(xb)]
            A, Z, D, dA, gW = b["A"], b["Z"], b["D"], b["dA"], b["gW"]
            for i in range(L):
                # a concatenation reads one buffer of its fan-in (the trainer copies into it)
                read = A[i] if concat[i] else (xb if sources[i][0] == 0 else Z[sources[i][0] - 1])
                np.dot(read, Ws[i].T, out=Z[i])
            for i in range(L - 1, -1, -1):
                read = A[i] if concat[i] else (xb if sources[i][0] == 0 else Z[sources[i][0] - 1])
                np.dot(D[i].T, read, out=gW[i])
                if sources[i] != (0,):
                    np.dot(D[i], Ws[i], out=dA[i])

    return epoch


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20_000, help="samples per epoch")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds")
    parser.add_argument("--output", type=Path, default=RESULTS, help="Markdown file to write")
    args = parser.parse_args(argv)
    rng = np.random.default_rng(0)
    X = rng.random((args.n, 784)).astype(np.float32)
    Y = np.eye(10, dtype=np.float32)[rng.integers(0, 10, args.n)]
    runs = {}
    for spec_dict in (RESIDUAL, CHAIN):
        spec = load_spec(spec_dict)
        model = symgrad.load_trainer(spec)
        model.fit(X[:256], Y[:256], epochs=1, track=False)  # warm up (buffers, BLAS threads)
        theta = model.get_flat().copy()

        def train(model=model, theta=theta):
            model.set_flat(theta)
            model.fit(X, Y, epochs=1, track=False, shuffle=False)

        runs[spec.name] = {
            "spec": spec,
            "trainer": train,
            "floor": floor_epoch(spec, X, spec.optimizer.batch_size),
            "best": {"trainer": float("inf"), "floor": float("inf")},
        }
    for _ in range(args.rounds):
        for run in runs.values():
            for what in ("trainer", "floor"):
                started = time.perf_counter()
                run[what]()
                run["best"][what] = min(run["best"][what], time.perf_counter() - started)
    lines = [
        f"Generated trainer vs its matrix-multiply floor: n = {args.n}, float32, batch 128, Adam, "
        f"best of {args.rounds} interleaved rounds; {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} cores, NumPy {np.__version__}.",
        "",
        "| network | parameters | epoch (fit, track=False) | GEMM floor | floor / epoch |",
        "|---|---|---|---|---|",
    ]
    for name, run in runs.items():
        t, f = run["best"]["trainer"], run["best"]["floor"]
        what = "residual (2 add blocks, concat output)" if name == "residual_bench" else "chain"
        lines.append(
            f"| {what} [784, {WIDTH} x 5, 10] | {run['spec'].n_params:,} | {t:.3f} s | "
            f"{f:.3f} s | {100 * f / t:.0f}% |"
        )
    return publish(lines, args.output)


if __name__ == "__main__":
    raise SystemExit(main())
