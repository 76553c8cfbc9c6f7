"""Trust-region Newton-CG's step as equations (optimizer ``trust_ncg``, keys ``trust*``): the
quadratic model, Steihaug-Toint conjugate gradients inside the radius, the ratio of actual to
predicted reduction and the radius rule, as ``templates/numpy/trust_ncg.py.jinja`` computes
them (its arithmetic is printed from these).
"""

from __future__ import annotations

import sympy as sp

from . import notation as nt
from .ir import Derivation, Equation
from .lbfgs import _scalar, dot

#: trust region: the radius, its largest value, the least ratio that takes a step, the ratio,
#: the trial cost, the boundary step tau and whether p reached the boundary
Delta = _scalar("Delta", r"\Delta", "Δ", positive=True)
Delta_max = _scalar("Delta_max", r"\Delta_{\max}", "Δₘₐₓ", positive=True)
eta_a = _scalar("eta_a", r"\eta_a", "ηₐ", nonnegative=True)
rho_k = _scalar("rho_k", r"\rho_k", "ρₖ", real=True)
C_trial = _scalar("C_trial", r"C_B(\theta + p)", "C_B(θ + p)", real=True)
tau = _scalar("tau", r"\tau", "τ", nonnegative=True)
boundary = _scalar("boundary", r"\|p\| = \Delta", "‖p‖ = Δ", real=True)
model = sp.Function("m_k", real=True)
nt._register("m_k", "m_k", "mₖ")
#: Steihaug's stopping tolerance: |r| <= min(1/2, sqrt|g|) |g|
TRUST_CG_MAX_ITER = 250


def predicted(p: sp.MatrixExpr = nt.p_v) -> sp.MatrixExpr:
    """``m(0) - m(p) = -(g^T p + p^T H p / 2)``, the model's predicted reduction."""
    return -sp.MatAdd(dot(nt.g_v, p), sp.MatMul(sp.Rational(1, 2), p.T, nt.H, p))


def radius_rule() -> sp.Expr:
    """The next radius from the ratio and whether p reached the boundary."""
    quarter, three = sp.Rational(1, 4), sp.Rational(3, 4)
    return sp.Piecewise(
        (quarter * Delta, rho_k < quarter),
        (sp.Min(2 * Delta, Delta_max), sp.And(rho_k > three, boundary)),
        (Delta, True),
    )


def accepts() -> sp.Basic:
    """Whether the step is taken."""
    return sp.Gt(rho_k, eta_a)


def build_trust_ncg(d: Derivation, section: str) -> None:
    """Trust-region Newton-CG: the model, Steihaug's CG, the ratio, the radius (``trust*``)."""
    g, p, r, dv, H, theta = nt.g_v, nt.p_v, nt.r_v, nt.d_v, nt.H, nt.theta_v
    alpha, beta, rho = nt.alpha, nt.beta, nt.rho
    quad = sp.MatMul(sp.Rational(1, 2), p.T, H, p)
    on = sp.MatAdd(p, tau * dv)
    #: the curvature test of each CG iteration (the step's kernel: the trainer's test)
    positive = sp.Gt(sp.MatMul(dv.T, H, dv), 0, evaluate=False)
    rows = (
        (
            "trust.model",
            model(p),
            sp.MatAdd(nt.C_B * sp.Identity(1), dot(g, p), quad),
            "=",
            (
                "Trust-region Newton-CG (optimizer trust_ncg): each batch takes one iteration. "
                "The step p minimises the quadratic model of the batch cost, with g its gradient "
                "and H its Hessian (used through Hessian-vector products only),",
            ),
        ),
        (
            "trust.cg.rho",
            rho,
            dot(r, r),
            "=",
            (
                "inside the trust region ",
                sp.Le(sp.Symbol("|p|"), Delta, evaluate=False),
                " by Steihaug-Toint conjugate gradients from ",
                sp.Eq(p, sp.ZeroMatrix(nt.P, 1), evaluate=False),
                ", ",
                sp.Eq(r, g, evaluate=False),
                " and ",
                sp.Eq(dv, -g, evaluate=False),
                f". Each iteration (at most min(P, {TRUST_CG_MAX_ITER})) keeps",
            ),
        ),
        (
            "trust.cg.alpha",
            alpha,
            sp.MatMul(rho, sp.Inverse(sp.MatMul(dv.T, H, dv))),
            "=",
            (
                "and, when ",
                positive,
                " and p + alpha d stays inside the region, takes the step length",
            ),
        ),
        ("trust.cg", p, sp.MatAdd(p, alpha * dv), "<-", ()),
        ("trust.cg.r", r, sp.MatAdd(r, alpha * sp.MatMul(H, dv)), "<-", ()),
        (
            "trust.cg.beta",
            beta,
            sp.MatMul(1 / rho, dot(r, r)),
            "=",
            (
                "stopping when |r| <= min(1/2, sqrt(|g|)) |g| (a superlinear rate near the "
                "optimum), else with the next direction from",
            ),
        ),
        ("trust.cg.d", dv, sp.MatAdd(-r, beta * dv), "<-", ()),
        (
            "trust.cg.tau",
            tau,
            sp.MatMul(
                sp.MatAdd(
                    -dot(p, dv),
                    sp.sqrt(
                        sp.MatAdd(
                            sp.MatPow(dot(p, dv), 2),
                            sp.MatMul(dot(dv, dv), Delta**2 * sp.Identity(1) - dot(p, p)),
                        )
                    ),
                ),
                sp.Inverse(dot(dv, dv)),
            ),
            "=",
            (
                "When d has non-positive curvature, or the step would leave the region, p goes "
                "along d to the boundary and the iteration stops: ",
                sp.Eq(sp.Symbol("|p + tau d|"), Delta, evaluate=False),
                " at",
            ),
        ),
        ("trust.cg.boundary", p, on, "<-", ()),
        (
            "trust.rho",
            rho_k,
            sp.MatMul(
                sp.MatAdd(nt.C_B * sp.Identity(1), -C_trial * sp.Identity(1)),
                sp.Inverse(predicted(p)),
            ),
            "=",
            (
                "The ratio of the actual reduction of the batch cost to the reduction the model "
                "predicted (",
                sp.Eq(model(0) - model(p), predicted(p), evaluate=False),
                ", positive: every CG iterate lowers the model)",
            ),
        ),
        (
            "trust",
            theta,
            sp.MatAdd(theta, p),
            "<-",
            (
                "decides whether the step is taken, when ",
                accepts(),
                " (",
                eta_a,
                " = optimizer.accept: a rejected step leaves theta as it was, so the batch cost "
                "never rises), and",
            ),
        ),
        (
            "trust.radius",
            Delta,
            radius_rule(),
            "<-",
            (
                "how the radius changes (from ",
                Delta,
                " = optimizer.radius, at most ",
                Delta_max,
                " = optimizer.max_radius; kept with the checkpoints):",
            ),
        ),
    )
    for key, lhs, rhs, relation, prose in rows:
        kernels = {"trust.radius": radius_rule(), "trust": accepts(), "trust.cg.alpha": positive}
        kernel = kernels.get(key)
        d.add(Equation(key, section, lhs, rhs, relation=relation, prose=prose, kernel=kernel))
