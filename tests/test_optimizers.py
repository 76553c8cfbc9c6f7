"""The optimisers of the generated trainers against textbook updates written out here.

Each textbook update below is computed in the test from ``gradient_flat`` (itself checked against
finite differences in ``test_fd.py``) on a second instance of the same class, then compared with
what ``fit`` did to the parameters.

Regularisation (issue 9): a step's gradient is the data term averaged over the batch plus
(lambda_2/N) w with N the training set's size; an L1 penalty is a soft threshold after the update,
with the method's per-coordinate step size (see ``symgrad/optimizers/base.py``).
"""

from __future__ import annotations

import itertools
import re
import sys

import numpy as np
import pytest
import sympy as sp
from conftest import make, weight_mask

import symgrad
from symgrad import optimizers
from symgrad.optimizers.base import Optimizer, Update, eta, g, theta
from symgrad.spec import registry

# A tiny, hand-checkable regression problem: 2 inputs -> 1 identity output, 4 samples.
X4 = np.array([[1.0, 2.0], [-1.0, 0.5], [0.0, -1.0], [2.0, 1.0]])
Y4 = np.array([[1.0], [-0.5], [0.25], [2.0]])

HYPER = {
    "learning_rate": 0.05,
    "momentum": 0.8,
    "beta1": 0.85,
    "beta2": 0.99,
    "eps": 1e-6,
    "rho": 0.7,
    "damping": 0.3,
}


def linear_spec(optimizer: str, **overrides) -> dict:
    opt = {"name": optimizer, **HYPER, **overrides}
    return {
        "name": f"lin_{optimizer}",
        "inputs": 2,
        "layers": [{"units": 1, "activation": "identity"}],
        "loss": "mse",
        "optimizer": opt,
        "init": {"scheme": "normal", "seed": 5},
    }


def grad_fn(spec: dict, X_all=X4, Y_all=Y4):
    """g(theta, X, Y): ``gradient_flat`` at theta, on a separate instance (default: all data)."""
    ref = make(spec)

    def g(theta, X=X_all, Y=Y_all):
        ref.set_flat(theta)
        return ref.gradient_flat(X, Y)

    return g


def assert_params(actual, expected, tol: float = 1e-12):
    np.testing.assert_allclose(actual, expected, rtol=tol, atol=tol)


# ---------------------------------------------------------------------------------------------
# textbook updates
# ---------------------------------------------------------------------------------------------


def textbook_gd(theta, g, steps, eta):
    for _ in range(steps):
        theta = theta - eta * g(theta)
    return theta


def textbook_sgd(theta, g, epochs, eta, batch, X=X4, Y=Y4):
    for _ in range(epochs):
        for lo in range(0, len(X), batch):
            theta = theta - eta * g(theta, X[lo : lo + batch], Y[lo : lo + batch])
    return theta


def textbook_momentum(theta, g, steps, eta, mu):
    v = np.zeros_like(theta)
    for _ in range(steps):
        v = mu * v - eta * g(theta)
        theta = theta + v
    return theta


def textbook_nesterov(theta, g, steps, eta, mu):
    """Sutskever et al. (2013): the gradient at the look-ahead point theta + mu v.

    Trainers store the look-ahead point phi = theta + mu v itself (the Bengio et al. form), so
    the parameters after training are theta_T + mu v_T.
    """
    v = np.zeros_like(theta)
    for _ in range(steps):
        v = mu * v - eta * g(theta + mu * v)
        theta = theta + v
    return theta + mu * v


def textbook_nesterov_bengio(theta, g, steps, eta, mu):
    """The same method written as theta += -mu v_old + (1 + mu) v_new, gradient at theta."""
    v = np.zeros_like(theta)
    for _ in range(steps):
        v_new = mu * v - eta * g(theta)
        theta = theta - mu * v + (1 + mu) * v_new
        v = v_new
    return theta


def textbook_adagrad(theta, g, steps, eta, eps):
    G = np.zeros_like(theta)
    for _ in range(steps):
        grad = g(theta)
        G = G + grad**2
        theta = theta - eta * grad / (np.sqrt(G) + eps)
    return theta


def textbook_rmsprop(theta, g, steps, eta, rho, eps):
    E = np.zeros_like(theta)
    for _ in range(steps):
        grad = g(theta)
        E = rho * E + (1 - rho) * grad**2
        theta = theta - eta * grad / (np.sqrt(E) + eps)
    return theta


