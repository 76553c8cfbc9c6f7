"""Uncertainty: the Laplace approximation, as equations of the IR.

What :func:`symgrad.runtime.curvature.laplace` computes, printed and verified like every other
equation (rows in :mod:`symgrad.runtime.verification.laplace`):

- the posterior precision ``Lambda = N H - lambda_2 I_w + D_delta``: the curvature of the summed
  loss ``sum_x C_x`` (N times the Hessian of C, without the training L2 term) plus the precision
  ``D_delta = diag(delta)`` of a Gaussian prior N(0, D_delta^-1); with the prior the training
  cost implies (delta = lambda_2 on the weights, 0 on the biases) Lambda = N H;
- the covariance ``Sigma = Lambda^-1``;
- for a GLM with one output (no hidden layer, the loss matched to the output): the closed form
  ``Lambda = X~^T S X~ + D_delta`` over the training inputs with a column of ones, and the
  standard errors and Wald z-scores of each coefficient, as statsmodels prints them;
- the linearised predictive of an input: mean ``z^(L)``, covariance ``J Sigma J^T`` with
  ``J = dz^(L)/dtheta``, and for classifiers the probit approximation of the probabilities;
- the log marginal likelihood (the evidence).

Printed for specs the curvature tools accept (a chain of layers, each with a bias) of at most
:data:`MAX_PARAMS` parameters; the probit equations for the categorical and Bernoulli
likelihoods (softmax + cross_entropy, sigmoid + log_loss). The structured section (K-FAC
factors, the exact Gauss-Newton diagonal) is printed for those specs at every size.
"""

from __future__ import annotations

import sympy as sp

from .. import calculus as C
from . import notation as nt
from .ir import Derivation, Equation

SECTION = "Uncertainty: the Laplace approximation"

Lambda = sp.MatrixSymbol("Lambda_post", nt.P, nt.P)
Sigma = sp.MatrixSymbol("Sigma_post", nt.P, nt.P)
D_delta = sp.MatrixSymbol("D_delta", nt.P, nt.P)
Xt_N = sp.MatrixSymbol("Xt_N", nt.N, nt.n(0) + 1)  # the N training inputs with a column of ones
S_N = sp.MatrixSymbol("S_N", nt.N, nt.N)  # diag(s) over the N training samples
se = sp.IndexedBase("se", real=True)
zw = sp.IndexedBase("zw", real=True)
theta = sp.IndexedBase("theta", real=True)
Sig = sp.IndexedBase("Sigma_post", real=True)
mu_v = sp.MatrixSymbol("mu_star", nt.n(1), 1)
V_f = sp.MatrixSymbol("V_star", nt.n(1), nt.n(1))
J_star = sp.MatrixSymbol("J_star", nt.n(1), nt.P)
kappa = sp.IndexedBase("kappa", real=True)
v_f = sp.IndexedBase("v_star", real=True)
mu = sp.IndexedBase("mu_star", real=True)
p_hat = sp.IndexedBase("p_star", real=True)
log_z = sp.Symbol("log_Z", real=True)
dprior = sp.IndexedBase("delta_prior", positive=True)
log_lik = sp.Symbol("log_lik", real=True)
p_index = sp.Idx("p")
k_index = nt.k

for _name, _tex, _uni in (
    ("Lambda_post", r"\Lambda", "Λ"),
    ("Sigma_post", r"\Sigma", "Σ"),
    ("D_delta", r"D_{\delta}", "D_δ"),
    ("Xt_N", r"\tilde{X}_{N}", "X̃_N"),
    ("S_N", r"S_{N}", "S_N"),
    ("se", r"\mathrm{se}", "se"),
    ("zw", r"z^{\mathrm{W}}", "zᵂ"),
    ("theta", r"\theta", "θ"),
    ("mu_star", r"\mu^{*}", "μ*"),
    ("V_star", r"V^{*}", "V*"),
    ("J_star", r"J^{*}", "J*"),
    ("kappa", r"\kappa", "κ"),
    ("v_star", r"v^{*}", "v*"),
    ("p_star", r"\hat{p}^{*}", "p̂*"),
    ("log_Z", r"\log Z", "log Z"),
    ("delta_prior", r"\delta", "δ"),
    ("log_lik", r"\log p(\mathcal{D} \mid \theta)", "log p(D|θ)"),
):
    nt._register(_name, _tex, _uni)


