"""The worked numbers and formulas of the four seed articles (../shared/seeds/), through symgrad.

* 000: the squared-error cost of predictions 0.05, 0.03, 0.78, 0.92, 0.22 against the one-hot
  target 0, 0, 1, 0, 0;
* 001: the quadratic cost C = 1/(2n) sum ||y - a||^2, Delta v = -eta grad C, mini-batch SGD;
* 002: the node-numbered network 1 -> {2, 3} -> {4, 5} -> 6 (relu hidden, sigmoid output,
  squared error) and its hand backpropagation, f'(x) = f(x)(1 - f(x)) for the sigmoid;
* 003: the log loss and its derivative, the ideal learning rate 1/f''(x), Newton's method.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import sympy as sp

import symgrad
from symgrad import calculus as calc
from symgrad.derivation import notation as nt
from symgrad.printers.render import render

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
a, y, z = calc.a, calc.y, calc.z


@pytest.fixture(scope="module", autouse=True)
def _private_cache(tmp_path_factory):
    """Generated trainers go to a temporary cache, not the user's."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SYMGRAD_CACHE", str(tmp_path_factory.mktemp("symgrad-cache")))
        yield


def _zero(expr: sp.Expr) -> bool:
    expr = sp.sympify(expr).rewrite(sp.exp)
    return expr == 0 or sp.simplify(expr) == 0


# ---------------------------------------------------------------------------------------------
# Seed 000: a squared-error cost worked by hand
# ---------------------------------------------------------------------------------------------

PREDICTIONS = [
    sp.Rational(5, 100),
    sp.Rational(3, 100),
    sp.Rational(78, 100),
    sp.Rational(92, 100),
    sp.Rational(22, 100),
]
TARGET = [0, 0, 1, 0, 0]


def test_seed000_sum_of_squared_errors_from_the_derived_loss() -> None:
    lc = calc.loss_calculus("mse", calc.activation_calculus("identity"))
    assert sp.expand(lc.ell - (a - y) ** 2 / 2) == 0
    sse = sum(2 * lc.ell.subs({a: p, y: t}) for p, t in zip(PREDICTIONS, TARGET))
    assert sse == sp.Rational(9466, 10000)
    assert int(sse * 100) / 100 == 0.94  # the article's C = 0.94 (two decimals, truncated)
    # the quadratic cost C = 1/(2n) SSE for one sample
    cost = sum(lc.ell.subs({a: p, y: t}) for p, t in zip(PREDICTIONS, TARGET))
    assert cost == sse / 2 == sp.Rational(4733, 10000)


def test_seed000_cost_through_the_derivation() -> None:
    spec = symgrad.load_spec(
        {
            "name": "seed000",
            "inputs": 5,
            "layers": [{"units": 5, "activation": "identity"}],
            "loss": "mse",
        }
    )
    d = symgrad.derive(spec)
    assert sp.expand(d["loss"] - (a - y) ** 2 / 2) == 0
    assert d.eq("cost") == 1
    total = sum(d["loss"].subs({a: p, y: t}) for p, t in zip(PREDICTIONS, TARGET))
    assert total == sp.Rational(4733, 10000)


def test_seed000_sum_through_the_printed_equation() -> None:
    """The printed C_x (equation cost.sample) on the article's numbers: 0.9466, not 0.94."""
    spec = {
        "name": "seed000",
        "inputs": 5,
        "layers": [{"units": 5, "activation": "identity"}],
        "loss": "mse",
    }
    d = symgrad.derive(symgrad.load_spec(spec))
    c_x = d.equation("cost.sample").rhs.subs(d.widths).doit()
    values = {nt.a(1)[j + 1]: p for j, p in enumerate(PREDICTIONS)}
    values |= {nt.y[j + 1]: t for j, t in enumerate(TARGET)}
    sse = 2 * c_x.subs(values)
    assert sse == sp.Rational(9466, 10000)  # the article prints C = 0.94: it truncated
    assert sse != sp.Rational(94, 100)


