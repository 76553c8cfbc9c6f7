"""The curvature tools against independent references, in float64 (``-m oracle``).

- statsmodels: ``Logit``/``GLM(Binomial)`` and ``OLS`` standard errors, z and p values.
- laplace-torch (``pip install --no-deps laplace-torch`` and its small dependencies): the full
  (exact Hessian), GGN, K-FAC and diagonal posteriors, marginal likelihoods and predictives.
- curvlinops: the Hessian, the GGN and the K-FAC factors; BackPACK: the exact diagonals.

Conventions shared with laplace-torch (see :mod:`symgrad.runtime.curvature.posterior`): the SUM
loss (``CrossEntropyLoss(reduction="sum")``, ``0.5 * MSELoss(reduction="sum")``), the prior
precision on every parameter including the biases, and the same prior on both sides.
The network is written again in PyTorch from the spec; only the parameter order is shared.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from conftest import make, make_spec, rel_err

from symgrad.runtime.curvature import (
    Network,
    diag_gauss_newton,
    diag_hessian,
    kfac_factors,
    laplace,
    scipy_objective,
)

torch = pytest.importorskip("torch", reason="the oracles need torch==2.13.0")
pytest.importorskip("scipy")

pytestmark = [
    pytest.mark.oracle,
    # torch's forward-mode AD (curvlinops, laplace-torch) warns about its own internal use of
    # torch.jit.script (torch 2.13); nothing here calls it
    pytest.mark.filterwarnings("ignore:.*torch.jit.script.*:DeprecationWarning"),
]

TOL = 1e-8  # the bar; the errors measured are printed by `-s` runs of these tests


@pytest.fixture(autouse=True)
def _float64():
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(old)


def _datasets():
    return pytest.importorskip("sklearn.datasets")


def _fit(model, X, Y, gtol=1e-10):
    res = scipy_objective(model, X, Y).minimize("trust-exact", options={"gtol": gtol})
    assert res.success, res.message
    return res


def _torch_net(spec: dict, theta: np.ndarray):
    acts = {"tanh": torch.nn.Tanh, "sigmoid": torch.nn.Sigmoid, "relu": torch.nn.ReLU}
    layers = []
    fan_in = spec["inputs"]
    for i, layer in enumerate(spec["layers"]):
        layers.append(torch.nn.Linear(fan_in, layer["units"]))
        if i < len(spec["layers"]) - 1:
            layers.append(acts[layer["activation"]]())
        fan_in = layer["units"]
    net = torch.nn.Sequential(*layers).double()
    torch.nn.utils.vector_to_parameters(torch.tensor(theta), net.parameters())
    return net


def report(name: str, err: float) -> None:
    print(f"{name}: {err:.2e}")


# ---------------------------------------------------------------------------------------
# statsmodels


def test_logistic_regression_standard_errors_match_statsmodels():
    """Breast cancer, the first 10 standardised features (with all 30 the classes separate
    and the maximum-likelihood estimate does not exist: statsmodels' Hessian is singular)."""
    sm = pytest.importorskip("statsmodels.api")
    X, y = _datasets().load_breast_cancer(return_X_y=True)
    X = X[:, :10]
    X = (X - X.mean(axis=0)) / X.std(axis=0)
    model = make(make_spec((), "sigmoid", "log_loss", inputs=10, outputs=1), seed=0)
    model.set_flat(np.zeros(11))
    _fit(model, X, y[:, None].astype(float), gtol=1e-12)
    la = laplace(model, X, y[:, None].astype(float), prior_precision=0.0)
    theta = la.theta
    order = np.r_[10, np.arange(10)]  # statsmodels: const first
    Xc = sm.add_constant(X)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # statsmodels' own convergence chatter
        logit = sm.Logit(y, Xc).fit(method="newton", tol=1e-14, maxiter=100, disp=0)
        glm = sm.GLM(y, Xc, family=sm.families.Binomial()).fit(tol=1e-14, maxiter=100)
    for name, res in (("Logit", logit), ("GLM", glm)):
        errs = {
            "params": rel_err(theta[order], res.params),
            "bse": rel_err(la.standard_errors()[order], res.bse),
            "z": rel_err(la.z_scores()[order], res.tvalues),
            "p": float(np.max(np.abs(la.p_values()[order] - res.pvalues))),
        }
        for key, err in errs.items():
            report(f"statsmodels {name} {key}", err)
            assert err < TOL, (name, key, err)
    cov = np.linalg.inv(-sm.Logit(y, Xc).hessian(theta[order]))
    err = rel_err(la.posterior_covariance()[np.ix_(order, order)], cov)
    report("statsmodels Logit covariance at the same parameters", err)
    assert err < 1e-11


def test_linear_regression_standard_errors_match_ols():
    """identity + mse with sigma_noise = the residual standard error: OLS's covariance."""
    sm = pytest.importorskip("statsmodels.api")
    X, y = _datasets().load_diabetes(return_X_y=True)
    X = (X - X.mean(axis=0)) / X.std(axis=0)
    model = make(make_spec((), "identity", "mse", inputs=10, outputs=1), seed=0)
    _fit(model, X, y[:, None], gtol=1e-9)
    theta = model.get_flat()
    rss = float(np.sum((X @ theta[:10] + theta[10] - y) ** 2))
    sigma = math.sqrt(rss / (len(y) - 11))
    la = laplace(model, X, y[:, None], prior_precision=0.0, sigma_noise=sigma)
    ols = sm.OLS(y, sm.add_constant(X)).fit()
    order = np.r_[10, np.arange(10)]
    err = rel_err(la.standard_errors()[order], ols.bse)
    report("statsmodels OLS bse", err)
    assert err < TOL


# ---------------------------------------------------------------------------------------
# laplace-torch


@pytest.fixture(scope="module")
def laplace_torch():
    return pytest.importorskip("laplace", reason="pip install --no-deps laplace-torch ...")


def _iris_mlp():
    X, y = _datasets().load_iris(return_X_y=True)
    X = (X - X.mean(axis=0)) / X.std(axis=0)
    spec = make_spec(((8, "tanh"),), "softmax", "cross_entropy", inputs=4, outputs=3, l2=1.0)
    model = make(spec, seed=0)
    _fit(model, X, np.eye(3)[y])
    return spec, model, X, y


def _regression_mlp():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((60, 3))
    Y = np.stack([np.sin(X[:, 0]) + X[:, 1], X[:, 2] * X[:, 0]], axis=1)
    Y += 0.3 * rng.standard_normal(Y.shape)
    spec = make_spec(((6, "tanh"),), "identity", "mse", inputs=3, outputs=2, l2=0.5)
    model = make(spec, seed=0)
    _fit(model, X, Y)
    return spec, model, X, Y


STRUCTURES = {  # ours: (laplace-torch's hessian_structure, backend)
    "full": ("full", "CurvlinopsHessian"),
    "gauss_newton": ("full", "CurvlinopsGGN"),
    "kfac": ("kron", "CurvlinopsGGN"),
    "diag": ("diag", "CurvlinopsGGN"),
}


def _their(laplace_torch, net, likelihood, structure, X, y, prior, sigma=1.0):
    from laplace import curvature
    from torch.utils.data import DataLoader, TensorDataset

    hs, backend = STRUCTURES[structure]
    la = laplace_torch.Laplace(
        net,
        likelihood,
        subset_of_weights="all",
        hessian_structure=hs,
        backend=getattr(curvature, backend),
        prior_precision=torch.as_tensor(prior),
        sigma_noise=sigma,
    )
    data = TensorDataset(torch.tensor(X), torch.tensor(y))
    la.fit(DataLoader(data, batch_size=len(X)))  # one batch: K-FAC factors as in one pass
    return la


def _their_variance(la, structure):
    if structure in ("full", "gauss_newton"):
        return la.posterior_covariance.detach().numpy()
    if structure == "diag":
        return la.posterior_variance.detach().numpy()
    return np.diag(np.linalg.inv(la.posterior_precision.to_matrix().detach().numpy()))


@pytest.mark.parametrize("structure", list(STRUCTURES))
def test_classification_posterior_matches_laplace_torch(laplace_torch, structure):
    spec, model, X, y = _iris_mlp()
    net = _torch_net(spec, model.get_flat())
    prior = np.array([1.0, 0.5, 2.0, 0.7])  # per tensor: W_1, b_1, W_2, b_2
    theirs = _their(laplace_torch, net, "classification", structure, X, y, prior)
    ours = laplace(model, X, np.eye(3)[y], prior_precision=prior, structure=structure)
    lml_t = float(theirs.log_marginal_likelihood())
    errs = {"log marginal likelihood": abs(ours.log_marginal_likelihood() - lml_t) / abs(lml_t)}
    want = _their_variance(theirs, structure)
    got = ours.posterior_covariance() if want.ndim == 2 else ours.posterior_variance()
    errs["posterior (co)variance"] = rel_err(got, want)
    Xn = X[::7]
    probs = theirs(torch.tensor(Xn), pred_type="glm", link_approx="probit").detach().numpy()
    errs["probit predictive"] = rel_err(ours.predict(Xn), probs)
    for key, err in errs.items():
        report(f"laplace-torch classification {structure} {key}", err)
        assert err < TOL, (key, err)


@pytest.mark.parametrize("structure", list(STRUCTURES))
def test_regression_posterior_matches_laplace_torch(laplace_torch, structure):
    spec, model, X, Y = _regression_mlp()
    net = _torch_net(spec, model.get_flat())
    sigma = 0.7
    theirs = _their(laplace_torch, net, "regression", structure, X, Y, 0.9, sigma)
    ours = laplace(model, X, Y, prior_precision=0.9, structure=structure, sigma_noise=sigma)
    lml_t = float(theirs.log_marginal_likelihood())
    errs = {"log marginal likelihood": abs(ours.log_marginal_likelihood() - lml_t) / abs(lml_t)}
    mean_t, var_t = theirs(torch.tensor(X[:9]), pred_type="glm")
    mean, var = ours.predict(X[:9])
    errs["predictive mean"] = rel_err(mean, mean_t.detach().numpy())
    errs["predictive covariance"] = rel_err(var, var_t.detach().numpy())
    for key, err in errs.items():
        report(f"laplace-torch regression {structure} {key}", err)
        assert err < TOL, (key, err)


@pytest.mark.parametrize("structure", ["gauss_newton", "kfac", "diag"])
def test_optimized_prior_is_stationary_for_laplace_torch(laplace_torch, structure):
    """Our evidence-optimal prior precision zeroes the gradient of laplace-torch's evidence."""
    spec, model, X, y = _iris_mlp()
    ours = laplace(model, X, np.eye(3)[y], prior_precision=1.0, structure=structure)
    delta = float(ours.optimize_prior_precision()[0])
    theirs = _their(
        laplace_torch, _torch_net(spec, model.get_flat()), "classification", structure, X, y, delta
    )
    log_delta = torch.tensor(math.log(delta), requires_grad=True)
    lml = theirs.log_marginal_likelihood(prior_precision=log_delta.exp())
    (grad,) = torch.autograd.grad(lml, log_delta)
    err = abs(float(lml.detach()) - ours.log_marginal_likelihood()) / abs(float(lml.detach()))
    lml, grad = float(lml.detach()), float(grad)
    report(f"laplace-torch optimal prior {structure}: d lml / d log delta", grad)
    assert abs(grad) < 1e-7 * abs(lml)
    assert err < TOL


# ---------------------------------------------------------------------------------------
# curvlinops and BackPACK


@pytest.fixture(scope="module")
def curvlinops():
    return pytest.importorskip("curvlinops", reason="pip install --no-deps curvlinops-for-pytorch")


def _two_layer():
    spec = make_spec(
        ((6, "tanh"), (5, "sigmoid")), "softmax", "cross_entropy", inputs=4, outputs=3, l2=0.4
    )
    model = make(spec, seed=0)
    rng = np.random.default_rng(4)
    model.set_flat(model.get_flat() + 0.5 * rng.standard_normal(model.get_flat().size))
    X = rng.standard_normal((25, 4))
    y = rng.integers(0, 3, 25)
    return spec, model, X, y


def _data_term(model, M, n):
    """n times a trainer matrix, less its L2 term: the curvature of the summed loss."""
    net = Network(model)
    return M * n - np.diag(net.weight_mask * model.l2)


def test_hessian_ggn_and_kfac_match_curvlinops(curvlinops):
    spec, model, X, y = _two_layer()
    Y = np.eye(3)[y]
    n = len(X)
    net = _torch_net(spec, model.get_flat())
    params = list(net.parameters())
    loss = torch.nn.CrossEntropyLoss(reduction="sum")
    data = [(torch.tensor(X), torch.tensor(y))]
    eye = torch.eye(model.get_flat().size)
    H = (curvlinops.HessianLinearOperator(net, loss, params, data) @ eye).numpy()
    G = (curvlinops.GGNLinearOperator(net, loss, params, data) @ eye).numpy()
    errs = {
        "Hessian": rel_err(_data_term(model, model.hessian(X, Y), n), H),
        "GGN": rel_err(_data_term(model, model.gauss_newton(X, Y), n), G),
    }
    mine_ggn = Network(model)
    errs["diag GGN"] = rel_err(
        diag_gauss_newton(model, X, Y) * n - mine_ggn.weight_mask * model.l2, np.diag(G)
    )
    errs["diag Hessian"] = rel_err(
        diag_hessian(model, X, Y) * n - mine_ggn.weight_mask * model.l2, np.diag(H)
    )
    for fisher, kind in (
        ("type2", curvlinops.FisherType.TYPE2),
        ("empirical", curvlinops.FisherType.EMPIRICAL),
    ):
        kfac = curvlinops.KFACLinearOperator(
            net,
            loss,
            params,
            data,
            fisher_type=kind,
            separate_weight_and_bias=True,
            check_deterministic=False,  # its check computes the factors once more, adding up
        )
        kfac.compute_kronecker_factors()
        names = [name for name, m in net.named_modules() if isinstance(m, torch.nn.Linear)]
        ours = kfac_factors(model, X, Y, fisher=fisher)
        for name, f in zip(names, ours):
            A = kfac._input_covariances[name].numpy()  # a mean over the samples
            B = kfac._gradient_covariances[name].numpy()  # a sum (reduction="sum")
            errs[f"K-FAC {fisher} A {name}"] = rel_err(f.A, A)
            errs[f"K-FAC {fisher} B {name}"] = rel_err(f.B * n, B)
        dense = (kfac @ eye).numpy()
        mine = np.zeros_like(dense)
        for layer, f in zip(Network(model).layers, ours):
            mine[layer.w, layer.w] = np.kron(f.B * n, f.A)
            mine[layer.b, layer.b] = f.B * n
        errs[f"K-FAC {fisher} matrix"] = rel_err(mine, dense)
    for key, err in errs.items():
        report(f"curvlinops {key}", err)
        assert err < 1e-12, (key, err)


def test_exact_diagonals_match_backpack():
    backpack = pytest.importorskip("backpack", reason="pip install --no-deps backpack-for-pytorch")
    from backpack.extensions import DiagGGNExact, DiagHessian

    spec, model, X, y = _two_layer()
    Y = np.eye(3)[y]
    n = len(X)
    net = backpack.extend(_torch_net(spec, model.get_flat()))
    loss = backpack.extend(torch.nn.CrossEntropyLoss(reduction="sum"))
    inputs = torch.tensor(X, requires_grad=True)  # BackPACK's module hooks want an input grad
    value = loss(net(inputs), torch.tensor(y))
    with backpack.backpack(DiagHessian(), DiagGGNExact()):
        value.backward()
    dh = torch.cat([p.diag_h.reshape(-1) for p in net.parameters()]).numpy()
    dg = torch.cat([p.diag_ggn_exact.reshape(-1) for p in net.parameters()]).numpy()
    mask = Network(model).weight_mask
    errs = {
        "DiagHessian": rel_err(diag_hessian(model, X, Y) * n - mask * model.l2, dh),
        "DiagGGNExact": rel_err(diag_gauss_newton(model, X, Y) * n - mask * model.l2, dg),
    }
    for key, err in errs.items():
        report(f"BackPACK {key}", err)
        assert err < 1e-12, (key, err)
