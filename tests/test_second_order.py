"""The curvature tools (issue 16): SciPy objective, Laplace, K-FAC and diagonals, spectra.

Every check here is against the trainer's own public derivatives, closed forms, or NumPy
(``eigh``, ``slogdet``, ``inv``); the comparisons with statsmodels, laplace-torch, curvlinops and
BackPACK are in ``tests/test_second_order_oracle.py`` (``-m oracle``).
"""

from __future__ import annotations

import math
import tracemalloc

import numpy as np
import pytest
import sympy as sp
from conftest import make, make_data, make_spec, rel_err

from symgrad import calculus as C
from symgrad.runtime.curvature import (
    Network,
    NotPositiveDefinite,
    diag_gauss_newton,
    diag_hessian,
    hessian_eigs,
    kfac_factors,
    laplace,
    scipy_objective,
    spec_of,
)
from symgrad.runtime.curvature import network as netmod
from symgrad.runtime.reference import Reference, lambdify

scipy = pytest.importorskip("scipy", reason="the SciPy objective and Lanczos need scipy")

# (hidden layers, output activation, loss, outputs, l2) with a custom activation in one case
CASES = [
    ((), "identity", "mse", 2, 0.0),
    ((), "sigmoid", "log_loss", 1, 0.3),
    ((), "softmax", "cross_entropy", 3, 0.2),
    ((), "tanh", "mse", 2, 0.1),
    (((4, "tanh"),), "softmax", "cross_entropy", 3, 0.5),
    (((5, "sigmoid"), (3, "relu")), "identity", "mse", 2, 0.0),
    (((4, "softplus"),), "sigmoid", "mse", 1, 0.2),
    (((3, "elu", 0.7), (4, "leaky_relu")), "sigmoid", "log_loss", 2, 0.1),
    (((4, "swish"),), "softmax", "cross_entropy", 3, 0.0),
]
SWISH = (("swish", "z / (1 + exp(-z))"),)


def case_model(case, n=9, seed=0, spread=0.4):
    hidden, out, loss, k, l2 = case
    acts = SWISH if any(h[1] == "swish" for h in hidden) else ()
    spec = make_spec(hidden, out, loss, outputs=k, l2=l2, inputs=3, activations=acts)
    model = make(spec, seed=seed)
    rng = np.random.default_rng(seed + 1)
    model.set_flat(model.get_flat() + spread * rng.standard_normal(model.get_flat().size))
    X, Y = make_data(out, loss, n=n, inputs=3, outputs=k, seed=seed)
    return spec, model, X, Y


def teacher_model(case, n=40, seed=0):
    """A trainer for ``case`` and data from a teacher of the same shape (one-hot classes drawn
    from its softmax, or its output plus noise), so that a fit has structure to find."""
    hidden, out, loss, k, l2 = case
    spec = make_spec(hidden, out, loss, outputs=k, l2=l2, inputs=3)
    teacher = make(spec, seed=seed + 7)
    rng = np.random.default_rng(seed)
    teacher.set_flat(2.0 * rng.standard_normal(teacher.get_flat().size))
    X = rng.standard_normal((n, 3))
    a = teacher.forward(X)
    if loss == "cross_entropy":
        Y = np.eye(k)[[rng.choice(k, p=row / row.sum()) for row in a]]
    else:
        Y = a + 0.1 * rng.standard_normal(a.shape)
    return spec, make(spec, seed=seed), X, Y


def ids(case):
    hidden, out, loss, k, l2 = case
    return "-".join([*(h[1] for h in hidden), out, loss])


# ---------------------------------------------------------------------------------------
# The network rebuilt from the spec


@pytest.mark.parametrize(
    "name,alpha",
    [
        ("identity", None),
        ("sigmoid", None),
        ("tanh", None),
        ("relu", None),
        ("leaky_relu", None),
        ("leaky_relu", 0.3),
        ("softplus", None),
        ("elu", None),
        ("elu", 0.7),
    ],
)
def test_builtin_activations_match_the_calculus(name, alpha):
    """The NumPy f, f', f'' of each built-in equal the calculus layer's sympy.diff."""
    act = netmod.activation(name, alpha, {})
    calc = C.activation_calculus(name, {}, alpha)
    z = np.linspace(-6, 6, 97)
    z = z[np.abs(z) > 1e-9]  # the kinks sit at 0; f'(0) is tested below
    for mine, expr in ((act.f, calc.f), (act.df, calc.df), (act.d2f, calc.d2f)):
        want = lambdify([C.z], expr)(z)
        assert np.max(np.abs(mine(z) - want)) <= 1e-13 * max(1.0, np.max(np.abs(want)))
    if name == "relu":
        assert act.df(np.array([0.0]))[0] == 0.0  # the stated convention f'(0) = 0
        assert float(calc.df.subs(C.z, 0)) == 0.0