#: the Laplace section (dense P x P posterior) is printed up to this many parameters, the
#: dense posterior's natural range and what the verifier forms densely; the structured section
#: (K-FAC, the diagonal) is printed at every size. The only part of the IR that depends on a
#: width.
MAX_PARAMS = 400


def applies(d: Derivation) -> bool:
    """Whether the curvature tools take the spec: a chain of layers, each with a bias."""
    spec = d.spec
    return not getattr(spec, "is_graph", False) and all(layer.bias for layer in spec.layers)


def dense_applies(d: Derivation) -> bool:
    """Whether the Laplace section is printed: :func:`applies` and at most
    :data:`MAX_PARAMS` parameters."""
    return applies(d) and d.spec.n_params <= MAX_PARAMS


def likelihood(d: Derivation) -> str:
    """The probabilistic reading of exp(-C_x), as the curvature tools name it."""
    spec = d.spec
    custom = spec.loss in spec.losses or d.output.name in spec.activations
    pair = None if custom else (d.output.name, spec.loss)
    return {
        ("softmax", "cross_entropy"): "categorical",
        ("sigmoid", "log_loss"): "bernoulli",
        ("identity", "mse"): "gaussian",
    }.get(pair, "unnormalised")


def is_glm(d: Derivation) -> bool:
    """One layer, one output, the loss matched to it: the closed form holds."""
    return d.depth == 1 and d.spec.outputs == 1 and d.loss.matching and not d.output.vector


def build_laplace(d: Derivation) -> None:
    """Add the Laplace approximation's equations (see the module doc)."""
    if not dense_applies(d):
        return
    L = d.depth
    l2 = d.spec.regularization.l2
    curvature = sp.MatMul(nt.N, nt.H)
    rhs = sp.MatAdd(curvature, -nt.lambda_2 * nt.I_w, D_delta) if l2 else curvature + D_delta
    d.add(
        Equation(
            "laplace.precision",
            SECTION,
            Lambda,
            rhs,
            prose=(
                "The posterior precision around the trained parameters: the curvature of the "
                "summed loss (N times the Hessian of C, without the training L2 term) plus the "
                "precision of a Gaussian prior N(0, D_delta^-1), D_delta = diag(delta). The prior "
                "the training cost implies is delta = lambda_2 on the weights and 0 on the "
                "biases, for which Lambda = N H. The Gauss-Newton structure puts G in place of H, "
                "the diagonal structure keeps the diagonal of the Gauss-Newton matrix.",
            ),
        )
    )
    d.add(
        Equation(
            "laplace.covariance",
            SECTION,
            Sigma,
            sp.Inverse(Lambda),
            prose=("The posterior covariance.",),
        )
    )
    if is_glm(d):
        d.add(
            Equation(
                "laplace.glm",
                SECTION,
                Lambda,
                sp.MatAdd(sp.MatMul(Xt_N.T, S_N, Xt_N), D_delta),
                prose=(
                    "For a GLM the same precision in closed form: the N training inputs with a "
                    "column of ones (the last parameter is the bias) and S_N = diag(s) of the "
                    "output curvature of each sample.",
                ),
            )
        )
        p = p_index
        d.add(
            Equation(
                "laplace.se",
                SECTION,
                se[p],
                sp.sqrt(Sig[p, p]),
                prose=("The standard error of coefficient p.",),
            )
        )
        d.add(
            Equation(
                "laplace.z",
                SECTION,
                zw[p],
                theta[p] / se[p],
                prose=("Its Wald z-score (the statistic statsmodels prints).",),
            )
        )
    k = k_index
    d.add(
        Equation(
            "laplace.predictive",
            SECTION,
            V_f,
            sp.MatMul(J_star, Sigma, J_star.T),
            prose=(
                "For a new input x*, the network linearised in theta: its output pre-activation "
                "has mean mu* = z^(L)(x*) and this covariance, with J* = dz^(L)/dtheta at x*.",
            ),
        )
    )
    if likelihood(d) in ("categorical", "bernoulli"):
        d.add(
            Equation(
                "laplace.kappa",
                SECTION,
                kappa[k],
                1 / sp.sqrt(1 + sp.pi / 8 * v_f[k]),
                prose=("The probit approximation: with v*_k the diagonal of V*,",),
            )
        )
        out = d.output
        f_of = out.f.subs(C.z, kappa[k] * mu[k]) if not out.vector else None
        if out.vector:  # softmax of kappa * mu
            j = nt.j
            f_of = sp.exp(kappa[k] * mu[k]) / sp.Sum(sp.exp(kappa[j] * mu[j]), (j, 1, nt.n(L)))
        d.add(
            Equation(
                "laplace.probit",
                SECTION,
                p_hat[k],
                f_of,
                prose=("the predicted probabilities are the output activation at kappa mu*.",),
            )
        )
    x_sum = sp.Sum(nt.C_x, (nt.sample, 1, nt.N))
    d.add(
        Equation(
            "laplace.evidence",
            SECTION,
            log_z,
            log_lik
            - sp.Rational(1, 2)
            * (
                sp.log(sp.Determinant(Lambda))
                - sp.Sum(sp.log(dprior[p_index]), (p_index, 1, nt.P))
                + sp.Sum(dprior[p_index] * theta[p_index] ** 2, (p_index, 1, nt.P))
            ),
            prose=(
                "The log marginal likelihood (the evidence), with log p(D | theta) = ",
                -x_sum,
                " for the categorical and Bernoulli likelihoods (minus N n_L log sqrt(2 pi) for "
                "the Gaussian one of mse, unit variance); optimize_prior_precision() maximises "
                "it over delta.",
            ),
        )
    )


