"""Derivation and generation time against depth (1 to 20 layers) and width (4 to 4096).

Usage: python benchmarks/derive_time.py  (prints a Markdown table, writes
benchmarks/results/derive_time.md). Each case runs in a fresh process so SymPy's caches do not
flatter later rows.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

CASE = r"""
import json, sys, time
import symgrad
from symgrad.codegen import render_source
depth, width = int(sys.argv[1]), int(sys.argv[2])
acts = ["tanh", "relu", "sigmoid", "softplus", "elu"]
layers = [{"units": width, "activation": acts[i % len(acts)]} for i in range(depth - 1)]
layers.append({"units": 10, "activation": "softmax"})
spec = symgrad.load_spec({"name": "bench", "inputs": 784, "layers": layers,
                          "loss": "cross_entropy"})
t0 = time.perf_counter()
d = symgrad.derive(spec)
t1 = time.perf_counter()
render_source(d, "bench.yaml")
t2 = time.perf_counter()
print(json.dumps({"depth": depth, "width": width, "derive_s": t1 - t0, "generate_s": t2 - t1}))
"""


def run(depth: int, width: int) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", CASE, str(depth), str(width)],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    rows = [run(d, 64) for d in (1, 2, 5, 10, 20)] + [run(3, w) for w in (4, 64, 512, 4096)]
    lines = ["| depth | width | derive (s) | generate (s) |", "| --- | --- | --- | --- |"]
    for r in rows:
        lines.append(
            f"| {r['depth']} | {r['width']} | {r['derive_s']:.3f} | {r['generate_s']:.3f} |"
        )
    table = "\n".join(lines)
    print(table)
    out = Path(__file__).parent / "results"
    out.mkdir(exist_ok=True)
    (out / "derive_time.md").write_text(table + "\n")


if __name__ == "__main__":
    main()
