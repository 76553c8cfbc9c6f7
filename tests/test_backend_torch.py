"""The PyTorch backend (issue 15): the NumPy trainer's numbers, computed on torch tensors.

"The same" is measured in float64 against the NumPy trainer of the same spec (same seed, same
batch order): parameters and optimiser state after epochs, ``|a - b| <= 1e-12 max(1, |b|)``
elementwise; loss, gradients to 1e-12; ``hvp``, ``hessian`` and ``gauss_newton`` to 1e-10.
Modules are built once per spec (``_pair``).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import chain_layers
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from symgrad.codegen.generate import generate_source
from symgrad.errors import SpecError
from symgrad.runtime.loader import import_module_from_source
from symgrad.spec import load_spec, spec_from_dict

torch = pytest.importorskip("torch", reason="torch is not installed (pip install symgrad[torch])")

from symgrad.codegen.torch_backend import check, supported_optimizers, torch_source  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
#: where the torch trainers of these tests compute (benchmarks/gpu.py sets it to cuda)
DEVICE = os.environ.get("SYMGRAD_TEST_DEVICE") or "cpu"
if DEVICE.startswith("cuda") and not torch.cuda.is_available():
    pytest.skip(
        f"SYMGRAD_TEST_DEVICE={DEVICE} but no CUDA device: torch.cuda.is_available() is False",
        allow_module_level=True,
    )
TOL = 1e-12
TOL2 = 1e-10


def _supported(path: Path) -> bool:
    try:
        check(load_spec(path))
    except SpecError:
        return False
    return True


#: every example the torch backend lays out (the others are refused: see test_refused_*)
EXAMPLES = sorted(p.name for p in (ROOT / "examples").glob("*.yaml") if _supported(p))

_PAIRS: dict[str, tuple] = {}
#: the torch module's source of every spec built (test_ruff_clean checks them all)
_SOURCES: dict[str, str] = {}


def _pair(spec):
    """The torch and the NumPy module of ``spec``, built once per spec for all tests."""
    if isinstance(spec, str | Path):
        spec = load_spec(spec)
    key = json.dumps(spec.canonical(), sort_keys=True, default=str)
    if key not in _PAIRS:
        _SOURCES[key] = torch_source(spec)
        tmod = import_module_from_source(_SOURCES[key], f"{spec.name}_torch")
        nmod = import_module_from_source(generate_source(spec), f"{spec.name}_numpy")
        _PAIRS[key] = (tmod, nmod, spec)
    return _PAIRS[key]


def _class(module):
    return next(v for v in vars(module).values() if isinstance(v, type) and hasattr(v, "fit"))


def _torch(module, **kwargs):
    """The torch trainer of ``module`` on DEVICE."""
    return _class(module)(device=DEVICE, **kwargs)


def _np(x):
    return x.detach().cpu().numpy() if torch.is_tensor(x) else np.asarray(x)


def _data(spec, n, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, spec.sizes[0]))
    k = spec.sizes[-1]
    if spec.layers[-1].activation == "softmax":
        return X, np.eye(k)[rng.integers(0, k, n)]
    return X, (rng.random((n, k)) > 0.5).astype(np.float64)


def _same(a, b, tol=TOL):
    """``a`` equals ``b`` to ``tol`` (absolute up to magnitude 1, relative above); returns the
    largest difference."""
    a, b = _np(a), _np(b)
    assert a.shape == b.shape
    diff = np.abs(a - b)
    worst = float(diff.max()) if diff.size else 0.0
    assert np.all(diff <= tol * np.maximum(1.0, np.abs(b))), worst
    return worst


def _epochs_agree(spec, n, m, seed=0):
    """An epoch in order, then a shuffled one, of both trainers (float64) from the same start:
    the parameters, the optimiser state and the history agree. Returns the largest
    difference."""
    tmod, nmod, spec = _pair(spec)
    a, b = _torch(tmod, dtype="float64"), _class(nmod)(dtype="float64")
    _same(a.get_flat(), b.get_flat(), 0.0)  # the same initial draws
    X, Y = _data(spec, n, seed)
    ha = a.fit(X, Y, epochs=1, batch_size=m, shuffle=False)
    hb = b.fit(X, Y, epochs=1, batch_size=m, shuffle=False)
    worst = _same(a.get_flat(), b.get_flat())
    assert not np.array_equal(_np(a.get_flat()), _class(nmod)(dtype="float64").get_flat())
    a.fit(X, Y, epochs=1, batch_size=m)  # shuffled: NumPy's permutation keyed by (seed, epoch)
    hb2 = b.fit(X, Y, epochs=1, batch_size=m)
    worst = max(worst, _same(a.get_flat(), b.get_flat()))
    assert a._opt_state["t"] == b._opt_state["t"]
    for key, value in b._opt_state.items():
        if key != "t":  # the NumPy trainer's state is in its storage order
            public = np.empty_like(value)
            public[nmod._PUBLIC] = value
            worst = max(worst, _same(a._opt_state[key], public))
    assert ha.keys() == hb.keys() == hb2.keys()
    for key in ha:
        np.testing.assert_allclose(ha[key], hb[key], rtol=1e-12, atol=1e-12)
    return worst


def _derivatives_agree(spec, n=9, seed=1, hessian=True):
    """loss, gradients (by name and flat), hvp and, up to a few hundred parameters, the
    Hessian and the Gauss-Newton matrix, at a point away from the initial one."""
    tmod, nmod, spec = _pair(spec)
    a, b = _torch(tmod, dtype="float64"), _class(nmod)(dtype="float64")
    rng = np.random.default_rng(seed)
    theta = b.get_flat() + 0.1 * rng.standard_normal(b.get_flat().shape)
    a.set_flat(theta)
    b.set_flat(theta)
    X, Y = _data(spec, n, seed)
    worst = {}
    assert abs(a.loss(X, Y) - b.loss(X, Y)) <= TOL * max(1.0, abs(b.loss(X, Y)))
    worst["gradient"] = _same(a.gradient_flat(X, Y), b.gradient_flat(X, Y))
    ga, gb = a.gradients(X, Y), b.gradients(X, Y)
    assert ga.keys() == gb.keys()
    for key in gb:
        _same(ga[key], gb[key])
    v = rng.standard_normal(theta.shape)
    worst["hvp"] = _same(a.hvp(X, Y, v), b.hvp(X, Y, v), TOL2)
    if hessian:
        worst["hessian"] = _same(a.hessian(X, Y), b.hessian(X, Y), TOL2)
        worst["gauss_newton"] = _same(a.gauss_newton(X, Y), b.gauss_newton(X, Y), TOL2)
    return worst


def _save_load_both_ways(spec, tmp_path):
    """A torch trainer's file loads into the NumPy trainer (parameters, state, epochs) and
    back; trained on from the loaded state, both stay equal."""
    tmod, nmod, spec = _pair(spec)
    a, b = _torch(tmod, dtype="float64"), _class(nmod)(dtype="float64")
    X, Y = _data(spec, 11, 2)
    a.fit(X, Y, epochs=1, batch_size=4)
    a.save(tmp_path / "t.npz", extras={"note": np.array("torch")})
    b.load(tmp_path / "t.npz")
    assert b.epochs_done == 1 and str(b.extras["note"]) == "torch"
    _same(a.get_flat(), b.get_flat(), 0.0)
    b.save(tmp_path / "n.npz")
    c = _torch(tmod, dtype="float64").load(tmp_path / "n.npz")
    _same(c.get_flat(), a.get_flat(), 0.0)
    assert c._opt_state["t"] == a._opt_state["t"]
    for key in a._opt_state:
        if key != "t":
            _same(c._opt_state[key], a._opt_state[key], 0.0)
    c.fit(X, Y, epochs=1, batch_size=4)
    b.fit(X, Y, epochs=1, batch_size=4)
    _same(c.get_flat(), b.get_flat())


# -- every example in scope ------------------------------------------------------------------


def test_examples_in_scope():
    """The examples this backend must lay out are among EXAMPLES (a refusal would hide them)."""
    for name in ("xor.yaml", "mlp_digits.yaml", "softmax_iris.yaml", "custom_swish.yaml") + (
        "logistic_regression.yaml",  # Newton
        "diabetes_linear.yaml",
    ):
        assert name in EXAMPLES


@pytest.mark.parametrize("example", EXAMPLES)
def test_example_epochs_equal_numpy(example):
    spec = load_spec(ROOT / "examples" / example)
    if spec.optimizer.name == "newton":  # batches of more samples than parameters: H > 0
        m = 3 * spec.n_params + 5
        _epochs_agree(spec, 2 * m, m)
        return
    m = min(spec.optimizer.batch_size or 8, 8)
    _epochs_agree(spec, 2 * m + m // 2 + 1, m)  # a rest: the shorter last batch runs too


@pytest.mark.parametrize("example", EXAMPLES)
def test_example_derivatives_equal_numpy(example):
    spec = load_spec(ROOT / "examples" / example)
    _derivatives_agree(spec, hessian=spec.n_params <= 400)


@pytest.mark.parametrize("example", ["xor.yaml", "mlp_digits.yaml"])
def test_save_load_with_numpy_trainer(example, tmp_path):
    _save_load_both_ways(ROOT / "examples" / example, tmp_path)


# -- every optimiser, both penalties, no bias, float32 ---------------------------------------


def _all_spec(optimizer, out="softmax", loss="cross_entropy", dtype="float64"):
    return spec_from_dict(
        {
            "name": f"all_{optimizer}",
            "inputs": 4,
            "layers": [
                {"units": 5, "activation": "tanh", "bias": False},
                {"units": 3, "activation": out},
            ],
            "loss": loss,
            "regularization": {"l2": 0.02, "l1": 0.01},
            "optimizer": {"name": optimizer, "learning_rate": 0.05, "batch_size": 4, "epochs": 1},
            "init": {"scheme": "normal", "seed": 1},
            "dtype": dtype,
        }
    )


#: the optimisers of the default run (state vectors; after_prox; curvature); the others: slow
DEFAULT_OPTIMIZERS = ("adam", "momentum", "newton")


@pytest.mark.parametrize(
    "optimizer",
    [
        o if o in DEFAULT_OPTIMIZERS else pytest.param(o, marks=pytest.mark.slow)
        for o in supported_optimizers()
    ],
)
def test_every_optimizer_with_both_penalties_and_no_bias(optimizer, tmp_path):
    spec = _all_spec(optimizer)
    _epochs_agree(spec, 18, 4)
    _derivatives_agree(spec)
    _save_load_both_ways(spec, tmp_path)


@pytest.mark.parametrize("cg", [False, True], ids=["exact", "conjugate-gradients"])
def test_newton_on_a_hidden_layer_with_both_penalties(cg, monkeypatch):
    """Newton's step (the exact solve with its damping shift, or conjugate gradients on hvp
    when the model is above NEWTON_EXACT_MAX), then the L1 threshold, as the NumPy trainer."""
    spec = spec_from_dict(
        {
            "name": "newton_mlp",
            "inputs": 3,
            "layers": [{"units": 4, "activation": "tanh"}, {"units": 2, "activation": "sigmoid"}],
            "loss": "log_loss",
            "regularization": {"l2": 0.05, "l1": 0.01},
            "optimizer": {"name": "newton", "learning_rate": 0.5, "damping": 0.01},
            "init": {"scheme": "xavier", "seed": 4},
        }
    )
    tmod, nmod, spec = _pair(spec)
    if cg:
        monkeypatch.setattr(tmod, "NEWTON_EXACT_MAX", 0)
        monkeypatch.setattr(nmod, "NEWTON_EXACT_MAX", 0)
    _epochs_agree(spec, 2 * 40, 40)
    _derivatives_agree(spec, n=30)


def test_first_order_optimizers_are_supported():
    assert set(supported_optimizers()) >= {
        "gd",
        "sgd",
        "momentum",
        "nesterov",
        "adagrad",
        "rmsprop",
        "adam",
    }


def test_float32():
    """float32 tensors end to end; an epoch agrees with the NumPy trainer's to float32's
    precision."""
    spec = _all_spec("adam", "sigmoid", "log_loss", dtype="float32")
    tmod, nmod, spec = _pair(spec)
    a, b = _torch(tmod), _class(nmod)()
    assert a.dtype == torch.float32 and a.get_flat().dtype == torch.float32
    X, Y = _data(spec, 20, 3)
    a.fit(X, Y, epochs=2, batch_size=4)
    b.fit(X, Y, epochs=2, batch_size=4)
    assert a.gradient_flat(X, Y).dtype == torch.float32
    _same(a.get_flat(), b.get_flat(), 1e-5)
    _same(a.forward(X), b.forward(X), 1e-5)


# -- hypothesis-generated chains -------------------------------------------------------------

FIRST_ORDER = tuple(o for o in supported_optimizers() if o != "newton")


@st.composite
def specs(draw):
    """A small dense chain: 0-2 hidden layers, an output/loss pair, any supported optimiser,
    none, either or both penalties, and a bias or none on each layer."""
    layers, loss = chain_layers(draw)
    opt = draw(st.sampled_from(FIRST_ORDER))  # Newton: test_newton_* (batches > parameters)
    return {
        "name": f"gen_{opt}",
        "inputs": draw(st.integers(1, 4)),
        "layers": layers,
        "loss": loss,
        "regularization": {
            "l2": draw(st.sampled_from([0.0, 0.05])),
            "l1": draw(st.sampled_from([0.0, 0.03])),
        },
        "optimizer": {"name": opt, "learning_rate": 0.05, "batch_size": 4, "epochs": 1},
        "init": {"scheme": draw(st.sampled_from(["normal", "xavier"])), "seed": 0},
    }


def _generated_agrees(spec_dict, n):
    spec = spec_from_dict(spec_dict)
    _epochs_agree(spec, n, 4, seed=n)
    _derivatives_agree(spec, n=n)


@settings(max_examples=4, deadline=None, derandomize=True, database=None)
@given(spec=specs(), n=st.integers(5, 13))
def test_generated_specs_equal_numpy(spec, n):
    _generated_agrees(spec, n)


@pytest.mark.slow
@settings(
    max_examples=40, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow]
)
@given(spec=specs(), n=st.integers(5, 13))
def test_generated_specs_equal_numpy_many(spec, n):
    _generated_agrees(spec, n)


# -- the module ------------------------------------------------------------------------------


def test_module_computes_with_torch_without_autograd():
    """The module imports torch; it never asks for gradients from autograd; NumPy appears
    only for the random draws, inputs and files."""
    source = torch_source(ROOT / "examples" / "mlp_digits.yaml", "examples/mlp_digits.yaml")
    assert "import torch" in source
    for word in (".backward(", "requires_grad", "torch.autograd", "enable_grad", "torch.func"):
        assert word not in source
    uses = {line.strip() for line in source.splitlines() if "np." in line}
    allowed = ("rng", "np.random", "np.dtype", "np.isfinite", "np.array", "np.asarray")
    allowed += ("np.load", "np.savez", "np.int64", "np.empty_like")
    for line in uses:
        assert any(word in line for word in allowed), line


#: hidden activations and output/loss pairs a module of test_ruff_clean holds
ACTIVATIONS = spec_from_dict(
    {
        "name": "activations",
        "inputs": 3,
        "layers": [
            {"units": 4, "activation": act}
            for act in ("relu", "leaky_relu", "elu", "softplus", "sigmoid", "identity")
        ]
        + [{"units": 2, "activation": "tanh"}],
        "loss": "mse",
        "regularization": {"l2": 0.01, "l1": 0.001},
        "optimizer": {"name": "nesterov", "learning_rate": 0.01, "batch_size": 4},
    }
)


def test_every_activation_equals_numpy():
    _epochs_agree(ACTIVATIONS, 13, 4)
    _derivatives_agree(ACTIVATIONS)


def test_deterministic():
    """Rendered twice: the same bytes."""
    for example in ("xor.yaml", "mlp_digits.yaml"):
        spec = ROOT / "examples" / example
        assert torch_source(spec, f"examples/{example}") == torch_source(
            spec, f"examples/{example}"
        )


def test_ruff_clean(tmp_path):
    """Every module built in this session (the examples, each optimiser, every activation,
    and whatever specs the tests before built) is ruff-clean: ``ruff check`` finds nothing
    (long lines are allowed in generated modules, as for generated/) and ``ruff format``
    would change nothing."""
    ruff = shutil.which("ruff")
    if ruff is None:
        pytest.skip("ruff is not installed")
    for spec in [ROOT / "examples" / e for e in EXAMPLES] + [ACTIVATIONS]:
        _pair(spec)
    for optimizer in DEFAULT_OPTIMIZERS:
        _pair(_all_spec(optimizer))
    paths = []
    for k, source in enumerate(_SOURCES.values()):
        path = tmp_path / f"module_{k}.py"
        path.write_text(source, encoding="utf-8")
        paths.append(str(path))
    check_ = subprocess.run(
        [ruff, "check", "--no-cache", "--extend-ignore", "E501", *paths],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert check_.returncode == 0, check_.stdout
    fmt = subprocess.run(
        [ruff, "format", "--no-cache", "--check", *paths], capture_output=True, text=True, cwd=ROOT
    )
    assert fmt.returncode == 0, fmt.stdout


def test_cuda_device():
    """The same trainer on a CUDA device (skipped without one)."""
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device: torch.cuda.is_available() is False")
    tmod, nmod, spec = _pair(ROOT / "examples" / "mlp_digits.yaml")
    a = _class(tmod)(dtype="float64", device="cuda")
    b = _class(nmod)(dtype="float64")
    X, Y = _data(spec, 40, 0)
    a.fit(X, Y, epochs=1, batch_size=8)
    b.fit(X, Y, epochs=1, batch_size=8)
    assert a.get_flat().device.type == "cuda"
    _same(a.get_flat(), b.get_flat(), 1e-10)
    _same(a.hvp(X, Y, np.ones(spec.n_params)), b.hvp(X, Y, np.ones(spec.n_params)), 1e-9)


# -- refused specs ---------------------------------------------------------------------------


REFUSED = {
    "name": "refused",
    "inputs": 2,
    "layers": [{"units": 3, "activation": "tanh"}, {"units": 2, "activation": "sigmoid"}],
    "loss": "mse",
}


@pytest.mark.parametrize(
    ("change", "key"),
    [
        ({"optimizer": {"name": "trust_ncg"}}, "optimizer.name"),
        ({"optimizer": {"name": "lbfgs"}}, "optimizer.name"),
        (
            {
                "layers": [
                    {"units": 3, "activation": "softmax"},
                    {"units": 2, "activation": "sigmoid"},
                ]
            },
            "layers[0].activation",
        ),
    ],
    ids=["trust_ncg", "lbfgs", "softmax-hidden"],
)
def test_refused_specs_name_the_key(change, key):
    with pytest.raises(SpecError) as exc:
        torch_source(spec_from_dict({**REFUSED, **change}))
    assert str(exc.value).startswith(key + ":")
    assert "\n" not in str(exc.value)


#: a node graph with skip edges (layers reading several earlier ones, concatenated) and a
#: residual net (add), with bias on and off, penalties and momentum
GRAPHS = {
    "node_graph": {
        "name": "node_graph",
        "graph": {
            "inputs": [1, 2],
            "nodes": {
                3: "tanh",
                4: "softplus",
                5: {"activation": "sigmoid", "bias": False},
                6: "identity",
                7: "identity",
            },
            "outputs": [6, 7],
            "edges": [[1, 3], [2, 3], [1, 4], [2, 4], [3, 5], [3, 6], [4, 6], [5, 6]]
            + [[3, 7], [4, 7], [5, 7]],
        },
        "loss": "mse",
        "regularization": {"l2": 0.1, "l1": 0.02},
        "optimizer": {"name": "momentum", "learning_rate": 0.05, "batch_size": 4},
    },
    "residual": {
        "name": "residual",
        "inputs": 3,
        "layers": [
            {"units": 4, "activation": "elu", "name": "h1"},
            {"units": 4, "activation": "tanh", "bias": False},
            {"units": 4, "activation": "relu", "from": ["h1", 2], "merge": "add"},
            {"units": 3, "activation": "softmax", "from": [3, "h1", "input"]},
        ],
        "loss": "cross_entropy",
        "regularization": {"l2": 0.05},
        "optimizer": {"name": "adam", "learning_rate": 0.01, "batch_size": 4},
    },
}


@pytest.mark.parametrize("name", sorted(GRAPHS))
def test_skip_connections_equal_numpy(name):
    """Graphs (a compiled node graph; add and concat merges): two epochs, the gradient, hvp,
    Hessian and Gauss-Newton as the NumPy trainer computes them."""
    spec = spec_from_dict(GRAPHS[name])
    assert spec.is_graph
    _epochs_agree(spec, 11, 4, seed=3)
    _derivatives_agree(spec, n=9)


def test_cli(tmp_path, capsys):
    """``symgrad generate --backend torch`` writes the module; a refused spec exits 2 with one
    line naming the key, no traceback."""
    from symgrad.cli import main

    out = tmp_path / "xor_torch.py"
    assert main(["generate", "examples/xor.yaml", "-o", str(out), "--backend", "torch"]) == 0
    assert out.read_text(encoding="utf-8") == torch_source(
        ROOT / "examples" / "xor.yaml", "examples/xor.yaml"
    )
    capsys.readouterr()
    target = str(tmp_path / "r.py")
    refused = tmp_path / "lbfgs.yaml"
    refused.write_text(
        "name: lbfgs\ninputs: 2\nlayers: [{units: 1, activation: sigmoid}]\nloss: log_loss\n"
        "optimizer: {name: lbfgs}\n"
    )
    code = main(["generate", str(refused), "-o", target, "--backend", "torch"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("symgrad: error: optimizer.name: ") and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1, err


def test_load_trainer(tmp_path, monkeypatch):
    """``symgrad.load_trainer(..., backend="torch")`` builds the PyTorch trainer; a spec it
    refuses raises the one-line SpecError."""
    monkeypatch.setenv("SYMGRAD_CACHE", str(tmp_path / "cache"))
    from symgrad.runtime.loader import load_trainer

    model = load_trainer(ROOT / "examples" / "xor.yaml", backend="torch")
    assert model.get_flat().dtype == torch.float64 and model.device.type == "cpu"
    model.to(DEVICE)
    assert model.get_flat().device.type == torch.device(DEVICE).type
    tmod, nmod, spec = _pair(ROOT / "examples" / "xor.yaml")
    _same(model.get_flat(), _class(nmod)().get_flat(), 0.0)
    with pytest.raises(SpecError, match="^optimizer.name: "):
        load_trainer(spec_from_dict({**REFUSED, "optimizer": {"name": "lbfgs"}}), backend="torch")


def test_without_torch_the_cli_says_so(tmp_path, capsys, monkeypatch):
    """Where torch cannot be imported, ``generate --backend torch`` still writes the module
    (generating needs no torch) and says in one line that running it needs torch."""
    from symgrad.cli import main

    monkeypatch.setitem(sys.modules, "torch", None)
    out = tmp_path / "x.py"
    assert main(["generate", "examples/xor.yaml", "-o", str(out), "--backend", "torch"]) == 0
    err = capsys.readouterr().err
    assert err.strip() == "notice: torch is not installed: the module needs it to run"
    assert out.exists()


def test_cli_train_backend_torch_saves_what_numpy_trains(tmp_path, capsys):
    """``symgrad train --backend torch`` trains the same parameters as the NumPy trainer (same
    initial weights, same shuffled batches) and saves them in the file the NumPy trainer reads."""
    from symgrad.cli import main

    rng = np.random.default_rng(0)
    X = rng.standard_normal((40, 4))
    labels = np.array(["a", "b", "c"])[rng.integers(0, 3, 40)]
    data = tmp_path / "data.csv"
    rows = ["f1,f2,f3,f4,species"] + [",".join([*map(str, x), c]) for x, c in zip(X, labels)]
    data.write_text("\n".join(rows) + "\n")
    spec = str(ROOT / "examples" / "softmax_iris.yaml")
    files = {}
    for backend in ("numpy", "torch"):
        out = tmp_path / f"{backend}.npz"
        argv = ["train", spec, "--data", str(data), "--out", str(out), "--epochs", "3", "-q"]
        assert main([*argv, "--backend", backend]) == 0
        with np.load(out) as f:
            files[backend] = f["theta"]
    capsys.readouterr()
    np.testing.assert_allclose(files["torch"], files["numpy"], rtol=0, atol=1e-12)
    model = str(tmp_path / "torch.npz")
    assert main(["evaluate", spec, "--model", model, "--data", str(data)]) == 0
