"""Exact Hessians: the generated trainer against JAX, torch.func and HIPS autograd.

    python -m benchmarks.hessians      # writes benchmarks/results/hessians.{json,md}

Logistic regression (sigmoid + log loss, d = 50, 200, 500 features, n = 5,000) and the full
Hessian of a small tanh network [10, 16, 1] (identity output, mse), float64, over the flattened
parameters in the generated trainer's order. Every peer is jitted/warmed up where it can be, the
reverse-over-reverse and forward-over-reverse forms are timed too, and every result must agree
with the generated Hessian to 1e-10. Times are the best of several runs.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

import symgrad


def best(fn, repeats=15):
    fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def problems():
    rng = np.random.default_rng(0)
    for d in (50, 200, 500):
        spec = {"name": "logreg", "inputs": d, "loss": "log_loss",
                "layers": [{"units": 1, "activation": "sigmoid"}]}
        X = rng.standard_normal((5000, d))
        Y = (rng.random((5000, 1)) > 0.5).astype(float)
        yield f"logistic regression d={d} (P = {d + 1}, n = 5000)", spec, X, Y
    spec = {"name": "tanhnet", "inputs": 10, "loss": "mse",
            "layers": [{"units": 16, "activation": "tanh"}, {"units": 1, "activation": "identity"}]}
    for n in (200, 1000):
        X = rng.standard_normal((n, 10))
        Y = rng.standard_normal((n, 1))
        yield f"tanh net [10, 16, 1] (P = 193, n = {n})", spec, X, Y


def cost_fns(spec, X, Y, xp):
    """The same cost written for an array library ``xp`` (jax.numpy, torch, autograd.numpy)."""
    sizes = [spec["inputs"]] + [layer["units"] for layer in spec["layers"]]
    n = X.shape[0]

    def unpack(t):
        out, o = [], 0
        for i in range(len(sizes) - 1):
            w = t[o:o + sizes[i] * sizes[i + 1]].reshape(sizes[i + 1], sizes[i])
            o += sizes[i] * sizes[i + 1]
            b = t[o:o + sizes[i + 1]]
            o += sizes[i + 1]
            out.append((w, b))
        return out

    if spec["loss"] == "log_loss":
        def f(t):
            (w, b), = unpack(t)
            z = X @ w.T + b
            return xp.sum(xp.logaddexp(0.0 * z, z) - Y * z) / n
    else:
        def f(t):
            (w1, b1), (w2, b2) = unpack(t)
            a = xp.tanh(X @ w1.T + b1)
            o = a @ w2.T + b2
            return 0.5 * xp.sum((o - Y) ** 2) / n
    return f


def main() -> None:
    rows = []
    for title, spec, X, Y in problems():
        model = symgrad.load_trainer(spec, dtype="float64")
        theta = model.get_flat()
        H = model.hessian(X, Y)
        results = {"generated": best(lambda: model.hessian(X, Y))}
        check = {}
        try:
            import jax
            import jax.numpy as jnp

            jax.config.update("jax_enable_x64", True)
            f = cost_fns(spec, jnp.asarray(X), jnp.asarray(Y), jnp)
            t = jnp.asarray(theta)
            for name, h in (("jax.hessian", jax.hessian(f)),
                            ("jax jacrev(jacrev)", jax.jacrev(jax.jacrev(f))),
                            ("jax jacfwd(grad)", jax.jacfwd(jax.grad(f)))):
                h = jax.jit(h)
                results[name] = best(lambda h=h: h(t).block_until_ready())
                check[name] = float(np.abs(np.asarray(h(t)) - H).max())
        except ImportError:
            pass
        try:
            import torch
            from torch.func import hessian, jacfwd, jacrev

            torch.set_num_threads(2)
            f = cost_fns(spec, torch.from_numpy(X), torch.from_numpy(Y), torch)
            t = torch.from_numpy(theta.copy())
            for name, h in (("torch.func.hessian", hessian(f)),
                            ("torch jacrev(jacrev)", jacrev(jacrev(f))),
                            ("torch jacfwd(jacrev)", jacfwd(jacrev(f)))):
                results[name] = best(lambda h=h: h(t), repeats=5)
                check[name] = float(np.abs(h(t).numpy() - H).max())
        except ImportError:
            pass
        try:
            import autograd
            import autograd.numpy as anp

            f = cost_fns(spec, X, Y, anp)
            h = autograd.hessian(f)
            results["autograd.hessian"] = best(lambda: h(theta), repeats=3)
            check["autograd.hessian"] = float(np.abs(h(theta) - H).max())
        except ImportError:
            pass
        fastest_peer = min((v for k, v in results.items() if k != "generated"), default=None)
        for name, sec in results.items():
            rows.append({"problem": title, "contestant": name, "seconds": sec,
                         "speedup_of_generated": sec / results["generated"],
                         "max_abs_diff": check.get(name, 0.0)})
        if fastest_peer:
            print(f"{title}: generated {results['generated'] * 1e3:.2f} ms, fastest peer "
                  f"{fastest_peer * 1e3:.2f} ms ({fastest_peer / results['generated']:.1f}x)")
        assert all(v < 1e-10 for v in check.values()), check
    lines = ["| problem | contestant | ms | generated is faster by | max abs diff |",
             "| --- | --- | ---: | ---: | ---: |"]
    for r in rows:
        lines.append(f"| {r['problem']} | {r['contestant']} | {r['seconds'] * 1e3:.2f} | "
                     f"{r['speedup_of_generated']:.2f}x | {r['max_abs_diff']:.1e} |")
    out = Path(__file__).parent / "results"
    out.mkdir(exist_ok=True)
    (out / "hessians.md").write_text("\n".join(lines) + "\n")
    (out / "hessians.json").write_text(json.dumps(rows, indent=1))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
