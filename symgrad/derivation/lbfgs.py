"""L-BFGS's step as equations (optimizer ``lbfgs``, keys ``lbfgs*``): the two-loop recursion,
the new pair (s_i, y_i) and its curvature test, and the strong Wolfe line search, as
``templates/numpy/lbfgs.py.jinja`` computes them (its arithmetic is printed from these).
"""

from __future__ import annotations

import sympy as sp

from . import notation as nt
from .ir import Derivation, Equation


def _vector(name: str, tex: str, uni: str) -> sp.MatrixSymbol:
    return nt._matrix(name, nt.P, 1, tex, uni)


def _scalar(name: str, tex: str, uni: str, **assumptions) -> sp.Symbol:
    nt._register(name, tex, uni)
    return sp.Symbol(name, **assumptions)


#: L-BFGS: the pair (s_i, y_i) and its rho_i, the recursion's q, coefficients a_i and b_i, the
#: initial scaling gamma, the next gradient (after the step) and the step length
s_i = _vector("s_i", "s_i", "sᵢ")
y_i = _vector("y_i", "y_i", "yᵢ")
q_v = _vector("q_v", "q", "q")
g_next = _vector("g_next", "g_{k+1}", "gₖ₊₁")
rho_i = _scalar("rho_i", r"\rho_i", "ρᵢ", real=True)
a_i = _scalar("a_i", r"\alpha_i", "αᵢ", real=True)
b_i = _scalar("b_i", r"\beta_i", "βᵢ", real=True)
gamma_k = _scalar("gamma_k", r"\gamma_k", "γₖ", positive=True)
alpha_k = _scalar("alpha_k", r"\alpha_k", "αₖ", positive=True)
c_1 = _scalar("c_1", "c_1", "c₁", positive=True)
c_2 = _scalar("c_2", "c_2", "c₂", positive=True)
phi = sp.Function("phi", real=True)
nt._register("phi", r"\phi", "φ")
#: the line search's numbers, as the trainer names them: phi(0), phi'(0), phi(alpha), phi'(alpha)
phi_0 = _scalar("phi_0", r"\phi(0)", "φ(0)", real=True)
dphi_0 = _scalar("dphi_0", r"\phi'(0)", "φ′(0)", real=True)
phi_a = _scalar("phi_a", r"\phi(\alpha_k)", "φ(αₖ)", real=True)
dphi_a = _scalar("dphi_a", r"\phi'(\alpha_k)", "φ′(αₖ)", real=True)
#: the curvature test of a new pair: kept when s^T y > PAIR_EPS |s| |y|
PAIR_EPS = sp.Float("1e-10")
s_norm = _scalar("s_norm", r"\|s_i\|", "‖sᵢ‖", nonnegative=True)
y_norm = _scalar("y_norm", r"\|y_i\|", "‖yᵢ‖", nonnegative=True)


def keeps_pair() -> sp.Basic:
    """Whether a new pair is kept: ``s^T y > 1e-10 |s| |y|``."""
    return sp.Gt(dot(s_i, y_i), PAIR_EPS * s_norm * y_norm, evaluate=False)


def dot(u: sp.MatrixExpr, v: sp.MatrixExpr) -> sp.MatrixExpr:
    """``u^T v``."""
    return sp.MatMul(u.T, v)


def wolfe() -> tuple[sp.Basic, sp.Basic]:
    """The strong Wolfe conditions over the line search's numbers (sufficient decrease,
    curvature): what the trainer's line search tests."""
    return (
        sp.Le(phi_a, phi_0 + c_1 * alpha_k * dphi_0),
        sp.Le(sp.Abs(dphi_a), c_2 * sp.Abs(dphi_0)),
    )


