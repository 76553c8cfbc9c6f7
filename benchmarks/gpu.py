"""symgrad's PyTorch backend on a GPU, against PyTorch eager (autograd) and JAX's jitted epoch.

    python benchmarks/gpu.py                  # CUDA: the torch backend's tests, then the timings
    python benchmarks/gpu.py --device cpu     # the same on the CPU (a smoke run anywhere)
    python benchmarks/gpu.py --no-tests --n 60000

Without a CUDA device (or without PyTorch) it says so in one line and exits 0: nothing to run.

First the torch backend's tests run on the device (``tests/test_backend_torch.py`` with
``SYMGRAD_TEST_DEVICE`` set: the trainer on the device against the NumPy trainer, 1e-12 in
float64). Then, per network, one training epoch (same initial weights, same batches in order,
plain SGD, float32) of

* **symgrad torch**: ``symgrad.load_trainer(spec, backend="torch")`` moved to the device, its
  ``fit(track=False)``: the derived expressions as tensor code, no autograd;
* **torch eager**: the same network as ``torch.nn`` layers, ``loss.backward()`` and
  ``torch.optim.SGD``;
* **jax jit (scan)**: the epoch as one ``jax.lax.scan`` under ``jax.jit`` (``jax.grad``), on
  JAX's default device (skipped, with the reason, where JAX is missing).

The best of ``--rounds`` interleaved rounds is reported (the device synchronised around each
epoch), with each contestant's largest parameter difference from symgrad's after the epoch.
Writes ``benchmarks/results/gpu.md``. CuPy: symgrad has no CuPy backend yet (see the README).
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks import publish  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "gpu.md"
NETS = {
    "mlp": ([784, 256, 128, 10], ["relu", "relu", "softmax"], "cross_entropy", 256, 0.1),
    "textbook": ([784, 30, 10], ["sigmoid", "sigmoid"], "mse", 128, 3.0),
}


def spec_dict(name: str) -> dict:
    sizes, acts, loss, batch, lr = NETS[name]
    return {
        "name": f"gpu_{name}",
        "inputs": sizes[0],
        "layers": [{"units": u, "activation": a} for u, a in zip(sizes[1:], acts, strict=True)],
        "loss": loss,
        "optimizer": {"name": "sgd", "learning_rate": lr, "batch_size": batch, "epochs": 1},
        "init": {"scheme": "xavier", "seed": 0},
        "dtype": "float32",
    }


def data(name: str, n: int) -> tuple[np.ndarray, np.ndarray]:
    sizes = NETS[name][0]
    rng = np.random.default_rng(0)
    X = rng.random((n, sizes[0]), dtype=np.float32)
    Y = np.eye(sizes[-1], dtype=np.float32)[rng.integers(0, sizes[-1], n)]
    return X, Y


def unpack(theta: np.ndarray, sizes: list[int]) -> list[tuple[np.ndarray, np.ndarray]]:
    """(W_l, b_l) per layer from symgrad's public order (W_1 row-major, b_1, W_2, ...)."""
    out, k = [], 0
    for n_in, n_out in zip(sizes[:-1], sizes[1:], strict=True):
        W = theta[k : k + n_in * n_out].reshape(n_out, n_in)
        k += n_in * n_out
        out.append((W, theta[k : k + n_out]))
        k += n_out
    return out


def host(values) -> np.ndarray:
    """A tensor (any device) or an array as a NumPy array on the host."""
    if hasattr(values, "detach"):
        return values.detach().cpu().numpy()
    return np.asarray(values)


def symgrad_contestant(name, X, Y, device):
    import torch

    import symgrad

    model = symgrad.load_trainer(spec_dict(name), backend="torch").to(device)
    start = host(model.get_flat())
    Xd = torch.as_tensor(X, device=device)
    Yd = torch.as_tensor(Y, device=device)

    def epoch():
        model.fit(Xd, Yd, epochs=1, shuffle=False, track=False)

    def reset():
        model.set_flat(start)

    return start, epoch, reset, lambda: host(model.get_flat()).astype(np.float64)


def eager_contestant(name, X, Y, device, start):
    import torch

    sizes, acts, loss, batch, lr = NETS[name]
    layers = []
    for (n_in, n_out), act in zip(zip(sizes[:-1], sizes[1:], strict=True), acts, strict=True):
        layers.append(torch.nn.Linear(n_in, n_out))
        if act != "softmax":
            layers.append({"relu": torch.nn.ReLU, "sigmoid": torch.nn.Sigmoid}[act]())
    net = torch.nn.Sequential(*layers).to(device)
    linears = [m for m in net if isinstance(m, torch.nn.Linear)]
    opt = torch.optim.SGD(net.parameters(), lr=lr)
    Xd, Yd = torch.as_tensor(X, device=device), torch.as_tensor(Y, device=device)

    def reset():
        with torch.no_grad():
            for lin, (W, b) in zip(linears, unpack(start, sizes), strict=True):
                lin.weight.copy_(torch.as_tensor(W))
                lin.bias.copy_(torch.as_tensor(b))

    def cost(out, y):
        if loss == "cross_entropy":
            return torch.nn.functional.cross_entropy(out, y.argmax(dim=1))
        return 0.5 * ((out - y) ** 2).sum(dim=1).mean()

    def epoch():
        for lo in range(0, len(Xd), batch):
            opt.zero_grad(set_to_none=True)
            cost(net(Xd[lo : lo + batch]), Yd[lo : lo + batch]).backward()
            opt.step()

    def params():
        flat = []
        for lin in linears:
            flat += [lin.weight.detach().cpu().numpy().ravel(), lin.bias.detach().cpu().numpy()]
        return np.concatenate(flat).astype(np.float64)

    return epoch, reset, params


