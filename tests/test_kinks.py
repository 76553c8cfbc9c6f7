"""Issue 11, item 7: custom activations and losses with abs, max and min generate, train and check.

Their derivatives hold DiracDelta/Heaviside terms; symgrad uses the derivative away from the kinks
(DiracDelta -> 0, the step 0 at 0), so the code prints and the gradients match finite differences.
"""

from __future__ import annotations

import numpy as np
import pytest
import sympy as sp
import yaml

import symgrad
from symgrad.cli import main
from symgrad.runtime.fdcheck import numeric_gradient

SPEC = {
    "name": "kinks",
    "inputs": 2,
    "layers": [
        {"units": 3, "activation": "softabs"},
        {"units": 1, "activation": "identity"},
    ],
    "loss": "huberish",
    "activations": {"softabs": "abs(z) + max(z, 0) - min(z, 1)"},
    "losses": {"huberish": "abs(a - y) + (a - y)**2"},
    "optimizer": {"name": "gd", "learning_rate": 0.05, "epochs": 5},
}


def _data(seed=0, n=12):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, 2))
    Y = rng.standard_normal((n, 1))
    return X, Y


def test_derivatives_hold_no_point_masses():
    d = symgrad.derive(symgrad.load_spec(SPEC))
    act = d.layers[0].activation
    for expr in (act.df, act.d2f, d.loss.dl_da, d.loss.delta, d.loss.s):
        assert not expr.has(sp.DiracDelta, sp.Heaviside, sp.zoo), expr
    assert act.d2f == 0 and d.loss.s == 2


def test_gradient_matches_finite_differences_away_from_kinks():
    model = symgrad.load_trainer(SPEC)
    X, Y = _data()
    theta = model.get_flat()

    def loss(v):
        model.set_flat(v)
        return model.loss(X, Y)

    numeric = numeric_gradient(loss, theta.copy())
    model.set_flat(theta)
    assert np.allclose(model.gradient_flat(X, Y), numeric, rtol=1e-6, atol=1e-8)
    H = model.hessian(X, Y)
    assert np.allclose(H, H.T) and np.isfinite(H).all()


def test_fit_and_cli_check(tmp_path, capsys):
    model = symgrad.load_trainer(SPEC)
    X, Y = _data()
    history = model.fit(X, Y)
    assert len(history["loss"]) == 5 and history["loss"][-1] < history["loss"][0]
    path = tmp_path / "kinks.yaml"
    path.write_text(yaml.safe_dump(SPEC), encoding="utf-8")
    assert main(["generate", str(path), "-o", str(tmp_path / "kinks.py")]) == 0
    assert main(["check", str(path)]) == 0
    assert capsys.readouterr().out.rstrip().endswith("all blocks pass")


@pytest.mark.parametrize("expr", ["abs(z)", "max(z, 0)", "min(z, 0.5) * z"])
def test_each_kink_function_generates(expr):
    spec = {**SPEC, "activations": {"softabs": expr}}
    source = symgrad.generate_source(symgrad.load_spec(spec))
    compile(source, "kinks.py", "exec")
