"""What each side is compared with (the trainer, finite differences), and the error measure."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import sympy as sp

from ...derivation import notation as nt
from ..evaluate import IndexEvaluator, NotEvaluable, grid, index_ranges
from ..evaluate.derivatives import fd_errors
from .common import FLOOR, HESSIAN_MAX, POINTS_FD, split_name
from .report import Row

if TYPE_CHECKING:
    from .bindings import Net
    from .context import Context


class FDReference(np.ndarray):
    """Values from finite differences, with ``fd_error``: the largest error estimate of the
    differences taken (absolute; the rounding of the values at the step, or the difference of
    the last two estimates). :func:`error` counts only what lies beyond it."""

    fd_error: float = 0.0

    def __array_finalize__(self, obj) -> None:
        self.fd_error = getattr(obj, "fd_error", 0.0)


def by_fd(ev: IndexEvaluator, expr: sp.Basic) -> FDReference:
    """``ev.evaluate(expr)`` (derivatives by finite differences) with their error estimate."""
    with fd_errors() as errors:
        out = np.asarray(ev.evaluate(expr), dtype=np.float64).view(FDReference)
    out.fd_error = max(errors, default=0.0)
    return out


def error(values: np.ndarray, ref: np.ndarray) -> tuple[float, int]:
    """``max |values - ref| / max(max |ref|, FLOOR)`` over the entries where ref is known; for
    a reference from finite differences (:class:`FDReference`), what lies beyond the
    differences' own error estimate."""
    slack = float(getattr(ref, "fd_error", 0.0))
    values, ref = np.asarray(values, float), np.asarray(ref, float)
    try:
        values, ref = np.broadcast_arrays(values, ref)
    except ValueError:
        raise NotEvaluable(f"shape {values.shape} where the reference has {ref.shape}") from None
    known = ~np.isnan(ref)
    if not known.any():
        return 0.0, 0
    diff = np.abs(values[known] - ref[known])
    if np.isnan(diff).any():
        return float("inf"), int(known.sum())
    diff = np.maximum(diff - slack, 0.0)
    scale = max(float(np.max(np.abs(ref[known]))), FLOOR)
    return float(np.max(diff)) / scale, int(known.sum())


def pairs_of(values, refs) -> list[tuple[str, np.ndarray, str, np.ndarray]]:
    """Every side against every reference; without references, every side against the lhs."""
    if refs:
        return [(name, v, label, r) for label, r in refs for name, v in values]
    (_, lhs), others = values[0], values[1:]
    return [(name, v, "lhs", lhs) for name, v in others]


def compare(ctx: Context, key: str, form: str, pairs, note: str = "") -> Row:
    """The row of ``pairs`` ``(side, values, label, reference)``; a reference of None means
    that ``values`` is ``(error, count)`` measured by the caller (a backward error)."""
    worst, count = 0.0, 0
    labels: list[str] = []
    unresolved: list[str] = []
    for name, v, label, ref in pairs:
        if ref is None:
            err, n = float(v[0]), int(v[1])
            worst, count = max(worst, err), max(count, n)
            if label not in labels:
                labels.append(label)
            continue
        try:
            err, n = error(v, ref)
        except NotEvaluable as exc:
            return Row(key, form, "FAIL", note=f"{name} vs {label}: {exc}")
        if n == 0 and isinstance(ref, FDReference):
            # no entry the differences resolve (see reference.fd): nothing checked by them
            if label not in unresolved:
                unresolved.append(label)
            continue
        if label not in labels:
            labels.append(label)
        worst, count = max(worst, err), max(count, n)
    if not labels:
        return Row(key, form, "FAIL", note="not evaluable: nothing to compare")
    if unresolved:
        words = f"{', '.join(unresolved)}: no value resolved by differences"
        note = f"{note}; {words}" if note else words
    status = "ok" if worst <= ctx.tol else "FAIL"
    return Row(key, form, status, worst, ", ".join(labels), count, note)


# -- index form ------------------------------------------------------------------------------


def index_references(ctx: Context, lhs, ev: IndexEvaluator) -> list[tuple[str, np.ndarray]]:
    """What the trainer (and differences) say the left side is, at the points of ``ev``."""
    refs: list[tuple[str, np.ndarray]] = []
    if isinstance(lhs, sp.Indexed):
        stem, l = split_name(lhs.base.label.name)
        if stem in ("z", "a") and l is not None and (l >= 1 or stem == "a"):
            arr = ctx.t_forward(stem, l)
            if arr is not None:
                refs.append(("trainer _forward", _at(ev, lhs, arr)))
        if stem == "delta" and l is not None:
            deltas = ctx.t_deltas()
            if deltas is not None and l in deltas:
                refs.append(("trainer _backward", _at(ev, lhs, np.asarray(deltas[l]))))
            z_l = nt.z(l)[lhs.indices]
            fd_ev = IndexEvaluator(ev.b, ev.free, ev.points[:POINTS_FD], exact=False)
            fd_delta = np.full((ev.b.m, len(ev.points)), np.nan).view(FDReference)
            got = by_fd(fd_ev, sp.Derivative(nt.C_x, z_l))
            fd_delta[:, :POINTS_FD] = got
            fd_delta.fd_error = got.fd_error
            refs.append(("FD of C_x by z", fd_delta))
        if stem in ("Hv_w", "Hv_b") and l is not None:
            flat = _flat_at(ctx, ev, sp.Indexed(f"{stem[-1]}_{l}", *lhs.indices))
            refs.append(("trainer hvp", ctx.t_hvp()[flat][None, :]))
    if lhs == nt.C:
        refs.append(("trainer loss", np.array([[ctx.t_loss()]])))
    if isinstance(lhs, sp.Derivative) and lhs.expr == nt.C:
        variables = [v for v, n in lhs.variable_count for _ in range(n)]
        flat = [_flat_at(ctx, ev, v) for v in variables]
        if all(f is not None for f in flat):
            if len(flat) == 1:
                refs.append(("trainer gradient_flat", ctx.t_grad()[flat[0]][None, :]))
            elif len(flat) == 2:
                rows, cols = np.broadcast_arrays(flat[0], flat[1])
                refs.append(("trainer hessian", ctx.t_hessian_at(rows, cols)[None, :]))
    return refs


