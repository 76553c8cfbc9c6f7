"""Code printers: SymPy expressions of the Derivation to NumPy source. No calculus here.

A backend is a printer class with its module names as data (``module = "np"``) plus a template
set (``templates/numpy``); a CuPy or PyTorch backend subclasses :class:`NumPyPrinter`.

Two ways to print one expression, sharing the stable rewrites of :func:`stable_rewrite`:

- :meth:`NumPyPrinter.doprint` writes one expression (readable methods: ``loss``, ``hessian``);
- :class:`~symgrad.printers.inplace.InplaceEmitter` writes assignments ``target <- expr`` as
  ufunc calls with ``out=`` into preallocated buffers (the training loop).

The matrix forms (the R-operator sweeps) are printed by
:class:`~symgrad.printers.matrix_numpy.MatrixNumPyPrinter`, which prints their entrywise
products with this printer.

Printed code is laid out as ``ruff format`` lays it out (:mod:`.pylayout`).
"""

from __future__ import annotations

import sympy as sp
from sympy.codegen.cfunctions import expm1
from sympy.printing.numpy import NumPyPrinter as _SymPyNumPyPrinter
from sympy.printing.pycode import PythonCodePrinter

from ..calculus import softplus
from .pylayout import format_code

__all__ = ["NumPyPrinter", "ScalarPrinter", "stable_rewrite"]


# ---------------------------------------------------------------------------------------
# Stable rewrites (each identity is checked against SymPy in tests/test_codegen_printer.py)


def _is_sigmoid(e) -> bool:
    return (
        isinstance(e, sp.Pow)
        and e.exp == -1
        and isinstance(e.base, sp.Add)
        and isinstance(e.base - 1, sp.exp)
    )


def _to_tanh(e):
    arg = (e.base - 1).args[0]
    return (1 + sp.tanh(-arg / 2)) / 2


def _is_softplus(e) -> bool:
    return isinstance(e, sp.log) and isinstance(e.args[0] - 1, sp.exp)


def _to_softplus(e):
    return softplus((e.args[0] - 1).args[0])


def _is_one_minus_exp(e) -> bool:
    return isinstance(e, sp.Add) and len(e.args) == 2 and 1 in e.args and isinstance(1 - e, sp.exp)


def _to_expm1(e):
    return -expm1((1 - e).args[0])


def stable_rewrite(expr: sp.Expr, sigmoid: bool = True) -> sp.Expr:
    """Forms that never overflow: ``1/(1+e^{-x})`` -> ``(1 + tanh(x/2))/2``,
    ``log(1 + e^x)`` -> ``softplus(x)`` (printed ``logaddexp``), ``1 - e^w`` -> ``-expm1(w)``.

    ``sigmoid=False`` keeps ``1/(1+e^{-x})`` (compiled code: e^{-x} overflows to inf and the
    quotient to its limit 0 with no warning, and scalar exp is ~5x faster than tanh)."""
    if sigmoid:
        expr = expr.replace(_is_sigmoid, _to_tanh)
    expr = expr.replace(_is_one_minus_exp, _to_expm1)
    return expr.replace(_is_softplus, _to_softplus)


# ---------------------------------------------------------------------------------------
# Expression printers


class _Layout:
    """Mixin: symbol names from a table, floats for rationals, ruff's layout."""

    def _init_names(self, names: dict[str, str] | None) -> None:
        self.names = dict(names or {})

    def _print_Symbol(self, expr):
        return self.names.get(expr.name, expr.name)

    def _print_Dummy(self, expr):
        return self._print_Symbol(expr)

    def _print_Rational(self, expr):
        return repr(float(expr))

    def _print_Half(self, expr):
        return "0.5"

    def _print_Integer(self, expr):
        return str(int(expr))

    def doprint(self, expr, assign_to=None):  # noqa: D102 - SymPy's signature
        return format_code(super().doprint(expr, assign_to))