def test_custom_activation_is_lambdified_from_the_calculus():
    act = netmod.activation("swish", None, dict(SWISH))
    z = np.linspace(-3, 3, 11)
    s = 1 / (1 + np.exp(-z))
    assert np.allclose(act.df(z), s + z * s * (1 - s), rtol=1e-13, atol=1e-15)
    expr = C.activation_calculus("swish", dict(SWISH)).d2f
    assert np.allclose(act.d2f(z), lambdify([C.z], sp.simplify(expr))(z), rtol=1e-12)


@pytest.mark.parametrize("case", CASES, ids=ids)
def test_network_matches_the_trainer(case):
    """Forward pass, cost, diag(H), diag(G), G v and the Jacobian against the trainer/reference."""
    spec, model, X, Y = case_model(case)
    net = Network(model)
    n = X.shape[0]
    theta = model.get_flat()
    s = net.forward(theta, X)
    assert rel_err(s.a[-1], model.forward(X)) < 1e-14
    mask = net.weight_mask
    cost = net.output.cost(s.z[-1], s.a[-1], Y).sum() / n + model.l2 / (2 * n) * np.sum(
        theta[mask] ** 2
    )
    assert abs(cost - model.loss(X, Y)) <= 1e-13 * max(1.0, abs(cost))
    H = model.hessian(X, Y)
    G = model.gauss_newton(X, Y)
    assert rel_err(diag_hessian(model, X, Y), np.diag(H)) < 1e-13
    assert rel_err(diag_gauss_newton(model, X, Y), np.diag(G)) < 1e-13
    v = np.random.default_rng(3).standard_normal(net.P)
    Gv = net.ggn_vp(theta, X, Y, v) / n + mask * model.l2 / n * v
    assert rel_err(Gv, G @ v) < 1e-13
    Hv = net.curvature_operator(theta, X, Y)(v) / n + mask * model.l2 / n * v
    assert rel_err(Hv, model.hvp(X, Y, v)) < 1e-13
    G_sum = G * n - np.diag(mask * model.l2)
    assert rel_err(net.ggn_dense_sum(theta, X, Y), G_sum) < 1e-13
    ref = Reference(spec_of(model))
    W, b = net.unpack(theta)
    state = ref.state(W, b, X, Y)
    assert rel_err(net.jacobian(s), ref.jacobian(state, "z")) < 1e-13


def test_ggn_of_the_summed_loss_is_j_s_j():
    """G = sum_x J^T S_G J with J the (independent) reference Jacobian of z_L."""
    case = (((4, "tanh"),), "softmax", "cross_entropy", 3, 0.0)
    spec, model, X, Y = case_model(case)
    net = Network(model)
    s = net.forward(model.get_flat(), X)
    J = net.jacobian(s)
    a = s.a[-1]
    S = np.einsum("mk,kl->mkl", a, np.eye(3)) - a[:, :, None] * a[:, None, :]
    G = np.einsum("mkp,mkl,mlq->pq", J, S, J)
    assert rel_err(G, model.gauss_newton(X, Y) * X.shape[0]) < 1e-13


def test_spec_is_read_from_the_module_and_checked():
    spec, model, X, Y = case_model(CASES[4])
    found = spec_of(model)
    assert found.digest() == symgrad_spec_digest(spec)
    other = make_spec(((5, "tanh"),), "softmax", "cross_entropy", outputs=3)
    with pytest.raises(ValueError, match=r"has 38 parameters and 3 inputs; the model has 31"):
        spec_of(model, other)


def symgrad_spec_digest(spec: dict) -> str:
    from symgrad import load_spec

    return load_spec(spec).digest()


def test_a_wrong_spec_is_caught_by_the_forward_check():
    """Same sizes, another activation: the forward pass differs and check() says so."""
    spec, model, X, Y = case_model(CASES[4])
    other = make_spec(((4, "sigmoid"),), "softmax", "cross_entropy", outputs=3, l2=0.5)
    with pytest.raises(RuntimeError, match=r"differs from .*\.forward by .*: the spec does not"):
        diag_hessian(model, X, Y, spec=other)


