"""The Dask driver on a LocalCluster of 2 worker processes (``-m cluster``).

What is compared: the parameters after k iterations of gd / Newton / Newton-CG run by
``symgrad.runtime.cluster.fit`` over 5 uneven partitions, against the same k iterations computed
by ``reference`` below on the whole in-memory array with the same trainer's functions
(``gradient_flat``, ``hessian``, ``hvp`` with the spec's lambda_2, N = all samples), and, for gd
and Newton, against the single-machine trainer's own ``fit`` (full batch, no shuffle).
"""

from __future__ import annotations

import os
import signal
import sys

import numpy as np
import pytest

pytest.importorskip("distributed")
pytest.importorskip("zarr")

from distributed import Client  # noqa: E402

from symgrad import load_spec, load_trainer  # noqa: E402
from symgrad.cli import main  # noqa: E402
from symgrad.data.shards import open_chunked, write_npz_shards, write_zarr  # noqa: E402
from symgrad.runtime.cluster import fit, local_cluster  # noqa: E402

pytestmark = pytest.mark.cluster

SPECS = {
    "logistic": {
        "name": "cl_logistic",
        "inputs": 5,
        "layers": [{"units": 1, "activation": "sigmoid"}],
        "loss": "log_loss",
        "regularization": {"l2": 0.1},
        "init": {"scheme": "xavier", "seed": 0},
    },
    "softmax": {
        "name": "cl_softmax",
        "inputs": 4,
        "layers": [{"units": 3, "activation": "softmax"}],
        "loss": "cross_entropy",
        "regularization": {"l2": 0.05},
        "init": {"scheme": "xavier", "seed": 0},
    },
    "mlp": {
        "name": "cl_mlp",
        "inputs": 4,
        "layers": [{"units": 6, "activation": "tanh"}, {"units": 3, "activation": "softmax"}],
        "loss": "cross_entropy",
        "regularization": {"l2": 0.01},
        "init": {"scheme": "xavier", "seed": 0},
    },
}
CHUNKS = (150, 100, 200, 50, 100)  # 600 samples in 5 uneven partitions
ITERATIONS = {"gd": 10, "newton": 4, "newton_cg": 3}
LEARNING_RATE = {"gd": 0.5, "newton": 1.0, "newton_cg": 1.0}
#: the MLP's exact Hessian is indefinite at the start (smallest eigenvalue -0.49): damping 1
#: makes each Newton system positive definite and well conditioned
DAMPING = {"logistic": 1e-4, "softmax": 1e-4, "mlp": 1.0}
CG_MAXITER = 8


def _spec(kind: str, optimizer: str = "newton", epochs: int = 4, lr: float = 1.0):
    raw = dict(SPECS[kind])
    raw["optimizer"] = {
        "name": optimizer,
        "learning_rate": lr,
        "damping": DAMPING[kind],
        "epochs": epochs,
    }
    return load_spec(raw)


def _data(kind: str, n: int = sum(CHUNKS), seed: int = 0):
    rng = np.random.default_rng(seed)
    d = SPECS[kind]["inputs"]
    k = SPECS[kind]["layers"][-1]["units"]
    X = rng.standard_normal((n, d))
    if k == 1:
        p = 1 / (1 + np.exp(-(X @ rng.standard_normal(d))))
        return X, (rng.random(n) < p).astype(float)[:, None]
    labels = np.argmax(X @ rng.standard_normal((d, k)) + rng.gumbel(size=(n, k)), axis=1)
    return X, np.eye(k)[labels]


def _cg(apply, g, maxiter, rtol=1e-10):
    """Conjugate gradients with the stopping rules of the trainer's newton_direction."""
    p = np.zeros_like(g)
    r = g.copy()
    d = r.copy()
    rr = float(r @ r)
    tol = rtol * rtol * max(rr, 1e-300)
    for _ in range(maxiter):
        Ad = apply(d)
        dAd = float(d @ Ad)
        if dAd <= 0:
            break
        step = rr / dAd
        p += step * d
        r -= step * Ad
        rr_new = float(r @ r)
        if rr_new < tol:
            break
        d *= rr_new / rr
        d += r
        rr = rr_new
    return p