def test_seed000_cost_through_a_generated_trainer() -> None:
    t = symgrad.load_trainer(
        {
            "name": "seed000_trainer",
            "inputs": 5,
            "layers": [{"units": 5, "activation": "identity"}],
            "loss": "mse",
        }
    )
    t.W_1[...] = 0.0
    t.b_1[...] = [float(p) for p in PREDICTIONS]
    X = np.random.default_rng(0).standard_normal((1, 5))
    Y = np.array([TARGET], dtype=float)
    np.testing.assert_allclose(t.forward(X), [[0.05, 0.03, 0.78, 0.92, 0.22]], rtol=0, atol=1e-15)
    assert t.loss(X, Y) == pytest.approx(0.4733, rel=1e-12)
    assert 2 * t.loss(X, Y) == pytest.approx(0.9466, rel=1e-12)
    # the gradient of that cost by the outputs is a - y (identity output, mse): by the biases
    np.testing.assert_allclose(
        t.gradients(X, Y)["dC_db_1"], [0.05, 0.03, -0.22, 0.92, 0.22], rtol=1e-12, atol=1e-15
    )


# ---------------------------------------------------------------------------------------------
# Seed 001: the quadratic cost, Delta v = -eta grad C, mini-batches
# ---------------------------------------------------------------------------------------------


def _seed001_spec(name: str, optimizer: dict) -> dict:
    return {
        "name": name,
        "inputs": 2,
        "layers": [{"units": 3, "activation": "sigmoid"}, {"units": 2, "activation": "sigmoid"}],
        "loss": "mse",
        "optimizer": optimizer,
        "init": {"scheme": "normal", "seed": 1},
    }


def _batch(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, 2)), rng.uniform(0, 1, (n, 2))


def test_seed001_quadratic_cost_on_a_batch_of_three() -> None:
    t = symgrad.load_trainer(_seed001_spec("seed001_cost", {"name": "gd"}))
    X, Y = _batch(3)
    A = t.forward(X)
    n = 3
    expected = np.sum(np.linalg.norm(Y - A, axis=1) ** 2) / (2 * n)
    assert t.loss(X, Y) == pytest.approx(expected, rel=1e-13)


def test_seed001_one_gradient_descent_step() -> None:
    eta = 0.05
    t = symgrad.load_trainer(_seed001_spec("seed001_gd", {"name": "gd", "learning_rate": eta}))
    X, Y = _batch(3)
    v0 = t.get_flat()
    grad = t.gradient_flat(X, Y)
    c0 = t.loss(X, Y)
    t.fit(X, Y, epochs=1, shuffle=False)
    delta_v = t.get_flat() - v0
    np.testing.assert_allclose(delta_v, -eta * grad, rtol=1e-12, atol=1e-15)  # Delta v = -eta grad
    c1 = t.loss(X, Y)
    assert c1 < c0
    # Delta C ~ grad C . Delta v = -eta |grad C|^2, to first order in eta
    predicted = float(grad @ delta_v)
    assert predicted < 0
    assert (c1 - c0) == pytest.approx(predicted, rel=0.05)


def test_seed001_mini_batches_of_size_m() -> None:
    eta, m = 0.3, 2
    spec = _seed001_spec("seed001_sgd", {"name": "sgd", "learning_rate": eta, "batch_size": m})
    t = symgrad.load_trainer(spec)
    ref = symgrad.load_trainer(spec)
    X, Y = _batch(6, seed=1)
    t.fit(X, Y, epochs=1, shuffle=False)
    for lo in range(0, 6, m):  # one step per mini-batch, in order
        ref.set_flat(ref.get_flat() - eta * ref.gradient_flat(X[lo : lo + m], Y[lo : lo + m]))
    np.testing.assert_allclose(t.get_flat(), ref.get_flat(), rtol=1e-12, atol=1e-14)