def _at(ev: IndexEvaluator, lhs: sp.Indexed, arr: np.ndarray) -> np.ndarray:
    """``arr`` (m, n) at the points of ``ev`` for the index of ``lhs``."""
    (ix,) = lhs.indices
    pos = np.asarray(ev.evaluate(ix))[0].astype(np.int64) - 1
    return np.asarray(arr, dtype=np.float64)[:, pos]


def _flat_at(ctx: Context, ev: IndexEvaluator, var) -> np.ndarray | None:
    if not isinstance(var, sp.Indexed):
        return None
    stem, l = split_name(var.base.label.name)
    if stem not in ("w", "b") or l is None or not 1 <= l <= ctx.L:
        return None
    ids = [np.asarray(ev.evaluate(ix))[0].astype(np.int64) - 1 for ix in var.indices]
    return np.asarray(ctx.flat_index(stem, l, tuple(ids)))


# -- matrix form -----------------------------------------------------------------------------


def block(ctx: Context, flat: np.ndarray, kind: str, l: int) -> np.ndarray:
    """Layer ``l``'s weight matrix (``kind`` ``"w"``) or bias row (``"b"``) of a flat vector."""
    shape = ctx.state.W[l].shape if kind == "w" else (1, ctx.state.b[l].size)
    off = ctx.offsets[(kind, l)]
    return np.asarray(flat)[off : off + int(np.prod(shape))].reshape(shape)


#: the blocks of the one-hidden-layer Hessian (hess.blocks.11, .12, .22), per pair of units
BLOCK_NAMES = ("H11_jq", "H12_jk", "H22_kp")


def matrix_references(ctx: Context, lhs, b: Net) -> list[tuple[str, np.ndarray]]:
    refs: list[tuple[str, np.ndarray]] = []
    if not isinstance(lhs, sp.MatrixSymbol):
        return refs
    stem, l = split_name(lhs.name)
    if stem in ("Z", "A") and l and ctx.t_forward(stem.lower(), l) is not None:
        refs.append(("trainer _forward", ctx.t_forward(stem.lower(), l)))
    elif stem == "Delta" and l:
        deltas = ctx.t_deltas()
        if deltas is not None and l in deltas:
            refs.append(("trainer _backward", np.asarray(deltas[l])))
        refs.append(("FD of C_x by z", fd_matrix(ctx, b, sp.Derivative(nt.C_x, nt.z(l)[nt.j]))))
    elif stem in ("dC_dW", "dC_db") and l:
        kind = "w" if stem == "dC_dW" else "b"
        refs.append(("trainer gradient_flat", block(ctx, ctx.t_grad(), kind, l)))
        var = nt.w(l)[nt.j, nt.i] if kind == "w" else nt.b(l)[nt.j]
        fdm = fd_matrix(ctx, b, sp.Derivative(nt.C, var))
        refs.append(("FD of C", fdm if kind == "w" else fdm.reshape(1, -1)))
    elif stem in ("Hv_W", "Hv_b") and l:
        kind = "w" if stem == "Hv_W" else "b"
        refs.append(("trainer hvp", block(ctx, ctx.t_hvp(), kind, l)))
    elif lhs.name == "H" and ctx.t_hessian() is not None:
        refs.append(("trainer hessian", ctx.t_hessian()))
    elif lhs.name == "G" and ctx.t_gauss_newton() is not None:
        refs.append(("trainer gauss_newton", ctx.t_gauss_newton()))
    elif lhs.name == "G":
        raise NotEvaluable(f"no trainer Gauss-Newton matrix above {HESSIAN_MAX} parameters")
    elif lhs.name in BLOCK_NAMES and (found := b.trainer_block()) is not None:
        refs.append(("trainer hessian", found))
    elif lhs.name == "H_kj" and (pair := b.pair_block()) is not None:
        refs.append(("trainer hessian", pair))
    elif lhs.name == "H_j" and b._unit is not None and ctx.hessian_block(b._unit) is not None:
        refs.append(("trainer hessian", ctx.hessian_block(b._unit)))
    return refs


def fd_matrix(ctx: Context, b: Net, deriv: sp.Derivative) -> FDReference:
    """A derivative by ``v[j]`` or ``v[j, i]`` as a matrix (rows j, columns i; per sample: rows
    x, columns j) by finite differences, with their error estimate; entries not sampled are
    NaN."""
    free = list(deriv.variables[0].indices)
    ranges = index_ranges([deriv], free, b)
    pts = grid(free, ranges, POINTS_FD, ctx.rng)
    vals = by_fd(IndexEvaluator(b, free, pts, exact=False), deriv)
    if vals.shape[0] > 1:  # per sample, one free index: (m, n)
        out = np.full((vals.shape[0], ranges[free[0]]), np.nan).view(FDReference)
        out[:, pts[:, 0] - 1] = vals
    else:
        shape = [ranges[s] for s in free]
        out = np.full(shape if len(shape) == 2 else (shape[0],), np.nan).view(FDReference)
        out[tuple(pts[:, k] - 1 for k in range(len(free)))] = vals[0]
    out.fd_error = vals.fd_error
    return out
