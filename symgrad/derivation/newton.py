"""The steps that use curvature, printed for their optimiser only: Newton's method (``newton``:
the step, the exact solve with its damping raised until H + mu_s I has a Cholesky factor, and the
conjugate-gradient path, as the trainer's ``newton_direction`` does them,
``templates/numpy/newton.py.jinja``), L-BFGS (``lbfgs``: the two-loop recursion, the pair, the
strong Wolfe line search, ``lbfgs.py.jinja``) and trust-region Newton-CG (``trust_ncg``: the
quadratic model, Steihaug-Toint CG, the ratio and the radius rule, ``trust_ncg.py.jinja``). The
templates lay out the loops; the arithmetic inside them is printed from these equations
(:func:`symgrad.codegen.step.print_vector`).

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
            "lbfgs",
            theta,
            sp.MatAdd(theta, alpha_k * p),
            "<-",
            (
                "The step length ",
                alpha_k,
                " comes from a line search on ",
                phi(a),
                ", the batch cost C_B at theta + a p (a >= 0), with ",
                sp.Eq(at[dphi_0], dot(g, p), evaluate=False),
                ": it starts at 1, brackets a step and zooms into the bracket (bisection, at "
                "most 30 evaluations) until the strong Wolfe conditions hold, sufficient decrease ",
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
                sp.Gt(sp.MatMul(dv.T, H, dv), 0, evaluate=False),
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
        kernel = {"trust.radius": radius_rule(), "trust": accepts()}.get(key)
        d.add(Equation(key, section, lhs, rhs, relation=relation, prose=prose, kernel=kernel))


#: the builders of the optimisers whose step needs curvature (``first_order=False``)
BUILDERS = {"newton": build_newton, "lbfgs": build_lbfgs, "trust_ncg": build_trust_ncg}
