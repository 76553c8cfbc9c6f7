"""The Numba backend (issue 14): one compiled epoch per run, the same parameters as NumPy's.

"The same" is measured on the parameters after float64 epochs: ``|a - b| <= 1e-12 max(1, |b|)``
elementwise (absolute for parameters of magnitude up to 1, relative above), ``a`` the compiled
trainer's and ``b`` the NumPy trainer's. Compiled modules are shared between tests (one per spec,
``_pair``) and Numba caches them on disk, so a second run of this file compiles nothing.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import chain_layers
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from symgrad.codegen.generate import generate_source
from symgrad.codegen.numba_backend import numba_source, supported_optimizers
from symgrad.runtime.fdcheck import numeric_gradient
from symgrad.runtime.loader import import_module_from_source
from symgrad.spec import load_spec, spec_from_dict

pytest.importorskip("numba", reason="numba is not installed (pip install symgrad[numba])")

ROOT = Path(__file__).resolve().parents[1]
#: every example that trains with a first-order optimiser (Newton's stay on the NumPy path)
EXAMPLES = sorted(
    p.name
    for p in (ROOT / "examples").glob("*.yaml")
    if load_spec(p).optimizer.name in supported_optimizers() and not load_spec(p).is_graph
)
TOL = 1e-12

TANH_ADAM = {
    "name": "tanh_adam",
    "inputs": 5,
    "layers": [
        {"units": 7, "activation": "tanh"},
        {"units": 4, "activation": "relu"},
        {"units": 3, "activation": "sigmoid"},
    ],
    "loss": "log_loss",
    "optimizer": {"name": "adam", "learning_rate": 0.01, "batch_size": 8, "epochs": 1},
    "init": {"scheme": "xavier", "seed": 0},
}
MOMENTUM = {
    "name": "momentum_net",
    "inputs": 3,
    "layers": [
        {"units": 6, "activation": "elu"},
        {"units": 4, "activation": "softplus"},
        {"units": 2, "activation": "identity"},
    ],
    "loss": "mse",
    "optimizer": {"name": "momentum", "learning_rate": 0.05, "batch_size": 5, "epochs": 1},
    "init": {"scheme": "normal", "seed": 3},
}


def _modules(spec):
    if isinstance(spec, str):
        spec = load_spec(spec)
    return _pair(json.dumps(spec.canonical(), sort_keys=True, default=str), spec)


_PAIRS: dict[str, tuple] = {}


def _pair(key, spec):
    """The compiled and the NumPy module of ``spec``, built once per spec for all tests."""
    if key not in _PAIRS:
        source, notice = numba_source(spec)
        assert notice is None, notice
        compiled = import_module_from_source(source, f"{spec.name}_numba")
        plain = import_module_from_source(generate_source(spec), f"{spec.name}_numpy")
        _PAIRS[key] = (compiled, plain)
    return _PAIRS[key]


def _data(n, n_in, n_out, seed=0, one_hot=False):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, n_in))
    if one_hot:  # softmax with cross-entropy needs rows that sum to 1
        return X, np.eye(n_out)[rng.integers(0, n_out, n)]
    Y = (rng.random((n, n_out)) > 0.5).astype(np.float64)
    return X, Y


def _assert_same(a, b):
    """Parameters equal to TOL: absolute up to magnitude 1, relative above; returns max |a - b|."""
    diff = np.abs(a - b)
    worst = float(diff.max())
    assert np.all(diff <= TOL * np.maximum(1.0, np.abs(b))), worst
    return worst


def _two_epochs_agree(spec, n, m, track, seed=0):
    """An epoch in order, then a shuffled one, of both trainers (float64) from the same start;
    the parameters after each agree to TOL and so does the history. Returns the largest
    difference."""
    compiled, plain = _modules(spec)
    name = _class_name(plain)
    cls = getattr(compiled, name)
    assert cls._make_runner is compiled._compiled_make_runner
    a, b = cls(dtype="float64"), getattr(plain, name)(dtype="float64")
    X, Y = _data(n, a.n_inputs, a.n_outputs, seed, one_hot=_softmax(spec))
    ha = a.fit(X, Y, epochs=1, batch_size=m, shuffle=False, track=track)
    hb = b.fit(X, Y, epochs=1, batch_size=m, shuffle=False, track=track)
    worst = _assert_same(a.get_flat(), b.get_flat())
    assert not np.array_equal(a.get_flat(), cls(dtype="float64").get_flat())  # it trained
    assert ha.keys() == hb.keys()
    for key in ha:
        np.testing.assert_allclose(ha[key], hb[key], rtol=1e-12, atol=1e-12)
    # a shuffled second epoch (the permutation gathered inside the compiled loop)
    a.fit(X, Y, epochs=1, batch_size=m, track=not track)
    b.fit(X, Y, epochs=1, batch_size=m, track=not track)
    worst = max(worst, _assert_same(a.get_flat(), b.get_flat()))
    assert a._opt_state["t"] == b._opt_state["t"]
    for key in b._opt_state:
        if key != "t":
            _assert_same(a._opt_state[key], b._opt_state[key])
    return worst


def _softmax(spec):
    spec = load_spec(spec) if isinstance(spec, str) else spec
    return spec.layers[-1].activation == "softmax"


@pytest.mark.parametrize(
    ("spec", "n", "m"),
    [
        ("examples/xor.yaml", 64, 4),
        ("examples/mnist_textbook.yaml", 40, 10),
        (spec_from_dict(TANH_ADAM), 50, 8),  # 50 = 6 batches of 8 and a rest of 2
        (spec_from_dict(MOMENTUM), 23, 5),
    ],
    ids=["xor", "mnist_textbook", "tanh_adam", "momentum"],
)
@pytest.mark.parametrize("track", [True, False], ids=["track", "notrack"])
def test_one_epoch_equals_numpy(spec, n, m, track):
    _two_epochs_agree(spec, n, m, track)


@pytest.mark.parametrize("example", EXAMPLES)
def test_every_supported_example_equals_numpy(example):
    spec = load_spec(ROOT / "examples" / example)
    m = min(spec.optimizer.batch_size or 16, 16)
    # a batch count that leaves a rest: the runner of the last, shorter batch runs too
    _two_epochs_agree(spec, 2 * m + m // 2 + 1, m, track=True)


@st.composite
def specs(draw):
    """A small dense chain: 0-2 hidden layers, an output/loss pair, any supported optimiser,
    none, either or both penalties, and a bias or none on each layer."""
    layers, loss = chain_layers(draw)
    opt = draw(st.sampled_from(supported_optimizers()))
    l2 = draw(st.sampled_from([0.0, 0.05]))
    l1 = draw(st.sampled_from([0.0, 0.03]))
    return {
        "name": f"gen_{opt}",
        "inputs": draw(st.integers(1, 4)),
        "layers": layers,
        "loss": loss,
        "regularization": {"l2": l2, "l1": l1},
        "optimizer": {"name": opt, "learning_rate": 0.05, "batch_size": 4, "epochs": 1},
        "init": {"scheme": "normal", "seed": draw(st.integers(0, 3))},
    }


def _generated_spec_agrees(spec_dict, n):
    spec = spec_from_dict(spec_dict)
    _two_epochs_agree(spec, n, 4, track=True, seed=n)


@settings(max_examples=3, deadline=None, derandomize=True, database=None)
@given(spec=specs(), n=st.integers(5, 13))
def test_generated_specs_equal_numpy(spec, n):
    _generated_spec_agrees(spec, n)


@pytest.mark.slow
@settings(
    max_examples=40, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow]
)
@given(spec=specs(), n=st.integers(5, 13))
def test_generated_specs_equal_numpy_many(spec, n):
    _generated_spec_agrees(spec, n)


@pytest.mark.parametrize("optimizer", supported_optimizers())
def test_every_optimizer_with_both_penalties_and_no_bias(optimizer):
    """Each first-order optimiser with L2 and the L1 soft threshold (and ``after_prox``), a
    layer without bias and a softmax output."""
    spec = spec_from_dict(
        {
            "name": f"all_{optimizer}",
            "inputs": 4,
            "layers": [
                {"units": 5, "activation": "tanh", "bias": False},
                {"units": 3, "activation": "softmax"},
            ],
            "loss": "cross_entropy",
            "regularization": {"l2": 0.02, "l1": 0.01},
            "optimizer": {"name": optimizer, "learning_rate": 0.05, "batch_size": 4, "epochs": 1},
            "init": {"scheme": "normal", "seed": 1},
        }
    )
    _two_epochs_agree(spec, 18, 4, track=True)


def _class_name(module):
    return next(k for k, v in vars(module).items() if isinstance(v, type) and hasattr(v, "fit"))


SOFTMAX_L2 = {
    "name": "softmax_l2",
    "inputs": 5,
    "layers": [
        {"units": 6, "activation": "elu", "bias": False},
        {"units": 4, "activation": "softplus"},
        {"units": 3, "activation": "softmax"},
    ],
    "loss": "cross_entropy",
    "regularization": {"l2": 0.3},
    "init": {"scheme": "xavier", "seed": 2},
}


@pytest.mark.parametrize(
    "spec_dict", [TANH_ADAM, SOFTMAX_L2], ids=["tanh-sigmoid-logloss", "nobias-softmax-l2"]
)
def test_compiled_step_is_the_finite_difference_gradient(spec_dict):
    """gd on the whole set: theta_0 - theta_1 = eta grad C(theta_0), the step taken in the
    compiled loop, equals eta times central differences of the module's loss (the regulariser
    with N = n included)."""
    spec = spec_from_dict({**spec_dict, "optimizer": {"name": "gd", "learning_rate": 0.5}})
    compiled, _ = _modules(spec)
    model = getattr(compiled, spec.class_name)()
    X, Y = _data(30, 5, 3, seed=1, one_hot=_softmax(spec))
    theta0 = model.get_flat().copy()

    def cost(v):
        model.set_flat(v)
        return model.loss(X, Y)

    fd = numeric_gradient(cost, theta0.copy())
    assert np.linalg.norm(fd) > 1e-3  # not vacuous
    model.set_flat(theta0)
    model.fit(X, Y, epochs=1, shuffle=False, track=False)
    step = theta0 - model.get_flat()
    np.testing.assert_allclose(step, 0.5 * fd, rtol=1e-6, atol=1e-9)
    # and the shared (NumPy) gradient of the backend's module agrees with both
    model.set_flat(theta0)
    np.testing.assert_allclose(model.gradient_flat(X, Y), fd, rtol=1e-6, atol=1e-9)


def test_l1_threshold_sets_weights_to_zero_as_numpy_does():
    """A strong L1 penalty: the soft threshold zeroes weights (never biases) in both trainers."""
    spec = spec_from_dict(
        {
            **SOFTMAX_L2,
            "name": "strong_l1",
            "regularization": {"l1": 2.0},
            "optimizer": {"name": "momentum", "learning_rate": 0.1, "batch_size": 5},
        }
    )
    compiled, plain = _modules(spec)
    a, b = getattr(compiled, spec.class_name)(), getattr(plain, spec.class_name)()
    X, Y = _data(20, 5, 3, seed=4, one_hot=True)
    a.fit(X, Y, epochs=3, batch_size=5)
    b.fit(X, Y, epochs=3, batch_size=5)
    _assert_same(a.get_flat(), b.get_flat())
    assert np.count_nonzero(a.get_flat() == 0.0) == np.count_nonzero(b.get_flat() == 0.0) > 10


def test_supported_optimizers_are_the_first_order_ones():
    from symgrad import optimizers

    first = {n for n in optimizers.names() if optimizers.get(n).first_order}
    assert {"gd", "sgd", "momentum", "nesterov", "adam", "rmsprop", "adagrad"} <= set(
        supported_optimizers()
    )
    assert set(supported_optimizers()) <= first
    assert "newton" not in supported_optimizers()


def test_newton_falls_back_with_a_notice():
    spec = spec_from_dict({**TANH_ADAM, "optimizer": {"name": "newton"}})
    source, notice = numba_source(spec)
    assert notice == (
        "the numba backend does not support optimizer 'newton' (it needs curvature: it trains "
        "on the NumPy path): wrote the NumPy trainer"
    )
    assert source == generate_source(spec)


def test_cli_backend_option(tmp_path):
    from typer.testing import CliRunner

    from symgrad.cli import app

    out = tmp_path / "xor.py"
    result = CliRunner().invoke(
        app, ["generate", "examples/xor.yaml", "--backend", "numba", "-o", str(out)]
    )
    assert result.exit_code == 0, result.output
    assert "_epoch = _numba.njit(cache=_CACHE)(_epoch_py)" in out.read_text()
    result = CliRunner().invoke(
        app, ["generate", "examples/mlp_digits.yaml", "--backend", "numba", "-o", str(out)]
    )
    assert result.exit_code == 0, result.output  # softmax, l2, adam: compiled
    assert "notice" not in result.output
    assert "_epoch = _numba.njit(cache=_CACHE)(_epoch_py)" in out.read_text()
    result = CliRunner().invoke(
        app, ["generate", "examples/diabetes_linear.yaml", "--backend", "numba", "-o", str(out)]
    )
    assert result.exit_code == 0
    said = " ".join(result.output.split())
    assert (
        "notice: the numba backend does not support optimizer 'newton' (it needs curvature: it "
        "trains on the NumPy path): wrote the NumPy trainer" in said
    )
    result = CliRunner().invoke(app, ["generate", "examples/xor.yaml", "--backend", "jax"])
    assert result.exit_code == 2
    assert "--backend must be numpy, numba or torch, not 'jax'" in result.output


def test_module_outside_sys_modules_compiles_in_memory(tmp_path):
    """Numba's disk cache cannot find a module that is not in sys.modules again (loading the
    cache would fail with "No module named '<dynamic>'"), so such a module compiles in memory."""
    import importlib.util

    source, _ = numba_source("examples/xor.yaml")
    path = tmp_path / "xor_by_hand.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("xor_by_hand", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module._CACHE is False
    X, Y = _data(16, 2, 1)
    model = module.Xor()
    model.fit(X, Y, epochs=2, batch_size=4)
    assert model._make_runner.__func__ is module._compiled_make_runner
    assert not (tmp_path / "__pycache__").exists()


def test_without_numba_the_numpy_trainer_with_a_notice(monkeypatch):
    monkeypatch.setitem(sys.modules, "numba", None)  # import numba raises ImportError
    source, notice = numba_source("examples/xor.yaml")
    assert notice == "numba is not installed: wrote the NumPy trainer"
    assert source == generate_source("examples/xor.yaml")


def test_generated_module_without_numba_keeps_the_numpy_runner(monkeypatch):
    source, _ = numba_source("examples/xor.yaml")
    numpy_runner = import_module_from_source(generate_source("examples/xor.yaml"), "xor_plain")
    monkeypatch.setitem(sys.modules, "numba", None)
    module = import_module_from_source(source + "\n# without numba\n", "xor_no_numba")
    assert module._epoch is None
    assert module._numba is None
    assert module.Xor._make_runner is not module._compiled_make_runner
    assert module.Xor._make_runner.__qualname__ == "Xor._make_runner"
    X, Y = _data(16, 2, 1)
    a, b = module.Xor(), numpy_runner.Xor()
    a.fit(X, Y, epochs=1, batch_size=4)
    b.fit(X, Y, epochs=1, batch_size=4)
    np.testing.assert_array_equal(a.get_flat(), b.get_flat())


def test_load_trainer_numba_backend():
    import symgrad

    model = symgrad.load_trainer("examples/xor.yaml", backend="numba")
    module = sys.modules[type(model).__module__]
    assert type(model)._make_runner is module._compiled_make_runner
    plain = symgrad.load_trainer("examples/xor.yaml")
    assert type(plain)._make_runner.__qualname__ == "Xor._make_runner"
    X, Y = _data(12, 2, 1)
    model.fit(X, Y, epochs=2, batch_size=4)
    plain.fit(X, Y, epochs=2, batch_size=4)
    _assert_same(model.get_flat(), plain.get_flat())
    said = []
    newton = symgrad.load_trainer(
        "examples/diabetes_linear.yaml", backend="numba", notice=said.append
    )
    assert said == [
        "the numba backend does not support optimizer 'newton' (it needs curvature: it trains on "
        "the NumPy path): wrote the NumPy trainer"
    ]
    assert hasattr(newton, "fit")
    with pytest.raises(ValueError, match="backend must be numpy, numba or torch, not 'jax'"):
        symgrad.load_trainer("examples/xor.yaml", backend="jax")


def test_cli_train_backend_numba(tmp_path):
    from typer.testing import CliRunner

    from symgrad.cli import app

    X, Y = _data(16, 2, 1)
    data = tmp_path / "xor.npz"
    np.savez(data, X=X, Y=Y)
    outs = {}
    for backend in ("numba", "numpy"):
        out = tmp_path / f"{backend}.npz"
        args = ["train", "examples/xor.yaml", "--data", str(data), "--epochs", "3", "-q"]
        result = CliRunner().invoke(app, [*args, "--out", str(out), "--backend", backend])
        assert result.exit_code == 0, result.output
        outs[backend] = np.load(out)["theta"]
    _assert_same(outs["numba"], outs["numpy"])
    result = CliRunner().invoke(
        app, ["train", "examples/xor.yaml", "--data", str(data), "--backend", "jax"]
    )
    assert result.exit_code != 0
    assert "--backend must be numpy, numba or torch, not 'jax'" in result.output


@pytest.mark.parametrize("name", ["symgrad numba", "symgrad numba fit()"])
def test_benchmark_contestant_agrees_with_the_hand_trainer(name):
    """The peers benchmark's numba rows do the hand NumPy trainer's epoch (to 1e-12)."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from benchmarks import baselines, peers

    net = baselines.Net((12, 6, 4), ("relu", "softmax"), "cross_entropy", "float64", 4, 0.5)
    cfg = peers.Config("t", "tiny", net, n=30, n_quick=30)
    X, Y = peers.make_data(cfg, cfg.n)
    p0 = peers.init_params(net)
    results = {}
    for who in (peers.REFERENCE, name):
        contestant = peers.CONTESTANTS[who](net)
        state = contestant.epoch(contestant.setup(p0, X, Y))
        results[who] = contestant.to_numpy(state)
    assert baselines.max_abs_diff(results[peers.REFERENCE], p0) > 1e-3  # it did train
    assert peers.check_agreement(results)[name] <= 1e-12