# -- structured curvature: K-FAC and the diagonal of the Gauss-Newton matrix ------------------

STRUCTURED = "Structured curvature: K-FAC factors and the Gauss-Newton diagonal"
c_out = sp.Symbol("c", integer=True, positive=True)  # columns of the output factor R_x
R_x = sp.MatrixSymbol("R_x", nt.P, c_out)  # placeholder shape; per layer below
Sign_x = sp.MatrixSymbol("Sign_x", c_out, c_out)
_register = nt._register
_register("R_x", "R_{x}", "Rₓ")
_register("Sign_x", r"\Sigma^{\pm}_{x}", "Σ±ₓ")
_register("c", "c", "c")


def _m(l: int) -> sp.MatrixSymbol:
    _register(f"M_{l}_x", f"M^{{({l})}}_{{x}}", f"M{nt.sup(l)}ₓ")
    return sp.MatrixSymbol(f"M_{l}_x", nt.n(l), c_out)


def _fd(l: int) -> sp.MatrixSymbol:
    _register(f"Fd_{l}_x", f"F'^{{({l})}}_{{x}}", f"F′{nt.sup(l)}ₓ")
    return sp.MatrixSymbol(f"Fd_{l}_x", nt.n(l), nt.n(l))


def kfac_a(l: int) -> sp.MatrixSymbol:
    _register(f"KA_{l}", f"\\mathcal{{A}}_{{{l}}}", f"𝒜{nt.sub(str(l))}")
    return sp.MatrixSymbol(f"KA_{l}", nt.n(l - 1), nt.n(l - 1))


def kfac_b(l: int) -> sp.MatrixSymbol:
    _register(f"KB_{l}", f"\\mathcal{{B}}_{{{l}}}", f"ℬ{nt.sub(str(l))}")
    return sp.MatrixSymbol(f"KB_{l}", nt.n(l), nt.n(l))


def kfac_block(l: int) -> sp.MatrixSymbol:
    size = nt.n(l) * nt.n(l - 1)
    _register(f"GK_{l}", f"G^{{\\mathrm{{K}}}}_{{W^{{({l})}}}}", f"Gᴷ{nt.sub(str(l))}")
    return sp.MatrixSymbol(f"GK_{l}", size, size)