def reference(model, X, Y, method: str, iterations: int, lr: float, damping: float):
    """The same iterations on the whole in-memory array with the trainer's own functions."""
    for _ in range(iterations):
        theta = model.get_flat()
        g = model.gradient_flat(X, Y)
        if method == "gd":
            step = g
        elif method == "newton":
            H = model.hessian(X, Y)
            H[np.diag_indices_from(H)] += damping
            step = np.linalg.solve(H, g)
        else:
            step = _cg(lambda d: model.hvp(X, Y, d) + damping * d, g, CG_MAXITER)
        model.set_flat(theta - lr * step)
    return model.get_flat()


@pytest.fixture(scope="module")
def client():
    with local_cluster(2) as cluster, Client(cluster) as c:
        yield c


def _dask(X, Y):
    import dask.array as da

    return da.from_array(X, chunks=(CHUNKS, -1)), da.from_array(Y, chunks=(CHUNKS, -1))


@pytest.mark.parametrize("method", ["gd", "newton", "newton_cg"])
@pytest.mark.parametrize("kind", ["logistic", "softmax", "mlp"])
def test_cluster_equals_whole_array_iterations(client, kind, method):
    spec = _spec(kind)
    X, Y = _data(kind)
    model = load_trainer(spec)
    start = model.get_flat()
    result = fit(
        model,
        *_dask(X, Y),
        method=method,
        client=client,
        iterations=ITERATIONS[method],
        learning_rate=LEARNING_RATE[method],
        cg_maxiter=CG_MAXITER,
    )
    assert result.iterations == ITERATIONS[method] == model.epochs_done
    assert result.partitions == len(CHUNKS) and result.samples == len(X)
    one = load_trainer(spec)
    expected = reference(
        one, X, Y, method, ITERATIONS[method], LEARNING_RATE[method], DAMPING[kind]
    )
    theta = model.get_flat()
    assert np.abs(theta - start).max() > 1e-3  # it moved
    np.testing.assert_allclose(theta, expected, rtol=0, atol=1e-10)
    # the reported cost is the trainer's loss on the whole set before the last update
    before = load_trainer(spec)
    reference(before, X, Y, method, ITERATIONS[method] - 1, LEARNING_RATE[method], DAMPING[kind])
    assert result.history["loss"][-1] == pytest.approx(before.loss(X, Y), rel=1e-12)


@pytest.mark.parametrize("optimizer", ["gd", "newton"])
def test_cluster_equals_the_trainer_fit(client, optimizer):
    spec = _spec("mlp", optimizer, epochs=ITERATIONS[optimizer], lr=LEARNING_RATE[optimizer])
    X, Y = _data("mlp")
    model = load_trainer(spec)
    fit(model, *_dask(X, Y), method=optimizer, client=client)
    one = load_trainer(spec)
    one.fit(X, Y, shuffle=False)
    np.testing.assert_allclose(model.get_flat(), one.get_flat(), rtol=0, atol=1e-10)


SCIPY = {"lbfgs": "L-BFGS-B", "trust_ncg": "trust-ncg"}


@pytest.mark.parametrize("method", ["lbfgs", "trust_ncg"])
@pytest.mark.parametrize("kind", ["logistic", "softmax", "mlp"])
def test_scipy_methods_equal_scipy_on_one_machine(client, kind, method):
    """L-BFGS / trust-region Newton-CG over the cluster's sums take SciPy's iterations on the
    whole in-memory array (the trainer's loss, gradient_flat and hvp) to 1e-10."""
    pytest.importorskip("scipy")
    from symgrad.runtime.curvature import scipy_objective

    spec = _spec(kind)
    X, Y = _data(kind)
    model = load_trainer(spec)
    start = model.get_flat()
    k = 6
    result = fit(model, *_dask(X, Y), method=method, client=client, iterations=k)
    assert result.iterations == k == model.epochs_done == len(result.history["loss"])
    obj = scipy_objective(load_trainer(spec), X, Y)
    options = {"maxiter": k, "gtol": 0.0}
    if method == "lbfgs":
        options.update(ftol=0.0, maxcor=10)
    expected = obj.minimize(SCIPY[method], options=options)
    theta = model.get_flat()
    assert np.abs(theta - start).max() > 1e-2  # it moved
    np.testing.assert_allclose(theta, expected.x, rtol=0, atol=1e-10)
    # the history's cost is the trainer's loss at the point each iteration reached
    assert result.history["loss"][-1] == pytest.approx(obj.fun(expected.x), rel=1e-12)
    assert result.history["loss"] == sorted(result.history["loss"], reverse=True)