# ---------------------------------------------------------------------------------------------
# Seed 002: the node-numbered network and its hand backpropagation
# ---------------------------------------------------------------------------------------------


def test_seed002_sigmoid_derivative_identity() -> None:
    act = calc.activation_calculus("sigmoid")
    assert sp.expand(act.df_out - a * (1 - a)) == 0
    assert _zero(act.df_out.subs(a, act.f) - sp.diff(act.f, z))  # f'(x) = f(x)(1 - f(x))
    d = symgrad.derive(symgrad.load_spec(EXAMPLES / "seed002.yaml"))
    assert sp.expand(d["df_3"] - a * (1 - a)) == 0
    assert sp.expand(d["act_sigmoid_df_out"] - a * (1 - a)) == 0


def test_seed002_derivation_sums_over_both_downstream_nodes() -> None:
    spec = symgrad.load_spec(EXAMPLES / "seed002.yaml")
    assert spec.sizes == [1, 2, 2, 1]
    assert [layer.activation for layer in spec.layers] == ["relu", "relu", "sigmoid"]
    d = symgrad.derive(spec)
    assert [(layer.index, layer.units, layer.fan_in) for layer in d.layers] == [
        (1, 2, 1),
        (2, 2, 2),
        (3, 1, 2),
    ]
    for l in (1, 2):  # hidden nodes 2, 3 feed nodes 4 and 5; nodes 4, 5 feed node 6
        eq = d.equation(f"backprop.sum.{l}")
        ((j, lo, hi),) = eq.rhs.limits
        assert (j, lo, hi) == (nt.j, 1, nt.n(l + 1))
        assert hi.subs(d.widths) == d.layers[l].units  # nodes 4, 5 (l = 1) and node 6 (l = 2)
        assert eq.rhs.function.doit() == nt.w(l + 1)[nt.j, nt.i] * nt.delta(l + 1)[nt.j]
        assert eq.lhs == sp.Derivative(nt.C_x, nt.a(l)[nt.i])
    assert "both downstream" in "".join(
        p for p in d.equation("backprop.sum.1").prose if isinstance(p, str)
    )
    # the recurrence comes after the sum it uses, and the output delta comes first
    assert d.eq("delta.out") < d.eq("backprop.sum.2") < d.eq("backprop.2")
    assert d.eq("backprop.2") < d.eq("backprop.sum.1") < d.eq("backprop.1")
    # relu's derivative is kept in output form: 1 where a > 0, else 0
    assert d["df_1"] == sp.Piecewise((1, a > 0), (0, True))
    # the prose mentions it in every format
    for fmt in ("latex", "markdown", "text"):
        assert "both downstream" in render(d, fmt)


def _node_network():
    """Seed 002's network in its own notation: W_ij from node i to node j, Y_i = F(X_i)."""
    x, target = sp.symbols("x t", real=True)
    names = ["W12", "W13", "W24", "W34", "W25", "W35", "W46", "W56"]
    W = {name: sp.Symbol(name, real=True) for name in names}
    b = {i: sp.Symbol(f"b{i}", real=True) for i in (2, 3, 4, 5, 6)}
    relu = calc.activation_calculus("relu").f
    sigmoid = calc.activation_calculus("sigmoid").f
    X2, X3 = W["W12"] * x + b[2], W["W13"] * x + b[3]
    Y2, Y3 = relu.subs(z, X2), relu.subs(z, X3)
    X4 = W["W24"] * Y2 + W["W34"] * Y3 + b[4]
    X5 = W["W25"] * Y2 + W["W35"] * Y3 + b[5]
    Y4, Y5 = relu.subs(z, X4), relu.subs(z, X5)
    X6 = W["W46"] * Y4 + W["W56"] * Y5 + b[6]
    Y6 = sigmoid.subs(z, X6)
    E = (Y6 - target) ** 2 / 2
    return x, target, W, b, E


