"""Code printers: SymPy expressions of the Derivation to NumPy source. No calculus here.

Two printers share one set of stable rewrites:
- :func:`numpy_expr` writes one NumPy expression (readable methods: loss, hessian, ...);
- :func:`inplace_statements` writes a sequence of ``out=`` ufunc calls into preallocated buffers
  (the training loop), so the hot path allocates nothing.
"""

from __future__ import annotations

import sympy as sp
from sympy.codegen.cfunctions import expm1
from sympy.printing.numpy import NumPyPrinter

from ..calculus import logsumexp, softplus


def stable_rewrite(expr: sp.Expr) -> sp.Expr:
    """Rewrite into forms that never overflow: ``1/(1+e^{-x})`` -> ``(1 + tanh(x/2))/2`` and
    ``log(1 + e^x)`` -> ``softplus(x)``. Both identities are proved in the tests."""

    def is_sigmoid(e):
        if isinstance(e, sp.Pow) and e.exp == -1 and isinstance(e.base, sp.Add):
            rest = e.base - 1
            return isinstance(rest, sp.exp)
        return False

    def sigmoid(e):
        arg = (e.base - 1).args[0]
        return (1 + sp.tanh(-arg / 2)) / 2

    def is_softplus(e):
        return isinstance(e, sp.log) and isinstance(e.args[0] - 1, sp.exp)

    def to_softplus(e):
        return softplus((e.args[0] - 1).args[0])

    def is_one_minus_exp(e):
        if not isinstance(e, sp.Add) or len(e.args) != 2 or 1 not in e.args:
            return False
        rest = e - 1
        return isinstance(-rest, sp.exp)

    def to_expm1(e):
        return -expm1((-(e - 1)).args[0])

    expr = expr.replace(is_sigmoid, sigmoid)
    expr = expr.replace(is_one_minus_exp, to_expm1)  # 1 - e^w, exact near w = 0
    return expr.replace(is_softplus, to_softplus)


class _Printer(NumPyPrinter):
    """NumPy printer writing ``np.`` names, floats for rationals and stable special functions."""

    def __init__(self, names: dict[sp.Symbol, str]):
        super().__init__(
            {"fully_qualified_modules": False, "inline": True, "allow_unknown_functions": False}
        )
        self._names = names

    def _module_format(self, fqn, register=True):
        if fqn.startswith("numpy."):
            return "np." + fqn[len("numpy.") :]
        return super()._module_format(fqn, register)

    def _print_Symbol(self, expr):
        return self._names.get(expr, super()._print_Symbol(expr))

    def _print_Dummy(self, expr):
        return self._names.get(expr, super()._print_Dummy(expr))

    def _print_Rational(self, expr):
        return repr(float(expr.p) / float(expr.q))

    def _print_Half(self, expr):
        return "0.5"

    def _print_expm1(self, expr):
        return "np.expm1(%s)" % self._print(expr.args[0])

    def _print_softplus(self, expr):
        return "np.logaddexp(0.0, %s)" % self._print(expr.args[0])

    def _print_logsumexp(self, expr):
        return self._names.get(logsumexp, "lse")

    def _print_Piecewise(self, expr):
        if len(expr.args) == 2 and expr.args[1][1] == sp.true:
            (e1, c1), (e2, _) = expr.args
            if e1 == 1 and e2 == 0:
                return self._print(c1)
            return "np.where(%s, %s, %s)" % (
                self._print(c1),
                self._clamped(e1, c1, "maximum"),
                self._clamped(e2, c1, "minimum"),
            )
        return super()._print_Piecewise(expr)

    def _clamped(self, branch, cond, side):
        """Print a branch of ``np.where`` so it cannot overflow where it is not selected:
        under ``x > 0`` the other branch sees ``np.minimum(x, 0)`` (equal wherever it is used)."""
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
        inner = _Printer({**self._names, clamp: f"np.{side}({self._print(x)}, 0.0)"})
        return inner.doprint(branch.subs(x, clamp))

    def _print_StrictGreaterThan(self, expr):
        return "(%s > %s)" % (self._print(expr.lhs), self._print(expr.rhs))

    def _print_Pow(self, expr, rational=False):
        if expr.exp == 2:
            base = self._print(expr.base)
            if expr.base.is_Symbol:
                return f"{base}*{base}"
        return super()._print_Pow(expr, rational=rational)


