"""Newton's method, printed only for the ``newton`` optimiser: the step, the exact solve and the
conjugate-gradient path, as the trainer's ``newton_direction`` does them
(``templates/numpy/newton.py.jinja``).

The system is ``(H + mu I) p = g``: ``g`` is the step's gradient of :mod:`.update` (the smooth part
of the batch cost: data and L2 terms; an L1 term is the proximal step after the Newton step) and
``H`` its Hessian. Conjugate gradients keep ``rho = r^T r`` from one iteration to the next, as the
template keeps ``rr``: ``beta`` is the new ``r^T r`` over it.
"""

from __future__ import annotations

import sympy as sp

from ..spec import NEWTON_EXACT_MAX
from . import notation as nt
from .ir import Derivation, Equation

#: the conjugate-gradient path of the trainer's newton_direction
CG_MAX_ITER = 250
CG_REL_TOL = 1e-20


def damped() -> sp.MatrixExpr:
    """``H + mu I``."""
    return sp.MatAdd(nt.H, nt.mu * sp.Identity(nt.P))


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
    d.add(
        Equation(
            "newton.exact",
            section,
            nt.p_v,
            sp.MatMul(sp.Inverse(A), g),
            prose=(
                f"Up to {NEWTON_EXACT_MAX:,} parameters p is solved for exactly "
                "(numpy.linalg.solve; least squares when the matrix is singular). Nothing checks "
                "that ",
                A,
                " is positive definite: when it is indefinite the solve still returns its p, "
                "which may then point uphill, so choose the damping large enough (or use "
                "Gauss-Newton).",
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
                ", the indefinite case), keeping the p reached so far: p = 0, no step, when "
                "that happens at once. Each iteration starts from the squared norm of the "
                "residual, kept from the previous iteration,",
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
