"""Rows of L-BFGS (``lbfgs*``) and trust-region Newton-CG (``trust*``), printed for those
optimisers only.

Each is checked on whole-batch steps of a copy of the trainer from the verifier's point, with
the printed equations evaluated on the reference gradient, cost and Hessian:

- L-BFGS: the first step must lie along the printed direction with no pair kept (p = -g) and
  its step length must meet the printed strong Wolfe conditions (on the reference cost); the
  printed pair (s, y) and the printed two-loop recursion with it give the direction of the
  second step, which the trainer's second step must lie along (rows ``lbfgs``, ``lbfgs.q``,
  ``lbfgs.r``: the loop assignments are checked by that direction);
- trust region: the printed Steihaug-Toint iteration from the spec's radius gives p, the
  printed ratio and test decide the step, the printed rule the next radius; the trainer's
  parameters and radius after one step must equal them.

With an L1 term the step ends with the soft threshold: the biases are compared only.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import sympy as sp

from .bindings import Net
from .common import EVAL_ERRORS, HESSIAN_MAX
from .compare import compare
from .newton import CGNet, _assign
from .report import Row

if TYPE_CHECKING:
    from .context import Context

_ERRORS = (*EVAL_ERRORS, np.linalg.LinAlgError, ZeroDivisionError)


def curvature_rows(ctx: Context, eqs) -> dict[str, Row]:
    """Rows of the ``lbfgs*`` or ``trust*`` assignments (see the module doc)."""
    by_key = {eq.key: eq for eq in eqs}
    try:
        if any(k.startswith("lbfgs") for k in by_key):
            return _lbfgs_rows(ctx, by_key)
        return _trust_rows(ctx, by_key)
    except _ERRORS as exc:
        note = f"not evaluable: {exc}"
        return {k: Row(k, "update", "FAIL", note=note) for k in by_key}


def _all_equations(ctx: Context) -> dict:
    return {eq.key: eq for eq in ctx.derivation.equations}


def _at(ctx: Context, theta: np.ndarray) -> tuple[float, np.ndarray]:
    """The smooth batch cost (data and L2) and its gradient at ``theta`` (public order)."""
    W, b = ctx.unflatten(theta)
    st = ctx.ref.state(W, b, ctx.state.X, ctx.state.Y, ctx.m)
    net = Net(ctx, st)
    g = net.smooth_gradient()
    l1 = ctx.ref.l1 / ctx.m * float(np.abs(theta * ctx.weight_mask).sum())
    return ctx.ref.cost(st) - l1, np.asarray(g, dtype=np.float64)


def _twin(ctx: Context, steps: int, log: str):
    """A copy of the trainer after ``steps`` whole-batch steps, its parameters after each."""
    tr = ctx.trainer
    twin = type(tr)(seed=ctx.seed, dtype=ctx.dtype)
    twin.set_flat(tr.get_flat())
    thetas = [np.asarray(twin.get_flat(), dtype=np.float64)]
    for _ in range(steps):
        twin.fit(ctx.state.X, ctx.state.Y, epochs=1, batch_size=ctx.m, shuffle=False, track=False)
        thetas.append(np.asarray(twin.get_flat(), dtype=np.float64))
    return twin, thetas, list(getattr(twin, log, []))


def _pick(ctx: Context) -> slice | np.ndarray:
    return slice(None) if not ctx.ref.l1 else ~ctx.weight_mask.astype(bool)


def _run(ctx: Context, eqs: dict, keys, vectors: dict, scalars: dict) -> None:
    for key in keys:
        _assign(ctx, eqs[key], vectors, scalars)


def _truth(expr: sp.Basic, values: dict) -> bool:
    return bool(expr.subs(values))


def _lbfgs_rows(ctx: Context, eqs: dict) -> dict[str, Row]:
    full = _all_equations(ctx)
    opt = ctx.spec.optimizer
    consts = {"c_1": float(opt.c1), "c_2": float(opt.c2)}
    theta0 = ctx.theta0
    phi_0, g0 = _at(ctx, theta0)
    keys = [k for k in eqs]
    if not g0.any():
        note = "not evaluable: the gradient is zero at this draw"
        return {k: Row(k, "update", "FAIL", note=note) for k in keys}
    twin, thetas, log = _twin(ctx, 2, "line_search_log")
    pick = _pick(ctx)
    # the first step: no pair kept (gamma = 1)
    vectors = {"g_v": g0[:, None]}
    scalars = {"gamma_k": 1.0}
    _run(ctx, full, ["lbfgs.q0", "lbfgs.r0", "lbfgs.p"], vectors, scalars)
    p1 = vectors["p_v"][:, 0]
    d1 = thetas[1] - theta0
    alpha1 = float(d1[pick] @ p1[pick]) / max(float(p1[pick] @ p1[pick]), 1e-300)
    if not log or log[0][0] == 0.0:
        alpha1 = 0.0
    scalars["alpha_k"] = alpha1
    vectors["p_v"] = p1[:, None]
    step1 = MatrixEval(ctx, vectors, scalars, full["lbfgs"].rhs) - theta0
    slopes = _slope_pairs(ctx, full, log, theta0, g0, p1, alpha1)
    pairs = [("rhs", step1[pick], "trainer fit (1 step)", d1[pick]), *slopes]
    note = "first step, p = -g, the printed slopes phi'(0), phi'(alpha_k) as measured"
    if alpha1 > 0:
        phi_a, g1 = _at(ctx, theta0 + alpha1 * p1)
        # the printed slopes phi'(0) and phi'(alpha_k), evaluated
        vectors.update({"g_next": g1[:, None]})
        _run(ctx, full, ["lbfgs.slope", "lbfgs.slope.a"], vectors, scalars)
        values = {"phi_0": phi_0, "dphi_0": scalars["dphi_0"], "phi_a": phi_a}
        values["dphi_a"] = scalars["dphi_a"]
        values.update(consts, alpha_k=alpha1)
        armijo, curvature = full["lbfgs"].kernel
        sub = {s: values[s.name] for s in full["lbfgs"].kernel.free_symbols}
        ok_a, ok_c = _truth(armijo, sub), _truth(curvature, sub)
        wolfe_said = bool(log[0][4]) if log else False
        note += f", step {alpha1:.3g}: sufficient decrease {ok_a}, curvature {ok_c}"
        if not ok_a or (wolfe_said and not ok_c):
            return {
                k: Row(k, "update", "FAIL", note=f"the strong Wolfe conditions: {note}")
                for k in keys
            }
    rows = {"lbfgs": compare(ctx, "lbfgs", "update", pairs, note)}
    ctx.newton_theta = theta0 + step1  # before the L1 threshold (the reg.prox row)
    if alpha1 == 0.0:
        rows.update(_no_step(ctx, thetas))
    loop_keys = [k for k in keys if k != "lbfgs"]
    if alpha1 == 0.0:
        for k in loop_keys:
            rows[k] = Row(k, "update", "definition", note="no first step: nothing to compare")
        return rows
    # the pair (before an L1 threshold), then the second step's direction at the trainer's
    # parameters by the printed two-loop recursion
    theta1 = thetas[1]
    _, g_new = _at(ctx, theta0 + step1)
    _, g1 = _at(ctx, theta1)
    vectors.update({"g_next": g_new[:, None]})
    _run(ctx, full, ["lbfgs.s", "lbfgs.y"], vectors, scalars)
    s, y = vectors["s_i"][:, 0], vectors["y_i"][:, 0]
    keep = _keeps(full["lbfgs.y"].kernel, s, y)
    v2 = {"g_v": g1[:, None], "s_i": s[:, None], "y_i": y[:, None]}
    s2: dict = {"gamma_k": 1.0}
    _run(ctx, full, ["lbfgs.q0"], v2, s2)
    if keep:
        _run(ctx, full, ["lbfgs.rho", "lbfgs.a", "lbfgs.q", "lbfgs.gamma"], v2, s2)
    _run(ctx, full, ["lbfgs.r0"], v2, s2)
    if keep:
        _run(ctx, full, ["lbfgs.b", "lbfgs.r"], v2, s2)
    _run(ctx, full, ["lbfgs.p"], v2, s2)
    p2 = v2["p_v"][:, 0]
    d2 = thetas[2] - theta1
    alpha2 = float(d2[pick] @ p2[pick]) / max(float(p2[pick] @ p2[pick]), 1e-300)
    pair = "one pair kept" if keep else "the pair dropped (s^T y too small)"
    note2 = f"second step along the printed two-loop direction ({pair}), step {alpha2:.3g}"
    if len(log) < 2 or log[1][0] == 0.0:
        note2 = "the second line search found no step"
    pairs = [("rhs", (alpha2 * p2)[pick], "trainer fit (2 steps)", d2[pick])]
    row = compare(ctx, "lbfgs", "update", pairs, note2)
    for k in loop_keys:
        rows[k] = Row(k, row.form, row.status, row.error, row.against, row.values, row.note)
    return rows


def _slope_pairs(ctx: Context, full: dict, log, theta0, g0, p, alpha) -> list:
    """The printed slopes of the line function phi(a) = C_B(theta + a p) (``lbfgs.slope``,
    ``lbfgs.slope.a``: definitions the Wolfe conditions read), evaluated and compared: phi'(0)
    with a central difference of the reference cost along p and with the slope the trainer's
    line search logged; phi'(alpha_k), at the first step's length (1 when none was taken), with
    a central difference there."""
    trial = alpha if alpha > 0 else 1.0
    _, g_a = _at(ctx, theta0 + trial * p)
    vectors = {"g_v": g0[:, None], "p_v": p[:, None], "g_next": g_a[:, None]}
    scalars: dict = {}
    _run(ctx, full, ["lbfgs.slope", "lbfgs.slope.a"], vectors, scalars)
    step = 1e-3 / max(float(np.abs(p).max()), 1e-300)

    def five_point(a: float, h: float) -> float:
        """The five-point central difference (error of order h^4)."""
        f = {k: _at(ctx, theta0 + (a + k * h) * p)[0] for k in (-2, -1, 1, 2)}
        return (8 * (f[1] - f[-1]) - (f[2] - f[-2])) / (12 * h)

    pairs = []
    for name, a in (("dphi_0", 0.0), ("dphi_a", trial)):
        wide, narrow = five_point(a, step), five_point(a, step / 2)
        if abs(wide - narrow) > 1e-7 * max(abs(narrow), 1.0):
            continue  # a kink (ReLU, L1) within the stencil: no difference quotient there
        label = "phi'(0)" if name == "dphi_0" else "phi'(alpha_k)"
        pairs.append((label, np.array([scalars[name]]), "finite differences", np.array([narrow])))
    if log:
        logged = np.array([log[0][2]])
        pairs.append(("phi'(0)", np.array([scalars["dphi_0"]]), "trainer (line search)", logged))
    return pairs


def _keeps(test: sp.Basic, s: np.ndarray, y: np.ndarray) -> bool:
    """The printed test of a new pair."""
    values = {"s_norm": float(np.linalg.norm(s)), "y_norm": float(np.linalg.norm(y))}
    lhs = float(s @ y)
    sub = {sym: values[sym.name] for sym in test.free_symbols if sym.name in values}
    return bool(lhs > float(test.rhs.subs(sub)))


def MatrixEval(ctx: Context, vectors: dict, scalars: dict, expr) -> np.ndarray:  # noqa: N802
    """``expr`` evaluated with the given vectors and scalars, as a flat vector."""
    from ..evaluate import MatrixEvaluator

    net = CGNet(ctx, vectors, scalars)
    net.vectors.setdefault("theta_v", ctx.theta0[:, None])
    return np.asarray(MatrixEvaluator(net).evaluate(expr), dtype=np.float64).reshape(-1)


def _trust_rows(ctx: Context, eqs: dict) -> dict[str, Row]:
    full = _all_equations(ctx)
    opt = ctx.spec.optimizer
    keys = list(eqs)
    if ctx.P > HESSIAN_MAX:
        note = f"not evaluable: H of {ctx.P} parameters (the check forms it)"
        return {k: Row(k, "update", "FAIL", note=note) for k in keys}
    theta0 = ctx.theta0
    cost0, g = _at(ctx, theta0)
    if not g.any():
        note = "not evaluable: the gradient is zero at this draw"
        return {k: Row(k, "update", "FAIL", note=note) for k in keys}
    H = ctx.hessian_matrix(ctx.base())
    radius = float(opt.radius)
    # the printed Steihaug-Toint iteration (the template's loop, on the formed H)
    vectors = {
        "g_v": g[:, None],
        "p_v": np.zeros((ctx.P, 1)),
        "r_v": g[:, None],
        "d_v": -g[:, None],
    }
    vectors["H"] = H
    scalars = {"Delta": radius}
    _run(ctx, full, ["trust.cg.rho"], vectors, scalars)
    norm_g = float(np.linalg.norm(g))
    tol = min(0.5, np.sqrt(norm_g)) * norm_g
    boundary = False
    curvature = full["trust.cg.alpha"].kernel  # the printed test d^T H d > 0
    for _ in range(min(ctx.P, 250)):
        d = vectors["d_v"][:, 0]
        if _holds(ctx, curvature, vectors, scalars):
            _run(ctx, full, ["trust.cg.alpha"], vectors, scalars)
            inside = vectors["p_v"][:, 0] + scalars["alpha"] * d
            if np.linalg.norm(inside) < radius:
                _run(ctx, full, ["trust.cg", "trust.cg.r"], vectors, scalars)
                if np.linalg.norm(vectors["r_v"]) <= tol:
                    break
                _run(ctx, full, ["trust.cg.beta", "trust.cg.d", "trust.cg.rho"], vectors, scalars)
                continue
        _run(ctx, full, ["trust.cg.tau", "trust.cg.boundary"], vectors, scalars)
        boundary = True
        break
    p = vectors["p_v"][:, 0]
    trial, _ = _at(ctx, theta0 + p)
    scalars.update({"C_B": cost0, "C_trial": trial})
    _run(ctx, full, ["trust.rho"], vectors, scalars)
    rho_k = scalars["rho_k"]
    values = {"rho_k": rho_k, "eta_a": float(opt.accept), "Delta": radius}
    values.update({"Delta_max": float(opt.max_radius), "boundary": boundary})
    accept = full["trust"].kernel
    taken = bool(accept.subs({s: values[s.name] for s in accept.free_symbols}))
    rule = full["trust.radius"].rhs
    new_radius = float(rule.subs({s: values[s.name] for s in rule.free_symbols}))
    expected = MatrixEval(ctx, vectors, scalars, full["trust"].rhs) if taken else theta0
    twin, thetas, _ = _twin(ctx, 1, "trust_region_log")
    pick = _pick(ctx)
    got_radius = float(twin._opt_state["radius"][0])
    verdict = "taken" if taken else "rejected"
    note = f"rho = {rho_k:.3g}, {verdict}, radius {radius:g} -> {new_radius:g}"
    pairs = [("rhs", expected[pick], "trainer fit (1 step)", thetas[1][pick])]
    pairs.append(("rhs", np.array([new_radius]), "trainer radius", np.array([got_radius])))
    row = compare(ctx, "trust", "update", pairs, note)
    rows = {
        k: Row(k, row.form, row.status, row.error, row.against, row.values, row.note) for k in keys
    }
    ctx.newton_theta = expected  # before the L1 threshold (the reg.prox row)
    if not taken:
        rows.update(_no_step(ctx, thetas))
    return rows


def _holds(ctx: Context, test: sp.Basic, vectors: dict, scalars: dict) -> bool:
    """A printed comparison of a 1 x 1 matrix expression with a number, evaluated."""
    from ..evaluate import MatrixEvaluator

    value = MatrixEvaluator(CGNet(ctx, vectors, scalars)).evaluate(test.lhs)
    return bool(test.func(float(np.asarray(value, dtype=np.float64).reshape(-1)[0]), test.rhs))


def _no_step(ctx: Context, thetas) -> dict[str, Row]:
    """With no step taken there is nothing to threshold: the trainer's parameters stay."""
    if not ctx.ref.l1:
        return {}
    pairs = [("rhs", thetas[0], "trainer fit (1 step)", thetas[1])]
    return {"reg.prox": compare(ctx, "reg.prox", "update", pairs, "no step taken")}