def textbook_adam(theta, g, steps, eta, b1, b2, eps):
    m = np.zeros_like(theta)
    v = np.zeros_like(theta)
    for t in range(1, steps + 1):
        grad = g(theta)
        m = b1 * m + (1 - b1) * grad
        v = b2 * v + (1 - b2) * grad**2
        m_hat = m / (1 - b1**t)
        v_hat = v / (1 - b2**t)
        theta = theta - eta * m_hat / (np.sqrt(v_hat) + eps)
    return theta


def linear_mse_hessian(X):
    """H of (1/2n) sum (w.x + b - y)^2 in the flat order (w_1, w_2, b): X~^T X~ / n."""
    Xt = np.hstack([X, np.ones((len(X), 1))])
    return Xt.T @ Xt / len(X)


def damped_solve(H, damping, g):
    """p with (H + mu I) p = g, mu = damping raised (mu <- 10 max(mu, 1e-8 max |H_ii|)) until
    H + mu I is positive definite (its least eigenvalue > 0)."""
    scale = float(np.abs(np.diag(H)).max()) or 1.0
    mu, eye = damping, np.eye(len(g))
    while np.linalg.eigvalsh(H + mu * eye).min() <= 0:
        mu = 10 * max(mu, 1e-8 * scale)
    return np.linalg.solve(H + mu * eye, g)


def textbook_newton(theta, g, steps, eta, damping, hess=None):
    """theta <- theta - eta (H + damping I)^-1 g; H = X~^T X~ / n unless ``hess`` is given."""
    for _ in range(steps):
        H = linear_mse_hessian(X4) if hess is None else hess(theta)
        theta = theta - eta * damped_solve(H, damping, g(theta))
    return theta


def textbook(name: str, theta, g, epochs: int, X=X4, Y=Y4, hess=None):
    h = HYPER
    eta = h["learning_rate"]
    if name == "gd":
        return textbook_gd(theta, g, epochs, eta)
    if name == "sgd":
        return textbook_sgd(theta, g, epochs, eta, batch=1, X=X, Y=Y)
    if name == "momentum":
        return textbook_momentum(theta, g, epochs, eta, h["momentum"])
    if name == "nesterov":
        return textbook_nesterov(theta, g, epochs, eta, h["momentum"])
    if name == "adagrad":
        return textbook_adagrad(theta, g, epochs, eta, h["eps"])
    if name == "rmsprop":
        return textbook_rmsprop(theta, g, epochs, eta, h["rho"], h["eps"])
    if name == "adam":
        return textbook_adam(theta, g, epochs, eta, h["beta1"], h["beta2"], h["eps"])
    if name == "newton":
        return textbook_newton(theta, g, epochs, eta, h["damping"], hess)
    raise AssertionError(name)


OPTIMIZERS = ("gd", "sgd", "momentum", "nesterov", "adagrad", "rmsprop", "adam", "newton")


def optimizer_spec(name: str) -> dict:
    return linear_spec(name, batch_size=1) if name == "sgd" else linear_spec(name)


@pytest.mark.parametrize("epochs", [1, 2, 3])
@pytest.mark.parametrize("name", OPTIMIZERS)
def test_fit_equals_textbook_update(name, epochs):
    spec = optimizer_spec(name)
    model = make(spec)
    theta0 = model.get_flat()
    history = model.fit(X4, Y4, epochs=epochs, shuffle=False)
    assert len(history["loss"]) == epochs
    assert model.epochs_done == epochs
    expected = textbook(name, theta0, grad_fn(spec), epochs)
    assert not np.allclose(expected, theta0)  # the parameters moved
    assert_params(model.theta, expected)


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_fit_continues_the_optimizer_state(name):
    """Two fit calls (2 + 1 epochs) equal one of 3 epochs: velocity/moments carry over."""
    spec = optimizer_spec(name)
    model = make(spec)
    theta0 = model.get_flat()
    model.fit(X4, Y4, epochs=2, shuffle=False)
    model.fit(X4, Y4, epochs=1, shuffle=False)
    assert_params(model.theta, textbook(name, theta0, grad_fn(spec), 3))


_rng = np.random.default_rng(12)
MLP_X = _rng.standard_normal((6, 2))
MLP_Y = np.eye(3)[[0, 1, 2, 2, 1, 0]]


