"""Rows of Newton's method (printed for the ``newton`` optimiser only).

The step ``theta <- theta - eta p`` is checked the way the trainer computes p:

- up to NEWTON_EXACT_MAX parameters by the exact solve: p from the printed
  ``p = (H + mu I)^{-1} g`` must solve the system (its backward error is the row's error), and so
  must the step of a copy of the trainer after one ``fit`` step, which must also equal the printed
  step when the system is well conditioned;
- above, matrix-free: the printed conjugate-gradient equations are iterated, with the printed
  stopping rule, on Hessian-vector products (the trainer's ``hvp``, checked by the ``rop.*``
  rows; or the formed Hessian while it has at most HESSIAN_MAX parameters), and the printed step
  from the p they reach must equal the trainer's step.

The conjugate-gradient rows (``newton.cg*``) are also checked on their first iteration against
the textbook one.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import sympy as sp

from ...derivation import notation as nt
from ...derivation.newton import CG_MAX_ITER, CG_REL_TOL
from ...spec import NEWTON_EXACT_MAX
from ..evaluate import MatrixEvaluator, NotEvaluable
from .bindings import Net
from .common import EVAL_ERRORS, HESSIAN_COLUMNS, HESSIAN_MAX
from .compare import compare
from .report import Row
from .steps import StepNet, evaluate_flat, flat_form, trainer_after_epoch

if TYPE_CHECKING:
    from .context import Context

_ERRORS = (*EVAL_ERRORS, np.linalg.LinAlgError)


class CGNet(Net):
    """Newton's bindings with the conjugate-gradient vectors and scalars of the iteration."""

    def __init__(self, ctx: Context, vectors: dict, scalars: dict) -> None:
        super().__init__(ctx, ctx.state, scalars)
        self.vectors = vectors

    def _matrix(self, name):
        if name in self.vectors:
            return self.vectors[name]
        return super()._matrix(name)


def backward_error(apply, p: np.ndarray, g: np.ndarray, norm: float) -> tuple[float, int]:
    """``|A p - g| / (|A| |p| + |g|)`` (infinity norms; ``norm`` is |A|, ``apply(p)`` is A p):
    how far ``p`` is from solving ``A p = g`` exactly, whatever the condition of ``A``."""
    p, g = np.asarray(p, float).reshape(-1), np.asarray(g, float).reshape(-1)
    r = apply(p) - g
    scale = norm * np.abs(p).max() + np.abs(g).max()
    return float(np.abs(r).max() / max(scale, np.finfo(float).tiny)), len(g)


def _assign(ctx: Context, eq, vectors: dict, scalars: dict) -> None:
    """Evaluate one equation of the iteration and store its value under its left side."""
    value = MatrixEvaluator(CGNet(ctx, vectors, scalars)).evaluate(eq.rhs)
    if isinstance(eq.lhs, sp.Symbol):
        scalars[eq.lhs.name] = float(np.asarray(value, dtype=np.float64).reshape(-1)[0])
    else:
        vectors[eq.lhs.name] = np.asarray(value, dtype=np.float64)


def run_cg(ctx: Context, cg_eqs, g: np.ndarray, apply) -> tuple[np.ndarray, int, float]:
    """The printed conjugate gradients from p = 0, r = d = g, stopped by the printed rule: the
    p reached, the iterations done and the final |r| / |g|."""
    vectors = {"p_v": np.zeros((ctx.P, 1)), "r_v": g[:, None], "d_v": g[:, None]}
    scalars: dict = {}
    rr0 = float(g @ g)
    tol = CG_REL_TOL * max(rr0, 1e-300)
    done = 0
    for _ in range(min(ctx.P, CG_MAX_ITER)):
        d = vectors["d_v"][:, 0]
        if float(d @ apply(d)) <= 0:
            break
        done += 1
        for eq in cg_eqs:
            _assign(ctx, eq, vectors, scalars)
            if eq.lhs == nt.r_v:
                r = vectors["r_v"][:, 0]
                if float(r @ r) < tol:
                    break
        else:
            continue
        break
    r = vectors["r_v"][:, 0]
    return vectors["p_v"][:, 0], done, float(np.sqrt(r @ r / max(rr0, 1e-300)))