# ---------------------------------------------------------------------------------------
# K-FAC


@pytest.mark.parametrize("case", [CASES[4], CASES[5], CASES[7]], ids=ids)
def test_kfac_is_exact_for_one_sample_and_on_the_biases(case):
    """With one sample G's W_l block is B kron A exactly; the b_l block is B for any n."""
    spec, model, X, Y = case_model(case)
    net = Network(model)
    n = X.shape[0]
    G = (model.gauss_newton(X, Y) - np.diag(net.weight_mask * model.l2 / n)) * n
    for layer, f in zip(net.layers, kfac_factors(model, X, Y)):
        assert f.n == n
        assert rel_err(f.B * n, G[layer.b, layer.b]) < 1e-13
    assert rel_err(kfac_factors(model, X, Y)[0].A, X.T @ X / n) < 1e-14
    one_X, one_Y = X[:1], Y[:1]
    G1 = model.gauss_newton(one_X, one_Y) - np.diag(net.weight_mask * model.l2)
    for layer, f in zip(net.layers, kfac_factors(model, one_X, one_Y)):
        assert rel_err(np.kron(f.B, f.A), G1[layer.w, layer.w]) < 1e-13


def test_kfac_empirical_is_the_delta_covariance():
    case = CASES[4]
    spec, model, X, Y = case_model(case)
    net = Network(model)
    s = net.forward(model.get_flat(), X)
    d = net.deltas(s, Y)
    fac = kfac_factors(model, X, Y, fisher="empirical")
    for l, f in enumerate(fac, start=1):
        assert rel_err(f.B, d[l].T @ d[l] / X.shape[0]) < 1e-14
        assert rel_err(f.A, s.a[l - 1].T @ s.a[l - 1] / X.shape[0]) < 1e-14
    # the bias gradient of the data term is the sum of the deltas (checks d against the trainer)
    g = model.gradient_flat(X, Y)
    assert rel_err(d[1].mean(axis=0), g[net.layers[0].b]) < 1e-13
    with pytest.raises(ValueError, match=r"fisher must be 'type2' or 'empirical', got 'mc'"):
        kfac_factors(model, X, Y, fisher="mc")


# ---------------------------------------------------------------------------------------
# SciPy


@pytest.fixture(scope="module")
def cancer():
    datasets = pytest.importorskip("sklearn.datasets")
    X, y = datasets.load_breast_cancer(return_X_y=True)
    X = (X - X.mean(axis=0)) / X.std(axis=0)
    return X, y[:, None].astype(np.float64)


@pytest.fixture(scope="module")
def iris():
    datasets = pytest.importorskip("sklearn.datasets")
    X, y = datasets.load_iris(return_X_y=True)
    X = (X - X.mean(axis=0)) / X.std(axis=0)
    return X, np.eye(3)[y]


METHODS = ["trust-ncg", "trust-krylov", "trust-exact", "Newton-CG", "L-BFGS-B"]
# trust-krylov's trlib raises "overflow encountered in dot" when asked for gtol <= 1e-8 here
OPTIONS = {
    "trust-ncg": {"gtol": 1e-7},
    "trust-krylov": {"gtol": 1e-7},
    "trust-exact": {"gtol": 1e-7},
    "Newton-CG": {"xtol": 1e-10},
    "L-BFGS-B": {"gtol": 1e-8, "ftol": 1e-15, "maxiter": 5000},
}


def test_objective_caches_the_last_point(cancer):
    X, Y = cancer
    model = make(make_spec((), "sigmoid", "log_loss", inputs=30, outputs=1, l2=1.0))
    obj = scipy_objective(model, X, Y)
    x = obj.x0 + 0.1
    f1, g1 = obj.fun(x), obj.jac(x)
    assert obj.fun(x.copy()) == f1 and np.array_equal(obj.jac(x), g1)
    assert obj.counts == {"fun": 1, "jac": 1, "hess": 0, "hessp": 0}
    assert f1 == model.loss(X, Y)  # the model holds the point
    H = obj.hess(x)
    p = np.linspace(-1, 1, x.size)
    assert rel_err(obj.hessp(x, p), H @ p) < 1e-13
    obj.fun(x + 1.0)
    assert obj.counts["fun"] == 2
    with pytest.raises(ValueError, match=r"expected a vector of 31 parameters, got \(3,\)"):
        obj.fun(np.zeros(3))


