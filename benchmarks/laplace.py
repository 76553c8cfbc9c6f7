"""The Laplace approximation against laplace-torch (CPU), and hvp-based Lanczos against JAX.

    python -m benchmarks.laplace            # writes benchmarks/results/laplace.{json,md}
    python -m benchmarks.laplace --quick    # 1,000 images: a smoke run

The network is a [784, 64, 10] tanh/softmax MLP (P = 50,890, l2 = 1) trained briefly with Adam
on the first n = 10,000 Fashion-MNIST training images (pixels in [0, 1]); everything is float64
on the CPU. For each structure three steps are timed for both libraries: fitting the
approximation and evaluating its log marginal likelihood (prior precision 1 on every parameter,
laplace-torch's convention); the probit predictive on 200 test images; choosing the prior
precision by the evidence (ours: bisection to the root of its derivative; laplace-torch: its
default 100 Adam steps on the log prior precision). A step is run up to 3 times within 60 s and
the best time kept (the machine is shared). A dense posterior (``full``: the exact Hessian;
``gauss_newton``) of this network would need P^2 * 8 bytes = 20.7 GB in either library, so
those two are timed on a smaller problem: the images 2x2-mean-pooled to 14x14, a [196, 16, 10]
network (P = 3,322) polished to a minimum with L-BFGS-B, on n = 1,000.

laplace-torch is fed batches of 500, and of 100 for ``diag`` (its diagonal GGN holds the
Jacobian of a batch, batch x 10 x P doubles: the whole set at once would need 41 GB; 100 take
0.4 GB); its K-FAC factors summed over batches equal the one-batch factors (B is a sum, A a
mean), so both libraries compute the same thing, which is checked: the log marginal likelihoods
and the predictive probabilities are compared.

Lanczos: the 5 largest Hessian eigenvalues of the [784, 64, 10] cost on the 10,000 images by
``scipy.sparse.linalg.eigsh`` (same start vector, tol 1e-8) on a ``LinearOperator`` whose product
is symgrad's cached R-operator (``hessian_eigs``: forward pass and deltas computed once), the
trainer's ``hvp`` (which redoes the forward pass), or JAX's jitted forward-over-reverse
``jvp(grad)`` (parameters and data passed as arguments, so XLA cannot fold the forward pass).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from pathlib import Path

import numpy as np

import symgrad
from symgrad.data import load_data
from symgrad.runtime.curvature import laplace, scipy_objective

DATA = "/usr/share/datasets/fashion-mnist"
STRUCTURES = {  # ours: laplace-torch's (hessian_structure, backend)
    "kfac": ("kron", "CurvlinopsGGN"),
    "diag": ("diag", "CurvlinopsGGN"),
    "full": ("full", "CurvlinopsHessian"),
    "gauss_newton": ("full", "CurvlinopsGGN"),
}


def spec(inputs: int, hidden: int) -> dict:
    return {
        "name": f"fashion_laplace_{inputs}_{hidden}",
        "inputs": inputs,
        "regularization": {"l2": 1.0},
        "layers": [
            {"units": hidden, "activation": "tanh"},
            {"units": 10, "activation": "softmax"},
        ],
        "loss": "cross_entropy",
        "optimizer": {"name": "adam", "learning_rate": 0.002, "batch_size": 128, "epochs": 3},
        "init": {"scheme": "xavier", "seed": 0},
    }


def pooled(X: np.ndarray) -> np.ndarray:
    return X.reshape(-1, 14, 2, 14, 2).mean(axis=(2, 4)).reshape(-1, 196)


def timed(fn):
    t = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t


def best(fn, repeats: int) -> float:
    """The best of ``repeats`` timings (the machine is shared: the minimum is the signal)."""
    return min(timed(fn)[1] for _ in range(repeats))


def torch_net(model, sizes):
    import torch

    layers = [torch.nn.Linear(sizes[0], sizes[1]), torch.nn.Tanh(), torch.nn.Linear(sizes[1], 10)]
    net = torch.nn.Sequential(*layers).double()
    torch.nn.utils.vector_to_parameters(torch.tensor(model.get_flat()), net.parameters())
    return net


def measured(fn, budget: float = 60.0, repeats: int = 3):
    """``fn()``'s result and its best time over up to ``repeats`` runs within ``budget`` s."""
    out, first = timed(fn)
    times, spent = [first], first
    while len(times) < repeats and spent + times[0] < budget:
        t = timed(fn)[1]
        times.append(t)
        spent += t
    return out, min(times)


