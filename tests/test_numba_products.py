"""The Numba backend's products (issue 14): NumPy's own BLAS, and SGD's step inside them.

The compiled epoch calls the BLAS library NumPy's wheel ships (by name, registered with LLVM, so
that Numba's disk cache still works) instead of Numba's ``np.dot`` (SciPy's BLAS, a second
library and thread pool whose spinning threads slowed the NumPy code around it, and the other
way round). An affine step ``theta <- beta theta + alpha g`` (SGD, gd) is applied by the
weight gradient's own product, ``C <- alpha A B + beta C``: no gradient is written and no pass
over the parameters is left but b_1's.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from symgrad.codegen.generate import generate_source
from symgrad.codegen.numba_backend import numba_source, supported_optimizers
from symgrad.runtime.loader import import_module_from_source
from symgrad.spec import load_spec, spec_from_dict

pytest.importorskip("numba", reason="numba is not installed (pip install symgrad[numba])")

ROOT = Path(__file__).resolve().parents[1]


def _spec(optimizer="sgd", l2=0.0, l1=0.0, bias=True, sizes=(5, 4, 3), out="sigmoid"):
    layers = [{"units": u, "activation": "tanh"} for u in sizes[1:-1]]
    layers.append({"units": sizes[-1], "activation": out})
    for layer in layers:
        layer["bias"] = bias
    return spec_from_dict(
        {
            "name": f"prod_{optimizer}",
            "inputs": sizes[0],
            "layers": layers,
            "loss": "cross_entropy" if out == "softmax" else "log_loss",
            "regularization": {"l2": l2, "l1": l1},
            "optimizer": {"name": optimizer, "learning_rate": 0.3, "batch_size": 4},
            "init": {"scheme": "normal", "seed": 1},
        }
    )


def _epoch(source: str) -> str:
    return source.split("def _epoch_py", 1)[1].split("\n\n\n", 1)[0]


def _agree(source: str, spec, name: str, n: int = 22, m: int = 4):
    """One epoch in order and a shuffled one of ``source``'s trainer and the NumPy trainer
    (float64): the parameters equal to 1e-12."""
    compiled = import_module_from_source(source, name)
    plain = import_module_from_source(generate_source(spec), f"{name}_numpy")
    cls = spec.class_name
    a, b = getattr(compiled, cls)(dtype="float64"), getattr(plain, cls)(dtype="float64")
    rng = np.random.default_rng(3)
    X = rng.standard_normal((n, a.n_inputs))
    k = a.n_outputs
    Y = (
        np.eye(k)[rng.integers(0, k, n)]
        if spec.layers[-1].activation == "softmax"
        else ((rng.random((n, k)) > 0.5).astype(float))
    )
    start = a.get_flat()
    for shuffle in (False, True):
        a.fit(X, Y, epochs=1, batch_size=m, shuffle=shuffle)
        b.fit(X, Y, epochs=1, batch_size=m, shuffle=shuffle)
        diff = np.abs(a.get_flat() - b.get_flat())
        assert np.all(diff <= 1e-12 * np.maximum(1.0, np.abs(b.get_flat()))), diff.max()
    assert np.abs(a.get_flat() - start).max() > 1e-3  # it trained
    return compiled


def test_the_affine_steps_are_sgd_and_gd_without_penalties():
    """Read off the optimisers' SymPy updates: only gd and SGD are ``theta - eta g`` (folded:
    ``-1 g + 1 theta``); a penalty or a state vector keeps the loop over the parameters."""
    fused = {}
    for name in supported_optimizers():
        source, notice = numba_source(_spec(name))
        assert notice is None
        fused[name] = "for k in range(store.shape[0]):" not in _epoch(source)
    assert {k for k, v in fused.items() if v} == {"gd", "sgd"}
    for l2, l1 in ((0.01, 0.0), (0.0, 0.01)):
        epoch = _epoch(numba_source(_spec("sgd", l2=l2, l1=l1))[0])
        assert "for k in range(store.shape[0]):" in epoch


def test_sgd_is_applied_by_the_weight_gradients_products():
    source, _ = numba_source(_spec("sgd", sizes=(5, 4, 3)))
    epoch = _epoch(source)
    assert "_gemm(D_2.T, A_1, Wb_2, -1.0, 1.0)" in epoch  # [W_2 | b_2] <- [W_2 | b_2] - D^T [A | 1]
    assert "_gemm(D_1.T, x, W_1, -1.0, 1.0)" in epoch
    assert "np.dot(" not in epoch
    # W_2 is read by the backprop product before its own product updates it
    assert epoch.index("_gemm(D_2, Wb_2, B_2)") < epoch.index("_gemm(D_2.T, A_1, Wb_2")
    # the one pass left: b_1's step, printed from the optimiser's update
    assert "for k in range(20, 24):" in epoch and "th = -gk + th" in epoch


@pytest.mark.parametrize(
    "kwargs",
    [
        {"sizes": (5, 4, 3)},
        {"sizes": (5, 6, 4, 3), "out": "softmax"},
        {"sizes": (3, 1), "bias": False},
        {"sizes": (4, 3, 2), "bias": False},
        {"sizes": (1, 1, 1)},  # one-column products: leading dimensions of 1
        {"sizes": (5, 4, 3), "l2": 0.02},  # the loop over the parameters, the same _gemm
    ],
    ids=["sgd", "softmax-3-layers", "no-bias", "no-bias-hidden", "ones", "l2"],
)
def test_fused_and_looped_steps_equal_numpy(kwargs):
    spec = _spec("sgd", **kwargs)
    _agree(numba_source(spec)[0], spec, f"prod_{abs(hash(str(kwargs)))}")


def test_gd_full_batch_equals_numpy():
    spec = load_spec(ROOT / "examples" / "softmax_iris.yaml")
    assert "for k in range(store.shape[0]):" not in _epoch(numba_source(spec)[0])
    _agree(numba_source(spec)[0], spec, "iris_gd", n=30, m=30)


def test_products_call_numpys_blas():
    """The addresses the module registers lie in the OpenBLAS NumPy loaded (Linux: read from
    /proc/self/maps), not in SciPy's."""
    module = import_module_from_source(numba_source(_spec("sgd"))[0], "prod_blas")
    if module._CBLAS is None:
        pytest.skip("NumPy was not built with the OpenBLAS its wheels ship (np.dot is used)")
    maps = Path("/proc/self/maps")
    if not maps.exists():
        pytest.skip("no /proc/self/maps to find the library of an address")
    owners = set()
    for line in maps.read_text().splitlines():
        fields = line.split()
        lo, hi = (int(x, 16) for x in fields[0].split("-"))
        if len(fields) > 5 and any(lo <= addr < hi for addr in module._CBLAS):
            owners.add(os.path.realpath(fields[5]))
    numpy_dir = os.path.realpath(os.path.join(os.path.dirname(np.__file__), os.pardir))
    assert len(owners) == 1, owners
    (owner,) = owners
    assert owner.startswith(numpy_dir) and "numpy.libs" in owner and "openblas64" in owner