def test_seed002_hand_backpropagation_matches_trainer_and_sympy() -> None:
    x, target, W, b, E = _node_network()
    values = {
        x: sp.Rational(3, 2),
        target: 1,
        W["W12"]: sp.Rational(4, 5),
        W["W13"]: sp.Rational(-1, 2),
        b[2]: sp.Rational(1, 10),
        b[3]: sp.Rational(9, 10),
        W["W24"]: sp.Rational(7, 10),
        W["W34"]: sp.Rational(-3, 10),
        W["W25"]: sp.Rational(1, 2),
        W["W35"]: sp.Rational(6, 5),
        b[4]: sp.Rational(1, 5),
        b[5]: sp.Rational(-1, 5),
        W["W46"]: sp.Rational(-4, 5),
        W["W56"]: sp.Rational(11, 10),
        b[6]: sp.Rational(3, 10),
    }
    v = {k: float(val) for k, val in values.items()}
    relu_d = lambda s: 1.0 if s > 0 else 0.0  # noqa: E731
    # forward, node by node
    X2, X3 = v[W["W12"]] * v[x] + v[b[2]], v[W["W13"]] * v[x] + v[b[3]]
    Y2, Y3 = max(X2, 0.0), max(X3, 0.0)
    X4 = v[W["W24"]] * Y2 + v[W["W34"]] * Y3 + v[b[4]]
    X5 = v[W["W25"]] * Y2 + v[W["W35"]] * Y3 + v[b[5]]
    Y4, Y5 = max(X4, 0.0), max(X5, 0.0)
    X6 = v[W["W46"]] * Y4 + v[W["W56"]] * Y5 + v[b[6]]
    Y6 = 1 / (1 + np.exp(-X6))
    assert min(abs(X2), abs(X3), abs(X4), abs(X5)) > 0.05 and Y4 > 0 and Y5 > 0
    # backward, as in the article: dE/dY6, sigmoid's f' = f(1 - f), then sums over both
    # downstream nodes for Y2 and Y3
    dX6 = (Y6 - v[target]) * Y6 * (1 - Y6)
    hand = {"W46": dX6 * Y4, "W56": dX6 * Y5, "b6": dX6}
    dY4, dY5 = dX6 * v[W["W46"]], dX6 * v[W["W56"]]
    dX4, dX5 = dY4 * relu_d(X4), dY5 * relu_d(X5)
    hand.update(
        {"W24": dX4 * Y2, "W34": dX4 * Y3, "W25": dX5 * Y2, "W35": dX5 * Y3, "b4": dX4, "b5": dX5}
    )
    dY2 = dX4 * v[W["W24"]] + dX5 * v[W["W25"]]  # both edges, to node 4 and node 5
    dY3 = dX4 * v[W["W34"]] + dX5 * v[W["W35"]]
    dX2, dX3 = dY2 * relu_d(X2), dY3 * relu_d(X3)
    hand.update({"W12": dX2 * v[x], "W13": dX3 * v[x], "b2": dX2, "b3": dX3})
    # sympy.diff of the node-numbered E
    symbols = {**W, **{f"b{i}": s for i, s in b.items()}}
    for name, sym in symbols.items():
        truth = float(sp.N(sp.diff(E, sym).subs(values), 30))
        assert hand[name] == pytest.approx(truth, rel=1e-12, abs=1e-15), name
    # the generated trainer, with W_ij of node i -> node j stored as W_l[j, i] (layer order)
    t = symgrad.load_trainer(EXAMPLES / "seed002.yaml")
    t.W_1[:, 0] = [v[W["W12"]], v[W["W13"]]]
    t.b_1[...] = [v[b[2]], v[b[3]]]
    t.W_2[...] = [[v[W["W24"]], v[W["W34"]]], [v[W["W25"]], v[W["W35"]]]]
    t.b_2[...] = [v[b[4]], v[b[5]]]
    t.W_3[...] = [[v[W["W46"]], v[W["W56"]]]]
    t.b_3[...] = [v[b[6]]]
    Xb, Yb = np.array([[v[x]]]), np.array([[v[target]]])
    assert t.forward(Xb)[0, 0] == pytest.approx(Y6, rel=1e-14)
    assert t.loss(Xb, Yb) == pytest.approx((Y6 - v[target]) ** 2 / 2, rel=1e-13)
    g = t.gradients(Xb, Yb)
    got = {
        "W12": g["dC_dW_1"][0, 0],
        "W13": g["dC_dW_1"][1, 0],
        "b2": g["dC_db_1"][0],
        "b3": g["dC_db_1"][1],
        "W24": g["dC_dW_2"][0, 0],
        "W34": g["dC_dW_2"][0, 1],
        "W25": g["dC_dW_2"][1, 0],
        "W35": g["dC_dW_2"][1, 1],
        "b4": g["dC_db_2"][0],
        "b5": g["dC_db_2"][1],
        "W46": g["dC_dW_3"][0, 0],
        "W56": g["dC_dW_3"][0, 1],
        "b6": g["dC_db_3"][0],
    }
    for name, value in hand.items():
        assert got[name] == pytest.approx(value, rel=1e-12, abs=1e-15), name