def run_laplace(structure, model, sizes, X, Y, Xt, rows):
    def fit():
        la = laplace(model, X, Y, prior_precision=1.0, structure=structure)
        return la, la.log_marginal_likelihood()

    (la, lml), t_fit = measured(fit)
    probs, t_pred = measured(lambda: la.predict(Xt))

    def choose():
        la.prior_precision = 1.0
        return float(la.optimize_prior_precision()[0]), la.log_marginal_likelihood()

    try:
        (delta, lml_opt), t_opt = measured(choose)
    except ValueError as exc:  # the exact Hessian of the data term is indefinite
        print(f"  symgrad: {exc}")
        delta = lml_opt = t_opt = float("nan")
    ours = {
        "fit": t_fit,
        "predict": t_pred,
        "prior": t_opt,
        "lml": lml,
        "delta": delta,
        "lml_opt": lml_opt,
    }
    print(f"  symgrad: fit {t_fit:.3f} s, predict {t_pred:.3f} s, prior {t_opt:.3f} s")
    theirs = None
    try:
        import torch
        from laplace import Laplace, curvature
        from torch.utils.data import DataLoader, TensorDataset
    except ImportError as exc:
        print(f"  laplace-torch not available ({exc})")
    else:
        torch.set_num_threads(os.cpu_count() or 1)
        # laplace-torch's full() multiplies by torch.eye in the default dtype: float32 unless
        # set, which costs it 7 digits (a GGN 2.4e-8 off in relative terms)
        torch.set_default_dtype(torch.float64)
        net = torch_net(model, sizes)
        hs, backend = STRUCTURES[structure]
        data = TensorDataset(torch.tensor(X), torch.tensor(Y.argmax(axis=1)))
        loader = DataLoader(data, batch_size=100 if structure == "diag" else 500)

        def fit_theirs():
            lt = Laplace(
                net,
                "classification",
                subset_of_weights="all",
                hessian_structure=hs,
                backend=getattr(curvature, backend),
                prior_precision=1.0,
            )
            lt.fit(loader)
            return lt, float(lt.log_marginal_likelihood())

        (lt, lml_t), t_fit_t = measured(fit_theirs)

        def predict_theirs():
            out = [
                lt(torch.tensor(Xt[i : i + 50]), pred_type="glm", link_approx="probit")
                for i in range(0, len(Xt), 50)
            ]
            return torch.cat(out).detach().numpy()

        probs_t, t_pred_t = measured(predict_theirs)

        def opt_theirs():
            lt.optimize_prior_precision(pred_type="glm", method="marglik", n_steps=100, lr=0.1)
            value = float(lt.log_marginal_likelihood().detach())
            return float(lt.prior_precision.reshape(-1)[0]), value

        (delta_t, lml_opt_t), t_opt_t = measured(opt_theirs)
        theirs = {
            "fit": t_fit_t,
            "predict": t_pred_t,
            "prior": t_opt_t,
            "lml": lml_t,
            "delta": delta_t,
            "lml_opt": lml_opt_t,
            "lml_rel_diff": abs(lml - lml_t) / abs(lml_t),
            "prob_max_diff": float(np.max(np.abs(probs - probs_t))),
        }
        print(
            f"  laplace-torch: fit {t_fit_t:.3f} s, predict {t_pred_t:.3f} s, "
            f"prior {t_opt_t:.3f} s; lml rel diff {theirs['lml_rel_diff']:.1e}"
        )
    return {"structure": structure, "problem": rows, "symgrad": ours, "laplace-torch": theirs}