def test_without_numpys_blas_np_dot_and_no_disk_cache():
    """NumPy built with another BLAS: the products fall back to np.dot (alpha and beta
    applied by NumPy expressions), the same parameters, and no disk cache (a cached epoch would
    call NumPy's BLAS by name)."""
    spec = _spec("sgd", sizes=(5, 4, 3))
    source = numba_source(spec)[0]
    line = "_CBLAS = _numpy_cblas() if _numba is not None else None"
    assert source.count(line) == 1
    module = _agree(source.replace(line, "_CBLAS = None"), spec, "prod_no_cblas")
    assert module._CBLAS is None and module._CACHE is False


_CHILD = textwrap.dedent(
    """
    import sys
    import numpy as np
    sys.path.insert(0, sys.argv[1])
    import prod_cached
    model = prod_cached.ProdSgd()
    rng = np.random.default_rng(0)
    model.fit(rng.standard_normal((12, 5)), np.ones((12, 3)), epochs=1, batch_size=4)
    print(prod_cached._CACHE, sum(prod_cached._epoch.stats.cache_hits.values()))
    """
)


def test_the_epoch_is_cached_on_disk(tmp_path):
    """A module imported from a file compiles once: a second process loads the epoch (with its
    calls to NumPy's BLAS by name) from Numba's cache."""
    (tmp_path / "prod_cached.py").write_text(numba_source(_spec("sgd"))[0])
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path / "cache"))
    said = [
        subprocess.run(
            [sys.executable, "-c", _CHILD, str(tmp_path)],
            env=env,
            capture_output=True,
            text=True,
            check=True,
            timeout=300,
        ).stdout.split()
        for _ in range(2)
    ]
    if said[0][0] == "False":
        pytest.skip("NumPy's BLAS was not found: the epoch is not cached")
    assert said == [["True", "0"], ["True", "1"]]


@pytest.mark.parametrize(
    "spec",
    [
        _spec("sgd", sizes=(4, 5, 3)),  # the step in the products
        _spec("adam", l2=0.05, l1=0.02, sizes=(4, 5, 3), out="softmax"),  # the loop
        _spec("gd", bias=False, sizes=(3, 4, 2)),
    ],
    ids=["sgd", "adam-l1-l2-softmax", "gd-no-bias"],
)
def test_equations_verify_against_the_compiled_trainer(spec):
    """``symgrad verify`` with the compiled trainer: every displayed equation, the optimiser's
    update rows evaluated on the compiled epoch's step (``fit`` on a twin of the trainer)."""
    import symgrad
    from symgrad.runtime.verify import verify

    trainer = symgrad.load_trainer(spec, backend="numba")
    module = sys.modules[type(trainer).__module__]
    assert type(trainer)._make_runner is module._compiled_make_runner
    report = verify(spec, trainer=trainer)
    assert report.ok, report.table()
    assert any(row.key.startswith("opt.") and row.status == "ok" for row in report.rows)


def test_only_the_blas_numpy_loaded_is_used(tmp_path):
    """A copy of NumPy's OpenBLAS beside another "numpy" is a file nobody loaded: it is not
    opened (a second copy would bring its own thread pool), and the products use np.dot."""
    import shutil
    import types

    module = import_module_from_source(numba_source(_spec("sgd"))[0], "prod_loaded")
    if module._CBLAS is None:
        pytest.skip("NumPy was not built with the OpenBLAS its wheels ship (np.dot is used)")
    real = sorted((Path(np.__file__).parent.parent / "numpy.libs").glob("*openblas64*"))[0]
    (tmp_path / "numpy").mkdir()
    (tmp_path / "numpy.libs").mkdir()
    shutil.copy(real, tmp_path / "numpy.libs" / real.name)
    fake = types.SimpleNamespace(__file__=str(tmp_path / "numpy" / "__init__.py"))
    find = types.FunctionType(module._numpy_cblas.__code__, {**vars(module), "np": fake})
    assert find() is None
    assert module._numpy_cblas() == module._CBLAS