def test_seed002_weight_update_rule() -> None:
    """w <- w - alpha dE/dw, one sample at a time (the spec's sgd with batch size 1)."""
    t = symgrad.load_trainer(EXAMPLES / "seed002.yaml")
    ref = symgrad.load_trainer(EXAMPLES / "seed002.yaml")
    alpha = t.learning_rate
    assert alpha == 0.5 and t.batch_size == 1
    X = np.array([[0.5], [-1.0], [2.0]])
    Y = np.array([[1.0], [0.0], [1.0]])
    t.fit(X, Y, epochs=1, shuffle=False)
    for i in range(3):
        ref.set_flat(ref.get_flat() - alpha * ref.gradient_flat(X[i : i + 1], Y[i : i + 1]))
    np.testing.assert_allclose(t.get_flat(), ref.get_flat(), rtol=1e-12, atol=1e-14)


# ---------------------------------------------------------------------------------------------
# Seed 003: log loss, the ideal learning rate 1/f''(x), Newton's method
# ---------------------------------------------------------------------------------------------


def test_seed003_log_loss_and_its_derivative() -> None:
    p = sp.Symbol("p", positive=True)
    lc = calc.loss_calculus("log_loss", calc.activation_calculus("sigmoid"))
    article = -(y * sp.log(p) + (1 - y) * sp.log(1 - p))
    assert _zero(lc.ell.subs(a, p) - article)
    # y = 1 gives -log p, y = 0 gives -log(1 - p)
    assert _zero(lc.ell.subs({a: p, y: 1}) + sp.log(p))
    assert _zero(lc.ell.subs({a: p, y: 0}) + sp.log(1 - p))
    # dL/dp = (p - y) / (p (1 - p))
    assert _zero(lc.dl_da.subs(a, p) - (p - y) / (p * (1 - p)))
    assert _zero(sp.diff(article, p) - (p - y) / (p * (1 - p)))
    # with a sigmoid output the chain rule fuses to a - y
    assert sp.expand(lc.delta - (a - y)) == 0
    assert lc.matching and not lc.delta_in_z


def test_seed003_cost_is_the_mean_of_the_losses() -> None:
    t = symgrad.load_trainer(
        {
            "name": "seed003_logistic",
            "inputs": 2,
            "layers": [{"units": 1, "activation": "sigmoid"}],
            "loss": "log_loss",
        }
    )
    rng = np.random.default_rng(3)
    X = rng.standard_normal((7, 2))
    Y = (rng.uniform(size=(7, 1)) > 0.5).astype(float)
    p = t.forward(X)
    losses = -(Y * np.log(p) + (1 - Y) * np.log(1 - p))
    assert t.loss(X, Y) == pytest.approx(float(losses.mean()), rel=1e-12)