def build_lbfgs(d: Derivation, section: str) -> None:
    """L-BFGS: the pair, the two-loop recursion, the step and its line search (keys ``lbfgs*``)."""
    g, p, theta = nt.g_v, nt.p_v, nt.theta_v
    a = sp.Symbol("a", real=True)
    armijo, curvature = wolfe()
    at = {phi_0: phi(0), dphi_0: sp.Subs(sp.Derivative(phi(a), a), a, 0), phi_a: phi(alpha_k)}
    at[dphi_a] = sp.Subs(sp.Derivative(phi(a), a), a, alpha_k)
    rows = (
        (
            "lbfgs.q0",
            q_v,
            g,
            "=",
            (
                "L-BFGS (optimizer lbfgs): each batch takes one iteration. The direction p comes "
                "from the pairs (s_i, y_i) of the last optimizer.history steps (kept across "
                "batches and epochs, oldest dropped first) by the two-loop recursion, from",
            ),
        ),
        (
            "lbfgs.rho",
            rho_i,
            sp.Inverse(dot(y_i, s_i)),
            "=",
            ("and, for each kept pair from the newest to the oldest,",),
        ),
        ("lbfgs.a", a_i, sp.MatMul(rho_i, dot(s_i, q_v)), "=", ()),
        ("lbfgs.q", q_v, sp.MatAdd(q_v, -a_i * y_i), "<-", ()),
        (
            "lbfgs.gamma",
            gamma_k,
            sp.MatMul(dot(s_i, y_i), sp.Inverse(dot(y_i, y_i))),
            "=",
            (
                "then the initial scaling from the newest pair (",
                sp.Eq(gamma_k, 1, evaluate=False),
                " when no pair is kept),",
            ),
        ),
        ("lbfgs.r0", nt.r_v, gamma_k * q_v, "=", ()),
        (
            "lbfgs.b",
            b_i,
            sp.MatMul(rho_i, dot(y_i, nt.r_v)),
            "=",
            ("and, for each kept pair from the oldest to the newest,",),
        ),
        ("lbfgs.r", nt.r_v, sp.MatAdd(nt.r_v, (a_i - b_i) * s_i), "<-", ()),
        (
            "lbfgs.p",
            p,
            -nt.r_v,
            "=",
            (
                "The direction is minus the result, -H_k g with H_k the L-BFGS approximation of "
                "the inverse Hessian (positive definite, so p descends:",
                sp.Lt(dot(g, p), 0, evaluate=False),
                "):",
            ),
        ),
        (
            "lbfgs.slope",
            dphi_0,
            dot(g, p),
            "=",
            (
                "The step length comes from a line search along p, which reads the slope of the "
                "batch cost at the start,",
            ),
        ),
        (
            "lbfgs.slope.a",
            dphi_a,
            dot(g_next, p),
            "=",
            (
                "and at a trial step length ",
                alpha_k,
                " from the batch gradient there (",
                g_next,
                " at theta + ",
                alpha_k,
                " p):",
            ),
        ),
        (
            "lbfgs",
            theta,
            sp.MatAdd(theta, alpha_k * p),
            "<-",
            (
                "The step length ",
                alpha_k,
                " comes from a line search on ",
                phi(a),
                ", the batch cost C_B at theta + a p (a >= 0), whose slopes ",
                at[dphi_0],
                " and ",
                at[dphi_a],
                " are those above: it starts at 1, brackets a step and zooms into the bracket "
                "(bisection, at most 30 evaluations) until the strong Wolfe conditions hold, "
                "sufficient decrease ",
                armijo.xreplace(at),
                " and curvature ",
                curvature.xreplace(at),
                f" ({c_1} = optimizer.c1, {c_2} = optimizer.c2). When no step satisfies them "
                "within the evaluations the best sufficient-decrease step found is taken (none: "
                "no step, and the history restarts).",
            ),
        ),
        (
            "lbfgs.s",
            s_i,
            alpha_k * p,
            "=",
            ("The new pair is the step and the change of the batch gradient,",),
        ),
        (
            "lbfgs.y",
            y_i,
            sp.MatAdd(g_next, -g),
            "=",
            (
                "with g_{k+1} the gradient at the new parameters on the same batch; it is kept "
                "when ",
                keeps_pair(),
                " (the curvature a positive definite H_k needs), else dropped.",
            ),
        ),
    )
    for key, lhs, rhs, relation, prose in rows:
        kernel = {"lbfgs": sp.Tuple(armijo, curvature), "lbfgs.y": keeps_pair()}.get(key)
        d.add(Equation(key, section, lhs, rhs, relation=relation, prose=prose, kernel=kernel))