def other_spec(kind: str, name: str) -> tuple[dict, np.ndarray, np.ndarray]:
    """A regularised linear model, and a small softmax classifier with a hidden layer."""
    spec = optimizer_spec(name)
    spec["name"] = f"{kind.replace('-', '_')}_{name}"
    if kind == "linear-l2-l1":
        spec["regularization"] = {"l2": 0.6, "l1": 0.2}
        return spec, X4, Y4
    spec["layers"] = [
        {"units": 3, "activation": "tanh"},
        {"units": 3, "activation": "softmax"},
    ]
    spec["loss"] = "cross_entropy"
    spec["regularization"] = {"l2": 0.4, "l1": 0.1}
    return spec, MLP_X, MLP_Y


def soft_threshold(u, tau):
    """sign(u) max(|u| - tau, 0), elementwise."""
    return np.sign(u) * np.maximum(np.abs(u) - tau, 0.0)


def textbook_regularised(name, theta, g, epochs, X, Y, mask, l2, l1, batch=None, hess=None):
    """Each step: grad = (data gradient on the batch) + (l2/N) w, the update, then on the weights
    w <- sign(u) max(|u| - s l1/N, 0) with the method's per-coordinate step size s (momentum and
    Nesterov then take the step actually made as their velocity). N = len(X)."""
    h = HYPER
    eta, mu, eps = h["learning_rate"], h["momentum"], h["eps"]
    N = len(X)
    batch = batch or N
    v, sq, m = np.zeros_like(theta), np.zeros_like(theta), np.zeros_like(theta)
    t = 0
    for _ in range(epochs):
        for lo in range(0, N, batch):
            grad = g(theta, X[lo : lo + batch], Y[lo : lo + batch]) + l2 / N * mask * theta
            step = eta
            if name in ("gd", "sgd"):
                u = theta - eta * grad
            elif name == "momentum":
                v = mu * v - eta * grad
                u = theta + v
            elif name == "nesterov":  # theta is the look-ahead point (see textbook_nesterov)
                v = mu * v - eta * grad
                u = theta + mu * v - eta * grad
                step = (1 + mu) * eta
            elif name in ("adagrad", "rmsprop"):
                sq = sq + grad**2 if name == "adagrad" else h["rho"] * sq + (1 - h["rho"]) * grad**2
                step = eta / (np.sqrt(sq) + eps)
                u = theta - step * grad
            elif name == "adam":
                t += 1
                b1, b2 = h["beta1"], h["beta2"]
                m = b1 * m + (1 - b1) * grad
                v = b2 * v + (1 - b2) * grad**2
                step = eta / (np.sqrt(v / (1 - b2**t)) + eps)
                u = theta - step * m / (1 - b1**t)
            else:  # newton: the Hessian of the smooth part (data + l2/N)
                u = theta - eta * damped_solve(hess(theta), h["damping"], grad)
            theta = np.where(mask, soft_threshold(u, step * l1 / N), u)
            if name == "momentum":
                v = v + theta - u
            elif name == "nesterov":
                v = v + (theta - u) / (1 + mu)
    return theta


@pytest.mark.parametrize("kind", ["linear-l2-l1", "mlp-softmax-l2-l1"])
@pytest.mark.parametrize("name", OPTIMIZERS)
def test_fit_equals_textbook_update_on_other_models(name, kind):
    spec, X, Y = other_spec(kind, name)
    plain = dict(spec, regularization={})
    model = make(spec)
    ref = make(spec)

    def hess(theta):  # (Newton) the Hessian itself is checked in test_fd.py; |w| adds none
        ref.set_flat(theta)
        return ref.hessian(X, Y)

    theta0 = model.get_flat()
    model.fit(X, Y, epochs=3, shuffle=False)
    reg = spec["regularization"]
    batch = spec["optimizer"].get("batch_size")
    expected = textbook_regularised(
        name,
        theta0,
        grad_fn(plain, X, Y),
        3,
        X,
        Y,
        weight_mask(model),
        **reg,
        batch=batch,
        hess=hess,
    )
    assert not np.allclose(expected, theta0)
    assert_params(model.theta, expected, 1e-11)


FIRST_ORDER = tuple(name for name in OPTIMIZERS if name != "newton")


