"""Finite-difference checks of the generated trainers' derivatives (central differences, float64).

Everything here is computed independently of the generated code: gradients and Hessians by
central differences of ``loss`` and ``gradient_flat``, closed-form Hessians of the models without
hidden layers written out in the test, and Gauss-Newton matrices from finite-difference Jacobians
of ``forward``.
"""

from __future__ import annotations

import itertools
import warnings

import numpy as np
import pytest
from conftest import make_data, rel_err, trainer, weight_mask
from hypothesis import given, settings
from hypothesis import strategies as st

HIDDEN = ("identity", "sigmoid", "tanh", "relu", "leaky_relu", "softplus", "elu")
PAIRS = (
    ("identity", "mse"),
    ("sigmoid", "mse"),
    ("sigmoid", "log_loss"),
    ("softmax", "cross_entropy"),
    ("tanh", "mse"),
)
DEPTHS = (0, 1, 2)
WIDTHS = (4, 3)  # hidden widths used by the exhaustive tables (first, second hidden layer)

GRAD_STEP = 1e-6
HESS_STEP = 1e-5
GRAD_TOL = 1e-6
HESS_TOL = 1e-5


# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------


def hidden_layers(act: str | None, depth: int) -> tuple:
    return tuple((WIDTHS[i], act) for i in range(depth))


def randomize(model, seed: int, scale: float = 0.8, away_from_zero: float = 0.0) -> np.ndarray:
    """Set random parameters (optionally with every |theta_i| >= away_from_zero)."""
    rng = np.random.default_rng(seed)
    theta = scale * rng.standard_normal(model.theta.size)
    if away_from_zero:
        theta = np.sign(theta) * (away_from_zero + np.abs(theta))
    model.set_flat(theta)
    return theta


def _steps(theta_i: float, h: float) -> tuple[float, float]:
    """theta_i + h and theta_i - h; callers divide by their actual (rounded) distance."""
    plus, minus = theta_i + h, theta_i - h
    return plus, minus


def fd_gradient(model, X, Y, h: float = GRAD_STEP) -> np.ndarray:
    """Central differences of ``model.loss`` at the model's parameters (restored afterwards)."""
    theta = model.get_flat().astype(np.float64)
    g = np.empty_like(theta)
    t = theta.copy()
    try:
        for i in range(theta.size):
            plus, minus = _steps(theta[i], h)
            t[i] = plus
            model.set_flat(t)
            fp = model.loss(X, Y)
            t[i] = minus
            model.set_flat(t)
            fm = model.loss(X, Y)
            t[i] = theta[i]
            g[i] = (fp - fm) / (plus - minus)
    finally:
        model.set_flat(theta)
    return g


def fd_hessian(model, X, Y, h: float = HESS_STEP) -> np.ndarray:
    """Central differences of ``model.gradient_flat`` (column j = d grad / d theta_j)."""
    theta = model.get_flat().astype(np.float64)
    P = theta.size
    H = np.empty((P, P))
    t = theta.copy()
    try:
        for j in range(P):
            plus, minus = _steps(theta[j], h)
            t[j] = plus
            model.set_flat(t)
            gp = model.gradient_flat(X, Y)
            t[j] = minus
            model.set_flat(t)
            gm = model.gradient_flat(X, Y)
            t[j] = theta[j]
            H[:, j] = (gp - gm) / (plus - minus)
    finally:
        model.set_flat(theta)
    return H


def fd_jacobian_forward(model, X, h: float = 1e-6) -> np.ndarray:
    """d a_L / d theta by central differences, shaped (samples, outputs, P)."""
    theta = model.get_flat().astype(np.float64)
    n = X.shape[0]
    out = model.forward(X).shape[1]
    J = np.empty((n, out, theta.size))
    t = theta.copy()
    try:
        for j in range(theta.size):
            plus, minus = _steps(theta[j], h)
            t[j] = plus
            model.set_flat(t)
            ap = model.forward(X)
            t[j] = minus
            model.set_flat(t)
            am = model.forward(X)
            t[j] = theta[j]
            J[:, :, j] = (ap - am) / (plus - minus)
    finally:
        model.set_flat(theta)
    return J


# ---------------------------------------------------------------------------------------------
# the exhaustive table: every hidden activation x output/loss pair x depth
# ---------------------------------------------------------------------------------------------


