"""What the evaluator needs from the verifier (:class:`Bindings`), and the free indices of an
expression with the ranges they run over."""

from __future__ import annotations

import itertools

import numpy as np
import sympy as sp

from ... import calculus as C
from ...calculus.core import sigma as _sigma


class NotEvaluable(Exception):
    """The evaluator has no rule (or no value) for part of an expression; the message says which."""


UFUNCS = {
    sp.exp: np.exp,
    sp.log: np.log,
    sp.tanh: np.tanh,
    sp.sinh: np.sinh,
    sp.cosh: np.cosh,
    sp.sin: np.sin,
    sp.cos: np.cos,
    sp.atan: np.arctan,
    sp.Abs: np.abs,
    sp.sign: np.sign,
    C.softplus: lambda x: np.logaddexp(0.0, x),
    _sigma: lambda x: 0.5 * np.tanh(0.5 * np.asarray(x, dtype=np.float64)) + 0.5,
}

RELATIONS = {
    sp.StrictGreaterThan: np.greater,
    sp.GreaterThan: np.greater_equal,
    sp.StrictLessThan: np.less,
    sp.LessThan: np.less_equal,
    sp.Equality: np.equal,
    sp.Unequality: np.not_equal,
}


class Bindings:
    """What the names of the IR mean numerically (subclassed by the verifier).

    Attributes:
        m: samples (axis 0 of per-sample values).
        sizes: integer symbols (widths ``n_l``, ``m``, ``N``) -> int.
        sample: the symbol of a sum over the training set (``sum_x``).
    """

    m: int = 1
    sizes: dict = {}
    sample: sp.Symbol | None = None

    def scalar(self, name: str):
        """A scalar: a float, or a ``(m,)`` array for a per-sample scalar (``C_x``); or None."""
        return None

    def indexed(self, name: str):
        """``(array, per_sample)`` for an ``IndexedBase``; None when unknown."""
        return None

    def matrix(self, name: str):
        """The array bound to a ``MatrixSymbol``; None when unknown."""
        return None

    def function(self, name: str):
        """A NumPy callable for an undefined function (``f_2``, ``ell``); None when unknown."""
        return None

    def rewrite(self, expr: sp.Basic) -> sp.Basic | None:
        """An equivalent expression to evaluate instead of ``expr`` (an applied function the
        bindings know by its definition, ``f_L(z_L[j]) -> a_L[j]`` for softmax); else None."""
        return None

    def matrix_times(self, name: str, v: np.ndarray):
        """``M @ v`` for a matrix symbol too large to form (``I_w``...); None when unknown."""
        return None

    def at_sample(self, x: int) -> Bindings:
        """The bindings of the per-sample matrices of sample ``x`` (inside a ``SampleSum``)."""
        raise NotEvaluable("no per-sample matrices")

    def perturb(self, var: sp.Basic, t: float, sample: int | None) -> Bindings:
        """The bindings after ``var`` (an ``Indexed`` with integer indices, or a symbol) moved by
        ``t`` (in sample ``sample`` only, or in all samples when None)."""
        raise NotEvaluable(f"cannot vary {var}")

    def exact_derivative(self, expr: sp.Basic, var: sp.Basic, index, ndim: int):
        """``d expr / d var`` where the bindings know it exactly (the chain rule of the
        reference), else None. ``index(e)`` evaluates an index expression to integer arrays
        (``ndim`` axes, or 0-d for a constant), as in :class:`IndexEvaluator`."""
        return None

    def per_sample_var(self, var: sp.Basic) -> bool:
        """True when ``var`` has one value per sample (``z_l[j]``), False for a parameter."""
        return False

    def signature(self) -> tuple:
        """Which piece of every piecewise function each value sits on (kink detection)."""
        return ()


def as_int(value, what, sizes=None) -> int:
    """``value`` (with ``sizes`` substituted) as an int; ``what()`` names it in the error."""
    v = sp.sympify(value)
    if sizes and not v.is_Integer:
        v = sp.sympify(v.xreplace(sizes))
    if not v.is_Integer:
        raise NotEvaluable(f"{what() if callable(what) else what} is not a concrete integer: {v}")
    return int(v)


