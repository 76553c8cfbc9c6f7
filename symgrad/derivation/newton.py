"""The steps that use curvature, printed for their optimiser only: Newton's method (``newton``:
the step, the exact solve with its damping raised until H + mu_s I has a Cholesky factor, and the
conjugate-gradient path, as the trainer's ``newton_direction`` does them,
``templates/numpy/newton.py.jinja``), L-BFGS (``lbfgs``: the two-loop recursion, the pair, the
strong Wolfe line search, ``lbfgs.py.jinja``) and trust-region Newton-CG (``trust_ncg``: the
quadratic model, Steihaug-Toint CG, the ratio and the radius rule, ``trust_ncg.py.jinja``); the
last two live in :mod:`.lbfgs` and :mod:`.trust`. The templates lay out the loops; the
arithmetic inside them is printed from these equations (:func:`symgrad.codegen.step.print_vector`).

The system is ``(H + mu I) p = g``: ``g`` is the step's gradient of :mod:`.update` (the smooth part
of the batch cost: data and L2 terms; an L1 term is the proximal step after the Newton step) and
``H`` its Hessian. Conjugate gradients keep ``rho = r^T r`` from one iteration to the next, as the
template keeps ``rho``: ``beta`` is the new ``r^T r`` over it. The loop is printed from these
equations (:mod:`symgrad.codegen.step`): ``A = H + mu I`` is distributed, so ``A d`` is
``H d + mu d`` with ``H d`` one R-operator sweep, computed once per iteration for the curvature
``d^T A d`` and the residual; the curvature too is computed once, for the step length and for
the stopping rule.
"""

from __future__ import annotations

import sympy as sp

from ..spec import NEWTON_EXACT_MAX
from . import notation as nt
from .ir import Derivation, Equation
from .lbfgs import build_lbfgs
from .trust import build_trust_ncg

#: the conjugate-gradient path of the trainer's newton_direction
CG_MAX_ITER = 250
CG_REL_TOL = 1e-20


#: the damping the exact solve uses (mu, or raised until H + mu_s I has a Cholesky factor) and
#: the Hessian's scale it starts from (the largest |H_ii|)
SHIFT = sp.Symbol("mu_s", nonnegative=True)
SHIFT_SCALE = sp.Symbol("s_H", nonnegative=True)
nt._register("mu_s", r"\mu_s", "μₛ")
nt._register("s_H", "s_H", "s_H")


def damped(mu: sp.Expr = nt.mu) -> sp.MatrixExpr:
    """``H + mu I``."""
    return sp.MatAdd(nt.H, mu * sp.Identity(nt.P))


def shift_raise() -> sp.Expr:
    """The next damping while ``H + mu_s I`` has no Cholesky factor: ``10 max(mu_s, 1e-8 s_H)``."""
    return 10 * sp.Max(SHIFT, sp.Mul(sp.Float("1e-8"), SHIFT_SCALE, evaluate=False))