def _structures():
    for depth in DEPTHS:
        acts = (None,) if depth == 0 else HIDDEN
        for act, (out, loss) in itertools.product(acts, PAIRS):
            yield pytest.param(
                hidden_layers(act, depth),
                out,
                loss,
                id=f"d{depth}-{act or 'linear'}-{out}+{loss}",
            )


STRUCTURES = list(_structures())


@pytest.mark.parametrize("l2", [0.0, 0.37], ids=["no_l2", "l2"])
@pytest.mark.parametrize(("hidden", "out", "loss"), STRUCTURES)
def test_gradient_matches_central_differences(hidden, out, loss, l2):
    model = trainer(hidden, out, loss, l2=l2)
    randomize(model, seed=len(hidden) * 7 + 1)
    X, Y = make_data(out, loss, seed=3)
    g = model.gradient_flat(X, Y)
    fd = fd_gradient(model, X, Y)
    assert np.linalg.norm(fd) > 1e-6  # the check is not vacuous
    assert rel_err(g, fd) < GRAD_TOL, (g, fd)
    # gradients() is the same vector, split by layer
    named = model.gradients(X, Y)
    flat = np.concatenate([named[k].ravel() for k in named])
    np.testing.assert_array_equal(flat, g)


@pytest.mark.parametrize("l2", [0.0, 0.37], ids=["no_l2", "l2"])
@pytest.mark.parametrize(("hidden", "out", "loss"), STRUCTURES)
def test_hessian_matches_central_differences(hidden, out, loss, l2):
    model = trainer(hidden, out, loss, l2=l2)
    randomize(model, seed=len(hidden) * 7 + 2)
    X, Y = make_data(out, loss, seed=4)
    H = model.hessian(X, Y)
    H_fd = fd_hessian(model, X, Y)
    assert H.shape == (model.theta.size,) * 2
    assert rel_err(H, H_fd) < HESS_TOL


@pytest.mark.parametrize(
    ("hidden", "out", "loss"),
    [
        ((), "identity", "mse"),
        ((), "softmax", "cross_entropy"),
        (((4, "tanh"),), "sigmoid", "log_loss"),
        (((4, "elu"), (3, "softplus")), "identity", "mse"),
    ],
    ids=["linear-mse", "softmax", "tanh-logloss", "elu-softplus-mse"],
)
def test_l1_gradient_away_from_zero_weights(hidden, out, loss):
    model = trainer(hidden, out, loss, l2=0.2, l1=0.3)
    theta = randomize(model, seed=11, away_from_zero=0.2)
    assert np.min(np.abs(theta)) >= 0.2
    X, Y = make_data(out, loss, seed=5)
    g = model.gradient_flat(X, Y)
    fd = fd_gradient(model, X, Y)
    assert rel_err(g, fd) < GRAD_TOL
    # the penalty is l1/n sum |W| + l2/(2n) sum W^2 on the weights only (not the biases)
    plain = trainer(hidden, out, loss)
    plain.set_flat(theta)
    n = X.shape[0]
    W = weight_mask(model)
    expected_penalty = (0.3 * np.abs(theta[W]).sum() + 0.1 * np.sum(theta[W] ** 2)) / n
    assert model.loss(X, Y) == pytest.approx(plain.loss(X, Y) + expected_penalty, rel=1e-13)
    # |w| has no curvature away from zero: the Hessian is the l2-only one
    assert rel_err(model.hessian(X, Y), fd_hessian(model, X, Y)) < HESS_TOL


@pytest.mark.parametrize(("act", "alpha"), [("leaky_relu", 0.2), ("elu", 0.5), ("elu", 2.5)])
def test_alpha_parameter(act, alpha):
    model = trainer(((4, act, alpha), (3, act, alpha)), "identity", "mse", l2=0.1)
    randomize(model, seed=8)
    X, Y = make_data("identity", "mse", seed=9)
    assert rel_err(model.gradient_flat(X, Y), fd_gradient(model, X, Y)) < GRAD_TOL
    assert rel_err(model.hessian(X, Y), fd_hessian(model, X, Y)) < HESS_TOL
    # the forward pass uses the given alpha
    single = trainer(((1, act, alpha),), "identity", "mse", inputs=1, outputs=1)
    single.set_flat([1.0, 0.0, 1.0, 0.0])
    z = np.array([[-1.5], [2.0]])
    expected = np.where(z > 0, z, alpha * z if act == "leaky_relu" else alpha * np.expm1(z))
    np.testing.assert_allclose(single.forward(z), expected, rtol=1e-14)


