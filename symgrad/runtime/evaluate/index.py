"""Index form: expressions over ``IndexedBase``/``Sum`` at a list of points of the free indices.

Values are arrays of ``ndim = 2 + (number of Sum limits)``: axis 0 the samples (size 1 when the
value does not depend on the sample), axis 1 the points, then one axis per ``Sum`` limit. ``Sum``
over the sample symbol sums axis 0. Derivatives: :mod:`.derivatives`.
"""

from __future__ import annotations

import numpy as np
import sympy as sp

from ... import calculus as C
from ..reference import lambdify
from .base import RELATIONS, UFUNCS, Bindings, NotEvaluable, as_int, sum_
from .derivatives import Derivatives


class IndexEvaluator:
    """Evaluates index-form expressions at a list of points (see the module doc)."""

    def __init__(
        self, bindings: Bindings, free: list[sp.Symbol], points: np.ndarray, exact: bool = True
    ) -> None:
        self.b = bindings
        self.free = free
        self.points = points
        #: False: every first derivative by differences, even where the bindings know it
        self.exact = exact

    def evaluate(self, expr: sp.Basic) -> np.ndarray:
        """The value of ``expr`` at every point and sample: ``(m, P)`` (``(1, P)`` when it does
        not depend on the sample)."""
        expr = sp.sympify(expr)
        axes: dict = {}
        for node in sp.preorder_traversal(expr):
            if isinstance(node, sp.Sum):
                for lim in node.limits:
                    if lim[0] != self.b.sample and (node, lim[0]) not in axes:
                        axes[(node, lim[0])] = 2 + len(axes)
        ndim = 2 + len(axes)
        idx = {}
        for k, s in enumerate(self.free):
            shape = [1] * ndim
            shape[1] = len(self.points)
            idx[s] = self.points[:, k].reshape(shape)
        run = Run(self.b, axes, ndim, self.exact)
        out = np.asarray(run.eval(expr, idx), dtype=np.float64)
        if out.ndim == 0:
            out = out.reshape((1,) * ndim)
        out = out.reshape(out.shape[:2])
        return np.broadcast_to(out, (out.shape[0], len(self.points)))