@pytest.mark.parametrize("name", FIRST_ORDER)
def test_l1_weight_at_zero_stays_zero(name):
    """|dC/dw_2| < lambda_1/N at theta = 0 (0.875 < 1): w_2 stays exactly 0, w_1 (1.375 > 1) and
    the bias move. Without the L1 term (or with the subgradient sign(0) = 0) w_2 would move."""
    spec = linear_spec(name)
    spec["regularization"] = {"l1": 4.0}  # lambda_1 / N = 1 on the 4 samples
    model = make(spec)
    model.set_flat(np.zeros(3))
    free = make(linear_spec(name))
    free.set_flat(np.zeros(3))
    np.testing.assert_allclose(free.gradient_flat(X4, Y4), [-1.375, -0.875, -0.6875])
    for _ in range(3):
        model.fit(X4, Y4, epochs=1, shuffle=False)
        assert model.theta[1] == 0.0
    assert model.theta[0] != 0.0 and model.theta[2] != 0.0
    free.fit(X4, Y4, epochs=1, shuffle=False)
    assert free.theta[1] != 0.0


def test_sgd_minibatch_penalty_is_that_of_loss_on_the_training_set():
    """SGD with m = 32 on N = 96 samples: each step's penalty gradient is the gradient of what
    loss() adds on the whole set (lambda_2/N w), not lambda_2/m w (3x stronger here)."""
    rng = np.random.default_rng(5)
    X = rng.standard_normal((96, 2))
    Y = X @ np.array([[0.5], [-1.0]]) + 0.1
    spec = linear_spec("sgd", batch_size=32)
    spec["regularization"] = {"l2": 3.0}
    plain = linear_spec("sgd", batch_size=32)
    model, ref, ref_plain = make(spec), make(spec), make(plain)
    theta0 = model.get_flat()
    model.fit(X, Y, epochs=1, shuffle=False)

    def penalty_gradient(theta, h=1e-3):
        """Central differences of loss(X, Y) with the penalty minus without it, on all of X."""
        out = np.empty_like(theta)
        for i in range(theta.size):
            values = []
            for sign in (1, -1):
                t = theta.copy()
                t[i] += sign * h
                ref.set_flat(t)
                ref_plain.set_flat(t)
                values.append(ref.loss(X, Y) - ref_plain.loss(X, Y))
            out[i] = (values[0] - values[1]) / (2 * h)
        return out

    data = grad_fn(plain, X, Y)
    eta = HYPER["learning_rate"]
    expected = theta0
    for lo in range(0, 96, 32):
        step = data(expected, X[lo : lo + 32], Y[lo : lo + 32]) + penalty_gradient(expected)
        expected = expected - eta * step
    assert_params(model.theta, expected, 1e-9)
    per_batch = textbook_regularised(
        "sgd", theta0, data, 1, X, Y, weight_mask(model), 3.0 * 3, 0.0, 32
    )
    assert not np.allclose(model.theta, per_batch, rtol=1e-6, atol=1e-9)  # lambda_2/m differs


def test_a_new_optimizer_is_one_object():
    """An optimiser registered here (sign descent: theta <- theta - eta sign(g)) is a name a spec
    may give and trains through the generated code with nothing else added."""
    with pytest.raises(symgrad.SpecError, match="^optimizer.name: expected one of .*"):
        symgrad.load_spec(linear_spec("toy_sign_descent"))
    # registered for this test only: other tests draw from the registered names
    with registry.restored():
        toy = optimizers.register(
            Optimizer(
                name="toy_sign_descent",
                title="sign descent",
                updates=(Update(theta, theta - eta * sp.sign(g)),),
                prose="Each parameter moves by eta against the sign of its gradient.",
            )
        )
        assert optimizers.get("toy_sign_descent") is toy
        assert "toy_sign_descent" in optimizers.names()
        spec = symgrad.load_spec(linear_spec("toy_sign_descent"))
        assert spec.optimizer.name == "toy_sign_descent"
        source = symgrad.generate_source(spec)
        model = symgrad.load_trainer(spec)  # the memory estimate reads the registered optimiser
        assert "sign descent" in source
    assert "toy_sign_descent" not in optimizers.names()
    with pytest.raises(KeyError):
        optimizers.get("toy_sign_descent")
    theta0 = model.get_flat()
    model.fit(X4, Y4, epochs=3, shuffle=False)
    g_ = grad_fn(linear_spec("gd"))
    expected = theta0
    for _ in range(3):
        expected = expected - HYPER["learning_rate"] * np.sign(g_(expected))
    assert_params(model.theta, expected)