@pytest.mark.parametrize("method", METHODS)
def test_scipy_methods_solve_logistic_regression(cancer, method):
    """All 30 features, l2 = 1: strictly convex; every method reaches the Newton solution."""
    X, Y = cancer
    spec = make_spec((), "sigmoid", "log_loss", inputs=30, outputs=1, l2=1.0)
    ref_model = make(spec, seed=0)
    ref = scipy_objective(ref_model, X, Y).minimize("trust-exact", options={"gtol": 1e-12})
    model = make(spec, seed=0)
    obj = scipy_objective(model, X, Y)
    res = obj.minimize(method, options=OPTIONS[method])
    assert res.success, res.message
    assert np.max(np.abs(obj.jac(res.x))) < 2e-7
    assert rel_err(res.x, ref.x) < 1e-4  # the smallest curvature is about l2 / n = 1.8e-3
    assert abs(res.fun - ref.fun) < 1e-11
    assert np.array_equal(model.get_flat(), res.x)
    uses_h = method in ("trust-ncg", "trust-krylov", "Newton-CG")
    assert (obj.counts["hessp"] > 0) == uses_h
    assert (obj.counts["hess"] > 0) == (method == "trust-exact")


@pytest.mark.parametrize("method", METHODS)
def test_scipy_methods_agree_on_a_small_mlp(iris, method):
    """[4, 8, 3] tanh/softmax, l2 = 0.1: from one start near a minimum all reach the same one
    (up to a common shift of the output biases, to which the softmax is blind)."""
    X, Y = iris
    spec = make_spec(((8, "tanh"),), "softmax", "cross_entropy", inputs=4, outputs=3, l2=0.1)
    model = make(spec, seed=0)
    base = scipy_objective(model, X, Y).minimize("trust-exact", options={"gtol": 1e-12})
    assert base.success
    start = base.x + 0.02 * np.random.default_rng(0).standard_normal(base.x.size)
    model = make(spec, seed=0)
    obj = scipy_objective(model, X, Y)
    res = obj.minimize(method, x0=start, options=OPTIONS[method])
    assert res.success, res.message
    assert np.max(np.abs(obj.jac(res.x))) < 2e-7

    def centred(x):
        x = x.copy()
        x[-3:] -= x[-3:].mean()
        return x

    assert rel_err(centred(res.x), centred(base.x)) < 1e-4
    assert abs(res.fun - base.fun) < 1e-10
    assert rel_err(model.predict_proba(X), make_fit(spec, base.x).predict_proba(X)) < 1e-5


def make_fit(spec, theta):
    model = make(spec, seed=0)
    model.set_flat(theta)
    return model


# ---------------------------------------------------------------------------------------
# Laplace


def _glm_cancer_model(X, Y, l2):
    spec = make_spec((), "sigmoid", "log_loss", inputs=X.shape[1], outputs=1, l2=l2)
    model = make(spec, seed=0)
    scipy_objective(model, X, Y).minimize("trust-exact", options={"gtol": 1e-12})
    return model


def test_glm_covariance_is_the_ridge_closed_form(cancer):
    """(X~^T S X~ + lambda I_w)^-1 with the training prior (l2 on weights, 0 on the bias)."""
    X, Y = cancer
    X = X[:, :10]
    model = _glm_cancer_model(X, Y, l2=2.0)
    la = laplace(model, X, Y)
    theta = model.get_flat()
    Xt = np.hstack([X, np.ones((len(X), 1))])
    p = 1 / (1 + np.exp(-(Xt @ theta)))
    prec = (Xt * (p * (1 - p))[:, None]).T @ Xt + np.diag(np.r_[np.full(10, 2.0), 0.0])
    cov = np.linalg.inv(prec)
    assert rel_err(la.posterior_covariance(), cov) < 1e-12
    assert rel_err(la.standard_errors(), np.sqrt(np.diag(cov))) < 1e-12
    assert rel_err(la.z_scores(), theta / np.sqrt(np.diag(cov))) < 1e-12
    # the closed form equals n times the trainer's Hessian less its L2 term
    H = model.hessian(X, Y) * len(X) - np.diag(np.r_[np.full(10, 2.0), 0.0])
    assert rel_err(la.posterior_precision(), H + np.diag(np.r_[np.full(10, 2.0), 0.0])) < 1e-12


