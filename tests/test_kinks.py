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


def test_finite_differences_on_a_kink_take_the_side_of_its_branch():
    """A point exactly on a kink (ReLU at z = 0) has no two-sided derivative; the reference's
    differences take the side whose branch the point has (z <= 0: 0, the code's f'(0))."""
    from symgrad.runtime.reference import fd

    def relu(t, at=0.0):
        z = at + t
        return np.array([max(z, 0.0)]), (z > 0,)

    assert fd(relu)[0][0] == 0.0
    assert fd(lambda t: relu(t, 0.3))[0][0] == pytest.approx(1.0, abs=1e-12)

    def smooth_right(t):  # z^2 + z on z > 0, 2z on z <= 0; the point is on the left branch
        z = t
        return np.array([z * z + z if z > 0 else 2 * z]), (z > 0,)

    assert fd(smooth_right)[0][0] == pytest.approx(2.0, abs=1e-10)


@pytest.mark.parametrize("seed", [1, 4, 5])
def test_verify_seed002_nodes_where_a_layer_sits_on_the_kink(seed):
    """Seed 002's network has no biases: a layer fed only by dead ReLUs has z exactly 0. The
    verifier compared f'(0) = 0 with a central difference across the kink (0.5 or 1) and
    failed backprop.2 on these seeds; differences of f now see its kink."""
    from symgrad.runtime.verify import verify

    report = verify(symgrad.load_spec("examples/seed002_nodes.yaml"), seed=seed)
    assert report.ok, [(r.key, r.error) for r in report.failures]
