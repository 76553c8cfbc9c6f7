"""The finite-difference checker catches a wrong derivative and names the block."""

from __future__ import annotations

import numpy as np

import symgrad
from symgrad.runtime.fdcheck import check, numeric_gradient, numeric_jacobian

SPEC = {
    "name": "fdnet",
    "inputs": 3,
    "layers": [{"units": 4, "activation": "tanh"}, {"units": 2, "activation": "sigmoid"}],
    "loss": "log_loss",
}


def _data():
    rng = np.random.default_rng(0)
    return rng.standard_normal((6, 3)), (rng.random((6, 2)) > 0.5).astype(float)


def test_numeric_derivatives_of_known_functions():
    theta = np.array([0.3, -1.2, 2.0])
    g = numeric_gradient(lambda t: float(np.sum(t**3)), theta)
    np.testing.assert_allclose(g, 3 * theta**2, rtol=1e-8)
    J = numeric_jacobian(lambda t: np.sin(t), theta)
    np.testing.assert_allclose(J, np.diag(np.cos(theta)), atol=1e-9)


def test_a_correct_trainer_passes_every_block():
    model = symgrad.load_trainer(SPEC)
    X, Y = _data()
    results = check(model, X, Y)
    assert [r.block for r in results] == ["W_1", "b_1", "W_2", "b_2"]
    assert all(r.passed(1e-6, 1e-5) for r in results), results


def test_a_wrong_gradient_is_caught_in_its_block(monkeypatch):
    model = symgrad.load_trainer(SPEC)
    X, Y = _data()
    right = model.gradient_flat

    def wrong(X_, Y_):
        g = right(X_, Y_)
        g[13] *= 1.01  # b_1[1]: W_1 has 12 entries
        return g

    monkeypatch.setattr(model, "gradient_flat", wrong)
    results = {r.block: r for r in check(model, X, Y, hessian=False)}
    assert not results["b_1"].passed(1e-6, 1e-5)
    assert results["b_1"].grad_abs > 0
    assert all(results[b].passed(1e-6, 1e-5) for b in ("W_1", "W_2", "b_2"))


def test_a_wrong_hessian_is_caught(monkeypatch):
    model = symgrad.load_trainer(SPEC)
    X, Y = _data()
    right = model.hessian

    def wrong(X_, Y_):
        H = right(X_, Y_)
        H[20, 20] += 1e-3  # inside W_2
        return H

    monkeypatch.setattr(model, "hessian", wrong)
    results = {r.block: r for r in check(model, X, Y)}
    assert not results["W_2"].passed(1e-6, 1e-5)
    assert results["W_2"].hess_abs > 5e-4