def _linear_data(n: int = 25, seed: int = 4) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = rng.uniform(-2, 3, (n, 1))
    return X, 3.0 * X - 1.0 + 0.3 * rng.standard_normal((n, 1))


def test_seed003_ideal_learning_rate_in_one_dimension() -> None:
    """Along w alone the cost is a parabola f(w); one step of size 1/f''(w) reaches its minimum."""
    t = symgrad.load_trainer(
        {
            "name": "seed003_line",
            "inputs": 1,
            "layers": [{"units": 1, "activation": "identity"}],
            "loss": "mse",
        }
    )
    X, Y = _linear_data()
    t.set_flat([0.2, -0.4])
    # f''(w) from sympy: f(w) = 1/(2n) sum (w x + b - y)^2 gives f'' = mean(x^2)
    w = sp.Symbol("w", real=True)
    f = sum(
        (w * sp.Float(xi) - sp.Float(-0.4) - sp.Float(yi)) ** 2 / 2
        for xi, yi in zip(X[:, 0], Y[:, 0])
    ) / len(X)
    f2 = float(sp.diff(f, w, 2))
    H = t.hessian(X, Y)
    assert H[0, 0] == pytest.approx(f2, rel=1e-12)
    g = t.gradient_flat(X, Y)
    t.set_flat([0.2 - g[0] / H[0, 0], -0.4])  # learning rate 1/f''(w)
    assert abs(t.gradient_flat(X, Y)[0]) < 1e-12


def test_seed003_one_newton_step_reaches_least_squares() -> None:
    spec = {
        "name": "seed003_newton",
        "inputs": 1,
        "layers": [{"units": 1, "activation": "identity"}],
        "loss": "mse",
        "optimizer": {"name": "newton", "learning_rate": 1.0, "damping": 0.0, "epochs": 1},
    }
    t = symgrad.load_trainer(spec)
    X, Y = _linear_data()
    t.fit(X, Y, epochs=1, shuffle=False)
    A = np.hstack([X, np.ones((len(X), 1))])
    (w, b), *_ = np.linalg.lstsq(A, Y[:, 0], rcond=None)
    np.testing.assert_allclose(t.get_flat(), [w, b], rtol=1e-10, atol=1e-12)
    assert np.linalg.norm(t.gradient_flat(X, Y)) < 1e-12


def test_seed003_newton_example_with_three_features() -> None:
    t = symgrad.load_trainer(EXAMPLES / "linear_regression_newton.yaml")
    rng = np.random.default_rng(5)
    X = rng.standard_normal((40, 3))
    Y = X @ np.array([[1.5], [-2.0], [0.5]]) + 0.7 + 0.1 * rng.standard_normal((40, 1))
    t.fit(X, Y, shuffle=False)
    A = np.hstack([X, np.ones((40, 1))])
    coef, *_ = np.linalg.lstsq(A, Y[:, 0], rcond=None)
    np.testing.assert_allclose(t.get_flat(), coef, rtol=1e-9, atol=1e-11)


def test_seed003_newton_for_logistic_regression() -> None:
    """The inverse Hessian in several dimensions: Newton's steps drive the gradient to zero."""
    spec = {
        "name": "seed003_logistic_newton",
        "inputs": 2,
        "layers": [{"units": 1, "activation": "sigmoid"}],
        "loss": "log_loss",
        "optimizer": {"name": "newton", "learning_rate": 1.0, "damping": 0.0, "epochs": 12},
        "init": {"scheme": "xavier", "seed": 0},
    }
    t = symgrad.load_trainer(spec)
    rng = np.random.default_rng(6)
    X = rng.standard_normal((60, 2))
    Y = (rng.uniform(size=(60, 1)) < 1 / (1 + np.exp(-(X @ [[1.0], [-1.0]] + 0.3)))).astype(float)
    history = t.fit(X, Y, shuffle=False)
    assert np.linalg.norm(t.gradient_flat(X, Y)) < 1e-9
    assert history["loss"][-1] <= history["loss"][0]