def numpy_expr(expr: sp.Expr, names: dict[sp.Symbol, str]) -> str:
    """One NumPy expression for ``expr`` with symbols renamed (``a`` -> ``a_2``)."""
    return _Printer(names).doprint(stable_rewrite(expr))


def numpy_cse(
    exprs: dict[str, sp.Expr], names: dict[sp.Symbol, str], prefix: str = "t"
) -> tuple[list[tuple[str, str]], dict[str, str]]:
    """Common-subexpression elimination then printing: (temporaries, printed results)."""
    keys = sorted(exprs)
    replacements, reduced = sp.cse(
        [stable_rewrite(exprs[k]) for k in keys],
        symbols=sp.numbered_symbols(prefix),
        order="canonical",
    )
    printer_names = dict(names)
    for sym, _ in replacements:
        printer_names[sym] = str(sym)
    printer = _Printer(printer_names)
    temps = [(str(sym), printer.doprint(val)) for sym, val in replacements]
    return temps, {k: printer.doprint(e) for k, e in zip(keys, reduced, strict=True)}


# ---------------------------------------------------------------------------------------
# In-place statements for the training loop

_UFUNC = {
    sp.exp: "np.exp",
    sp.log: "np.log",
    sp.tanh: "np.tanh",
    sp.sinh: "np.sinh",
    sp.cosh: "np.cosh",
    sp.sin: "np.sin",
    sp.cos: "np.cos",
    sp.Abs: "np.abs",
    expm1: "np.expm1",
}


class _Emitter:
    """Writes ``expr`` into buffer ``out`` with ufunc calls, using scratch buffers as needed."""

    def __init__(self, names: dict[sp.Symbol, str], scratch: str):
        self.names = names
        self.printer = _Printer(names)
        self.scratch = scratch
        self.used = 0
        self.lines: list[str] = []

    def _tmp(self, depth: int) -> str:
        self.used = max(self.used, depth + 1)
        return f"{self.scratch}{depth}"

    def emit(self, expr: sp.Expr, out: str, depth: int = 0) -> None:
        p = self.printer
        if expr.is_Symbol:
            self.lines.append(f"np.copyto({out}, {p.doprint(expr)})")
            return
        if expr.is_Number:
            self.lines.append(f"{out}.fill({p.doprint(expr)})")
            return
        if isinstance(expr, softplus):
            self.lines.append(
                f"np.logaddexp(0.0, {self._operand(expr.args[0], out, depth)}, {out})"
            )
            return
        if isinstance(expr, sp.Piecewise) and self._relu_like(expr):
            (e1, c1), (e2, _) = expr.args
            src = p.doprint(c1.lhs)
            if e2 == 0:
                self.lines.append(f"np.maximum({src}, 0.0, out={out})")  # out= required here
            else:
                slope = p.doprint(e2 / c1.lhs)
                self.lines.append(f"np.multiply({src}, {slope}, {out})")
                self.lines.append(f"np.maximum({src}, {out}, out={out})")
            return
        func = type(expr)
        if func in _UFUNC:
            arg = self._operand(expr.args[0], out, depth)
            self.lines.append(f"{_UFUNC[func]}({arg}, {out})")
            return
        if isinstance(expr, sp.Pow) and expr.exp.is_Number:
            base = self._operand(expr.base, out, depth)
            if expr.exp == -1:
                self.lines.append(f"np.reciprocal({base}, {out})")
            elif expr.exp == 2:
                self.lines.append(f"np.multiply({base}, {base}, {out})")
            elif expr.exp == sp.Rational(1, 2):
                self.lines.append(f"np.sqrt({base}, {out})")
            else:
                self.lines.append(f"np.power({base}, {p.doprint(expr.exp)}, {out})")
            return
        if isinstance(expr, (sp.Add, sp.Mul)):
            self._nary(expr, out, depth)
            return
        self.lines.append(f"{out}[...] = {p.doprint(expr)}")

    @staticmethod
    def _relu_like(expr: sp.Piecewise) -> bool:
        if len(expr.args) != 2:
            return False
        (e1, c1), (e2, c2) = expr.args
        if c2 != sp.true or not isinstance(c1, sp.StrictGreaterThan) or c1.rhs != 0:
            return False
        x = c1.lhs
        if not x.is_Symbol or e1 != x:
            return False
        slope = e2 / x
        return slope.is_Number and 0 <= slope < 1

    def _operand(self, expr: sp.Expr, out: str, depth: int) -> str:
        """A name holding ``expr``: a symbol directly, else ``out`` after emitting into it."""
        if expr.is_Symbol:
            return self.printer.doprint(expr)
        self.emit(expr, out, depth)
        return out

    def _nary(self, expr: sp.Expr, out: str, depth: int) -> None:
        is_add = isinstance(expr, sp.Add)
        op = "np.add" if is_add else "np.multiply"
        consts = [t for t in expr.args if t.is_Number]
        terms = [t for t in expr.args if not t.is_Number]
        # Emit the most complex term first straight into out; then fold the others in.
        terms.sort(key=lambda t: (t.is_Symbol, -sp.count_ops(t)))
        first, rest = terms[0], terms[1:]
        if is_add and not consts and len(terms) == 2 and _negated(terms[0]) is not None:
            # x - y in one pass
            plus, minus = terms[1], _negated(terms[0])
            if minus.is_Symbol:
                src = self._operand(plus, out, depth)
                self.lines.append(f"np.subtract({src}, {self.printer.doprint(minus)}, {out})")
                return
        if is_add and len(consts) == 1 and len(terms) == 1 and _negated(first) is not None:
            # c - x in one pass
            src = self._operand(_negated(first), out, depth)
            self.lines.append(f"np.subtract({self.printer.doprint(consts[0])}, {src}, {out})")
            return
        if not is_add and len(consts) == 1 and consts[0] == -1 and not rest:
            self.lines.append(f"np.negative({self._operand(first, out, depth)}, {out})")
            return
        src = self._operand(first, out, depth)
        pending = src
        for term in rest:
            if term.is_Symbol:
                other = self.printer.doprint(term)
            else:
                other = self._tmp(depth)
                self.emit(term, other, depth + 1)
            self.lines.append(f"{op}({pending}, {other}, {out})")
            pending = out
        for c in consts:
            self.lines.append(f"{op}({pending}, {self.printer.doprint(c)}, {out})")
            pending = out
        if pending != out:
            self.lines.append(f"np.copyto({out}, {pending})")