@pytest.mark.parametrize("name", ["gd", "momentum", "adam", "sgd"])
def test_changing_the_learning_rate_between_fits(name):
    spec = optimizer_spec(name)
    model = make(spec)
    theta0 = model.get_flat()
    model.fit(X4, Y4, epochs=1, shuffle=False)
    model.learning_rate = 0.01
    model.fit(X4, Y4, epochs=1, shuffle=False)
    g = grad_fn(spec)
    if name == "gd":
        expected = textbook_gd(textbook_gd(theta0, g, 1, HYPER["learning_rate"]), g, 1, 0.01)
    elif name == "sgd":
        expected = textbook_sgd(theta0, g, 1, HYPER["learning_rate"], 1)
        expected = textbook_sgd(expected, g, 1, 0.01, 1)
    elif name == "momentum":
        v = -HYPER["learning_rate"] * g(theta0)
        theta1 = theta0 + v
        v = HYPER["momentum"] * v - 0.01 * g(theta1)
        expected = theta1 + v
    else:
        b1, b2, eps = HYPER["beta1"], HYPER["beta2"], HYPER["eps"]
        g0 = g(theta0)
        m, v = (1 - b1) * g0, (1 - b2) * g0**2
        theta1 = theta0 - HYPER["learning_rate"] * (m / (1 - b1)) / (np.sqrt(v / (1 - b2)) + eps)
        g1 = g(theta1)
        m, v = b1 * m + (1 - b1) * g1, b2 * v + (1 - b2) * g1**2
        expected = theta1 - 0.01 * (m / (1 - b1**2)) / (np.sqrt(v / (1 - b2**2)) + eps)
    assert_params(model.theta, expected)


@pytest.mark.parametrize("name", ["sgd", "adam", "newton", "lbfgs", "trust_ncg"])
def test_track_false_trains_the_same(name):
    spec = linear_spec(name, batch_size=3)
    a, b = make(spec, seed=3), make(spec, seed=3)
    a.fit(X8, Y8, epochs=4)
    b.fit(X8, Y8, epochs=4, track=False)
    assert_params(b.theta, a.theta, 1e-13)


def test_nesterov_forms_agree():
    """The two textbook forms of Nesterov's method used above are the same method."""
    g = grad_fn(linear_spec("gd"))
    theta0 = np.array([0.3, -0.2, 0.1])
    sutskever = textbook_nesterov(theta0, g, 5, 0.05, 0.8)
    assert_params(sutskever, textbook_nesterov_bengio(theta0, g, 5, 0.05, 0.8))


def test_gd_first_step_by_hand():
    """From theta = 0: grad_w = -(1/n) sum y x, grad_b = -(1/n) sum y (mse = (a - y)^2 / 2)."""
    model = make(linear_spec("gd", learning_rate=0.5))
    model.set_flat(np.zeros(3))
    # sum y x = 1*(1, 2) - 0.5*(-1, 0.5) + 0.25*(0, -1) + 2*(2, 1) = (5.5, 3.5); sum y = 2.75
    np.testing.assert_allclose(model.gradient_flat(X4, Y4), [-5.5 / 4, -3.5 / 4, -2.75 / 4])
    model.fit(X4, Y4, epochs=1, shuffle=False)
    assert_params(model.theta, [0.5 * 5.5 / 4, 0.5 * 3.5 / 4, 0.5 * 2.75 / 4])


def test_sgd_uses_spec_batch_size_and_argument_override():
    spec = linear_spec("sgd", batch_size=1)
    g = grad_fn(spec)
    model = make(spec)
    theta0 = model.get_flat()
    model.fit(X4, Y4, epochs=1, batch_size=2, shuffle=False)
    assert_params(model.theta, textbook_sgd(theta0, g, 1, HYPER["learning_rate"], batch=2))
    # a batch size that does not divide n: the last batch is the remainder
    model = make(spec)
    model.fit(X4, Y4, epochs=2, batch_size=3, shuffle=False)
    assert_params(model.theta, textbook_sgd(theta0, g, 2, HYPER["learning_rate"], batch=3))


def test_sgd_shuffle_false_visits_rows_in_order():
    """sgd, batch 2 over 4 samples, shuffle=False: exactly the steps on rows [0:2] then [2:4]."""
    spec = linear_spec("sgd", batch_size=2)
    g = grad_fn(spec)
    model = make(spec)
    theta = model.get_flat()
    model.fit(X4, Y4, epochs=1, shuffle=False)
    eta = HYPER["learning_rate"]
    theta = theta - eta * g(theta, X4[0:2], Y4[0:2])
    theta = theta - eta * g(theta, X4[2:4], Y4[2:4])
    assert_params(model.theta, theta)
    # and not the reverse order
    theta_rev = make(spec).get_flat()
    theta_rev = theta_rev - eta * g(theta_rev, X4[2:4], Y4[2:4])
    theta_rev = theta_rev - eta * g(theta_rev, X4[0:2], Y4[0:2])
    assert not np.allclose(model.theta, theta_rev, rtol=1e-9, atol=1e-12)


