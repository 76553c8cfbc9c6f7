"""Derivatives in index form by central differences (order 8, see :func:`..reference.fd`),
through the ``perturb`` hook of the bindings; exact first derivatives where the bindings know
them (``Bindings.exact_derivative``)."""

from __future__ import annotations

from contextlib import contextmanager
from contextvars import ContextVar

import numpy as np
import sympy as sp

from ..reference import fd
from .base import Bindings, NotEvaluable, symbols_in


class Derivatives:
    """The derivative rules of the index-form walk (mixed into its ``Run``)."""

    b: Bindings
    axes: dict
    ndim: int
    exact: bool

    def _run(self, b: Bindings):
        """A fresh walk with the same Sum axes over the bindings ``b``."""
        return type(self)(b, self.axes, self.ndim)

    # -- derivatives by central differences --------------------------------------------------------
    def subs(self, e: sp.Subs, idx):
        """``Subs(Derivative(F(u), u), u, point)``: f'(point), by differences in ``u``."""
        inner = e.expr
        mapping = dict(zip(e.variables, e.point))
        if isinstance(inner, sp.Derivative):
            values = {v: self.eval(p, idx) for v, p in mapping.items()}
            return self._fd_scalar(inner, values, idx)
        return self.eval(inner.xreplace(mapping), idx)

    def _fd_scalar(self, d: sp.Derivative, values: dict, idx):
        """Derivative of ``d.expr`` by symbols bound in ``values`` (arrays), elementwise."""
        variables = [v for v, n in d.variable_count for _ in range(n)]
        for v in variables:
            if v not in values:
                raise NotEvaluable(f"the derivative variable {v} has no value")

        def value_at(shifts: dict):
            run = self._run(self.b)
            local = dict(idx)
            for v, base in values.items():
                local[v] = np.asarray(base, dtype=np.float64) + shifts.get(v, 0.0)
            return run.eval(d.expr, local), tuple(run.kinks)

        def deriv(vars_left, shifts):
            v = vars_left[-1]

            def fun(t):
                s = dict(shifts)
                s[v] = s.get(v, 0.0) + t
                if len(vars_left) == 1:
                    return value_at(s)
                inner, _ = deriv(vars_left[:-1], s)
                return inner, value_at(s)[1]

            return _fd(fun)

        out, _ = deriv(variables, {})
        return out

    def derivative(self, e: sp.Derivative, idx):
        variables = [v for v, n in e.variable_count for _ in range(n)]
        if len(variables) > 2:
            raise NotEvaluable(f"a derivative of order {len(variables)}")
        if self.exact and len(variables) == 1:
            got = self.b.exact_derivative(
                e.expr, variables[0], lambda i: self.eval(i, idx), self.ndim
            )
            if got is not None:
                return got
        if all(isinstance(v, sp.Symbol) and v not in idx for v in variables):
            values = {}
            for v in variables:
                val = self.b.scalar(v.name)
                if val is None:
                    raise NotEvaluable(f"the derivative variable {v} has no value")
                values[v] = self.full(val)
            return self._fd_scalar(e, values, idx)
        # Index symbols the result depends on: those of the variables and of the expression.
        syms = set()
        for part in [e.expr, *variables]:
            syms |= {s for s in symbols_in(part) if s in idx}
        shape = np.broadcast_shapes(*[np.shape(idx[s]) for s in syms]) if syms else ()
        shape = tuple(shape) + (1,) * (self.ndim - len(shape))
        out = np.full((self.b.m,) + shape[1:], np.nan)
        per_sample = False
        for combo in np.ndindex(*shape[1:]):
            point = {}
            for s in syms:
                arr = np.broadcast_to(idx[s], shape)
                point[s] = int(arr[(0,) + combo])
            local = dict(idx)
            for s, v in point.items():
                local[s] = np.full((1,) * self.ndim, v)
            concrete = [v.xreplace({s: sp.Integer(k) for s, k in point.items()}) for v in variables]
            val = self._fd_point(e.expr, concrete, local)
            per_sample = per_sample or val.shape[0] > 1
            out[(slice(None),) + combo] = val
        return out if per_sample else out[:1]

    def _fd_point(self, F, variables, idx):
        """d F / d variables (one or two) at one point; ``(m,)`` per sample, or ``(1,)``."""

        def value(b: Bindings):
            run = self._run(b)
            v = np.asarray(run.eval(F, idx), dtype=np.float64)
            v = v.reshape(1) if v.ndim == 0 else v.reshape(v.shape[0], -1)[:, 0]
            return v, tuple(run.kinks) + b.signature()

        def deriv(b: Bindings, vars_left, sample):
            v = vars_left[-1]

            def fun(t):
                moved = b.perturb(v, t, sample)
                if len(vars_left) == 1:
                    return value(moved)
                inner = moved.exact_derivative(
                    F, vars_left[0], lambda i: self.eval(i, idx), self.ndim
                )
                if inner is not None:  # differences of the exact first derivative
                    inner = np.asarray(inner, dtype=np.float64)
                    inner = inner.reshape(1) if inner.ndim == 0 else inner.reshape(len(inner), -1)
                    inner = inner[:, 0] if sample is None or len(inner) == 1 else inner[sample, :1]
                    return inner, moved.signature()
                return deriv(moved, vars_left[:-1], sample), value(moved)[1]

            return _fd(fun)

        base, _ = value(self.b)
        if base.shape[0] == 1 and any(self.b.per_sample_var(v) for v in variables):
            # F sums over the samples: its derivative by one sample's value, sample by sample
            return np.array([deriv(self.b, variables, x)[0] for x in range(self.b.m)])
        return deriv(self.b, variables, None)


#: While :func:`fd_errors` runs: the error estimates of the differences taken (absolute).
_ERRORS: ContextVar[list | None] = ContextVar("symgrad_fd_errors", default=None)


@contextmanager
def fd_errors():
    """Collects the error estimate of every finite difference taken inside the block (a list
    of absolute errors; see ``reference.fd``)."""
    sink: list[float] = []
    token = _ERRORS.set(sink)
    try:
        yield sink
    finally:
        _ERRORS.reset(token)


def _fd(fun):
    """Central differences of order 8 of ``fun(t) -> (value, kinks)`` at 0 (see reference.fd)."""
    d, _, err = fd(fun, with_error=True)
    sink = _ERRORS.get()
    if sink is not None:
        sink.append(err)
    return d