# ---------------------------------------------------------------------------------------------
# Hessian structure: symmetry, hvp columns, closed forms, Gauss-Newton
# ---------------------------------------------------------------------------------------------

SECOND_ORDER_CASES = [
    pytest.param(hidden_layers(act, depth), out, loss, id=f"d{depth}-{act or 'linear'}-{out}")
    for depth, act, (out, loss) in [
        (0, None, PAIRS[0]),
        (0, None, PAIRS[1]),
        (0, None, PAIRS[2]),
        (0, None, PAIRS[3]),
        (0, None, PAIRS[4]),
        (1, "sigmoid", PAIRS[0]),
        (1, "tanh", PAIRS[2]),
        (1, "relu", PAIRS[3]),
        (1, "softplus", PAIRS[4]),
        (2, "elu", PAIRS[1]),
        (2, "leaky_relu", PAIRS[3]),
        (2, "tanh", PAIRS[0]),
        (2, "identity", PAIRS[2]),
    ]
]


@pytest.mark.parametrize("l2", [0.0, 0.5], ids=["no_l2", "l2"])
@pytest.mark.parametrize(("hidden", "out", "loss"), SECOND_ORDER_CASES)
def test_hessian_symmetric_and_equal_to_hvp_columns(hidden, out, loss, l2):
    model = trainer(hidden, out, loss, l2=l2)
    randomize(model, seed=21)
    X, Y = make_data(out, loss, seed=22)
    H = model.hessian(X, Y)
    P = model.theta.size
    scale = np.linalg.norm(H)
    assert scale > 0
    assert np.linalg.norm(H - H.T) <= 1e-12 * scale
    cols = np.column_stack([model.hvp(X, Y, e) for e in np.eye(P)])
    assert np.linalg.norm(H - cols) <= 1e-12 * scale
    # hvp is linear: H v for a random v
    v = np.random.default_rng(23).standard_normal(P)
    assert rel_err(model.hvp(X, Y, v), H @ v) < 1e-12


def closed_form_hessian(out: str, loss: str, theta: np.ndarray, X, Y, l2: float = 0.0):
    """H of a model without hidden layers, written out from scratch.

    With X~ = [X, 1] and the flat order (W row-major (K, d), then b (K,)), parameter p is the
    pair (unit k_p, column j_p of X~), and H[p, q] = 1/n sum_i S_i[k_p, k_q] X~_i[j_p] X~_i[j_q]
    where S_i = d^2 loss_i / dz dz^T: identity+mse: I; sigmoid+log_loss: diag(a (1 - a));
    softmax+cross_entropy: diag(a) - a a^T; f+mse: diag(f'^2 + (a - y) f'').
    """
    n, d = X.shape
    K = Y.shape[1]
    W = theta[: K * d].reshape(K, d)
    b = theta[K * d :]
    Z = X @ W.T + b
    if out == "identity":
        S = np.broadcast_to(np.eye(K), (n, K, K))
    elif out == "softmax":
        A = np.exp(Z - Z.max(axis=1, keepdims=True))
        A /= A.sum(axis=1, keepdims=True)
        S = np.einsum("ik,km->ikm", A, np.eye(K)) - np.einsum("ik,im->ikm", A, A)
    else:
        if out == "sigmoid":
            A = 1.0 / (1.0 + np.exp(-Z))
            f1, f2 = A * (1 - A), A * (1 - A) * (1 - 2 * A)
        else:  # tanh
            A = np.tanh(Z)
            f1, f2 = 1 - A**2, -2 * A * (1 - A**2)
        s = A * (1 - A) if loss == "log_loss" else f1**2 + (A - Y) * f2
        S = np.einsum("ik,km->ikm", s, np.eye(K))
    Xt = np.hstack([X, np.ones((n, 1))])
    unit = np.concatenate([np.repeat(np.arange(K), d), np.arange(K)])
    column = np.concatenate([np.tile(np.arange(d), K), np.full(K, d)])
    P = K * (d + 1)
    H = np.zeros((P, P))
    for p in range(P):
        for q in range(P):
            H[p, q] = np.sum(S[:, unit[p], unit[q]] * Xt[:, column[p]] * Xt[:, column[q]]) / n
    H[np.arange(K * d), np.arange(K * d)] += l2 / n
    return H