def run_lanczos(model, X, Y, k=5, tol=1e-8):
    """Top-k Hessian eigenvalues by eigsh on three products: symgrad's cached R-operator
    (``hessian_eigs``), the trainer's ``hvp`` and JAX's jitted ``jvp(grad)``."""
    from scipy.sparse.linalg import LinearOperator, eigsh

    from symgrad.runtime.curvature import Network

    P = model.get_flat().size
    n = X.shape[0]
    v0 = np.random.default_rng(0).standard_normal(P)
    net = Network(model)
    reg = net.weight_mask * (float(model.l2) / n)
    contestants = {}

    def cached_operator():
        op = net.curvature_operator(model.get_flat(), X, Y)
        return lambda v: op(v) / n + reg * v

    contestants["symgrad (cached R-operator)"] = cached_operator
    contestants["symgrad (trainer hvp)"] = lambda: lambda v: model.hvp(X, Y, v)
    try:
        import jax

        jax.config.update("jax_enable_x64", True)
        import jax.numpy as jnp
    except ImportError as exc:
        print(f"  JAX not available ({exc})")
    else:
        d, h = X.shape[1], model.b_1.size
        l2 = float(model.l2)

        def cost(t, Xj, Yj):
            W1 = t[: h * d].reshape(h, d)
            b1 = t[h * d : h * d + h]
            o = h * d + h
            W2 = t[o : o + 10 * h].reshape(10, h)
            b2 = t[o + 10 * h :]
            z = jnp.tanh(Xj @ W1.T + b1) @ W2.T + b2
            data = jnp.sum(jax.nn.logsumexp(z, axis=1) - jnp.sum(Yj * z, axis=1)) / n
            return data + l2 / (2 * n) * (jnp.sum(W1**2) + jnp.sum(W2**2))

        # theta and the data are arguments, not constants: XLA may not fold the forward pass
        hvp = jax.jit(
            lambda t, v, Xj, Yj: jax.jvp(lambda u: jax.grad(cost)(u, Xj, Yj), (t,), (v,))[1]
        )
        args = (jnp.asarray(model.get_flat()), jnp.asarray(X), jnp.asarray(Y))
        hvp(args[0], jnp.asarray(v0), *args[1:]).block_until_ready()  # compile, untimed
        contestants["JAX jit jvp(grad)"] = lambda: (
            lambda v: np.asarray(hvp(args[0], jnp.asarray(v), *args[1:]))
        )
    out = {}
    ref = None
    for name, make_op in contestants.items():
        count = [0]

        def run(make_op=make_op, count=count):
            count[0] = 0
            product = make_op()

            def matvec(v):
                count[0] += 1
                return product(np.ravel(v))

            op = LinearOperator((P, P), matvec=matvec, dtype=np.float64)
            return np.sort(eigsh(op, k=k, which="LA", v0=v0, tol=tol)[0])[::-1]

        v = np.random.default_rng(1).standard_normal(P)
        make_op()(v)  # warm up (first-touch allocations, BLAS threads), untimed
        lam, seconds = measured(run)
        product = make_op()
        per = best(lambda product=product: product(v), 5)
        ref = lam if ref is None else ref
        out[name] = {
            "time": seconds,
            "matvecs": count[0],
            "per_hvp": per,
            "eigenvalues": lam.tolist(),
            "max_rel_diff": float(np.max(np.abs(lam - ref) / np.abs(ref))),
        }
        print(f"  {name}: {seconds:.2f} s, {count[0]} products, {per * 1e3:.1f} ms each")
    return out


#: What the tables say where symgrad refused to choose the prior (optimize_prior_precision).
REFUSED = "refused: the exact Hessian has a negative eigenvalue (evidence unbounded)"