def test_glm_summary_prints_statsmodels_columns(cancer):
    X, Y = cancer
    X = X[:, :3]
    model = _glm_cancer_model(X, Y, l2=0.0)
    la = laplace(model, X, Y, prior_precision=0.0)
    text = la.summary(names=["x1", "x2", "x3", "const"])
    lines = text.splitlines()
    assert lines[1].split() == ["coef", "std", "err", "z", "P>|z|", "[0.025", "0.975]"]
    assert [row.split()[0] for row in lines[3:7]] == ["x1", "x2", "x3", "const"]
    se, z = la.standard_errors(), la.z_scores()
    row = lines[3].split()
    assert float(row[1]) == pytest.approx(la.theta[0], abs=5e-5)
    assert float(row[2]) == pytest.approx(se[0], abs=5e-4)
    assert float(row[4]) == pytest.approx(math.erfc(abs(z[0]) / math.sqrt(2)), abs=5e-4)
    assert la.parameter_names() == ["W_1[0,0]", "W_1[0,1]", "W_1[0,2]", "b_1[0]"]
    with pytest.raises(ValueError, match=r"expected 4 names, got 1"):
        la.summary(names=["x"])


def _dense_from_structure(la):
    """The posterior precision of any structure as a dense matrix (test helper)."""
    P = la.n_params
    prec = la.posterior_precision()
    if la.structure in ("full", "gauss_newton"):
        return prec
    if la.structure == "diag":
        return np.diag(prec)
    out = np.zeros((P, P))
    for layer, (B, A, dw, Bb, db) in zip(la.net.layers, prec):
        out[layer.w, layer.w] = np.kron(B, A) + dw * np.eye(layer.w.stop - layer.w.start)
        out[layer.b, layer.b] = Bb + db * np.eye(layer.units)
    return out


MLP = (((5, "tanh"), (4, "sigmoid")), "softmax", "cross_entropy", 3, 0.3)
REG = (((5, "tanh"),), "identity", "mse", 2, 0.5)


@pytest.mark.parametrize("structure", ["full", "gauss_newton", "kfac", "diag"])
@pytest.mark.parametrize("case", [MLP, REG], ids=["softmax", "gaussian"])
def test_laplace_against_dense_linear_algebra(case, structure):
    """Evidence, variances and predictions against slogdet/inv of the dense precision."""
    spec, model, X, Y = teacher_model(case, n=30)
    fit = scipy_objective(model, X, Y).minimize("trust-exact", options={"gtol": 1e-9})
    assert fit.success, fit.message
    prior = np.array([0.7, 0.3, 1.1, 0.4] + ([2.0, 0.9] if len(case[0]) == 2 else []))
    sigma = 1.0 if case is MLP else 0.8
    la = laplace(model, X, Y, prior_precision=prior, structure=structure, sigma_noise=sigma)
    n = X.shape[0]
    net = la.net
    delta = la.prior_precision
    mask = net.weight_mask
    if structure in ("full", "gauss_newton"):
        M = model.hessian(X, Y) if structure == "full" else model.gauss_newton(X, Y)
        H = M * n - np.diag(mask * model.l2)
        assert rel_err(la.posterior_precision(), H / sigma**2 + np.diag(delta)) < 1e-12
    if structure == "diag":
        H = np.diag(model.gauss_newton(X, Y) * n - np.diag(mask * model.l2))
        assert rel_err(la.posterior_precision(), H / sigma**2 + delta) < 1e-12
    dense = _dense_from_structure(la)
    sign, logdet = np.linalg.slogdet(dense)
    assert sign == 1
    assert abs(la.log_det_posterior_precision() - logdet) < 1e-10 * abs(logdet)
    if structure in ("full", "gauss_newton"):  # Cholesky above; the eigen path agrees
        scalar = laplace(model, X, Y, prior_precision=0.8, structure=structure, sigma_noise=sigma)
        chol = (scalar.log_det_posterior_precision(), scalar.posterior_variance())
        scalar._dense_eig()
        assert abs(scalar.log_det_posterior_precision() - chol[0]) < 1e-10 * abs(chol[0])
        assert rel_err(scalar.posterior_variance(), chol[1]) < 1e-10
    cov = np.linalg.inv(dense)
    assert rel_err(la.posterior_variance(), np.diag(cov)) < 1e-11
    s = net.forward(la.theta, X)
    ll = -net.output.cost(s.z[-1], s.a[-1], Y).sum()
    if case is REG:
        ll = ll / sigma**2 - n * 2 * math.log(sigma * math.sqrt(2 * math.pi))
    lml = ll - 0.5 * (logdet - np.sum(np.log(delta)) + np.sum(delta * la.theta**2))
    assert abs(la.log_marginal_likelihood() - lml) < 1e-10 * abs(lml)
    Xn = np.random.default_rng(7).standard_normal((6, 3))
    sn = net.forward(la.theta, Xn)
    J = net.jacobian(sn)
    f_var = np.einsum("mkp,pq,mlq->mkl", J, cov, J)
    f_mu, got = la.functional_variance(Xn)
    assert rel_err(f_mu, sn.z[-1]) < 1e-14
    assert rel_err(got, f_var) < 1e-11
    pred = la.predict(Xn)
    if case is MLP:
        kappa = 1 / np.sqrt(1 + np.pi / 8 * np.diagonal(f_var, axis1=1, axis2=2))
        e = np.exp(kappa * f_mu - np.max(kappa * f_mu, axis=1, keepdims=True))
        assert rel_err(pred, e / e.sum(axis=1, keepdims=True)) < 1e-12
    else:
        assert rel_err(pred[0], sn.a[-1]) < 1e-14 and rel_err(pred[1], f_var) < 1e-11