def test_l2_penalty_in_the_update():
    """gd on mse + l2: the weights decay by eta * l2 / N * w (N = 4 samples), the bias does not."""
    spec = linear_spec("gd")
    spec["regularization"] = {"l2": 0.6}
    plain = grad_fn(linear_spec("gd"))
    model = make(spec)
    theta0 = model.get_flat()
    model.fit(X4, Y4, epochs=1, shuffle=False)
    g = plain(theta0) + 0.6 / 4 * np.array([theta0[0], theta0[1], 0.0])
    assert_params(model.theta, theta0 - HYPER["learning_rate"] * g)


# ---------------------------------------------------------------------------------------------
# Newton
# ---------------------------------------------------------------------------------------------


def test_newton_solves_linear_regression_in_one_step():
    rng = np.random.default_rng(3)
    X = rng.standard_normal((20, 3))
    Y = X @ np.array([[1.5], [-2.0], [0.5]]) + 0.7 + 0.1 * rng.standard_normal((20, 1))
    spec = {
        "name": "lin_newton",
        "inputs": 3,
        "layers": [{"units": 1, "activation": "identity"}],
        "loss": "mse",
        "optimizer": {"name": "newton", "learning_rate": 1.0, "damping": 0.0},
    }
    model = make(spec)
    model.fit(X, Y, epochs=1, shuffle=False)
    coef, *_ = np.linalg.lstsq(np.hstack([X, np.ones((20, 1))]), Y[:, 0], rcond=None)
    np.testing.assert_allclose(model.theta, coef, rtol=1e-8, atol=1e-8)
    # at the optimum the gradient vanishes
    assert np.linalg.norm(model.gradient_flat(X, Y)) < 1e-10


def test_newton_on_a_hidden_layer_uses_the_damped_hessian():
    spec = {
        "name": "mlp_newton",
        "inputs": 2,
        "layers": [{"units": 3, "activation": "tanh"}, {"units": 1, "activation": "identity"}],
        "loss": "mse",
        "optimizer": {"name": "newton", "learning_rate": 0.5, "damping": 2.0},
        "init": {"seed": 2},
    }
    model = make(spec)
    ref = make(spec)
    theta = model.get_flat()
    model.fit(X4, Y4, epochs=2, shuffle=False)
    for _ in range(2):
        ref.set_flat(theta)
        H = ref.hessian(X4, Y4) + 2.0 * np.eye(theta.size)
        theta = theta - 0.5 * np.linalg.solve(H, ref.gradient_flat(X4, Y4))
    assert_params(model.theta, theta, 1e-10)


# ---------------------------------------------------------------------------------------------
# XOR
# ---------------------------------------------------------------------------------------------

XOR_X = np.array([[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0]])
XOR_Y = np.array([[0.0], [1.0], [1.0], [0.0]])


@pytest.mark.parametrize(
    ("loss", "optimizer", "learning_rate", "epochs", "seed"),
    [("mse", "gd", 2.0, 5000, 1), ("log_loss", "adam", 0.05, 1500, 3)],
    ids=["mse-gd", "logloss-adam"],
)
def test_xor_is_learned(loss, optimizer, learning_rate, epochs, seed):
    spec = {
        "name": "xor",
        "inputs": 2,
        "layers": [{"units": 2, "activation": "sigmoid"}, {"units": 1, "activation": "sigmoid"}],
        "loss": loss,
        "optimizer": {"name": optimizer, "learning_rate": learning_rate, "epochs": epochs},
        "init": {"scheme": "normal", "seed": seed},
    }
    model = make(spec)
    history = model.fit(XOR_X, XOR_Y)
    assert len(history["loss"]) == epochs
    assert history["loss"][-1] < history["loss"][0]
    assert model.loss(XOR_X, XOR_Y) < 0.01
    np.testing.assert_array_equal(model.predict(XOR_X).ravel(), [0, 1, 1, 0])
    assert model.score(XOR_X, XOR_Y) == 1.0
    assert history["accuracy"][-1] == 1.0


# ---------------------------------------------------------------------------------------------
# shuffling
# ---------------------------------------------------------------------------------------------

X8 = np.column_stack([np.arange(8.0), np.linspace(-1, 1, 8)])
Y8 = np.sin(X8[:, :1])
X5, Y5 = X8[:5] / 4, Y8[:5]