def symbols_in(e) -> set[sp.Symbol]:
    """The free symbols of ``e``, counting the variables of a ``Derivative`` (SymPy drops those
    its expression does not depend on) and not the labels of ``Indexed`` bases."""
    if isinstance(e, sp.Symbol):
        return {e}
    if isinstance(e, sp.Indexed):
        return set().union(*(symbols_in(i) for i in e.indices))
    if isinstance(e, sp.Sum):
        out = symbols_in(e.function)
        for lim in e.limits:
            out.discard(lim[0])
            out |= set().union(*(symbols_in(x) for x in lim[1:]))
        return out
    if isinstance(e, sp.Derivative):
        return symbols_in(e.expr).union(*(symbols_in(v) for v in e.variables))
    if not isinstance(e, sp.Basic) or isinstance(e, sp.IndexedBase):
        return set()
    return set().union(*(symbols_in(a) for a in e.args))


def free_indices(exprs, sizes: dict) -> list[sp.Symbol]:
    """The free index symbols of ``exprs`` (used as indices, not bound by a Sum), by name."""
    found: set[sp.Symbol] = set()
    for e in exprs:
        if not isinstance(e, sp.Basic):
            continue
        free = symbols_in(e)
        for node in sp.preorder_traversal(e):
            if isinstance(node, sp.Indexed):
                for ix in node.indices:
                    found |= ix.free_symbols & free
            elif isinstance(node, sp.KroneckerDelta):
                for ix in node.args:
                    found |= ix.free_symbols & free
    found = {s for s in found if s not in sizes}
    return sorted(found, key=lambda s: s.name)


def index_ranges(exprs, free: list[sp.Symbol], bindings: Bindings) -> dict:
    """The range ``1..n`` of every free index, from the shape of the arrays it indexes."""
    ranges: dict[sp.Symbol, int] = {}
    for e in exprs:
        if not isinstance(e, sp.Basic):
            continue
        for node in sp.preorder_traversal(e):
            if not isinstance(node, sp.Indexed):
                continue
            bound = bindings.indexed(node.base.label.name)
            if bound is None:
                continue
            arr, per_sample = bound
            shape = arr.shape[1:] if per_sample else arr.shape
            for ix, size in zip(node.indices, shape):
                if isinstance(ix, sp.Symbol) and ix in free:
                    ranges[ix] = min(ranges.get(ix, size), size)
    for e in exprs:  # KroneckerDelta(j, k) alone: k runs over the range of j
        for node in sp.preorder_traversal(e) if isinstance(e, sp.Basic) else ():
            if isinstance(node, sp.KroneckerDelta):
                x, y = node.args
                if x in ranges and y in free and y not in ranges:
                    ranges[y] = ranges[x]
                if y in ranges and x in free and x not in ranges:
                    ranges[x] = ranges[y]
    missing = [s.name for s in free if s not in ranges]
    if missing:
        raise NotEvaluable(f"no range for the free index {', '.join(missing)}")
    return ranges


def grid(free: list[sp.Symbol], ranges: dict, cap: int, rng: np.random.Generator) -> np.ndarray:
    """Points (P, len(free)) of 1-based index values: all of them, or ``cap`` drawn at random."""
    sizes = [ranges[s] for s in free]
    total = int(np.prod(sizes)) if sizes else 1
    if not free:
        return np.zeros((1, 0), dtype=np.int64)
    if total <= cap:
        pts = np.array(list(itertools.product(*[range(1, n + 1) for n in sizes])))
        return pts.astype(np.int64)
    flat = rng.choice(total, size=cap, replace=False)
    flat.sort()
    return (np.stack(np.unravel_index(flat, sizes), axis=1) + 1).astype(np.int64)


def sum_(values):
    out = np.float64(0.0)
    for v in values:
        out = out + v
    return out