def markdown(results) -> str:
    lines = [
        "| problem | structure | step | symgrad s | laplace-torch s | laplace-torch / symgrad |",
        "| --- | --- | --- | ---: | ---: | ---: |",
    ]
    for r in results["laplace"]:
        ours, theirs = r["symgrad"], r["laplace-torch"]
        for step, label in (
            ("fit", "fit + log evidence"),
            ("predict", "probit predictive"),
            ("prior", "prior by evidence"),
        ):
            t = theirs[step] if theirs else float("nan")
            if math.isnan(ours[step]):  # symgrad refused (an indefinite exact Hessian)
                mine, ratio = REFUSED, "-"
            else:
                mine, ratio = f"{ours[step]:.3f}", f"{t / ours[step]:.1f}x"
            lines.append(
                f"| {r['problem']} | {r['structure']} | {label} | {mine} | {t:.3f} | {ratio} |"
            )
    lines += [
        "",
        "| structure | log evidence (symgrad) | rel. diff to laplace-torch | "
        "max prob diff | prior by evidence: symgrad delta, lml | laplace-torch delta, lml |",
        "| --- | ---: | ---: | ---: | --- | --- |",
    ]
    for r in results["laplace"]:
        ours, theirs = r["symgrad"], r["laplace-torch"] or {}
        nan = float("nan")
        mine = (
            REFUSED if math.isnan(ours["delta"]) else f"{ours['delta']:.4g}, {ours['lml_opt']:.4f}"
        )
        lines.append(
            f"| {r['structure']} | {ours['lml']:.6f} | {theirs.get('lml_rel_diff', nan):.1e}"
            f" | {theirs.get('prob_max_diff', nan):.1e} | {mine} | "
            f"{theirs.get('delta', nan):.4g}, {theirs.get('lml_opt', float('nan')):.4f} |"
        )
    lz = results["lanczos"]
    lines += [
        "",
        "| Lanczos, top 5 (eigsh, tol 1e-8) | s | products | ms per product | "
        "max rel. diff | eigenvalues |",
        "| --- | ---: | ---: | ---: | ---: | --- |",
    ]
    for name, r in lz.items():
        ev = ", ".join(f"{x:.6g}" for x in r["eigenvalues"])
        lines.append(
            f"| {name} | {r['time']:.2f} | {r['matvecs']} | {r['per_hvp'] * 1e3:.1f} | "
            f"{r['max_rel_diff']:.1e} | {ev} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1,000 images: a smoke run")
    parser.add_argument(
        "--parts",
        nargs="+",
        default=["big", "small", "lanczos"],
        choices=["big", "small", "lanczos"],
        help="what to run (the others are kept from an earlier results file)",
    )
    args = parser.parse_args()
    n, n_small = (1000, 500) if args.quick else (10_000, 1_000)
    train = load_data(f"idx:{DATA}/train", n_inputs=784, n_outputs=10, limit=n)
    test = load_data(f"idx:{DATA}/t10k", n_inputs=784, n_outputs=10, limit=200)
    X, Y, Xt = train.X, train.Y, test.X
    out = Path(__file__).parent / "results"
    stem = "laplace_quick" if args.quick else "laplace"
    old = out / f"{stem}.json"
    results = json.loads(old.read_text()) if old.exists() else {}
    if results.get("n") != n:
        results = {}
    results["n"] = n
    parts = results.setdefault("parts", {})

    big = symgrad.load_trainer(symgrad.load_spec(spec(784, 64)))
    big.fit(X, Y)
    if "big" in args.parts:
        rows = f"[784, 64, 10], n = {n}"
        parts["big"] = []
        for structure in ("kfac", "diag"):
            print(f"{rows}: {structure}")
            parts["big"].append(run_laplace(structure, big, [784, 64], X, Y, Xt, rows))
    if "small" in args.parts:
        small = symgrad.load_trainer(symgrad.load_spec(spec(196, 16)))
        Xs, Ys = pooled(X[:n_small]), Y[:n_small]
        small.fit(Xs, Ys)
        # the exact Hessian needs a minimum: polish with L-BFGS-B (untimed)
        scipy_objective(small, Xs, Ys).minimize("L-BFGS-B", options={"maxiter": 5000, "gtol": 1e-7})
        rows = f"[196, 16, 10], n = {n_small}"
        parts["small"] = []
        for structure in ("full", "gauss_newton"):
            print(f"{rows}: {structure}")
            parts["small"].append(
                run_laplace(structure, small, [196, 16], Xs, Ys, pooled(Xt), rows)
            )
    if "lanczos" in args.parts:
        print("Lanczos")
        parts["lanczos"] = run_lanczos(big, X, Y)
    results["laplace"] = parts.get("big", []) + parts.get("small", [])
    results["lanczos"] = parts.get("lanczos", {})
    old.write_text(json.dumps(results, indent=2) + "\n")
    (out / f"{stem}.md").write_text(markdown(results))
    print(markdown(results))


if __name__ == "__main__":
    main()