def visiting_orders(spec, seed, epochs, shuffle=True):
    """Recover the order in which sgd (batch 1) visited X5's rows in each epoch, black-box.

    Training one epoch per fit call (resumed runs visit the same batches, tested below), the
    parameters after each epoch are matched against textbook sgd steps along each of the 5!
    orders; exactly one order must reproduce them.
    """
    model = make(spec, seed=seed)
    g = grad_fn(spec)
    eta = spec["optimizer"]["learning_rate"]
    orders = []
    for _ in range(epochs):
        start = model.get_flat()
        model.fit(X5, Y5, epochs=1, shuffle=shuffle)
        found = []
        for order in itertools.permutations(range(5)):
            theta = start
            for i in order:
                theta = theta - eta * g(theta, X5[i : i + 1], Y5[i : i + 1])
            if np.allclose(theta, model.theta, rtol=1e-12, atol=1e-13):
                found.append(order)
        assert len(found) == 1, found
        orders.append(found[0])
    return orders, model.get_flat()


def test_minibatches_are_reshuffled_each_epoch_from_the_seed():
    spec = linear_spec("sgd", batch_size=1, learning_rate=0.3)
    orders_a, theta_a = visiting_orders(spec, seed=7, epochs=5)
    orders_b, theta_b = visiting_orders(spec, seed=7, epochs=5)
    orders_c, _ = visiting_orders(spec, seed=8, epochs=5)
    assert len(set(orders_a)) > 1  # a new order each epoch
    assert orders_a != [tuple(range(5))] * 5  # shuffled at all
    assert orders_a == orders_b  # same seed, same batches
    np.testing.assert_array_equal(theta_a, theta_b)
    assert orders_a != orders_c  # another seed, other batches


def test_shuffle_false_visits_in_order_every_epoch():
    spec = linear_spec("sgd", batch_size=1, learning_rate=0.3)
    orders, _ = visiting_orders(spec, seed=7, epochs=3, shuffle=False)
    assert orders == [tuple(range(5))] * 3


def test_resumed_training_visits_the_same_batches():
    spec = linear_spec("adam", batch_size=3)
    a, b = make(spec, seed=4), make(spec, seed=4)
    ha = a.fit(X8, Y8, epochs=4)
    hb1 = b.fit(X8, Y8, epochs=1)
    hb2 = b.fit(X8, Y8, epochs=3)
    np.testing.assert_array_equal(a.theta, b.theta)
    assert ha["loss"] == hb1["loss"] + hb2["loss"]
    assert a.epochs_done == b.epochs_done == 4


def test_two_fits_from_the_same_seed_are_identical():
    for name in ("sgd", "adam", "momentum"):
        spec = linear_spec(name, batch_size=3)
        a, b = make(spec, seed=11), make(spec, seed=11)
        ha = a.fit(X8, Y8, epochs=5)
        hb = b.fit(X8, Y8, epochs=5)
        np.testing.assert_array_equal(a.theta, b.theta)
        assert ha["loss"] == hb["loss"]


# ---------------------------------------------------------------------------------------------
# save / load
# ---------------------------------------------------------------------------------------------


def _module(model):
    return sys.modules[type(model).__module__]


@pytest.mark.parametrize("name", ["gd", "momentum", "adam", "rmsprop"])
def test_save_load_round_trip(tmp_path, name):
    spec = linear_spec(name, batch_size=3)
    model = make(spec, seed=1)
    model.fit(X8, Y8, epochs=3)
    path = model.save(tmp_path / "model.npz")
    assert str(path).endswith("model.npz")
    other = make(spec, seed=2)
    assert not np.array_equal(other.theta, model.theta)
    assert other.load(path) is other
    np.testing.assert_array_equal(other.theta, model.theta)
    assert other.epochs_done == model.epochs_done == 3
    for key, value in model._opt_state.items():
        if key != "work":
            np.testing.assert_array_equal(other._opt_state[key], value)
    # views still point into theta after loading
    np.testing.assert_array_equal(other.W_1.ravel(), other.theta[:2])
    # training on from the checkpoint equals training on without it (same seed for shuffling)
    other.seed = model.seed
    model.fit(X8, Y8, epochs=2)
    other.fit(X8, Y8, epochs=2)
    np.testing.assert_array_equal(other.theta, model.theta)