def test_load_trainer_numba_from_a_thread_is_built_in_the_bounded_child():
    """Off the main thread the module is generated in the budgeted child process (the
    producer ``numba_module``), and it is the compiled trainer all the same."""
    import threading

    import symgrad

    out = {}
    worker = threading.Thread(
        target=lambda: out.setdefault(
            "model", symgrad.load_trainer("examples/softmax_iris.yaml", backend="numba")
        )
    )
    worker.start()
    worker.join(120)
    model = out["model"]
    assert type(model)._make_runner is sys.modules[type(model).__module__]._compiled_make_runner


def test_divergence_is_caught_as_numpy_catches_it():
    """A learning rate far too large: the same DivergenceError (naming the same batch) and the
    parameters of the epoch's start restored, in both trainers."""
    compiled, plain = _modules(spec_from_dict(MOMENTUM))
    X, Y = _data(40, 3, 2, seed=5)
    errors = []
    for module in (compiled, plain):
        model = module.MomentumNet()
        model.learning_rate = 1e6
        start = model.get_flat()
        with pytest.raises(module.DivergenceError) as err:
            model.fit(X * 10, Y, epochs=3, batch_size=4, shuffle=False)
        np.testing.assert_array_equal(model.get_flat(), start)
        errors.append(str(err.value))
    assert errors[0] == errors[1]
    assert "batch" in errors[0]