def _negated(term: sp.Expr) -> sp.Expr | None:
    """``x`` when ``term`` is ``-x``, else None."""
    if isinstance(term, sp.Mul) and term.args[0] == -1:
        return sp.Mul(*term.args[1:])
    return None


def inplace_statements(
    expr: sp.Expr, out: str, names: dict[sp.Symbol, str], scratch: str
) -> tuple[list[str], int]:
    """Statements computing ``expr`` into the existing array ``out`` without allocating.

    Returns the statements and how many scratch buffers (``{scratch}0``, ``{scratch}1``, ...)
    of ``out``'s shape they use.
    """
    em = _Emitter(names, scratch)
    em.emit(stable_rewrite(expr), out)
    return em.lines, em.used


def inplace_multiply(
    factor: sp.Expr, out: str, names: dict[sp.Symbol, str], scratch: str
) -> tuple[list[str], int]:
    """Statements for ``out *= factor`` without allocating (``factor`` may be a product)."""
    factor = stable_rewrite(factor)
    lines: list[str] = []
    used = 0
    p = _Printer(names)
    factors = factor.args if isinstance(factor, sp.Mul) else (factor,)
    for f in factors:
        if f == 1:
            continue
        if f.is_Number:
            lines.append(f"np.multiply({out}, {p.doprint(f)}, {out})")
        elif f.is_Symbol:
            lines.append(f"np.multiply({out}, {p.doprint(f)}, {out})")
        elif (
            isinstance(f, sp.Piecewise)
            and len(f.args) == 2
            and f.args[0][0] == 1
            and f.args[1][0] == 0
            and isinstance(f.args[0][1], sp.StrictGreaterThan)
        ):
            # a step: the comparison goes into a preallocated float buffer, not a new bool array
            cond = f.args[0][1]
            tmp = f"{scratch}0"
            lines.append(f"np.greater({p.doprint(cond.lhs)}, {p.doprint(cond.rhs)}, {tmp})")
            lines.append(f"np.multiply({out}, {tmp}, {out})")
            used = max(used, 1)
        else:
            # Each factor is built in scratch 0 and consumed at once, so factors reuse it.
            em = _Emitter(names, scratch)
            tmp = f"{scratch}0"
            em.emit(f, tmp, 1)
            lines.extend(em.lines)
            lines.append(f"np.multiply({out}, {tmp}, {out})")
            used = max(used, em.used, 1)
    return lines, used