def test_save_uses_the_name_given(tmp_path):
    model = make(linear_spec("gd"))
    path = model.save(tmp_path / "weights")
    assert path == str(tmp_path / "weights")  # no ".npz" appended (issue 11, item 22)
    with np.load(path, allow_pickle=False) as f:
        np.testing.assert_array_equal(f["theta"], model.theta)
    assert [p.name for p in tmp_path.iterdir()] == ["weights"]  # no temporary left behind


def test_load_refuses_a_file_from_another_spec(tmp_path):
    wide = {
        "name": "lin_gd",
        "inputs": 2,
        "layers": [{"units": 3, "activation": "tanh"}, {"units": 1, "activation": "identity"}],
        "loss": "mse",
    }
    path = make(wide).save(tmp_path / "wide.npz")
    model = make(linear_spec("gd"))
    before = model.get_flat()
    with pytest.raises(ValueError, match="saved from a different model") as info:
        model.load(path)
    assert str(path) in str(info.value)
    np.testing.assert_array_equal(model.theta, before)
    # the regulariser is a training setting, not part of the model: the file loads
    spec = linear_spec("gd")
    spec["regularization"] = {"l2": 0.5}
    path = make(spec).save(tmp_path / "l2.npz")
    assert model.load(path).training["regularization"] == {"l1": 0.0, "l2": 0.5}


def test_load_refuses_a_wrong_shape(tmp_path):
    model = make(linear_spec("gd"))
    path = model.save(tmp_path / "good.npz")
    with np.load(path, allow_pickle=False) as f:
        arrays = dict(f)
    arrays["theta"] = np.zeros(5)
    np.savez(tmp_path / "bad.npz", **arrays)
    before = model.get_flat()
    with pytest.raises(ValueError, match=re.escape("(5,)")) as info:
        model.load(tmp_path / "bad.npz")
    assert "3" in str(info.value)
    np.testing.assert_array_equal(model.theta, before)


def test_load_refuses_files_that_are_not_models(tmp_path):
    model = make(linear_spec("gd"))
    path = tmp_path / "other.npz"
    np.savez(path, weights=np.zeros(3))
    with pytest.raises(ValueError, match="not a"):
        model.load(path)
    # object arrays would need pickle, which load never allows
    path = tmp_path / "pickled.npz"
    np.savez(path, theta=np.array([object()] * 3), spec_sha256=np.array(_module(model).SPEC_SHA256))
    with pytest.raises(ValueError):
        model.load(path)


# ---------------------------------------------------------------------------------------------
# divergence
# ---------------------------------------------------------------------------------------------


def _diverge(name: str = "sgd"):
    spec = linear_spec(name, batch_size=1 if name == "sgd" else None, learning_rate=1e6)
    model = make(spec)
    with pytest.raises(Exception) as info:  # noqa: B017 - the type is checked below
        model.fit(X8, Y8, epochs=1000, shuffle=False)
    return spec, model, info.value


def _check_divergence(spec, model, exc):
    assert isinstance(exc, FloatingPointError), repr(exc)
    message = str(exc)
    match = re.search(r"epoch (\d+)", message)
    assert match, message
    assert re.search(r"batch \d+", message), message
    assert "1000000.0" in message or "1e+06" in message, message
    assert np.all(np.isfinite(model.theta))
    # the parameters kept are those from the start of the failing epoch
    epoch = int(match.group(1))
    ref = make(spec)
    if epoch > 1:
        ref.fit(X8, Y8, epochs=epoch - 1, shuffle=False)
    np.testing.assert_array_equal(model.theta, ref.theta)


@pytest.mark.parametrize("name", ["sgd", "gd", "momentum"])
def test_divergence_names_epoch_batch_and_learning_rate(name):
    """Under this project's warnings-as-errors setting, too: fit must fail cleanly."""
    _check_divergence(*_diverge(name))


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
@pytest.mark.parametrize("name", ["sgd", "gd", "momentum"])
def test_divergence_with_numpy_warnings_ignored(name):
    _check_divergence(*_diverge(name))


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_divergence_in_the_last_update_of_an_epoch_names_the_batch():
    """A step that makes theta inf without an inf loss (caught after the epoch's last batch)."""
    model = make(linear_spec("gd"))
    model.learning_rate = 1e308
    theta0 = model.get_flat()
    with pytest.raises(FloatingPointError) as info:
        model.fit(X4, 10 * Y4, epochs=3, shuffle=False)
    np.testing.assert_array_equal(model.theta, theta0)
    message = str(info.value)
    assert "epoch 1" in message and "1e+308" in message, message
    assert re.search(r"batch \d+", message), message
