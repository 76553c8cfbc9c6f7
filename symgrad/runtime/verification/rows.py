"""Rows of the equations with ``=``: every side of the index form and of the matrix form.

An index-form row evaluates the left side, each step of the chain, the right side and the
kernel the code prints at the points of the free indices (all of them, or a random sample),
and compares them with the trainer and with finite differences (:mod:`.compare`); each side
holding a first derivative is also evaluated by differences at a few points. A matrix-form row
evaluates whole matrices (per output unit for the closed-form blocks), or their products with the
random direction v when they are too large to form.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import sympy as sp

from ...derivation import notation as nt
from ...derivation.laplace import SECTION as LAPLACE_SECTION
from ...derivation.laplace import STRUCTURED
from ...derivation.nodes import SECTIONS as NODE_SECTIONS
from ..evaluate import (
    IndexEvaluator,
    MatrixEvaluator,
    NotEvaluable,
    free_indices,
    grid,
    index_ranges,
)
from .batch import batch_row
from .common import EVAL_ERRORS, HESSIAN_MAX, P_INDEX, POINTS, POINTS_FD, POINTS_FD2, W_FLAT
from .compare import BLOCK_NAMES, by_fd, compare, index_references, matrix_references, pairs_of
from .report import Row

if TYPE_CHECKING:
    from .bindings import Net
    from .context import Context


def rows_of(ctx: Context, eq) -> list[Row]:
    """The rows of one equation (a definition, its update row, or its index/matrix forms)."""
    if getattr(eq, "section", "") == "Notation":
        return [Row(eq.key, "definition", "definition", note="notation")]
    if getattr(eq, "section", "") in NODE_SECTIONS:
        from .nodes import node_rows

        return node_rows(ctx, eq)
    if getattr(eq, "section", "") == LAPLACE_SECTION:
        from .laplace import laplace_rows

        return laplace_rows(ctx, eq)
    if getattr(eq, "section", "") == STRUCTURED:
        from .laplace import structured_rows

        return structured_rows(ctx, eq)
    defined = [n for n, e in ctx.defined.items() if e is eq]
    if defined:
        note = f"defines {defined[0]}; checked where it is used"
        return [Row(eq.key, "definition", "definition", note=note)]
    if not hasattr(eq, "lhs"):
        return [Row(eq.key, "index", "FAIL", note="not evaluable: no SymPy form (LaTeX only)")]
    if eq.key in ctx.update_rows:
        return [ctx.update_rows[eq.key]]
    rows = []
    if isinstance(eq.lhs, sp.MatrixExpr) or isinstance(eq.rhs, sp.MatrixExpr):
        rows.append(matrix_row(ctx, eq, (eq.lhs, *eq.steps, eq.rhs)))
    elif eq.lhs is not None and eq.rhs is not None:
        rows.append(index_row(ctx, eq))
    if eq.matrix is not None:
        rows.append(matrix_row(ctx, eq))
        extra = batch_row(ctx, eq)
        if extra is not None:
            rows.append(extra)
    if not rows:
        rows.append(Row(eq.key, "index", "FAIL", note="not evaluable: no sides"))
    return rows


# -- index form ------------------------------------------------------------------------------


def index_row(ctx: Context, eq) -> Row:
    sides = [("lhs", eq.lhs)] + [(f"step {k + 1}", s) for k, s in enumerate(eq.steps)]
    sides.append(("rhs", eq.rhs))
    if any(isinstance(e, sp.Basic) and e.has(nt.weight) for _, e in sides):
        # an equation about "a weight" w: every weight, as w_flat[p_]
        sides = [(n, e.xreplace({nt.weight: W_FLAT[P_INDEX]})) for n, e in sides]
    exprs = [e for _, e in sides]
    b = ctx.base()
    order = max((_order(e) for e in exprs), default=0)
    cap = POINTS if order < 2 else POINTS_FD2
    try:
        free = free_indices(exprs, ctx.sizes)
        ranges = index_ranges(exprs, free, b)
    except NotEvaluable as exc:
        return Row(eq.key, "index", "FAIL", note=f"not evaluable: {exc}")
    pts = grid(free, ranges, cap, ctx.rng)
    ev = IndexEvaluator(b, free, pts)
    values = []
    for name, e in sides:
        try:
            values.append((name, ev.evaluate(e)))
        except EVAL_ERRORS as exc:
            return Row(eq.key, "index", "FAIL", note=f"not evaluable: {name}: {exc}")
    kernel_pairs = []
    try:
        kernel = _kernel_side(ctx, eq)
        if kernel is not None:
            k_expr, k_ref = kernel
            k_val = ev.evaluate(k_expr)
            if k_ref is None:
                values.append(("kernel", k_val))
            else:
                kernel_pairs.append(("kernel", k_val, "f' (its derivative)", ev.evaluate(k_ref)))
    except EVAL_ERRORS as exc:
        return Row(eq.key, "index", "FAIL", note=f"not evaluable: kernel: {exc}")
    try:
        refs = index_references(ctx, eq.lhs, ev)
    except EVAL_ERRORS as exc:
        return Row(eq.key, "index", "FAIL", note=f"not evaluable: reference: {exc}")
    pairs = pairs_of(values, refs) + kernel_pairs
    # Derivatives were taken from the chain rule where it names them: check those sides by
    # differences at a few points.
    for (name, e), (_, val) in zip(sides, values):
        if _order(e) == 1:
            sub = pts[: _fd_points(e, ctx.sizes)]
            ev_fd = IndexEvaluator(b, free, sub, exact=False)
            try:
                pairs.append((name, val[:, : len(sub)], "FD", by_fd(ev_fd, e)))
            except EVAL_ERRORS as exc:
                return Row(eq.key, "index", "FAIL", note=f"not evaluable: {name} by FD: {exc}")
    return compare(ctx, eq.key, "index", pairs, _sampled(ranges, pts))


def _kernel_side(ctx: Context, eq):
    """The equation's kernel (what the code prints) over the equation's indexed names, and what
    to compare it with: ``(expression, None)`` to compare it like a side (a sum of it for
    ``cost.sample`` and ``reg.value``, whose left sides sum it), ``(expression, f')`` for a
    backpropagation row (its kernel is ``f'``); None when the kernel is the right side itself."""
    K = getattr(eq, "kernel", None)
    if K is None or K == eq.rhs:
        return None
    from ... import calculus

    key = eq.key
    parts = key.split(".")
    numbers = [int(x) for x in parts if x.isdigit()]
    layer = numbers[-1] if numbers else ctx.L
    found = [x for x in sp.preorder_traversal(eq.lhs) if isinstance(x, sp.Indexed)]
    one = [x for x in found if len(x.indices) == 1 and x.base.label.name != "w_flat"]
    idx = one[-1].indices[0] if one else nt.j
    mapping = {
        calculus.z: nt.z(layer)[idx],
        calculus.a: nt.a(layer)[idx],
        calculus.y: nt.y[idx],
        nt.weight: W_FLAT[P_INDEX],
    }
    Kx = K.xreplace(mapping)
    if (parts[0] == "backprop" and len(parts) == 2) or key.startswith("rop.act."):
        z = nt.z(layer)[idx]
        return Kx, sp.Derivative(nt.f(layer)(z), z)
    if key == "cost.sample":
        return sp.Sum(Kx, (idx, 1, nt.n(layer))), None
    if key == "reg.value":
        n_weights = sum(ctx.state.W[k].size for k in range(1, ctx.L + 1))
        return sp.Sum(Kx, (P_INDEX, 1, n_weights)), None
    return Kx, None


def _fd_points(e, sizes) -> int:
    """Points to check a side by differences: POINTS_FD, fewer when its derivatives sit inside
    sums (each term of the sum is one more derivative by differences)."""
    inner = 1
    for node in sp.preorder_traversal(e):
        if isinstance(node, sp.Sum) and node.has(sp.Derivative):
            for _, lo, hi in node.limits:
                try:
                    inner *= max(1, int(sp.sympify(hi - lo + 1).xreplace(sizes)))
                except TypeError:
                    pass
    return max(1, POINTS_FD // inner)


def _order(e) -> int:
    if not isinstance(e, sp.Basic):
        return 0
    orders = [d.derivative_count for d in e.atoms(sp.Derivative)]
    return max(orders, default=1 if e.has(sp.Subs) else 0)


def _sampled(ranges: dict, pts: np.ndarray) -> str:
    total = int(np.prod(list(ranges.values()))) if ranges else 1
    return "" if len(pts) >= total else f"{len(pts)} of {total} index values, drawn at random"


# -- matrix form -----------------------------------------------------------------------------


def matrix_row(ctx: Context, eq, sides=None) -> Row:
    sides = tuple(eq.matrix) if sides is None else sides
    lhs = sides[0]
    names = {getattr(lhs, "name", "")}
    for e in sides:
        names |= {m.name for m in e.atoms(sp.MatrixSymbol)}
    if getattr(lhs, "name", "") in BLOCK_NAMES:
        return _block_row(ctx, eq, sides)
    per_pair = any(n.endswith("_kj") for n in names)
    per_unit = per_pair or any(n.endswith("_j") for n in names)
    units = _unit_pairs(ctx) if per_pair else range(ctx.spec.outputs) if per_unit else [None]
    pairs = []
    free = False
    for unit in units:
        b = ctx.base()
        if per_pair:
            b = b.at_pair(*unit)
        elif unit is not None:
            b = b.at_unit(unit)
        mev = MatrixEvaluator(b)
        try:
            free = any(mev.too_large(e) for e in sides)
            got = _free_pairs(ctx, sides, b) if free else _pairs(ctx, sides, b)
        except _RowError as exc:
            return Row(eq.key, "matrix", "FAIL", note=str(exc))
        pairs += got
    note = f"one block per output unit ({len(units)})" if per_unit else ""
    if per_pair:
        K = ctx.spec.outputs
        note = f"blocks of {len(units)} of the {K * K} pairs of output units (k, j)"
    if free:
        note = ", ".join(
            x for x in (note, f"as products with a random v ({ctx.P} parameters)") if x
        )
    return compare(ctx, eq.key, "matrix", pairs, note)


#: the most pairs of output units (k, j) whose block a row ``H_kj`` checks
MAX_UNIT_PAIRS = 16


def _unit_pairs(ctx: Context) -> list[tuple[int, int]]:
    """The pairs (k, j) of output units checked (see :func:`_drawn_pairs`)."""
    K = ctx.spec.outputs
    return _drawn_pairs(ctx, K, K, MAX_UNIT_PAIRS, square=True)


def _block_pairs(ctx: Context, rows: int, cols: int) -> list[tuple[int, int]]:
    """The pairs (a, b) of units of layers ``rows`` and ``cols`` whose block is checked (see
    :func:`_drawn_pairs`): at most MAX_UNIT_PAIRS, a quarter of that above HESSIAN_MAX
    parameters, where each block's columns are Hessian-vector products."""
    sizes = ctx.spec.sizes
    most = MAX_UNIT_PAIRS if ctx.P <= HESSIAN_MAX else MAX_UNIT_PAIRS // 4
    return _drawn_pairs(ctx, sizes[rows], sizes[cols], most, square=rows == cols)


def _drawn_pairs(ctx: Context, n_rows: int, n_cols: int, most: int, square: bool) -> list:
    """Every pair (a, b) of n_rows x n_cols units, or with more than ``most`` of them: (for a
    block on the diagonal, ``square``) the diagonal pairs up to half the budget, then pairs off
    the diagonal drawn at random."""
    every = [(a, b) for a in range(n_rows) for b in range(n_cols)]
    if len(every) <= most:
        return every
    diagonal = [(a, a) for a in range(min(n_rows, most // 2))] if square else []
    off = [p for p in every if p[0] != p[1]] if square else every
    drawn = ctx.rng.choice(len(off), most - len(diagonal), replace=False)
    return diagonal + [off[t] for t in sorted(drawn)]


def _block_row(ctx: Context, eq, sides) -> Row:
    """A block ``H11_jq``, ``H12_jk`` or ``H22_kp`` of the one-hidden-layer Hessian, for pairs
    of units: the left side (the Hessian of the reference), the right side and the trainer's
    block."""
    name = sides[0].name
    pairs = []
    units = _block_pairs(ctx, int(name[1]), int(name[2]))
    for a, b in units:
        view = ctx.base().at_block(name, a, b)
        try:
            pairs += _pairs(ctx, sides, view)
        except _RowError as exc:
            return Row(eq.key, "matrix", "FAIL", note=str(exc))
    total = ctx.spec.sizes[int(name[1])] * ctx.spec.sizes[int(name[2])]
    note = f"blocks of {len(units)} of the {total} pairs"
    if ctx.P > HESSIAN_MAX:
        note += f" (the left side: the trainer's, from hvp; {ctx.P} parameters)"
    return compare(ctx, eq.key, "matrix", pairs, note)


class _RowError(Exception):
    """A side that cannot be evaluated: the row fails with this message."""


def _pairs(ctx: Context, sides, b: Net) -> list:
    """Every side evaluated whole, against the trainer's matrix (or the left side)."""
    lhs = sides[0]
    mev = MatrixEvaluator(b)
    named = [("lhs", lhs)] + [(f"step {k}", e) for k, e in enumerate(sides[1:-1], 1)]
    values = []
    for name, e in [*named, ("rhs", sides[-1])]:
        try:
            values.append((name, np.asarray(mev.evaluate(e), dtype=np.float64)))
        except NotEvaluable as exc:
            if name == "lhs" and isinstance(lhs, sp.MatrixSymbol) and lhs.name in ("G",):
                continue  # the trainer's matrix is the reference
            raise _RowError(f"not evaluable: {name}: {exc}") from None
        except (*EVAL_ERRORS, np.linalg.LinAlgError) as exc:
            raise _RowError(f"not evaluable: {name}: {exc}") from None
    try:
        refs = matrix_references(ctx, lhs, b)
    except EVAL_ERRORS as exc:
        raise _RowError(f"not evaluable: reference: {exc}") from None
    if len(values) == 1 and not refs:
        raise _RowError(f"not evaluable: lhs: no values for {lhs}")
    return pairs_of(values, refs)


def _free_pairs(ctx: Context, sides, b: Net) -> list:
    """A matrix too large to form (above MAX_ENTRIES), compared through its product with the
    random direction v (its first entries for a block): the trainer's ``hvp`` for H and its
    blocks, its R-operator for G."""
    mev = MatrixEvaluator(b)
    lhs = sides[0]
    cols = mev.shape_of(lhs)[1]
    v = ctx.v[:cols, None]
    values = []
    named = [("lhs", lhs)] + [(f"step {k}", e) for k, e in enumerate(sides[1:-1], 1)]
    for name, e in [*named, ("rhs", sides[-1])]:
        if name == "lhs" and isinstance(e, sp.MatrixSymbol) and e.name in ("G", "H"):
            continue
        try:
            values.append((name, np.asarray(mev.times(e, v), dtype=np.float64)))
        except (*EVAL_ERRORS, np.linalg.LinAlgError) as exc:
            raise _RowError(f"not evaluable: {name} times v: {exc}") from None
    refs = []
    if isinstance(lhs, sp.MatrixSymbol) and lhs.name == "H":
        refs.append(("trainer hvp", ctx.t_hvp()[:, None]))
    elif isinstance(lhs, sp.MatrixSymbol) and lhs.name == "G":
        gv = ctx.trainer_gnvp(ctx.v)
        if gv is None:
            raise _RowError("not evaluable: the trainer has no G v")
        refs.append(("trainer G v (R-operator)", gv[:, None]))
    if not refs and len(values) < 2:
        raise _RowError(f"not evaluable: no values for {lhs} v")
    return pairs_of(values, refs)
