"""The cluster's client takes the regulariser from the generated module (``_regulariser`` and
``_prox``, printed from ``reg.value``, ``reg.grad``, ``reg.hess`` and ``reg.prox``), not from
formulas of its own: what it adds to the partitions' data sums is what the trainer computes."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import make_spec

import symgrad
from symgrad.runtime.cluster import Regulariser, newton_steps

CASES = {
    "l1_l2_mlp": make_spec(((3, "tanh"),), "sigmoid", "log_loss", l2=0.3, l1=0.2, outputs=1),
    "l2_softmax": make_spec((), "softmax", "cross_entropy", outputs=3, l2=0.3),
    "l1_adam": make_spec(((4, "relu"),), "identity", "mse", l1=0.1, optimizer={"name": "adam"}),
    "no_bias": make_spec(((3, "tanh"),), "sigmoid", "mse", l2=0.5, l1=0.1, outputs=2),
}
for _layer in CASES["no_bias"]["layers"]:
    _layer["bias"] = False


def _data(net, n=41, seed=0):
    rng = np.random.default_rng(seed)
    net.set_flat(rng.standard_normal(net.get_flat().size))
    X = rng.standard_normal((n, net.W_1.shape[1]))
    K = net.forward(X).shape[1]
    Y = np.eye(K)[rng.integers(0, K, n)] if K > 1 else (rng.random((n, 1)) > 0.5) * 1.0
    return X, Y


def _with(net, l2, l1):
    other = type(net)(dtype="float64")
    other.set_flat(net.get_flat())
    other.l2, other.l1 = l2, l1
    return other


@pytest.mark.parametrize("spec", list(CASES.values()), ids=list(CASES))
def test_the_terms_are_the_trainers_cost_gradient_and_hessian_less_their_data_parts(spec):
    net = symgrad.load_trainer(spec)
    X, Y = _data(net)
    n = X.shape[0]
    reg = Regulariser(net, n)
    for l1 in (float(net.l1), 0.0):  # the whole regulariser, then its smooth part
        value, grad, hess = reg(net.get_flat(), l1)
        full, bare = _with(net, net.l2, l1), _with(net, 0.0, 0.0)
        assert value == pytest.approx(full.loss(X, Y) - bare.loss(X, Y), rel=1e-12, abs=1e-15)
        np.testing.assert_allclose(
            grad, full.gradient_flat(X, Y) - bare.gradient_flat(X, Y), rtol=1e-10, atol=1e-13
        )
        np.testing.assert_allclose(
            np.diag(hess), full.hessian(X, Y) - bare.hessian(X, Y), rtol=1e-10, atol=1e-13
        )


def test_the_soft_threshold_moves_weights_only_and_keeps_a_small_one_at_zero():
    net = symgrad.load_trainer(CASES["l1_l2_mlp"])
    reg = Regulariser(net, 10)
    theta = np.linspace(-1.0, 1.0, net.get_flat().size)
    out = reg.prox(theta, 0.5)  # threshold 0.5 * 0.2 / 10 = 0.01
    net.set_flat(theta)
    weights = np.r_[net.W_1.ravel(), net.W_2.ravel()]
    net.set_flat(out)
    moved = np.r_[net.W_1.ravel(), net.W_2.ravel()]
    np.testing.assert_allclose(moved, np.sign(weights) * np.maximum(np.abs(weights) - 0.01, 0))
    np.testing.assert_array_equal(net.b_1, theta[net.W_1.size : net.W_1.size + net.b_1.size])
    assert np.all(moved[np.abs(weights) <= 0.01] == 0)


def test_a_spec_without_a_regulariser_adds_nothing():
    net = symgrad.load_trainer("examples/xor.yaml")
    assert not hasattr(net, "_regulariser") and not hasattr(net, "_prox")
    value, grad, hess = Regulariser(net, 4)(net.get_flat(), 0.0)
    assert value == 0.0 and not grad.any() and not hess.any()


def test_the_cluster_has_no_regulariser_formula_of_its_own():
    import inspect

    from symgrad.runtime import cluster

    source = inspect.getsource(cluster)
    for typed in ("l2 *", "l1 *", "np.sign", "np.maximum", "0.5 *", "mask"):
        assert typed not in source, typed


def test_the_newton_solves_are_the_generated_trainers():
    """The cluster's Newton and Newton-CG steps are the static solves of a trainer generated for
    the spec with optimizer newton: on an indefinite Hessian the damping is raised (p
    descends), and CG stops at negative curvature, as ``newton_direction`` does."""
    spec = make_spec(((4, "tanh"),), "identity", "mse", optimizer={"name": "gd"}, outputs=1)
    net = symgrad.load_trainer(spec)
    steps = newton_steps(net)
    assert steps is not type(net) and not hasattr(net, "_newton_solve")
    assert newton_steps(steps(dtype="float64")) is steps  # a Newton trainer's own class
    rng = np.random.default_rng(2)
    A = rng.standard_normal((6, 6))
    H = A + A.T - 4 * np.eye(6)  # indefinite
    g = rng.standard_normal(6)
    assert np.linalg.eigvalsh(H)[0] < 0
    p = steps._newton_solve(H.copy(), g, 1e-4)
    assert p @ g > 0  # descends, where np.linalg.solve(H + 1e-4 I, g) need not
    q = steps._newton_cg(lambda v: H @ v, g, 1e-4)
    assert q @ g > 0
    spd = A @ A.T + np.eye(6)
    np.testing.assert_allclose(
        steps._newton_cg(lambda v: spd @ v, g, 0.5),
        np.linalg.solve(spd + 0.5 * np.eye(6), g),
        rtol=1e-9,
    )