@pytest.mark.parametrize("l2", [0.0, 0.5], ids=["no_l2", "l2"])
@pytest.mark.parametrize(
    ("out", "loss", "outputs"),
    [
        pytest.param(o, lo, k, id=f"{o}+{lo}-{k}out")
        for (o, lo), k in itertools.product(PAIRS, (1, 3))
        if not (o == "softmax" and k == 1)  # softmax needs at least 2 units
    ],
)
def test_hessian_closed_form_without_hidden_layers(out, loss, outputs, l2):
    model = trainer((), out, loss, outputs=outputs, l2=l2)
    theta = randomize(model, seed=31)
    X, Y = make_data(out, loss, n=9, outputs=outputs, seed=32)
    H = model.hessian(X, Y)
    expected = closed_form_hessian(out, loss, theta, X, Y, l2)
    assert rel_err(H, expected) < 1e-12


def test_linear_regression_hessian_block_structure():
    """identity+mse: H = blockdiag(X~^T X~ / n) over the outputs, in the flat order."""
    model = trainer((), "identity", "mse", outputs=2)
    randomize(model, seed=1)
    X, Y = make_data("identity", "mse", n=7, seed=2)
    n, d = X.shape
    G = np.hstack([X, np.ones((n, 1))]).T @ np.hstack([X, np.ones((n, 1))]) / n
    H = model.hessian(X, Y)
    # flat order: W_1[0, :], W_1[1, :], b_1[0], b_1[1]
    w0, w1, b0, b1 = np.arange(0, d), np.arange(d, 2 * d), 2 * d, 2 * d + 1
    np.testing.assert_allclose(H[np.ix_(w0, w0)], G[:d, :d], rtol=1e-13, atol=1e-15)
    np.testing.assert_allclose(H[np.ix_(w1, w1)], G[:d, :d], rtol=1e-13, atol=1e-15)
    np.testing.assert_allclose(H[w0, b0], G[:d, d], rtol=1e-13, atol=1e-15)
    np.testing.assert_allclose(H[w1, b1], G[:d, d], rtol=1e-13, atol=1e-15)
    assert H[b0, b0] == pytest.approx(1.0) and H[b1, b1] == pytest.approx(1.0)
    np.testing.assert_array_equal(H[np.ix_(w0, w1)], 0)
    assert H[b0, b1] == 0 and np.all(H[w0, b1] == 0) and np.all(H[w1, b0] == 0)
    # the Hessian does not depend on the parameters or the targets
    model.set_flat(np.zeros(model.theta.size))
    np.testing.assert_allclose(model.hessian(X, 5 * Y), H, rtol=1e-13, atol=1e-15)


def gauss_newton_reference(model, out: str, loss: str, X, Y, l2: float) -> np.ndarray:
    """G = 1/n sum_i J_i^T M_i J_i with J_i = d a_L / d theta from finite differences.

    mse (any output activation): M = I (l'' = 1, f' is inside J); sigmoid+log_loss:
    M = diag(1 / (a (1 - a))) (= J_z^T diag(a (1 - a)) J_z); softmax+cross_entropy: from
    J_log(a) = (I - 1 a^T) J_z, J_log(a)^T diag(a) J_log(a) = J_z^T (diag(a) - a a^T) J_z.
    """
    J = fd_jacobian_forward(model, X)
    A = model.forward(X)
    n = X.shape[0]
    if loss == "mse":
        G = np.einsum("ikp,ikq->pq", J, J)
    elif loss == "log_loss":
        G = np.einsum("ikp,ik,ikq->pq", J, 1.0 / (A * (1 - A)), J)
    else:
        Jlog = J / A[:, :, None]
        G = np.einsum("ikp,ik,ikq->pq", Jlog, A, Jlog)
    G = G / n
    W = weight_mask(model)
    G[W, W] += l2 / n
    return G