class NumPyPrinter(_Layout, _SymPyNumPyPrinter):
    """NumPy source for one expression over arrays (``names``: symbol name -> variable).

    Subclass for another array library: change ``module`` (and the names in ``ufuncs`` where they
    differ) and point the code generator at the backend's template set.
    """

    #: the array module as the generated code imports it
    module = "np"
    #: SymPy function -> the array module's elementwise function (also used with ``out=``)
    ufuncs = {
        sp.exp: "exp",
        sp.log: "log",
        sp.tanh: "tanh",
        sp.sinh: "sinh",
        sp.cosh: "cosh",
        sp.sin: "sin",
        sp.cos: "cos",
        sp.Abs: "abs",
        sp.sign: "sign",
        expm1: "expm1",
    }

    def __init__(self, names: dict[str, str] | None = None):
        super().__init__(
            {"fully_qualified_modules": False, "inline": True, "allow_unknown_functions": False}
        )
        self._init_names(names)

    def fn(self, name: str) -> str:
        """The array module's function ``name`` as generated code calls it (``np.exp``)."""
        return f"{self.module}.{name}"

    def _module_format(self, fqn, register=True):
        if fqn.startswith("numpy."):
            return self.fn(fqn[len("numpy.") :])
        return super()._module_format(fqn, register)

    def _print_expm1(self, expr):
        return "%s(%s)" % (self.fn("expm1"), self._print(expr.args[0]))

    def _print_softplus(self, expr):
        return "%s(0.0, %s)" % (self.fn("logaddexp"), self._print(expr.args[0]))

    def _print_logsumexp(self, expr):
        return self.names.get("logsumexp", "lse")

    def _print_sign(self, expr):
        return "%s(%s)" % (self.fn("sign"), self._print(expr.args[0]))

    def _print_Max(self, expr):
        return self._nested("maximum", expr.args)

    def _print_Min(self, expr):
        return self._nested("minimum", expr.args)

    def _nested(self, name: str, args) -> str:
        """``Max``/``Min`` as nested elementwise ``maximum``/``minimum`` calls."""
        out = self._print(args[-1])
        for arg in reversed(args[:-1]):
            out = "%s(%s, %s)" % (self.fn(name), self._print(arg), out)
        return out

    #: inside a sum a step must print as numbers: NumPy refuses ``bool - bool``
    _in_sum = 0

    def _print_Add(self, expr, order=None):
        self._in_sum += 1
        try:
            return super()._print_Add(expr, order)
        finally:
            self._in_sum -= 1

    def _print_Piecewise(self, expr):
        if len(expr.args) == 2 and expr.args[1][1] == sp.true:
            (e1, c1), (e2, _) = expr.args
            if e1 == 1 and e2 == 0:
                if self._in_sum:
                    return "%s(%s, 1.0, 0.0)" % (self.fn("where"), self._print(c1))
                return self._print(c1)
            return "%s(%s, %s, %s)" % (
                self.fn("where"),
                self._print(c1),
                self._clamped(e1, c1, "maximum"),
                self._clamped(e2, c1, "minimum"),
            )
        return super()._print_Piecewise(expr)

    def _clamped(self, branch, cond, side):
        """A branch of ``where`` that cannot overflow where it is not selected: under ``x > 0``
        the other branch sees ``minimum(x, 0)`` (equal wherever it is used)."""
        x = getattr(cond, "lhs", None)
        if not (
            isinstance(cond, sp.StrictGreaterThan)
            and cond.rhs == 0
            and x is not None
            and x.is_Symbol
            and branch.has(sp.exp)
        ):
            return self._print(branch)
        clamp = sp.Dummy("clamp")
        inner = type(self)({**self.names, clamp.name: f"{self.fn(side)}({self._print(x)}, 0.0)"})
        return inner.doprint(branch.subs(x, clamp))

    def _print_StrictGreaterThan(self, expr):
        return "(%s > %s)" % (self._print(expr.lhs), self._print(expr.rhs))

    def _print_Pow(self, expr, rational=False):
        if expr.exp == 2 and expr.base.is_Symbol:
            base = self._print(expr.base)
            return f"{base}*{base}"
        return super()._print_Pow(expr, rational=rational)

    @staticmethod
    def number(value: float) -> str:
        """A float constant, exactly (the shortest repr that reads back as ``value``)."""
        return repr(float(value))

    def expression(self, expr: sp.Expr) -> str:
        """``expr`` after the stable rewrites, as one expression."""
        return self.doprint(stable_rewrite(expr))


class ScalarPrinter(_Layout, PythonCodePrinter):
    """Plain Python for scalar factors (``math.sqrt(1 - 0.999**t)``), computed once per step."""

    module = "math"

    def __init__(self, names: dict[str, str] | None = None):
        super().__init__({"fully_qualified_modules": True, "inline": True})
        self._init_names(names)