def newton_rows(ctx: Context, eqs) -> dict[str, Row]:
    """Rows of ``newton`` and ``newton.cg*`` (see the module doc)."""
    b = ctx.base()
    damping = float(ctx.spec.optimizer.damping)
    g = b.smooth_gradient()
    A = None
    if ctx.P <= HESSIAN_MAX:
        try:
            A = ctx.hessian_matrix(b) + damping * np.eye(ctx.P)
        except (NotEvaluable, np.linalg.LinAlgError) as exc:
            return {e.key: Row(e.key, "update", "FAIL", note=f"not evaluable: {exc}") for e in eqs}

    def apply(v):
        if A is not None:
            return A @ v
        return ctx.trainer_hvp(v) + damping * v  # H v by the trainer's R-operator

    out_shift, A_exact = _shift_row(ctx, eqs, A, damping)
    Ag = apply(g)
    if not float(g @ Ag):
        note = "not evaluable: the gradient is zero at this draw (CG has nothing to do)"
        return {e.key: Row(e.key, "update", "FAIL", note=note) for e in eqs}
    out = _first_iteration(ctx, eqs, g, Ag)
    out.update(out_shift)
    cg_eqs = [e for e in eqs if e.key.startswith("newton.cg")]
    for eq in eqs:
        if eq.key in ctx.update_defined or eq.key in out:
            continue
        if getattr(eq.lhs, "name", None) != "theta_v":
            out[eq.key] = Row(eq.key, "update", "FAIL", note=f"not evaluable: no rule for {eq.lhs}")
            continue
        try:
            if ctx.P <= NEWTON_EXACT_MAX:
                out[eq.key] = _exact_step(ctx, eq, A_exact, g)
            else:
                out[eq.key] = _cg_step(ctx, eq, cg_eqs, g, apply)
        except _ERRORS as exc:
            out[eq.key] = Row(eq.key, "update", "FAIL", note=f"not evaluable: {exc}")
    return out


def _shift_row(ctx: Context, eqs, A: np.ndarray | None, damping: float):
    """The printed rule raising the damping until H + mu_s I has a Cholesky factor
    (``newton.shift``): mu_s, bound for the exact solve's rows, and H + mu_s I."""
    eq = next((e for e in eqs if e.key == "newton.shift"), None)
    ctx.constants["mu_s"] = damping
    if eq is None or A is None or ctx.P > NEWTON_EXACT_MAX:
        note = "the conjugate-gradient path does not raise the damping"
        rows = {} if eq is None else {eq.key: Row(eq.key, "update", "ok", None, "", 0, note)}
        return rows, A
    eye = np.eye(ctx.P)
    H = A - damping * eye
    scale = float(np.abs(np.diag(H)).max()) or 1.0
    shift, raised = damping, 0
    while raised < 400:
        try:
            np.linalg.cholesky(H + shift * eye)
            break
        except np.linalg.LinAlgError:
            value = eq.rhs.subs({sp.Symbol("mu_s", nonnegative=True): shift})
            shift = float(value.subs({sp.Symbol("s_H", nonnegative=True): scale}))
            raised += 1
    ctx.constants["mu_s"] = shift
    least = float(np.linalg.eigvalsh(H + shift * eye).min())
    status = "ok" if least > 0 else "FAIL"
    note = f"mu_s = {shift:.3g} after {raised} raises; least eigenvalue of H + mu_s I {least:.3g}"
    return {eq.key: Row(eq.key, "update", status, 0.0, "eigvalsh", ctx.P, note)}, H + shift * eye


def _first_iteration(ctx: Context, eqs, g: np.ndarray, Ag: np.ndarray) -> dict[str, Row]:
    """The ``newton.cg`` assignments of the first iteration against the textbook's."""
    alpha = float(g @ g) / float(g @ Ag)
    r1 = g - alpha * Ag
    want = {"p_v": alpha * g, "r_v": r1, "d_v": r1 + float(r1 @ r1) / float(g @ g) * g}
    vectors = {"p_v": np.zeros((ctx.P, 1)), "r_v": g[:, None], "d_v": g[:, None]}
    scalars: dict = {}
    out = {}
    for eq in eqs:
        if not eq.key.startswith("newton.cg"):
            continue
        name = getattr(eq.lhs, "name", str(eq.lhs))
        try:
            _assign(ctx, eq, vectors, scalars)
        except _ERRORS as exc:
            if eq.key not in ctx.update_defined:  # a scalar's error: the assignments say why
                out[eq.key] = Row(eq.key, "update", "FAIL", note=f"not evaluable: {exc}")
            continue
        if eq.key in ctx.update_defined:
            continue
        if name not in want:
            out[eq.key] = Row(eq.key, "update", "FAIL", note=f"not evaluable: no rule for {name}")
            continue
        pairs = [("rhs", vectors[name].reshape(-1), "one CG iteration", want[name])]
        out[eq.key] = compare(ctx, eq.key, "update", pairs, "first iteration")
    return out