@pytest.mark.parametrize("l2", [0.0, 0.5], ids=["no_l2", "l2"])
@pytest.mark.parametrize(("hidden", "out", "loss"), SECOND_ORDER_CASES)
def test_gauss_newton_symmetric_psd_and_matches_jacobian_form(hidden, out, loss, l2):
    model = trainer(hidden, out, loss, l2=l2)
    randomize(model, seed=41)
    X, Y = make_data(out, loss, seed=42)
    G = model.gauss_newton(X, Y)
    scale = np.linalg.norm(G)
    assert np.linalg.norm(G - G.T) <= 1e-12 * scale
    assert np.linalg.eigvalsh((G + G.T) / 2).min() >= -1e-10
    assert rel_err(G, gauss_newton_reference(model, out, loss, X, Y, l2)) < 1e-6


@pytest.mark.parametrize("l2", [0.0, 0.5], ids=["no_l2", "l2"])
@pytest.mark.parametrize(
    ("out", "loss"),
    [("identity", "mse"), ("sigmoid", "log_loss"), ("softmax", "cross_entropy")],
)
def test_gauss_newton_equals_hessian_for_linear_models(out, loss, l2):
    """Linear model + mse (and the matching losses of GLMs): the Hessian is exactly J^T S J."""
    model = trainer((), out, loss, outputs=3, l2=l2)
    randomize(model, seed=51)
    X, Y = make_data(out, loss, n=8, outputs=3, seed=52)
    assert rel_err(model.gauss_newton(X, Y), model.hessian(X, Y)) < 1e-12


def test_gauss_newton_differs_from_hessian_with_hidden_layers():
    """Sanity check that the two are different computations (the curvature of the net)."""
    model = trainer(((4, "tanh"),), "identity", "mse")
    randomize(model, seed=61)
    X, Y = make_data("identity", "mse", seed=62)
    assert rel_err(model.gauss_newton(X, Y), model.hessian(X, Y)) > 1e-3


# ---------------------------------------------------------------------------------------------
# custom expressions (symgrad/calculus/exprparse.py)
# ---------------------------------------------------------------------------------------------


SWISH = (("swish", "z / (1 + exp(-z))"),)
CAUCHY = (("cauchy", "log(1 + (a - y)**2)"),)


@pytest.mark.parametrize("depth", [1, 2])
@pytest.mark.parametrize(("out", "loss"), [("identity", "mse"), ("softmax", "cross_entropy")])
def test_custom_swish_activation(depth, out, loss):
    model = trainer(hidden_layers("swish", depth), out, loss, l2=0.1, activations=SWISH)
    randomize(model, seed=71)
    X, Y = make_data(out, loss, seed=72)
    assert rel_err(model.gradient_flat(X, Y), fd_gradient(model, X, Y)) < GRAD_TOL
    assert rel_err(model.hessian(X, Y), fd_hessian(model, X, Y)) < HESS_TOL
    # the forward pass computes z sigma(z)
    single = trainer(((1, "swish"),), "identity", "mse", inputs=1, outputs=1, activations=SWISH)
    single.set_flat([1.0, 0.0, 1.0, 0.0])
    z = np.array([[-3.0], [-0.5], [0.0], [2.0]])
    np.testing.assert_allclose(single.forward(z), z / (1 + np.exp(-z)), rtol=1e-13)


@pytest.mark.parametrize(
    "hidden", [(), ((4, "tanh"),), ((4, "relu"), (3, "sigmoid"))], ids=["d0", "d1", "d2"]
)
def test_custom_cauchy_loss(hidden):
    model = trainer(hidden, "identity", "cauchy", l2=0.1, losses=CAUCHY)
    theta = randomize(model, seed=81)
    X, Y = make_data("identity", "mse", seed=82)
    assert rel_err(model.gradient_flat(X, Y), fd_gradient(model, X, Y)) < GRAD_TOL
    assert rel_err(model.hessian(X, Y), fd_hessian(model, X, Y)) < HESS_TOL
    # the cost is 1/n sum log(1 + (a - y)^2) + l2/(2n) sum W^2
    A = model.forward(X)
    W = weight_mask(model)
    expected = (np.sum(np.log1p((A - Y) ** 2)) + 0.05 * np.sum(theta[W] ** 2)) / X.shape[0]
    assert model.loss(X, Y) == pytest.approx(expected, rel=1e-13)