def test_bernoulli_probit_prediction(cancer):
    X, Y = cancer
    X = X[:, :5]
    model = _glm_cancer_model(X, Y, l2=1.0)
    la = laplace(model, X, Y, prior_precision=1.0, structure="gauss_newton")
    f_mu, f_var = la.functional_variance(X[:4])
    want = 1 / (1 + np.exp(-f_mu / np.sqrt(1 + np.pi / 8 * f_var[:, :, 0])))
    assert rel_err(la.predict(X[:4]), want) < 1e-13


GLM = ((), "softmax", "cross_entropy", 3, 0.3)


@pytest.mark.parametrize(
    "case,structure",
    [(GLM, "full"), (MLP, "gauss_newton"), (MLP, "kfac"), (MLP, "diag")],
    ids=["glm-full", "mlp-gauss_newton", "mlp-kfac", "mlp-diag"],
)
@pytest.mark.parametrize("layerwise", [False, True])
def test_optimized_prior_precision_is_a_stationary_point(case, structure, layerwise):
    spec, model, X, Y = teacher_model(case, n=40)
    fit = scipy_objective(model, X, Y).minimize("trust-exact", options={"gtol": 1e-9})
    assert fit.success, fit.message
    la = laplace(model, X, Y, prior_precision=1.0, structure=structure)
    delta = la.optimize_prior_precision(layerwise=layerwise)
    starts = [sl.start for _, sl in la.net.blocks()]
    per_tensor = delta[starts]
    if not layerwise:
        assert np.all(delta == delta[0])
    assert np.all(per_tensor > 0)
    best = la.log_marginal_likelihood()
    groups = range(len(starts)) if layerwise else [slice(None)]
    h = 1e-4
    for k in groups:
        values = []
        for t in (h, -h):
            trial = per_tensor.copy()
            trial[k] *= math.exp(t)
            values.append(la.log_marginal_likelihood(prior_precision=trial))
        # the central difference of lml in log delta vanishes, and the optimum is a maximum
        assert abs(values[0] - values[1]) / (2 * h) < 1e-6 * abs(best)
        assert best >= max(values) - 1e-12 * abs(best)
    la.prior_precision = per_tensor
    assert la.log_marginal_likelihood() == pytest.approx(best, rel=1e-14)


def test_evidence_of_an_indefinite_hessian_has_no_maximum():
    spec, model, X, Y = teacher_model(MLP, n=40)
    scipy_objective(model, X, Y).minimize("trust-exact", options={"gtol": 1e-9})
    la = laplace(model, X, Y, prior_precision=1.0, structure="full")
    low = np.linalg.eigvalsh(model.hessian(X, Y) * 40 - np.diag(la.net.weight_mask * 0.3))[0]
    assert low < 0  # this fit's data term is not convex
    with pytest.raises(ValueError, match=r"the curvature has a negative eigenvalue \(-"):
        la.optimize_prior_precision()


