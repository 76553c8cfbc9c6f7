"""Matrix form: ``MatMul``, ``MatAdd``, ``Transpose``, ``HadamardProduct``, ``HadamardPower``,
``ElementwiseApplyFunction``, ``OneMatrix``, ``Identity``, ``ZeroMatrix``, ``Inverse``,
``BlockMatrix``, ``DiagMatrix``, the verifier's ``SampleSum`` and scalar factors, evaluated to 2-D
arrays; matrices too large to form are applied to vectors (``times``)."""

from __future__ import annotations

import numpy as np
import sympy as sp
from sympy.matrices.expressions.applyfunc import ElementwiseApplyFunction
from sympy.matrices.expressions.diagonal import DiagMatrix
from sympy.matrices.expressions.hadamard import HadamardPower, HadamardProduct

from .base import UFUNCS, Bindings, NotEvaluable, as_int, sum_
from .index import Run

#: The largest matrix the evaluator forms (entries); ``times`` multiplies larger ones by a vector.
MAX_ENTRIES = 9_000_000


class MatrixEvaluator:
    """Evaluates matrix-form expressions to 2-D arrays (scalars to floats)."""

    def __init__(self, bindings: Bindings) -> None:
        self.b = bindings

    def too_large(self, e) -> bool:
        rows, cols = self.shape_of(e)
        return rows * cols > MAX_ENTRIES

    def times(self, e, v: np.ndarray) -> np.ndarray:
        """``e @ v`` without forming ``e`` where it is too large (sums, products, transposes,
        sample sums and symbols the bindings can apply: ``Bindings.matrix_times``)."""
        if not getattr(e, "is_Matrix", False):
            return self.scalar(e) * v
        if not self.too_large(e):
            return self.evaluate(e) @ v
        if isinstance(e, sp.MatAdd):
            return sum_(self.times(a, v) for a in e.args)
        if isinstance(e, sp.MatMul):
            out = v
            for a in reversed(e.args):
                out = self.times(a, out)
            return out
        if isinstance(e, sp.Identity):
            return v
        if isinstance(e, sp.ZeroMatrix):
            return np.zeros((self.shape_of(e)[0],) + v.shape[1:])
        if type(e).__name__ == "SampleSum":
            total = None
            for x in range(self.b.m):
                part = MatrixEvaluator(self.b.at_sample(x)).times(e.args[0], v)
                total = part if total is None else total + part
            return total
        if isinstance(e, sp.Transpose) and not self.too_large(e.arg):
            return self.evaluate(e.arg).T @ v
        if isinstance(e, sp.MatrixSymbol):
            got = self.b.matrix_times(e.name, v)
            if got is not None:
                return got
        raise NotEvaluable(f"{e} is too large to form ({self.shape_of(e)}) and to apply")

    def shape_of(self, e) -> tuple[int, int]:
        return tuple(as_int(d, lambda: f"the shape of {e}", self.b.sizes) for d in e.shape)

    def evaluate(self, e):
        e = sp.sympify(e)
        if not getattr(e, "is_Matrix", False):
            return self.scalar(e)
        if self.too_large(e):
            raise NotEvaluable(f"{e} is too large to form ({self.shape_of(e)})")
        out = self._matrix(e)
        want = self.shape_of(e)
        if out.shape != want:
            raise NotEvaluable(f"{e} evaluated to shape {out.shape}, its shape is {want}")
        return out

    def scalar(self, e):
        if any(getattr(a, "is_Matrix", False) for a in sp.preorder_traversal(e)):
            raise NotEvaluable(f"a scalar built from matrices: {e}")
        run = Run(self.b, {}, 2)
        v = np.asarray(run.eval(e, {}), dtype=np.float64)
        if v.size != 1:
            raise NotEvaluable(f"the scalar {e} has one value per sample")
        return float(v.reshape(-1)[0])

    def _matrix(self, e):
        if isinstance(e, sp.MatrixSymbol):
            val = self.b.matrix(e.name)
            if val is None:
                raise NotEvaluable(f"no values for the matrix {e.name}")
            return np.asarray(val, dtype=np.float64)
        if isinstance(e, sp.MatAdd):
            out = None
            for a in e.args:
                v = self.evaluate(a)
                out = v if out is None else _same_shape_add(out, v, e)
            return out
        if isinstance(e, sp.MatMul):
            # right to left: an inverse is a solve, a factor too large to form is applied
            scale = 1.0
            out = None
            for a in reversed(e.args):
                if not getattr(a, "is_Matrix", False):
                    scale *= self.scalar(a)
                    continue
                inv = _inverse_of(a)
                if inv is not None:
                    A = self.evaluate(inv)
                    out = np.linalg.solve(A, np.eye(len(A)) if out is None else out)
                elif out is not None and self.too_large(a):
                    out = self.times(a, out)
                else:
                    out = self.evaluate(a) if out is None else self.evaluate(a) @ out
            return scale * out
        if isinstance(e, sp.Transpose):
            return self.evaluate(e.arg).T
        if isinstance(e, HadamardProduct):
            out = None
            for a in e.args:
                v = self.evaluate(a)
                out = v if out is None else _same_shape(out, v, e) * v
            return out
        if isinstance(e, HadamardPower):
            return np.power(self.evaluate(e.base), self.scalar(e.exp))
        if isinstance(e, ElementwiseApplyFunction):
            return self.apply(e.function, self.evaluate(e.expr))
        if isinstance(e, sp.OneMatrix):
            return np.ones(self.shape_of(e))
        if isinstance(e, sp.ZeroMatrix):
            return np.zeros(self.shape_of(e))
        if isinstance(e, sp.Identity):
            return np.eye(self.shape_of(e)[0])
        if isinstance(e, sp.Inverse):
            return np.linalg.inv(self.evaluate(e.arg))
        if isinstance(e, sp.MatPow):
            base = self.evaluate(e.base)
            if base.shape == (1, 1):  # a scalar written as a 1 x 1 matrix
                return np.power(base, float(self.scalar(e.exp)))
            return np.linalg.matrix_power(base, as_int(e.exp, "a matrix power"))
        if isinstance(e, sp.BlockMatrix):
            rows = e.blocks.tolist()
            return np.block([[self.evaluate(b) for b in row] for row in rows])
        if isinstance(e, sp.MatrixBase):
            return np.array([[self.scalar(x) for x in row] for row in e.tolist()])
        if type(e).__name__ == "SampleSum":
            total = None
            for x in range(self.b.m):
                v = MatrixEvaluator(self.b.at_sample(x)).evaluate(e.args[0])
                total = v if total is None else total + v
            return total
        if isinstance(e, DiagMatrix):
            v = self.evaluate(e.args[0]).reshape(-1)
            return np.diag(v)
        raise NotEvaluable(f"no rule for the matrix expression {type(e).__name__} ({e})")

    def apply(self, fn, values: np.ndarray) -> np.ndarray:
        if isinstance(fn, sp.Lambda):
            (var,) = fn.variables
            run = Run(self.b, {}, 2)
            out = run.eval(fn.expr, {var: values.reshape((1,) + values.shape)})
            return np.broadcast_to(np.asarray(out, dtype=np.float64), (1,) + values.shape)[0]
        name = getattr(fn, "__name__", str(fn))
        num = self.b.function(name)
        if num is None and fn in UFUNCS:
            num = UFUNCS[fn]
        if num is None:
            raise NotEvaluable(f"no definition of the function {name}")
        return np.asarray(num(values), dtype=np.float64)


def _inverse_of(e):
    """``A`` for ``A**(-1)`` or ``Inverse(A)``, else None."""
    if isinstance(e, sp.Inverse):
        return e.arg
    if isinstance(e, sp.MatPow) and e.exp == -1:
        return e.base
    return None


def _same_shape(a, b, e):
    if a.shape != b.shape:
        raise NotEvaluable(f"shapes {a.shape} and {b.shape} in {e}")
    return a


def _same_shape_add(a, b, e):
    return _same_shape(a, b, e) + b