class Run(Derivatives):
    """One evaluation: the Sum axes, the number of dimensions, the kinks seen."""

    def __init__(self, b: Bindings, axes: dict, ndim: int, exact: bool = True) -> None:
        self.b = b
        self.axes = axes
        self.ndim = ndim
        self.exact = exact
        self.kinks: list[bytes] = []

    def full(self, value) -> np.ndarray:
        """``value`` with ``ndim`` axes (a per-sample ``(m,)`` array on axis 0)."""
        v = np.asarray(value, dtype=np.float64)
        if v.ndim == 0:
            return v
        if v.ndim == 1 and v.shape[0] == self.b.m:
            return v.reshape((self.b.m,) + (1,) * (self.ndim - 1))
        raise NotEvaluable(f"a value of shape {v.shape} where a scalar was expected")

    # -- the walk -------------------------------------------------------------------------------
    def eval(self, e, idx):
        if e.is_Number or e.is_NumberSymbol:
            return np.float64(float(e))
        if isinstance(e, sp.Symbol):
            return self.symbol(e, idx)
        if isinstance(e, sp.Indexed):
            return self.indexed(e, idx)
        if isinstance(e, sp.Add):
            return sum_(self.eval(a, idx) for a in e.args)
        if isinstance(e, sp.Mul):
            out = np.float64(1.0)
            for a in e.args:
                out = out * self.eval(a, idx)
            return out
        if isinstance(e, sp.Pow):
            base = self.eval(e.base, idx)
            ex = self.eval(e.exp, idx)
            return np.power(np.asarray(base, dtype=np.float64), ex)
        if isinstance(e, sp.Sum):
            return self.sum(e, idx)
        if isinstance(e, sp.Piecewise):
            return self.piecewise(e, idx)
        if isinstance(e, sp.KroneckerDelta):
            return (self.eval(e.args[0], idx) == self.eval(e.args[1], idx)).astype(np.float64)
        if isinstance(e, sp.Derivative):
            return self.derivative(e, idx)
        if isinstance(e, sp.Subs):
            return self.subs(e, idx)
        if isinstance(e, tuple(RELATIONS)):
            return RELATIONS[type(e)](self.eval(e.lhs, idx), self.eval(e.rhs, idx))
        if isinstance(e, sp.And):
            return np.logical_and.reduce([self.eval(a, idx) for a in e.args])
        if isinstance(e, sp.Or):
            return np.logical_or.reduce([self.eval(a, idx) for a in e.args])
        if e is sp.true:
            return np.True_
        if e is sp.false:
            return np.False_
        if isinstance(e, (sp.Max, sp.Min)):
            vals = np.broadcast_arrays(*[self.eval(a, idx) for a in e.args])
            red = np.maximum if isinstance(e, sp.Max) else np.minimum
            self.kinks.append(np.argmax(vals, axis=0).tobytes())
            return red.reduce(vals)
        if isinstance(e, C.logsumexp):
            return self.logsumexp(e, idx)
        if isinstance(e, sp.Function):
            return self.function(e, idx)
        raise NotEvaluable(f"no rule for {type(e).__name__} ({e})")

    def symbol(self, e: sp.Symbol, idx):
        if e in idx:
            return idx[e]
        if e in self.b.sizes:
            return np.float64(self.b.sizes[e])
        value = self.b.scalar(e.name)
        if value is None:
            raise NotEvaluable(f"no value for the symbol {e.name}")
        return self.full(value)

    def indexed(self, e: sp.Indexed, idx):
        name = e.base.label.name
        bound = self.b.indexed(name)
        if bound is None:
            raise NotEvaluable(f"no values for {name}")
        arr, per_sample = bound
        shape = arr.shape[1:] if per_sample else arr.shape
        if len(e.indices) != len(shape):
            raise NotEvaluable(f"{e}: {len(e.indices)} indices for an array of shape {shape}")
        ix = []
        for k, (i, n) in enumerate(zip(e.indices, shape)):
            v = np.asarray(self.eval(i, idx))
            if v.dtype.kind == "f":
                if not np.all(v == np.round(v)):
                    raise NotEvaluable(f"{e}: index {k + 1} is not an integer")
                v = v.astype(np.int64)
            if np.any(v < 1) or np.any(v > n):
                raise NotEvaluable(f"{e}: index {k + 1} outside 1..{n}")
            ix.append(v - 1)
        if per_sample:
            s = np.arange(arr.shape[0]).reshape((arr.shape[0],) + (1,) * (self.ndim - 1))
            ix = [s] + [np.reshape(v, v.shape if v.ndim else (1,) * self.ndim) for v in ix]
            return arr[tuple(ix)]
        ix = [np.reshape(v, v.shape if v.ndim else (1,) * self.ndim) for v in ix]
        return arr[tuple(ix)] if ix else arr

    def sum(self, e: sp.Sum, idx):
        body = e.function
        limits = list(e.limits)
        return self._sum(e, body, limits, idx)

    def _sum(self, node, body, limits, idx):
        if not limits:
            return self.eval(body, idx)
        (var, lo, hi), rest = limits[-1], limits[:-1]
        # SymPy's Sum(f, (i, ...), (j, ...)) sums i innermost; the order does not matter here.
        lo = as_int(lo, lambda: f"the lower limit of {node}", self.b.sizes)
        hi = as_int(hi, lambda: f"the upper limit of {node}", self.b.sizes)
        if var == self.b.sample:
            if (lo, hi) != (1, self.b.m):
                raise NotEvaluable(f"a sum over the samples from {lo} to {hi}, not 1..{self.b.m}")
            val = np.asarray(self._sum(node, body, rest, idx), dtype=np.float64)
            val = val if val.ndim else val.reshape((1,) * self.ndim)
            if val.shape[0] == 1:
                return val * self.b.m
            return val.sum(axis=0, keepdims=True)
        axis = self.axes[(node, var)]
        shape = [1] * self.ndim
        shape[axis] = hi - lo + 1
        inner = dict(idx)
        inner[var] = np.arange(lo, hi + 1).reshape(shape)
        val = np.asarray(self._sum(node, body, rest, inner), dtype=np.float64)
        val = val if val.ndim else val.reshape((1,) * self.ndim)
        if val.shape[axis] == 1:
            return val * (hi - lo + 1)
        return val.sum(axis=axis, keepdims=True)

    def piecewise(self, e: sp.Piecewise, idx):
        conds = []
        vals = []
        for expr, cond in e.args:
            conds.append(np.asarray(self.eval(cond, idx), dtype=bool))
            vals.append(np.asarray(self.eval(expr, idx), dtype=np.float64))
        shape = np.broadcast_shapes(*[c.shape for c in conds], *[v.shape for v in vals])
        conds = [np.broadcast_to(c, shape) for c in conds]
        self.kinks.append(np.argmax(np.stack(conds), axis=0).tobytes())
        with np.errstate(all="ignore"):
            out = np.select(conds, [np.broadcast_to(v, shape) for v in vals], default=np.nan)
        return out

    def function(self, e: sp.Function, idx):
        other = self.b.rewrite(e)
        if other is not None:
            return self.eval(other, idx)
        args = [self.eval(a, idx) for a in e.args]
        if e.func in (sp.Abs, sp.sign):
            self.kinks.append(np.sign(np.asarray(args[0])).tobytes())
        if e.func in UFUNCS:
            return UFUNCS[e.func](*args)
        fn = self.b.function(e.func.__name__)
        if fn is not None:
            branch = getattr(fn, "branch", None)  # a piecewise function: its kinks count too
            which = branch(*args) if branch is not None else None
            if which is not None:
                self.kinks.append(np.asarray(which).tobytes())
            return fn(*args)
        if isinstance(e.func, sp.core.function.UndefinedFunction):
            raise NotEvaluable(f"no definition of the function {e.func.__name__}")
        dummies = sp.symbols(f"_u0:{len(args)}", real=True)
        try:
            num = lambdify(dummies, e.func(*dummies))
            return num(*np.broadcast_arrays(*args))
        except Exception as exc:  # SymPy's printer and NumPy's errors vary
            raise NotEvaluable(f"no rule for the function {e.func.__name__}: {exc}") from exc

    def logsumexp(self, e, idx):
        (arg,) = e.args
        if not isinstance(arg, sp.Indexed):
            raise NotEvaluable(f"logsumexp of {arg}: expected the units of a layer (z_L[j])")
        bound = self.b.indexed(arg.base.label.name)
        if bound is None or not bound[1]:
            raise NotEvaluable(f"no per-sample values for {arg.base}")
        z = bound[0]
        top = z.max(axis=1, keepdims=True)
        lse = (top + np.log(np.exp(z - top).sum(axis=1, keepdims=True)))[:, 0]
        return self.full(lse)