def test_custom_swish_and_cauchy_together():
    model = trainer(((5, "swish"),), "identity", "cauchy", activations=SWISH, losses=CAUCHY)
    randomize(model, seed=91)
    X, Y = make_data("identity", "mse", seed=92)
    assert rel_err(model.gradient_flat(X, Y), fd_gradient(model, X, Y)) < GRAD_TOL
    assert rel_err(model.hessian(X, Y), fd_hessian(model, X, Y)) < HESS_TOL
    # Gauss-Newton with a non-matching loss: S = l''(a) f'(z)^2, i.e. J_a^T diag(l''(a)) J_a.
    # (l'' = 2 (1 - r^2) / (1 + r^2)^2 with r = a - y is negative for |r| > 1: G need not be
    # positive semi-definite for this non-convex loss.)
    G = model.gauss_newton(X, Y)
    J = fd_jacobian_forward(model, X)
    r = model.forward(X) - Y
    d2l = 2 * (1 - r**2) / (1 + r**2) ** 2
    expected = np.einsum("ikp,ik,ikq->pq", J, d2l, J) / X.shape[0]
    assert rel_err(G, expected) < 1e-6


# ---------------------------------------------------------------------------------------------
# property-based: random widths, depths, activations, batch sizes, seeds
# ---------------------------------------------------------------------------------------------


@st.composite
def networks(draw):
    depth = draw(st.integers(0, 2))
    hidden = tuple((draw(st.integers(1, 5)), draw(st.sampled_from(HIDDEN))) for _ in range(depth))
    out, loss = draw(st.sampled_from(PAIRS))
    outputs = draw(st.integers(2 if out == "softmax" else 1, 5))
    inputs = draw(st.integers(1, 5))
    l2 = draw(st.sampled_from([0.0, 0.25]))
    batch = draw(st.integers(1, 7))
    seed = draw(st.integers(0, 2**32 - 1))
    return hidden, out, loss, inputs, outputs, l2, batch, seed


def _instance(net):
    hidden, out, loss, inputs, outputs, l2, batch, seed = net
    model = trainer(hidden, out, loss, inputs=inputs, outputs=outputs, l2=l2, seed=seed)
    X, Y = make_data(out, loss, n=batch, inputs=inputs, outputs=outputs, seed=seed)
    return model, X, Y


@settings(max_examples=25, deadline=None)
@given(networks())
def test_property_gradient_matches_central_differences(net):
    model, X, Y = _instance(net)
    # the spec's own initialisation (normal, seeded); shrink it so no layer saturates fully
    model.set_flat(0.7 * model.get_flat())
    g = model.gradient_flat(X, Y)
    fd = fd_gradient(model, X, Y)
    # central differences carry a rounding error of about eps * |C| / h per component
    noise = 1e-16 * max(abs(model.loss(X, Y)), 1.0) / GRAD_STEP * np.sqrt(g.size)
    assert np.linalg.norm(g - fd) <= GRAD_TOL * np.linalg.norm(fd) + 10 * noise


@settings(max_examples=25, deadline=None)
@given(networks())
def test_property_hessian_symmetric(net):
    model, X, Y = _instance(net)
    H = model.hessian(X, Y)
    assert np.all(np.isfinite(H))
    # Saturated units make entries like a (1 - a) tiny differences of O(1) terms, so the
    # rounding is measured against max(|H|, 1) (the data and weights are O(1)).
    scale = max(np.linalg.norm(H), 1.0)
    assert np.linalg.norm(H - H.T) <= 1e-11 * scale
    v = np.random.default_rng(net[-1]).standard_normal(model.theta.size)
    assert np.linalg.norm(model.hvp(X, Y, v) - H @ v) <= 1e-11 * scale * np.linalg.norm(v)