def test_laplace_errors():
    spec, model, X, Y = case_model(MLP, n=20)
    with pytest.raises(ValueError, match=r"structure must be one of full, gauss_newton, kfac, "):
        laplace(model, X, Y, structure="lowrank")
    la = laplace(model, X, Y, structure="diag")
    with pytest.raises(ValueError, match=r"needs a proper prior: a positive prior precision on"):
        la.log_marginal_likelihood()
    with pytest.raises(ValueError, match=r"prior_precision must be a scalar or one value per "):
        la.prior_precision = np.ones(3)
    with pytest.raises(ValueError, match=r"prior_precision must be finite and non-negative"):
        la.prior_precision = -1.0
    with pytest.raises(ValueError, match=r"sigma_noise != 1 needs the Gaussian likelihood"):
        laplace(model, X, Y, sigma_noise=2.0)
    kf = laplace(model, X, Y, structure="kfac", prior_precision=1.0)
    with pytest.raises(ValueError, match=r"\(6 tensors\), got shape \(59,\)"):
        kf.prior_precision = np.ones(la.n_params)
    with pytest.raises(ValueError, match=r"structure='kfac' keeps no P x P covariance"):
        kf.posterior_covariance()
    full = laplace(model, X, Y, structure="full", prior_precision=1e-9)
    with pytest.raises(NotPositiveDefinite, match=r"not positive definite \(smallest eigenvalue"):
        full.log_marginal_likelihood()


def test_default_prior_is_the_training_cost(iris):
    """prior_precision=None: l2 on the weights, 0 on the biases; the mode is the optimum."""
    X, Y = iris
    spec = make_spec(((6, "tanh"),), "softmax", "cross_entropy", inputs=4, outputs=3, l2=0.3)
    model = make(spec, seed=1)
    scipy_objective(model, X, Y).minimize("trust-exact", options={"gtol": 1e-12})
    la = laplace(model, X, Y, structure="full")
    assert np.array_equal(la.prior_precision, la.net.weight_mask * 0.3)
    # gradient of -log posterior = n * gradient of the cost = 0 at the mode
    assert np.max(np.abs(model.gradient_flat(X, Y))) * len(X) < 1e-8
    assert rel_err(la.posterior_precision(), model.hessian(X, Y) * len(X)) < 1e-12


# ---------------------------------------------------------------------------------------
# Spectrum


@pytest.mark.parametrize("which", ["LA", "SA", "LM"])
def test_lanczos_matches_eigh(which):
    spec = make_spec(
        ((12, "tanh"), (8, "softplus")), "softmax", "cross_entropy", inputs=6, outputs=4, l2=0.1
    )
    model = make(spec, seed=0)
    X, Y = make_data("softmax", "cross_entropy", n=50, inputs=6, outputs=4, seed=2)
    lam = np.linalg.eigvalsh(model.hessian(X, Y))
    got = hessian_eigs(model, X, Y, k=5, which=which, method="lanczos")
    order = {"LA": -lam, "SA": lam, "LM": -np.abs(lam)}[which]
    want = np.sort(lam[np.argsort(order)[:5]])[::-1]
    assert np.max(np.abs(got - want)) < 1e-10 * np.max(np.abs(lam))
    dense = hessian_eigs(model, X, Y, k=5, which=which, method="dense")
    assert np.max(np.abs(dense - want)) < 1e-12 * np.max(np.abs(lam))
    trainer = hessian_eigs(model, X, Y, k=5, which=which, method="lanczos", operator="trainer")
    assert np.max(np.abs(trainer - want)) < 1e-10 * np.max(np.abs(lam))


def test_spectrum_of_the_gauss_newton_matrix_and_eigenvectors():
    spec = make_spec(((7, "tanh"),), "identity", "mse", inputs=4, outputs=2, l2=0.2)
    model = make(spec, seed=0)
    X, Y = make_data("identity", "mse", n=40, inputs=4, outputs=2)
    G = model.gauss_newton(X, Y)
    lam, V = hessian_eigs(
        model, X, Y, k=3, gauss_newton=True, method="lanczos", return_eigenvectors=True
    )
    assert np.max(np.abs(lam - np.linalg.eigvalsh(G)[::-1][:3])) < 1e-11 * lam[0]
    assert rel_err(G @ V, V * lam) < 1e-9
    every = hessian_eigs(model, X, Y, k=None, method="dense")
    assert every.size == G.shape[0] and np.all(np.diff(every) <= 0)
    with pytest.raises(ValueError, match=r"Lanczos needs 1 <= k < P = 51, got k=51"):
        hessian_eigs(model, X, Y, k=51, method="lanczos")
    with pytest.raises(ValueError, match=r"which must be 'LA', 'SA' or 'LM', got 'BE'"):
        hessian_eigs(model, X, Y, which="BE")
    with pytest.raises(ValueError, match=r"the trainer has no public Gauss-Newton-vector"):
        hessian_eigs(model, X, Y, k=2, method="lanczos", gauss_newton=True, operator="trainer")
    with pytest.raises(ValueError, match=r"operator must be 'cached' or 'trainer', got 'jax'"):
        hessian_eigs(model, X, Y, k=2, method="lanczos", operator="jax")