@pytest.mark.parametrize("method", ["lbfgs", "trust_ncg"])
def test_scipy_methods_converge_to_newtons_optimum(client, method):
    pytest.importorskip("scipy")
    spec = _spec("logistic")  # strictly convex: one optimum
    X, Y = _data("logistic")
    model = load_trainer(spec)
    result = fit(model, *_dask(X, Y), method=method, client=client, iterations=200, tol=1e-9)
    assert result.converged and result.iterations < 200
    assert np.abs(model.gradient_flat(X, Y)).max() <= 1e-8
    newton = load_trainer(spec)
    reference(newton, X, Y, "newton", 12, 1.0, 0.0)
    np.testing.assert_allclose(model.get_flat(), newton.get_flat(), rtol=0, atol=1e-7)


def test_gd_with_l1_takes_the_proximal_step(client):
    raw = dict(SPECS["softmax"], regularization={"l2": 0.05, "l1": 0.5})
    raw["optimizer"] = {"name": "gd", "learning_rate": 0.5, "epochs": 3}
    spec = load_spec(raw)
    X, Y = _data("softmax")
    model = load_trainer(spec)
    fit(model, *_dask(X, Y), method="gd", client=client)
    one = load_trainer(spec)
    one.l1 = 0.0
    weights = np.array([1.0] * 12 + [0.0] * 3)  # W_1 (3 x 4) row-major, then b_1
    for _ in range(3):
        u = one.get_flat() - 0.5 * one.gradient_flat(X, Y)
        shrunk = np.sign(u) * np.maximum(np.abs(u) - 0.5 * 0.5 / len(X), 0.0)
        one.set_flat(np.where(weights == 1.0, shrunk, u))
    np.testing.assert_allclose(model.get_flat(), one.get_flat(), rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match=r"^newton needs a twice-differentiable cost"):
        fit(load_trainer(spec), *_dask(X, Y), method="newton", client=client)


def test_zarr_streamed_equals_persisted_bit_for_bit(client, tmp_path):
    X, Y = _data("mlp")
    write_zarr(tmp_path / "d.zarr", X, np.argmax(Y, axis=1), chunk_rows=128)
    data = open_chunked(tmp_path / "d.zarr", n_inputs=4, n_outputs=3)
    assert data.partitions == 5
    runs = []
    for persist in (True, False):
        model = load_trainer(_spec("mlp"))
        fit(model, data.X, data.Y, method="newton", client=client, iterations=2, persist=persist)
        runs.append(model.get_flat())
    assert np.array_equal(runs[0], runs[1])
    one = load_trainer(_spec("mlp"))
    expected = reference(one, X, Y, "newton", 2, 1.0, DAMPING["mlp"])
    np.testing.assert_allclose(runs[0], expected, rtol=0, atol=1e-10)


def _theta(spec, path):
    model = load_trainer(spec)
    model.load(path)
    return model.get_flat(), model.epochs_done


