"""The matrix forms of the gradients and Hessian-vector products on a batch of m < N samples.

Their left sides are those of the batch cost ``C_B = (1/m) sum_x C_x + R`` (the data term
averaged over the batch, R with the training set's N): the verifier evaluates them on the first
half of its samples, with m that half and N the whole draw, and compares them with the
reference network's batch cost (its chain rule, differences of C_B by each parameter) and with
the trainer's private ``_gradient(X, Y, n)`` and ``_rop(X, Y, V, gauss_newton, n)``, which take
the regulariser's N separately from the batch.
"""

from __future__ import annotations

import inspect
from typing import TYPE_CHECKING

import numpy as np
import sympy as sp

from ...derivation import notation as nt
from ..evaluate import MatrixEvaluator
from .bindings import Net
from .common import EVAL_ERRORS, public, split_name
from .compare import block, compare, fd_matrix, pairs_of
from .report import Row

if TYPE_CHECKING:
    from .context import Context

#: the matrix left sides checked on a batch too
STEMS = ("dC_dW", "dC_db", "Hv_W", "Hv_b")


def batch_bindings(ctx: Context) -> Net:
    """The reference network on the first ceil(N/2) samples, as a batch (m < N) of the draw."""

    def make():
        st, mb = ctx.state, (ctx.m + 1) // 2
        sub = ctx.ref.state(st.W, st.b, st.X[:mb], st.Y[:mb], N=ctx.m, avg=mb)
        return Net(ctx, ctx.ref.freeze(sub), sizes={nt.m: mb})

    return ctx.memo("_batch", make)


def batch_row(ctx: Context, eq) -> Row | None:
    """The ``batch`` row of ``eq``'s matrix form, for the left sides in STEMS (else None)."""
    lhs = eq.matrix[0]
    if not isinstance(lhs, sp.MatrixSymbol):
        return None
    stem, l = split_name(lhs.name)
    if stem not in STEMS or l is None or ctx.m < 2:
        return None
    b = batch_bindings(ctx)
    mev = MatrixEvaluator(b)
    sides = [("lhs", lhs)] + [(f"step {k}", e) for k, e in enumerate(eq.matrix[1:-1], 1)]
    values = []
    for name, e in [*sides, ("rhs", eq.matrix[-1])]:
        try:
            values.append((name, np.asarray(mev.evaluate(e), dtype=np.float64)))
        except (*EVAL_ERRORS, np.linalg.LinAlgError) as exc:
            return Row(eq.key, "batch", "FAIL", note=f"not evaluable: {name}: {exc}")
    kind = "w" if stem in ("dC_dW", "Hv_W") else "b"
    refs = []
    try:
        if stem.startswith("dC"):
            got = _trainer_gradient(ctx, b)
            if got is not None:
                refs.append(("trainer _gradient(n = N)", block(ctx, got, kind, l)))
            var = nt.w(l)[nt.j, nt.i] if kind == "w" else nt.b(l)[nt.j]
            fdm = fd_matrix(ctx, b, sp.Derivative(nt.C, var))
            refs.append(("FD of C_B", fdm if kind == "w" else fdm.reshape(1, -1)))
        else:
            got = _trainer_hvp(ctx, b)
            if got is not None:
                refs.append(("trainer _rop(n = N)", block(ctx, got, kind, l)))
    except EVAL_ERRORS as exc:
        return Row(eq.key, "batch", "FAIL", note=f"not evaluable: reference: {exc}")
    note = f"m = {b.m} of N = {ctx.m} samples"
    return compare(ctx, eq.key, "batch", pairs_of(values, refs), note)


def _trainer_gradient(ctx: Context, b: Net) -> np.ndarray | None:
    """The trainer's gradient of the batch cost (public order), where its private
    ``_gradient`` takes the regulariser's N; None otherwise."""
    grad = getattr(ctx.trainer, "_gradient", None)
    if grad is None:
        return None
    params = list(inspect.signature(grad).parameters)
    if params[:2] != ["X", "Y"] or not set(params[2:]) <= {"n", "l1"}:
        return None
    extra = {"n": ctx.m, "l1": getattr(ctx.trainer, "l1", 0.0)}
    X, Y = (np.asarray(a, dtype=ctx.trainer.dtype) for a in (b.state.X, b.state.Y))
    out = grad(X, Y, *(extra[p] for p in params[2:]))
    return public(ctx.trainer, np.asarray(out, dtype=np.float64))


def _trainer_hvp(ctx: Context, b: Net) -> np.ndarray | None:
    """The trainer's Hessian-vector product of the batch cost along v (public order), from its
    private ``_rop``; None where it has none."""
    rop = getattr(ctx.trainer, "_rop", None)
    if rop is None:
        return None
    X, Y = (np.asarray(a, dtype=ctx.trainer.dtype) for a in (b.state.X, b.state.Y))
    args = [X, Y, np.asarray(ctx.v, dtype=ctx.trainer.dtype).reshape(-1, 1), False]
    if len(inspect.signature(rop).parameters) == 5:
        args.append(ctx.m)
    return np.asarray(rop(*args), dtype=np.float64)[:, 0]