# ---------------------------------------------------------------------------------------
# Memory: no P x P matrix for kfac, diag and Lanczos


def _peak(fn) -> int:
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_structured_curvature_never_forms_p_by_p():
    spec = make_spec(((48, "tanh"),), "softmax", "cross_entropy", inputs=64, outputs=10, l2=0.1)
    model = make(spec, seed=0)
    X, Y = make_data("softmax", "cross_entropy", n=200, inputs=64, outputs=10, seed=1)
    P = model.get_flat().size
    dense_bytes = 8 * P * P  # 3610 parameters: 104 MB
    limit = dense_bytes // 5
    Network(model)  # the spec's calculus, outside the measurement

    def structured():
        kfac_factors(model, X, Y)
        diag_gauss_newton(model, X, Y)
        diag_hessian(model, X, Y)
        for structure in ("kfac", "diag"):
            la = laplace(model, X, Y, prior_precision=1.0, structure=structure)
            la.log_marginal_likelihood()
            la.predict(X[:20])
        hessian_eigs(model, X, Y, k=3, method="lanczos", tol=1e-6)

    import scipy.sparse.linalg  # noqa: F401 - imported before measuring (its modules count)

    peak = _peak(structured)
    assert peak < limit, f"peak {peak / 2**20:.1f} MiB, limit {limit / 2**20:.1f} MiB"
    # the measurement sees a P x P matrix when one is made
    assert _peak(lambda: laplace(model, X[:5], Y[:5], structure="gauss_newton")) > dense_bytes


@pytest.mark.slow
def test_lanczos_and_structures_on_the_digits_example():
    """examples/mlp_digits.yaml (P = 2778) on 500 digits: Lanczos against eigh of the full
    Hessian, and the K-FAC/diag evidences against the dense matrices they approximate."""
    datasets = pytest.importorskip("sklearn.datasets")
    from symgrad import load_spec, load_trainer

    X, y = datasets.load_digits(return_X_y=True)
    X, Y = X[:500] / 16.0, np.eye(10)[y[:500]]
    model = load_trainer(load_spec("examples/mlp_digits.yaml"))
    model.fit(X, Y, epochs=5)
    lam = np.linalg.eigvalsh(model.hessian(X, Y))
    top = hessian_eigs(model, X, Y, k=6, method="lanczos")
    assert np.max(np.abs(top - lam[::-1][:6])) < 1e-9 * lam[-1]
    low = hessian_eigs(model, X, Y, k=3, which="SA", method="lanczos")
    assert np.max(np.abs(low - lam[:3][::-1])) < 1e-9 * lam[-1]
    G = model.gauss_newton(X, Y)
    assert rel_err(diag_gauss_newton(model, X, Y), np.diag(G)) < 1e-12
    for structure in ("kfac", "diag", "gauss_newton"):
        la = laplace(model, X, Y, prior_precision=1.0, structure=structure)
        assert np.isfinite(la.log_marginal_likelihood())
        probs = la.predict(X[:10])
        assert np.allclose(probs.sum(axis=1), 1.0)


def test_unnormalised_pair_predicts_through_the_output_activation():
    """sigmoid + mse: no normalised likelihood; the prediction is f(f_mu) with the covariance
    of a = f(z) under the linearisation, D f_var D with D = diag f'(f_mu)."""
    case = (((4, "tanh"),), "sigmoid", "mse", 2, 0.2)
    spec, model, X, Y = case_model(case, n=25)
    la = laplace(model, X, Y, prior_precision=0.5, structure="gauss_newton")
    assert la.likelihood == "unnormalised"
    s = la.net.forward(la.theta, X)
    assert la.log_likelihood == pytest.approx(-0.5 * np.sum((s.a[-1] - Y) ** 2), rel=1e-14)
    f_mu, f_var = la.functional_variance(X[:5])
    mean, cov = la.predict(X[:5])
    p = 1 / (1 + np.exp(-f_mu))
    d = p * (1 - p)
    assert rel_err(mean, p) < 1e-14
    assert rel_err(cov, d[:, :, None] * f_var * d[:, None, :]) < 1e-14