# ---------------------------------------------------------------------------------------------
# float32, and numerically extreme inputs
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("hidden", "out", "loss"),
    [
        ((), "identity", "mse"),
        (((4, "tanh"),), "sigmoid", "log_loss"),
        (((4, "relu"), (3, "sigmoid")), "softmax", "cross_entropy"),
        (((4, "softplus"),), "sigmoid", "mse"),
        (((4, "elu"), (3, "leaky_relu")), "tanh", "mse"),
    ],
    ids=["linear", "tanh-logloss", "relu-sigmoid-softmax", "softplus-sigmoid-mse", "elu-lrelu"],
)
@pytest.mark.parametrize("how", ["spec", "argument"])
def test_float32_gradient_agrees_with_float64(hidden, out, loss, how):
    if how == "spec":
        m32 = trainer(hidden, out, loss, l2=0.1, dtype="float32")
    else:
        m32 = trainer(hidden, out, loss, l2=0.1, instance_dtype=np.float32)
    m64 = trainer(hidden, out, loss, l2=0.1)
    assert m32.dtype == np.float32 and m32.theta.dtype == np.float32
    theta = randomize(m64, seed=101).astype(np.float32)
    m32.set_flat(theta)
    m64.set_flat(theta.astype(np.float64))
    X, Y = make_data(out, loss, seed=102)
    X32, Y32 = X.astype(np.float32), Y.astype(np.float32)
    m64_x = (X32.astype(np.float64), Y32.astype(np.float64))
    g32 = m32.gradient_flat(X32, Y32)
    assert g32.dtype == np.float32
    assert rel_err(g32, m64.gradient_flat(*m64_x)) < 1e-4
    assert m32.loss(X32, Y32) == pytest.approx(m64.loss(*m64_x), rel=1e-5)
    H32 = m32.hessian(X32, Y32)
    assert H32.dtype == np.float32
    assert rel_err(H32, m64.hessian(*m64_x)) < 1e-3


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_saturated_sigmoid_log_loss_is_finite_without_warnings(dtype):
    model = trainer((), "sigmoid", "log_loss", inputs=2, outputs=1, dtype=dtype)
    model.set_flat([1000.0, -1000.0, 0.0])
    X = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [0.0, 1.0], [0.5, 0.0]], dtype=dtype)
    Y = np.array([[0.0], [1.0], [1.0], [0.0], [1.0]], dtype=dtype)
    # z = 1000, -1000, 1000, -1000, 500: the wrong ones cost |z|, the right ones ~0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loss = model.loss(X, Y)
        g = model.gradient_flat(X, Y)
        H = model.hessian(X, Y)
        G = model.gauss_newton(X, Y)
        proba = model.predict_proba(X)
    assert np.isfinite(loss)
    assert loss == pytest.approx((1000 + 1000) / 5, rel=1e-6)
    # delta = a - y = (1, -1, 0, 0, 0): dC/dW = (1/n) sum delta x
    np.testing.assert_allclose(g, [1 / 5, -1 / 5, 0.0], atol=1e-7)
    assert np.all(np.isfinite(H)) and np.all(np.isfinite(G))
    np.testing.assert_array_equal(proba.sum(axis=1), 1)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_softmax_with_huge_logits_is_finite_without_warnings(dtype):
    model = trainer((), "softmax", "cross_entropy", inputs=2, outputs=3, dtype=dtype)
    model.set_flat([1000.0, 0.0, 0.0, 1000.0, -1000.0, 0.0, 0.0, 0.0, 0.0])
    X = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [0.0, 1.0]], dtype=dtype)
    Y = np.eye(3, dtype=dtype)[[1, 0, 2, 1]]
    Z = X.astype(np.float64) @ np.array([[1000.0, 0.0], [0.0, 1000.0], [-1000.0, 0.0]]).T
    lse = Z.max(axis=1) + np.log(np.exp(Z - Z.max(axis=1, keepdims=True)).sum(axis=1))
    expected = float(np.mean(lse - np.sum(Y * Z, axis=1)))  # 1000, 1000, 2000, 0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loss = model.loss(X, Y)
        g = model.gradient_flat(X, Y)
        H = model.hessian(X, Y)
        A = model.forward(X)
    assert loss == pytest.approx(expected, rel=1e-6)
    assert np.all(np.isfinite(g)) and np.all(np.isfinite(H))
    np.testing.assert_allclose(A.sum(axis=1), 1, rtol=1e-6)


@pytest.mark.parametrize("act", HIDDEN)
@pytest.mark.parametrize("sign", [1.0, -1.0], ids=["z=+1000", "z=-1000"])
def test_hidden_activations_at_huge_preactivations_raise_no_warnings(act, sign):
    """A hidden unit at z = +-1000: loss, gradient and Hessian finite, no overflow warnings."""
    model = trainer(((1, act),), "identity", "mse", inputs=1, outputs=1)
    model.set_flat([1.0, 0.0, 0.001, 0.0])
    X = np.array([[sign * 1000.0]])
    Y = np.array([[0.0]])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loss = model.loss(X, Y)
        g = model.gradient_flat(X, Y)
        H = model.hessian(X, Y)
    assert np.isfinite(loss) and np.all(np.isfinite(g)) and np.all(np.isfinite(H))