def test_sigmoid_saturates_as_numpy_does():
    """The compiled loop prints the sigmoid as 1/(1 + e^{-z}) (a fifth of the cost of the tanh
    form without SIMD maths): at |z| in the thousands e^{-z} is inf or 0 and the quotient its
    limit, 0 or 1, never NaN; the parameters after an epoch equal the NumPy trainer's."""
    spec = load_spec(
        {
            "name": "saturated",
            "inputs": 3,
            "layers": [
                {"units": 4, "activation": "sigmoid"},
                {"units": 2, "activation": "sigmoid"},
            ],
            "loss": "log_loss",
            "optimizer": {"name": "sgd", "learning_rate": 0.1, "batch_size": 4},
        }
    )
    epoch = numba_source(spec)[0].split("def _epoch_py", 1)[1]
    assert "1 / (1 + np.exp(-z))" in epoch and "np.tanh" not in epoch
    compiled, plain = _modules(spec)
    a, b = compiled.Saturated(dtype="float64"), plain.Saturated(dtype="float64")
    X, Y = _data(16, 3, 2, seed=4)
    X *= 3000.0  # every hidden unit saturates at 0 or 1
    with np.errstate(over="ignore"):
        a.fit(X, Y, epochs=1, shuffle=False, track=False)
        b.fit(X, Y, epochs=1, shuffle=False, track=False)
    assert np.isfinite(a.get_flat()).all()
    _assert_same(a.get_flat(), b.get_flat())
