"""The Dask driver's parts that need no cluster: chunked sources, the hash-checked import on a
worker, the partition sums, and what ``--cluster`` refuses."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

pytest.importorskip("dask")
pytest.importorskip("distributed")
pytest.importorskip("zarr")

from symgrad import load_spec, load_trainer  # noqa: E402
from symgrad.cli import main  # noqa: E402
from symgrad.data.shards import open_chunked, write_npz_shards, write_zarr  # noqa: E402
from symgrad.errors import DataError, SymgradError  # noqa: E402
from symgrad.runtime import cluster_worker  # noqa: E402
from symgrad.runtime.cluster import fit, method_for, ship_module  # noqa: E402

MLP = {
    "name": "cd_mlp",
    "inputs": 4,
    "layers": [{"units": 5, "activation": "tanh"}, {"units": 3, "activation": "softmax"}],
    "loss": "cross_entropy",
    "regularization": {"l2": 0.3},
    "optimizer": {"name": "newton", "epochs": 3},
    "init": {"scheme": "xavier", "seed": 0},
}


def _blobs(n=50, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, 4)), np.arange(n) % 3


# -- chunked sources ------------------------------------------------------------------------------


def test_zarr_partitions_follow_its_row_chunks(tmp_path):
    X, labels = _blobs(103)
    write_zarr(tmp_path / "d.zarr", X, labels, chunk_rows=25)
    data = open_chunked(tmp_path / "d.zarr", n_inputs=4, n_outputs=3, dtype="float32")
    assert data.kind == "zarr" and data.samples == 103 and data.partitions == 5
    assert data.X.chunks == ((25, 25, 25, 25, 3), (4,))
    assert data.Y.chunks == ((25, 25, 25, 25, 3), (3,))
    assert data.X.dtype == np.float32
    np.testing.assert_array_equal(data.X.compute(), X.astype(np.float32))
    np.testing.assert_array_equal(data.Y.compute(), np.eye(3, dtype=np.float32)[labels])
    same = open_chunked(f"zarr:{tmp_path / 'd.zarr'}", n_inputs=4, n_outputs=3, limit=60)
    assert same.X.chunks[0] == (25, 25, 10)


def test_npz_shards_in_name_order_one_partition_each(tmp_path):
    X, labels = _blobs(90)
    paths = write_npz_shards(tmp_path / "s", X, labels, rows_per_shard=40)
    assert [p.rsplit("/", 1)[1] for p in paths] == [
        "part-00000.npz",
        "part-00001.npz",
        "part-00002.npz",
    ]
    data = open_chunked(tmp_path / "s", n_inputs=4, n_outputs=3, limit=85)
    assert data.kind == "npz-shards" and data.X.chunks[0] == (40, 40, 5)
    np.testing.assert_array_equal(data.X.compute(), X[:85])
    np.testing.assert_array_equal(data.Y.compute().argmax(axis=1), labels[:85])


def test_relative_paths_are_made_absolute_for_the_workers(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    X, labels = _blobs(20)
    write_npz_shards("s", X, labels, rows_per_shard=10)
    data = open_chunked("s", n_inputs=4, n_outputs=3)
    monkeypatch.chdir("/")  # a worker's working directory is not the client's
    np.testing.assert_array_equal(data.X.compute(), X)


def test_a_bad_partition_is_named_where_it_is_read(tmp_path):
    X, labels = _blobs(60)
    X[47, 2] = np.nan
    write_npz_shards(tmp_path / "s", X, labels, rows_per_shard=20)
    data = open_chunked(tmp_path / "s", n_inputs=4, n_outputs=3)
    with pytest.raises(DataError) as err:
        data.X.compute()
    assert str(err.value) == (
        f"{tmp_path / 's' / 'part-00002.npz'}: X has a non-finite value (nan) at row 47, column 2"
    )
    labels[33] = 3
    write_zarr(tmp_path / "d.zarr", np.zeros((60, 4)), labels, chunk_rows=20)
    data = open_chunked(tmp_path / "d.zarr", n_inputs=4, n_outputs=3)
    with pytest.raises(DataError) as err:
        data.Y.compute()
    assert (
        str(err.value) == f"{tmp_path}/d.zarr/y: label 3 at row 33 is not one of the classes 0..2"
    )


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (
            lambda p: write_zarr(p / "d.zarr", np.zeros((5, 3)), np.zeros(5), 5),
            "{p}/d.zarr: 'X' has 3 columns but the spec has 4 inputs",
        ),
        (
            lambda p: write_zarr(p / "d.zarr", np.zeros((5, 4)), np.zeros((5, 2)), 5),
            "{p}/d.zarr: 'Y' has 2 columns but the spec has 3 outputs",
        ),
        (
            lambda p: write_zarr(p / "d.zarr", np.zeros((5, 4)), np.zeros(4), 5),
            "{p}/d.zarr: 'X' has 5 samples but 'y' has 4",
        ),
        (lambda p: (p / "d.zarr").mkdir(), None),
        (lambda p: (p / "empty").mkdir(), "{p}/empty: a folder with no .npz shards"),
        (
            lambda p: ((p / "s").mkdir(), np.savez(p / "s" / "a.npz", X=np.zeros((2, 4)))),
            "{p}/s/a.npz: missing array 'Y' or 'y'",
        ),
    ],
)
def test_sources_that_do_not_fit_are_refused_on_the_client(tmp_path, make, message):
    make(tmp_path)
    source = next(p for p in tmp_path.iterdir())
    with pytest.raises(DataError) as err:
        open_chunked(source, n_inputs=4, n_outputs=3)
    if message is None:
        assert str(err.value).startswith(f"{tmp_path}/d.zarr: not a Zarr group with arrays X and Y")
    else:
        assert str(err.value) == message.format(p=tmp_path)


def test_target_columns_and_classes_are_for_csv_only(tmp_path):
    write_zarr(tmp_path / "d.zarr", *_blobs(10), chunk_rows=5)
    with pytest.raises(DataError, match=r"--target names CSV columns; a zarr source has X and Y"):
        open_chunked(tmp_path / "d.zarr", n_inputs=4, n_outputs=3, targets=["label"])
    with pytest.raises(DataError, match=r"--classes names labels; a zarr source holds labels"):
        open_chunked(tmp_path / "d.zarr", n_inputs=4, n_outputs=3, classes=["a", "b", "c"])


def test_other_sources_are_read_whole_and_split(tmp_path):
    X, labels = _blobs(50)
    np.savez(tmp_path / "d.npz", X=X, y=labels)
    data = open_chunked(tmp_path / "d.npz", n_inputs=4, n_outputs=3, partition_rows=20)
    assert data.kind == "in-memory" and data.X.chunks[0] == (20, 20, 10)
    np.testing.assert_array_equal(data.Y.compute().argmax(axis=1), labels)


# -- the worker side ------------------------------------------------------------------------------


def test_the_worker_imports_only_source_whose_hash_matches():
    model = load_trainer(load_spec(MLP))
    shipped = ship_module(model)
    assert shipped.sha256 == hashlib.sha256(shipped.source.encode()).hexdigest()
    module = cluster_worker.import_verified(shipped.module_name, shipped.source, shipped.sha256)
    assert module is cluster_worker.import_verified(
        shipped.module_name, shipped.source, shipped.sha256
    )
    tampered = shipped.source.replace("import numpy as np", "import numpy as np  # changed", 1)
    assert tampered != shipped.source
    digest = hashlib.sha256(tampered.encode()).hexdigest()
    with pytest.raises(ImportError) as err:
        cluster_worker.import_verified(shipped.module_name, tampered, shipped.sha256)
    assert str(err.value) == (
        f"the generated module 'cd_mlp' received by this worker has sha256 {digest[:16]}..., "
        f"not the {shipped.sha256[:16]}... it was sent with; not importing it"
    )


def test_partition_sums_are_the_trainers_values_times_n_without_penalty():
    model = load_trainer(load_spec(MLP))
    rng = np.random.default_rng(1)
    theta = rng.standard_normal(model.get_flat().size)
    X, labels = _blobs(30)
    Y = np.eye(3)[labels]
    v = rng.standard_normal(theta.size)
    n, loss, grad, H = cluster_worker.partition_sums(
        tuple(ship_module(model)), theta, X, Y, "hessian"
    )
    _, _, _, Hv = cluster_worker.partition_sums(tuple(ship_module(model)), theta, X, Y, "hvp", v)
    model.set_flat(theta)
    model.l2 = 0.0
    assert n == 30
    assert loss == pytest.approx(30 * model.loss(X, Y), rel=1e-14)
    np.testing.assert_allclose(grad, 30 * model.gradient_flat(X, Y), rtol=1e-13, atol=1e-14)
    np.testing.assert_allclose(H, 30 * model.hessian(X, Y), rtol=1e-13, atol=1e-14)
    np.testing.assert_allclose(Hv, 30 * model.hvp(X, Y, v), rtol=1e-13, atol=1e-14)
    total = cluster_worker.add_sums((1, 2.0, np.ones(2), None), (3, 4.0, np.ones(2), None))
    assert total[:2] == (4, 6.0) and total[3] is None
    np.testing.assert_array_equal(total[2], [2.0, 2.0])


# -- what is refused ------------------------------------------------------------------------------


def test_method_for_the_spec():
    assert method_for(load_spec(MLP)) == "newton"
    assert method_for(load_spec(dict(MLP, optimizer={"name": "gd"}))) == "gd"
    wide = dict(MLP, inputs=100, layers=[{"units": 30, "activation": "tanh"}, MLP["layers"][1]])
    assert load_spec(wide).n_params > 2000
    assert method_for(load_spec(wide)) == "newton_cg"
    with pytest.raises(SymgradError) as err:
        method_for(load_spec(dict(MLP, optimizer={"name": "gd"})), batch_size=32)
    assert str(err.value) == (
        "--cluster trains full-batch only (gd, newton, lbfgs, trust_ncg); a batch size (32) "
        "means mini-batch steps, which stay on one machine (drop --cluster or the batch size; "
        "see the README, 'Training on a cluster')"
    )


def test_fit_refuses_unknown_methods():
    with pytest.raises(
        ValueError,
        match=r"^method must be one of gd, newton, newton_cg, lbfgs, trust_ncg; got 'bfgs'",
    ):
        fit(None, None, None, method="bfgs")


@pytest.mark.parametrize("optimizer", ["sgd", "momentum", "nesterov", "adagrad", "rmsprop", "adam"])
def test_cli_refuses_mini_batch_optimizers_with_cluster(tmp_path, capsys, optimizer):
    spec = tmp_path / "net.yaml"
    spec.write_text(
        "name: cd_refused\ninputs: 4\nlayers:\n  - {units: 3, activation: softmax}\n"
        f"loss: cross_entropy\noptimizer: {{name: {optimizer}, batch_size: 8}}\n",
        encoding="utf-8",
    )
    code = main(
        [
            "train",
            str(spec),
            "--data",
            str(tmp_path / "nothing.zarr"),
            "--cluster",
            "local",
            "--out",
            str(tmp_path / "m.npz"),
        ]
    )
    assert code == 2
    err = capsys.readouterr().err
    assert err == (
        "symgrad: error: --cluster trains full-batch only (gd, newton, lbfgs, trust_ncg); "
        f"optimizer '{optimizer}' takes mini-batch steps, which stay on one machine "
        "(drop --cluster; see the README, 'Training on a cluster')\n"
    )


def test_cli_refuses_standardize_and_a_bad_address(tmp_path, capsys):
    spec = tmp_path / "net.yaml"
    spec.write_text(
        "name: cd_gd\ninputs: 4\nlayers:\n  - {units: 3, activation: softmax}\n"
        "loss: cross_entropy\noptimizer: {name: gd}\n",
        encoding="utf-8",
    )
    X, labels = _blobs(20)
    np.savez(tmp_path / "d.npz", X=X, y=labels)
    common = ["train", str(spec), "--data", str(tmp_path / "d.npz"), "--out", str(tmp_path / "m")]
    assert main([*common, "--cluster", "local", "--standardize"]) == 2
    assert capsys.readouterr().err == (
        "symgrad: error: --cluster does not standardise inputs (yet): standardise the data once "
        "beforehand, or pass --no-standardize\n"
    )
    assert main([*common, "--cluster", "localhost:8786"]) == 2
    assert capsys.readouterr().err == (
        "symgrad: error: --cluster localhost:8786: expected 'local' or a scheduler address like "
        "tcp://HOST:8786\n"
    )