def diag_w(l: int) -> sp.IndexedBase:
    _register(f"gdW_{l}", f"g^{{({l})}}", f"g{nt.sup(l)}")
    return sp.IndexedBase(f"gdW_{l}", real=True)


def diag_b(l: int) -> sp.IndexedBase:
    _register(f"gdb_{l}", f"\\gamma^{{({l})}}", f"γ{nt.sup(l)}")
    return sp.IndexedBase(f"gdb_{l}", real=True)


def build_structured(d: Derivation) -> None:
    """K-FAC factors per layer and the exact diagonal of the Gauss-Newton matrix (the ``kfac``
    and ``diag`` structures of the Laplace approximation), without any P x P matrix."""
    if not applies(d):
        return
    L = d.depth
    i, j = nt.i, nt.j
    cc = sp.Symbol("r", integer=True)  # a column of R_x
    M = {l: _m(l) for l in range(1, L + 1)}
    d.add(
        Equation(
            f"kfac.M.{L}",
            STRUCTURED,
            M[L],
            sp.MatrixSymbol("R_x", nt.n(L), c_out),
            prose=(
                "Factor the Gauss-Newton output curvature of each sample as S^G_x = R_x "
                "Sigma^±_x R_x^T (R_x = diag(sqrt(s)) for an element-wise output, diag(sqrt(a)) - "
                "a sqrt(a)^T for softmax; Sigma^±_x the signs of a curvature that is not "
                "positive) and carry its c columns back through the layers:",
            ),
        )
    )
    for l in range(L - 1, 0, -1):
        d.add(
            Equation(
                f"kfac.M.{l}",
                STRUCTURED,
                M[l],
                sp.MatMul(_fd(l), nt.W(l + 1).T, M[l + 1]),
                prose=(f"with F'({l})_x = diag(f'_{l}(z^({l}))) of the sample.",),
            )
        )
    for l in range(1, L + 1):
        A_prev = nt.A(l - 1)
        d.add(
            Equation(
                f"kfac.A.{l}",
                STRUCTURED,
                kfac_a(l),
                sp.MatMul(1 / nt.N, A_prev.T, A_prev),
                prose=(
                    f"The K-FAC factors of layer {l} (type-2 Fisher, the 'expand' form), over "
                    "the N training samples stored row-wise:",
                ),
            )
        )
        d.add(
            Equation(
                f"kfac.B.{l}",
                STRUCTURED,
                kfac_b(l),
                sp.MatMul(1 / nt.N, nt.SampleSum(sp.MatMul(M[l], Sign_x, M[l].T))),
            )
        )
        d.add(
            Equation(
                f"kfac.block.{l}",
                STRUCTURED,
                kfac_block(l),
                sp.kronecker_product(kfac_b(l), kfac_a(l)),
                prose=(
                    f"approximate the Gauss-Newton block of W({l}) (row-major) in the data term "
                    f"of C; that of b({l}) is B_{l} exactly.",
                ),
            )
        )
        mlx = sp.Indexed(sp.IndexedBase(f"M_{l}_x", real=True), j, cc)
        alx = nt.a(l - 1)[i] if l > 1 else nt.x[i]
        sigma = sp.Indexed(sp.IndexedBase("Sign_x", real=True), cc, cc)
        inner = sp.Sum(sigma * mlx**2, (cc, 1, c_out))
        reg = nt.lambda_2 / nt.N if d.spec.regularization.l2 else 0
        d.add(
            Equation(
                f"diag.W.{l}",
                STRUCTURED,
                diag_w(l)[j, i],
                sp.Sum(inner * alx**2, (nt.sample, 1, nt.N)) / nt.N + reg,
                prose=(
                    "The diagonal of the Gauss-Newton matrix G, exact and without forming it: ",
                    f"the entry of w({l})_ji",
                ),
            )
        )
        d.add(
            Equation(
                f"diag.b.{l}",
                STRUCTURED,
                diag_b(l)[j],
                sp.Sum(inner, (nt.sample, 1, nt.N)) / nt.N,
                prose=(f"and of b({l})_j.",),
            )
        )
