"""Rows of the optimiser's step (``opt.*``, ``reg.prox``): the assignments ``<-`` of one epoch.

The update rules are evaluated over the flat vectors (``theta_flat[p_]``, ``g_flat[p_]``, the
optimiser's state ``state_<name>[p_]``) on the mini-batches of one epoch without shuffling (the
spec's batch size, at most half the draw, so that m < N), starting from the random parameters
and a zero state, and compared with a copy of the trainer after ``fit(epochs=1)``. The step's
gradient ``g`` (``opt.grad``) is compared, at every step, with the reference network's gradient
of the batch cost's smooth part.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import sympy as sp

from ...derivation import notation as nt
from ..evaluate import IndexEvaluator, MatrixEvaluator
from ..reference import State
from .bindings import Net
from .common import EVAL_ERRORS, P_INDEX, public
from .compare import compare
from .report import Row

if TYPE_CHECKING:
    from .context import Context


def is_step(eq) -> bool:
    """An assignment of the training step (or Newton's method)."""
    return hasattr(eq, "lhs") and (
        eq.key.startswith(("opt.", "reg.prox", "newton")) or getattr(eq, "relation", "=") == "<-"
    )


def optimizer_of(ctx: Context):
    from ... import optimizers

    try:
        return optimizers.get(ctx.spec.optimizer.name)
    except KeyError:
        return None


class StepNet(Net):
    """Bindings of one training step: the reference state of the mini-batch (m of its samples,
    N those of the draw), and the flat vectors (theta, g, u, the optimiser's state) as
    ``IndexedBase``s over the index ``p_``."""

    def __init__(self, ctx: Context, state: State, flat: dict) -> None:
        super().__init__(ctx, state, sizes={nt.m: len(state.X)})
        self.flat = flat

    def _indexed(self, name):
        if name in self.flat:
            return self.flat[name], False
        return super()._indexed(name)

    def _matrix(self, name):
        if name == "theta_v" and "theta_flat" in self.flat:
            return np.asarray(self.flat["theta_flat"], np.float64)[:, None]
        return super()._matrix(name)

    def exact_derivative(self, F, var, index, ndim):
        if F == nt.C_x and isinstance(var, sp.Indexed) and var.base.label.name == "theta_flat":
            per = self.per_sample_gradient()
            (q,) = var.indices
            v = np.asarray(index(q))
            q = (v.astype(np.int64) - 1).reshape(v.shape if v.ndim else (1,) * ndim)
            samples = np.arange(self.m).reshape((self.m,) + (1,) * (ndim - 1))
            return per[samples, q]
        return super().exact_derivative(F, var, index, ndim)


def flat_form(expr, opt, step: int):
    """``expr`` over the flat vectors: theta -> theta_flat[p_], the state symbols likewise, the
    step number t replaced by its value."""
    from ...optimizers import base

    mapping = {
        base.theta: sp.IndexedBase("theta_flat")[P_INDEX],
        base.g: sp.IndexedBase("g_flat")[P_INDEX],
        base.u: sp.IndexedBase("u_flat")[P_INDEX],
        nt.weight: sp.IndexedBase("theta_flat")[P_INDEX],
        base.t: sp.Integer(step),
    }
    if opt is not None:
        for sym in opt.state:
            mapping[sym] = sp.IndexedBase(f"state_{sym.name}")[P_INDEX]
    return expr.xreplace(mapping)


def evaluate_flat(b: Net, expr, P: int) -> np.ndarray:
    """``expr`` at every entry of the flat vectors: a matrix expression (``g``, P x 1) whole,
    an update rule over ``p_`` entry by entry."""
    if isinstance(expr, sp.MatrixExpr):
        return np.asarray(MatrixEvaluator(b).evaluate(expr), dtype=np.float64).reshape(-1)
    pts = np.arange(1, P + 1)[:, None]
    return IndexEvaluator(b, [P_INDEX], pts).evaluate(expr)[0]


def _hyper_values(ctx: Context, opt) -> dict:
    if opt is None:
        return {}
    return {sym: sp.Float(getattr(ctx.spec.optimizer, f)) for sym, f in opt.hyper.items()}


def batches(ctx: Context) -> list[tuple[int, int]]:
    """The mini-batches of one epoch without shuffling: the spec's batch size, at most half the
    set (so that m < N is exercised); the whole set for full-batch optimisers."""
    N = ctx.m
    size = ctx.spec.optimizer.batch_size
    mb = N if size is None else max(1, min(size, (N + 1) // 2))
    return [(lo, min(lo + mb, N)) for lo in range(0, N, mb)]


def trainer_after_epoch(ctx: Context, mb: int):
    """A copy of the trainer after ``fit(X, Y, epochs=1, batch_size=mb, shuffle=False)``."""
    tr = ctx.trainer
    twin = type(tr)(seed=ctx.seed, dtype=ctx.dtype)
    twin.set_flat(tr.get_flat())
    twin.fit(ctx.state.X, ctx.state.Y, epochs=1, batch_size=mb, shuffle=False, track=False)
    return twin


def optimizer_rows(ctx: Context, eqs, opt) -> dict[str, Row]:
    name = ctx.spec.optimizer.name
    if opt is None:
        note = f"not evaluable: optimiser {name!r} is not registered in symgrad.optimizers"
        return {eq.key: Row(eq.key, "update", "FAIL", note=note) for eq in eqs}
    from ...optimizers import base

    fail: dict[str, str] = {}
    hyper = _hyper_values(ctx, opt)
    steps = batches(ctx)
    theta = ctx.theta0.copy()
    states = {sym: np.zeros(ctx.P) for sym in opt.state}
    errors: dict[str, list] = {eq.key: [] for eq in eqs}
    mask = ctx.weight_mask.astype(bool)
    for step, (lo, hi) in enumerate(steps, 1):
        W, b = ctx.unflatten(theta)
        st = ctx.ref.state(W, b, ctx.state.X[lo:hi], ctx.state.Y[lo:hi], ctx.m)
        per = ctx.ref.per_sample_gradient(st).astype(np.float64)
        g_ref = per.mean(axis=0) + ctx.ref.l2 / ctx.m * ctx.weight_mask * theta
        flat = {"theta_flat": theta, "g_flat": g_ref, "u_flat": theta}
        flat.update({f"state_{sym.name}": v for sym, v in states.items()})
        theta_start = theta.copy()
        for eq in eqs:
            if eq.key in fail:
                continue
            now = dict(flat, theta_flat=theta)
            if eq.key == "reg.prox":
                now["u_flat"] = theta  # u: the parameter after the step, before the threshold
            elif eq.key in ("opt.weight_decay", "opt.grad"):
                now["theta_flat"] = theta_start  # at the parameters the gradient is taken at
            expr = flat_form(eq.rhs, opt, step).xreplace(hyper)
            try:
                value = evaluate_flat(StepNet(ctx, st, now), expr, ctx.P)
            except (*EVAL_ERRORS, np.linalg.LinAlgError) as exc:
                fail[eq.key] = f"not evaluable: rhs: {exc}"
                continue
            if eq.key == "opt.grad":
                errors[eq.key].append(("reference batch gradient", value, g_ref))
            elif eq.key == "opt.weight_decay":
                errors[eq.key].append(("the step of the update rule", value[mask], theta[mask]))
            elif eq.key == "reg.prox":
                flat["u_flat"] = theta.copy()
                theta = np.where(mask, value, theta)
            elif eq.lhs == base.theta:
                theta = value
            elif eq.lhs in states:
                states[eq.lhs] = value
                flat[f"state_{eq.lhs.name}"] = value
            else:
                fail[eq.key] = f"not evaluable: no rule for the assignment to {eq.lhs}"
                continue
            flat["theta_flat"] = theta
    twin = trainer_after_epoch(ctx, steps[0][1] - steps[0][0])
    t_theta = np.asarray(twin.get_flat(), dtype=np.float64)
    t_state = getattr(twin, "_opt_state", None) or {}
    out = {}
    for eq in eqs:
        if eq.key in fail:
            out[eq.key] = Row(eq.key, "update", "FAIL", note=fail[eq.key])
            continue
        pairs = [("rhs", v, label, r) for label, v, r in errors[eq.key]]
        if eq.key == "reg.prox" or eq.lhs == base.theta:
            pick = mask if eq.key == "reg.prox" else slice(None)
            pairs.append(("epoch", theta[pick], "trainer fit (1 epoch)", t_theta[pick]))
        elif eq.lhs in states:
            key = opt.key(eq.lhs)
            if key not in t_state:
                note = f"not evaluable: the trainer keeps no state {key!r}"
                out[eq.key] = Row(eq.key, "update", "FAIL", note=note)
                continue
            ref = public(twin, np.asarray(t_state[key], dtype=np.float64))
            pairs.append(("epoch", states[eq.lhs], f"trainer state {key!r}", ref))
        note = f"{len(steps)} steps of m = {steps[0][1] - steps[0][0]}, N = {ctx.m}"
        out[eq.key] = compare(ctx, eq.key, "update", pairs, note)
    return out