def jax_contestant(name, X, Y, start):
    import jax
    import jax.numpy as jnp

    sizes, acts, loss, batch, lr = NETS[name]
    n = (len(X) // batch) * batch
    Xb = jnp.asarray(X[:n]).reshape(-1, batch, sizes[0])
    Yb = jnp.asarray(Y[:n]).reshape(-1, batch, sizes[-1])

    def forward(params, x):
        for (W, b), act in zip(params, acts, strict=True):
            x = x @ W.T + b
            if act == "relu":
                x = jax.nn.relu(x)
            elif act == "sigmoid":
                x = jax.nn.sigmoid(x)
        return x

    def cost(params, x, y):
        out = forward(params, x)
        if loss == "cross_entropy":
            return -(y * jax.nn.log_softmax(out)).sum(axis=1).mean()
        return 0.5 * ((out - y) ** 2).sum(axis=1).mean()

    @jax.jit
    def run(params):
        def step(p, xy):
            g = jax.grad(cost)(p, *xy)
            return jax.tree_util.tree_map(lambda a, d: a - lr * d, p, g), None

        return jax.lax.scan(step, params, (Xb, Yb))[0]

    init = [(jnp.asarray(W), jnp.asarray(b)) for W, b in unpack(start, sizes)]
    state = {"p": init}

    def epoch():
        state["p"] = run(init)
        jax.block_until_ready(state["p"])

    def params():
        return np.concatenate(
            [np.concatenate([np.ravel(W), np.ravel(b)]) for W, b in state["p"]]
        ).astype(np.float64)

    epoch()  # compile
    return epoch, lambda: None, params, str(jax.devices()[0])


def run_tests(device: str) -> int:
    env = dict(os.environ, SYMGRAD_TEST_DEVICE=device)
    cmd = [
        sys.executable,
        "-m",
        "pytest",
        "-q",
        "-p",
        "no:cacheprovider",
        "tests/test_backend_torch.py",
    ]
    print("$", " ".join(cmd), f"(SYMGRAD_TEST_DEVICE={device})", flush=True)
    return subprocess.call(cmd, cwd=ROOT, env=env)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda", help="cuda (default), cuda:N or cpu")
    parser.add_argument("--n", type=int, default=60_000, help="samples per epoch")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved timing rounds")
    parser.add_argument("--nets", nargs="+", choices=list(NETS), default=list(NETS))
    parser.add_argument("--no-tests", action="store_true", help="timings only")
    parser.add_argument("--output", type=Path, default=RESULTS, help="Markdown file to write")
    args = parser.parse_args(argv)
    try:
        import torch
    except ImportError:
        print("PyTorch is not installed (pip install 'symgrad[torch]'): nothing to run")
        return 0
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print(
            f"no CUDA device here (torch {torch.__version__}): skipped; --device cpu runs it "
            "on the CPU"
        )
        return 0
    device = torch.device(args.device)
    if not args.no_tests and run_tests(args.device) != 0:
        print("the torch backend's tests failed on the device: no timings")
        return 1

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    if device.type == "cuda":
        where = torch.cuda.get_device_name(device)
    else:
        where = platform.processor() or platform.machine()
    lines = [
        f"One SGD epoch, float32, n = {args.n}, best of {args.rounds} interleaved rounds; device "
        f"{where}, torch {torch.__version__}.",
        "",
        "| network | contestant | s / epoch | vs symgrad torch | max abs dparam vs symgrad |",
        "|---|---|---:|---:|---:|",
    ]
    for name in args.nets:
        X, Y = data(name, args.n)
        start, s_epoch, s_reset, s_params = symgrad_contestant(name, X, Y, device)
        contestants = {"symgrad torch": (s_epoch, s_reset, s_params)}
        contestants["torch eager"] = eager_contestant(name, X, Y, device, start)
        try:
            j_epoch, j_reset, j_params, where = jax_contestant(name, X, Y, start)
            contestants[f"jax jit (scan, {where})"] = (j_epoch, j_reset, j_params)
        except ImportError:
            print("jax is not installed: its row is skipped")
        best = dict.fromkeys(contestants, float("inf"))
        for _ in range(args.rounds):
            for key, (epoch, reset, _) in contestants.items():
                reset()
                sync()
                started = time.perf_counter()
                epoch()
                sync()
                best[key] = min(best[key], time.perf_counter() - started)
        for epoch, reset, _ in contestants.values():
            reset()
            epoch()
        ref = contestants["symgrad torch"][2]()
        sizes = NETS[name][0]
        for key, (_, _, params) in contestants.items():
            diff = float(np.max(np.abs(params() - ref)))
            lines.append(
                f"| {name} {sizes} | {key} | {best[key]:.4f} | "
                f"{best[key] / best['symgrad torch']:.2f} | {diff:.1e} |"
            )
    return publish(lines, args.output)


if __name__ == "__main__":
    raise SystemExit(main())