def test_cli_checkpoint_resume_over_a_scheduler_address(client, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    raw = dict(
        SPECS["softmax"],
        optimizer={"name": "newton", "learning_rate": 1.0, "damping": 1e-4, "epochs": 4},
    )
    (tmp_path / "net.yaml").write_text(_yaml(raw), encoding="utf-8")
    X, Y = _data("softmax")
    write_npz_shards(tmp_path / "shards", X, np.argmax(Y, axis=1), rows_per_shard=130)
    address = client.scheduler.address
    common = ["train", "net.yaml", "--data", "shards", "--cluster", address]
    assert main([*common, "--epochs", "2", "--out", "half.npz"]) == 0
    out = capsys.readouterr().out
    assert "newton on 600 samples in 5 partitions (npz-shards), 2 workers at tcp://" in out
    assert "epoch 2/2 loss " in out
    assert os.path.exists("half.npz.ckpt.npz")
    os.replace("half.npz.ckpt.npz", "full.npz.ckpt.npz")
    assert main([*common, "--epochs", "4", "--out", "full.npz", "--resume"]) == 0
    out = capsys.readouterr().out
    assert "epoch 3/4 loss " in out and "epoch 1/4" not in out
    assert main([*common, "--epochs", "4", "--out", "straight.npz"]) == 0
    resumed, done = _theta(load_spec(raw), "full.npz")
    straight, _ = _theta(load_spec(raw), "straight.npz")
    assert done == 4
    assert np.array_equal(resumed, straight)
    one = load_trainer(load_spec(raw))
    expected = reference(one, X, Y, "newton", 4, 1.0, 1e-4)
    np.testing.assert_allclose(resumed, expected, rtol=0, atol=1e-10)


def test_cli_local_cluster(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    raw = dict(SPECS["logistic"], optimizer={"name": "gd", "learning_rate": 0.5, "epochs": 5})
    (tmp_path / "net.yaml").write_text(_yaml(raw), encoding="utf-8")
    X, Y = _data("logistic")
    write_zarr(tmp_path / "d.zarr", X, Y[:, 0], chunk_rows=200)
    assert main(["train", "net.yaml", "--data", "d.zarr", "--cluster", "local"]) == 0
    out = capsys.readouterr().out
    assert "gd on 600 samples in 3 partitions (zarr), 2 workers at tcp://127.0.0.1:" in out
    assert "trained 5 epochs on the cluster in " in out
    theta, done = _theta(load_spec(raw), "model.npz")
    assert done == 5
    one = load_trainer(load_spec(raw))
    np.testing.assert_allclose(theta, reference(one, X, Y, "gd", 5, 0.5, 0.0), rtol=0, atol=1e-10)


def _yaml(raw: dict) -> str:
    import yaml

    return yaml.safe_dump(raw, sort_keys=False)


def _killer(marker: str, round_: int):
    """A worker plugin that SIGKILLs its worker when a partition task of ``round_`` starts."""
    from distributed.diagnostics.plugin import WorkerPlugin

    class KillOnce(WorkerPlugin):
        def transition(self, key, start, finish, **kwargs):
            name = key if isinstance(key, str) else str(key)
            if finish != "executing" or not name.startswith("symgrad-part-"):
                return
            if f"-r{round_}-" not in name:
                return
            try:  # once: the first worker to create the marker dies, no other
                fd = os.open(marker, os.O_WRONLY | os.O_CREAT | os.O_EXCL)
            except FileExistsError:
                return
            os.write(fd, f"{os.getpid()} {name}\n".encode())
            os.close(fd)
            os.kill(os.getpid(), signal.SIGKILL)

    return KillOnce()


def test_a_worker_killed_mid_iteration_changes_nothing(tmp_path):
    spec = _spec("mlp")
    X, Y = _data("mlp")
    marker = str(tmp_path / "killed")
    with local_cluster(2) as cluster, Client(cluster) as c:
        clean = load_trainer(spec)
        fit(clean, *_dask(X, Y), method="newton", client=c, iterations=4)
        c.register_plugin(_killer(marker, round_=3), name="kill-once")
        pids = set(c.run(os.getpid).values())
        model = load_trainer(spec)
        fit(model, *_dask(X, Y), method="newton", client=c, iterations=4)
        with open(marker) as fh:
            pid, key = fh.read().split()
        assert int(pid) in pids and key.startswith("symgrad-part-")
        assert "-r3-" in key  # round 3 of 4: mid-run, mid-iteration (a partition task)
        # the worker side travels by value: the workers never imported symgrad (nor SymPy)
        assert set(c.run(lambda: "symgrad" in sys.modules).values()) == {False}
    assert np.array_equal(model.get_flat(), clean.get_flat())
    one = load_trainer(spec)
    np.testing.assert_allclose(
        model.get_flat(), reference(one, X, Y, "newton", 4, 1.0, 1.0), rtol=0, atol=1e-10
    )