def _exact_step(ctx: Context, eq, A: np.ndarray | None, g: np.ndarray) -> Row:
    """The step by the exact solve: the backward error of the printed p and of the trainer's."""
    if A is None:
        raise NotEvaluable(f"the inverse of H + mu I ({ctx.P} parameters)")
    eta = float(ctx.spec.optimizer.learning_rate)
    got = np.asarray(MatrixEvaluator(ctx.base()).evaluate(eq.rhs), dtype=np.float64).reshape(-1)
    norm = float(np.abs(A).sum(axis=1).max())
    p_ir = (ctx.theta0 - got) / eta
    pairs = [("rhs", backward_error(A.__matmul__, p_ir, g, norm), "(H + mu I) p = g", None)]
    ctx.newton_theta = got
    cond = np.linalg.cond(A) if ctx.P <= HESSIAN_COLUMNS else None
    if not ctx.ref.l1:  # with L1 the trainer's step ends with the threshold: see reg.prox
        twin = trainer_after_epoch(ctx, ctx.m)
        p_t = (ctx.theta0 - np.asarray(twin.get_flat(), float)) / eta
        err = backward_error(A.__matmul__, p_t, g, norm)
        pairs.append(("trainer", err, "the trainer's p in it", None))
        if cond is not None and cond < 1e6:
            pairs.append(("rhs", got, "trainer fit (1 step)", twin.get_flat()))
    note = "" if cond is None else f"cond(H + mu I) = {cond:.1e}"
    return compare(ctx, eq.key, "update", pairs, note)


def _cg_step(ctx: Context, eq, cg_eqs, g: np.ndarray, apply) -> Row:
    """The step by the printed conjugate gradients (matrix-free) against the trainer's."""
    p, iterations, rel = run_cg(ctx, cg_eqs, g, apply)
    got = MatrixEvaluator(CGNet(ctx, {"p_v": p[:, None]}, {})).evaluate(eq.rhs)
    got = np.asarray(got, dtype=np.float64).reshape(-1)
    ctx.newton_theta = got
    twin = trainer_after_epoch(ctx, ctx.m)
    t_theta = np.asarray(twin.get_flat(), dtype=np.float64)
    pick = slice(None) if not ctx.ref.l1 else ~ctx.weight_mask.astype(bool)
    label = "trainer fit (1 step)" if not ctx.ref.l1 else "trainer fit (1 step), biases"
    pairs = [("rhs", got[pick], label, t_theta[pick])]
    note = (
        f"conjugate gradients on H v ({ctx.P} parameters): {iterations} iterations, "
        f"|r| / |g| = {rel:.1e}"
    )
    return compare(ctx, eq.key, "update", pairs, note)


def newton_opt_rows(ctx: Context, eqs) -> dict[str, Row]:
    """The Update section of a Newton spec: ``opt.grad`` against the reference gradient of the
    smooth part of C, and the L1 threshold after the Newton step against the trainer."""
    out = {}
    for eq in eqs:
        if eq.key == "reg.prox":
            u = ctx.newton_theta
            if u is None:
                note = "not evaluable: no Newton step to threshold (see the newton row)"
                out[eq.key] = Row(eq.key, "update", "FAIL", note=note)
                continue
            step = StepNet(ctx, ctx.state, {"theta_flat": u, "u_flat": u})
        elif eq.key == "opt.grad":
            step = StepNet(ctx, ctx.state, {"theta_flat": ctx.theta0})
        else:
            out[eq.key] = Row(eq.key, "update", "FAIL", note="not evaluable: no rule")
            continue
        try:
            got = evaluate_flat(step, flat_form(eq.rhs, None, 1), ctx.P)
        except _ERRORS as exc:
            out[eq.key] = Row(eq.key, "update", "FAIL", note=f"not evaluable: rhs: {exc}")
            continue
        if eq.key == "opt.grad":
            pairs = [("rhs", got, "reference gradient", step.smooth_gradient())]
        else:
            theta = np.where(ctx.weight_mask.astype(bool), got, u)
            twin = trainer_after_epoch(ctx, ctx.m)
            pairs = [("epoch", theta, "trainer fit (1 step)", twin.get_flat())]
        out[eq.key] = compare(ctx, eq.key, "update", pairs)
    return out