def build_newton(d: Derivation, section: str) -> None:
    """Newton's step, its exact solve and its conjugate-gradient path (keys ``newton*``)."""
    mu, g = nt.mu, nt.g_v
    A = damped()
    system = sp.Eq(sp.MatMul(A, nt.p_v), g, evaluate=False)
    x1 = sp.Symbol("x")
    d.add(
        Equation(
            "newton",
            section,
            nt.theta_v,
            sp.MatAdd(nt.theta_v, -nt.eta * nt.p_v),
            relation="<-",
            prose=(
                "Newton's method: seed 003's ideal learning rate ",
                1 / sp.Derivative(sp.Function("f")(x1), (x1, 2)),
                " in one dimension becomes the inverse Hessian in several. The direction p solves ",
                system,
                ", with g the gradient above (the data and L2 terms; ",
                "an L1 term is the proximal step after the Newton step"
                if d.spec.regularization.l1
                else "no L1 term",
                "), H the Hessian of the same smooth cost, the damping ",
                mu,
                " (optimizer.damping) and the learning rate ",
                nt.eta,
                ".",
            ),
            kernel=nt.theta - nt.eta * sp.Symbol("p", real=True),
        )
    )
    mu_s, scale = SHIFT, SHIFT_SCALE
    d.add(
        Equation(
            "newton.shift",
            section,
            mu_s,
            shift_raise(),
            relation="<-",
            prose=(
                f"Up to {NEWTON_EXACT_MAX:,} parameters p is solved for exactly, by a Cholesky "
                "factorisation of ",
                damped(mu_s),
                ", from ",
                sp.Eq(mu_s, mu, evaluate=False),
                ". When it has none (H + mu I is not positive definite: H is indefinite where "
                "the cost is not convex, e.g. near a saddle) the damping is raised until it has "
                "one, with ",
                scale,
                " the largest |H_ii| (1 when every H_ii is 0):",
            ),
            kernel=shift_raise(),
        )
    )
    d.add(
        Equation(
            "newton.exact",
            section,
            nt.p_v,
            sp.MatMul(sp.Inverse(damped(mu_s)), g),
            prose=(
                "and p is solved with the first damping ",
                mu_s,
                " that has one (",
                sp.Eq(mu_s, mu, evaluate=False),
                " when H + mu I has one already). ",
                damped(mu_s),
                " is then positive definite, so p descends: ",
                sp.Gt(sp.MatMul(g.T, nt.p_v), 0, evaluate=False),
                " whenever g is not 0, and a small enough step theta - eta p lowers the cost.",
            ),
        )
    )
    _conjugate_gradients(d, section, A)


def _conjugate_gradients(d: Derivation, section: str, A: sp.MatrixExpr) -> None:
    P, r, dv, p = nt.P, nt.r_v, nt.d_v, nt.p_v
    alpha, rho, beta = nt.alpha, nt.rho, nt.beta
    rows = (
        (
            "newton.cg.rho",
            rho,
            sp.MatMul(r.T, r),
            "=",
            (
                f"Above {NEWTON_EXACT_MAX:,} parameters p comes from conjugate gradients on "
                "Hessian-vector products (the R-operator sweep), from ",
                sp.Eq(p, sp.ZeroMatrix(P, 1), evaluate=False),
                " and ",
                sp.Eq(r, nt.g_v, evaluate=False),
                ", with the search direction d starting at r. The iteration stops when the "
                "squared norm of r falls below 1e-20 times its first value, after "
                f"min(P, {CG_MAX_ITER}) iterations, or at the first direction d along which ",
                A,
                " is not positive (",
                sp.Le(sp.MatMul(dv.T, A, dv), 0, evaluate=False),
                ", the indefinite case), keeping the p reached so far, which descends (each "
                "iteration adds a multiple of d with ",
                sp.Gt(sp.MatMul(nt.g_v.T, dv), 0, evaluate=False),
                "); when that happens at once p = g, the steepest descent direction. Each "
                "iteration starts from the squared norm of the residual, kept from the previous "
                "iteration,",
            ),
        ),
        (
            "newton.cg.alpha",
            alpha,
            sp.MatMul(rho, sp.Inverse(sp.MatMul(dv.T, A, dv))),
            "=",
            ("takes the step length",),
        ),
        ("newton.cg", p, sp.MatAdd(p, alpha * dv), "<-", ("moves p and the residual",)),
        ("newton.cg.r", r, sp.MatAdd(r, -alpha * sp.MatMul(A, dv)), "<-", ()),
        (
            "newton.cg.beta",
            beta,
            sp.MatMul(1 / rho, r.T, r),
            "=",
            ("and takes the next search direction with the new squared norm of r over the old,",),
        ),
        ("newton.cg.d", dv, sp.MatAdd(r, beta * dv), "<-", ()),
    )
    for key, lhs, rhs, relation, prose in rows:
        d.add(Equation(key, section, lhs, rhs, relation=relation, prose=prose))


# ---------------------------------------------------------------------------------------------
# L-BFGS (optimizer ``lbfgs``) and trust-region Newton-CG (``trust_ncg``)


#: the builders of the optimisers whose step needs curvature (``first_order=False``)
BUILDERS = {"newton": build_newton, "lbfgs": build_lbfgs, "trust_ncg": build_trust_ncg}
