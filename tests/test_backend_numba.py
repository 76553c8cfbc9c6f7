"""The Numba backend (issue 14): one compiled epoch per run, the same parameters as NumPy's."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from symgrad.codegen.generate import generate_source
from symgrad.codegen.numba_backend import numba_source
from symgrad.runtime.fdcheck import numeric_gradient
from symgrad.runtime.loader import import_module_from_source
from symgrad.spec import spec_from_dict

pytest.importorskip("numba", reason="numba is not installed (pip install symgrad[numba])")

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
    source, notice = numba_source(spec)
    assert notice is None
    name = spec.name if hasattr(spec, "name") else str(spec).rsplit("/", 1)[-1][:-5]
    compiled = import_module_from_source(source, f"{name}_numba")
    plain = import_module_from_source(generate_source(spec), f"{name}_numpy")
    return compiled, plain


def _data(n, n_in, n_out, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, n_in))
    Y = (rng.random((n, n_out)) > 0.5).astype(np.float64)
    return X, Y


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
    compiled, plain = _modules(spec)
    cls = getattr(compiled, _class_name(plain))
    assert cls._make_runner is compiled._compiled_make_runner
    a, b = cls(), getattr(plain, _class_name(plain))()
    X, Y = _data(n, a.n_inputs, a.n_outputs)
    ha = a.fit(X, Y, epochs=1, batch_size=m, shuffle=False, track=track)
    hb = b.fit(X, Y, epochs=1, batch_size=m, shuffle=False, track=track)
    assert np.max(np.abs(a.get_flat() - b.get_flat())) <= 1e-12
    assert not np.array_equal(a.get_flat(), cls().get_flat())  # it trained
    assert ha.keys() == hb.keys()
    for key in ha:
        np.testing.assert_allclose(ha[key], hb[key], rtol=1e-12, atol=1e-12)
    # a shuffled second epoch (the permutation gathered inside the compiled loop)
    a.fit(X, Y, epochs=1, batch_size=m, track=track)
    b.fit(X, Y, epochs=1, batch_size=m, track=track)
    assert np.max(np.abs(a.get_flat() - b.get_flat())) <= 1e-12
    assert a._opt_state["t"] == b._opt_state["t"]


def _class_name(module):
    return next(k for k, v in vars(module).items() if isinstance(v, type) and hasattr(v, "fit"))


def test_compiled_step_is_the_finite_difference_gradient():
    """gd on the whole set: theta_0 - theta_1 = eta grad C(theta_0), the step taken in the
    compiled loop, equals eta times central differences of the module's loss."""
    spec = spec_from_dict({**TANH_ADAM, "optimizer": {"name": "gd", "learning_rate": 0.5}})
    compiled, _ = _modules(spec)
    model = compiled.TanhAdam()
    X, Y = _data(30, 5, 3, seed=1)
    theta0 = model.get_flat().copy()

    def cost(v):
        model.set_flat(v)
        return model.loss(X, Y)

    fd = numeric_gradient(cost, theta0.copy())
    model.set_flat(theta0)
    model.fit(X, Y, epochs=1, shuffle=False, track=False)
    step = theta0 - model.get_flat()
    np.testing.assert_allclose(step, 0.5 * fd, rtol=1e-6, atol=1e-9)
    # and the shared (NumPy) gradient of the backend's module agrees with both
    model.set_flat(theta0)
    np.testing.assert_allclose(model.gradient_flat(X, Y), fd, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize(
    ("changes", "why"),
    [
        ({"regularization": {"l2": 0.01}}, "a regulariser (l2/l1)"),
        ({"regularization": {"l1": 0.01}}, "a regulariser (l2/l1)"),
        (
            {"optimizer": {"name": "rmsprop"}},
            "optimizer 'rmsprop' (supported: gd, sgd, momentum, adam)",
        ),
        (
            {
                "layers": [
                    {"units": 4, "activation": "tanh"},
                    {"units": 3, "activation": "softmax"},
                ],
                "loss": "cross_entropy",
            },
            "a softmax layer",
        ),
    ],
    ids=["l2", "l1", "rmsprop", "softmax"],
)
def test_unsupported_spec_falls_back_with_a_notice(changes, why):
    spec = spec_from_dict({**TANH_ADAM, **changes})
    source, notice = numba_source(spec)
    assert notice == f"the numba backend does not support {why}: wrote the NumPy trainer"
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
    assert result.exit_code == 0
    assert (
        "notice: the numba backend does not support a regulariser (l2/l1): wrote the NumPy trainer"
        in result.output
    )
    result = CliRunner().invoke(app, ["generate", "examples/xor.yaml", "--backend", "jax"])
    assert result.exit_code == 2
    assert "--backend must be numpy or numba, not 'jax'" in result.output


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
