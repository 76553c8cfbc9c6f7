"""In-place statements for the training loop: ``target <- expr`` as ufunc calls with ``out=``.

The training step writes every intermediate result into buffers allocated before the loop, so
the hot path allocates nothing; expressions come from the Derivation's kernels and the optimiser
objects, names and the array module from the backend's printer (:mod:`.numpy`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import sympy as sp

from ..calculus import softplus
from .numpy import NumPyPrinter, ScalarPrinter, stable_rewrite

__all__ = ["InplaceEmitter"]


class InplaceEmitter:
    """Assignments ``target <- expr`` as ufunc calls writing into existing buffers.

    Args:
        names: symbol name -> variable in the generated code.
        arrays: names of the symbols that are arrays (all others are scalars: their factors are
            printed as one Python expression).
        scratch: ``depth -> buffer name`` for intermediate results (same shape as the target).
        invariant: names of the symbols that do not change between steps; a factor built from
            them alone (and from numbers) is computed once, before the loop (``hoisted``).
        printer: the array printer (a backend's subclass of :class:`NumPyPrinter`).

    After emitting, ``lines`` holds the statements, ``scratch_used`` how many scratch buffers
    they need and ``hoisted`` the ``(name, expression)`` pairs to compute before the loop.
    """

    def __init__(
        self,
        names: dict[str, str],
        arrays: Iterable[str],
        scratch: Callable[[int], str],
        invariant: Iterable[str] = (),
        printer: type[NumPyPrinter] = NumPyPrinter,
        hoist_prefix: str = "c_",
    ):
        self.names = dict(names)
        self.arrays = set(arrays)
        self.invariant = set(invariant)
        self.printer = printer(self.names)
        self.scalar = ScalarPrinter(self.names)
        self._scratch = scratch
        self.scratch_used = 0
        self.lines: list[str] = []
        self.hoisted: list[tuple[str, str]] = []
        self._hoist_prefix = hoist_prefix

    # -- public -------------------------------------------------------------------------------
    def assign(self, target: sp.Symbol, expr: sp.Expr) -> list[str]:
        """Emit ``target <- expr`` (``expr`` may read ``target``); returns the new lines."""
        start = len(self.lines)
        self._emit(stable_rewrite(sp.sympify(expr)), self._name(target), 0)
        return self.lines[start:]

    def multiply(self, target: sp.Symbol, factor: sp.Expr) -> list[str]:
        """Emit ``target <- target * factor``."""
        return self.assign(target, target * factor)

    # -- helpers ------------------------------------------------------------------------------
    def _name(self, sym: sp.Symbol) -> str:
        return self.names.get(sym.name, sym.name)

    def _fn(self, name: str) -> str:
        return self.printer.fn(name)

    def _tmp(self, depth: int) -> str:
        self.scratch_used = max(self.scratch_used, depth + 1)
        return self._scratch(depth)

    def _is_array(self, expr: sp.Expr) -> bool:
        return any(s.name in self.arrays for s in expr.free_symbols)

    def _reads(self, expr: sp.Expr, out: str) -> bool:
        """Whether ``expr`` reads the buffer ``out`` (through any symbol printed as ``out``)."""
        return any(self._name(s) == out for s in expr.free_symbols)

    def _is_invariant(self, expr: sp.Expr) -> bool:
        return all(s.name in self.invariant for s in expr.free_symbols)

    def _scalar(self, expr: sp.Expr) -> str:
        """A scalar factor: a number, or a Python expression (hoisted when invariant)."""
        if expr.is_Number or expr.is_Symbol or not self._is_invariant(expr):
            return self.scalar.doprint(expr)
        return self._hoist(self.scalar.doprint(expr))

    def _hoist(self, code: str) -> str:
        for name, existing in self.hoisted:
            if existing == code:
                return name
        name = f"{self._hoist_prefix}{len(self.hoisted)}"
        self.hoisted.append((name, code))
        return name

    # -- emission -----------------------------------------------------------------------------
    def _emit(self, expr: sp.Expr, out: str, depth: int) -> None:
        """Write ``expr`` into the buffer ``out`` (``expr`` may read ``out``)."""
        src = self._value(expr, out, depth)
        if src != out:
            if self._is_array(expr) or src in (h for h, _ in self.hoisted):
                self.lines.append(f"{self._fn('copyto')}({out}, {src})")
            else:
                self.lines.append(f"{out}.fill({src})")

    def _value(self, expr: sp.Expr, out: str, depth: int) -> str:
        """A name holding ``expr``: a symbol, a scalar, a hoisted constant, or ``out`` after
        writing ``expr`` into it. Scratch buffers from ``depth`` on are free to use."""
        fn = self._fn
        if not self._is_array(expr):
            return self._scalar(expr)
        if expr.is_Symbol:
            return self.printer.doprint(expr)
        if self._is_invariant(expr):
            return self._hoist(self.printer.doprint(expr))
        if isinstance(expr, softplus):
            arg = self._value(expr.args[0], out, depth)
            self.lines.append(f"{fn('logaddexp')}(0.0, {arg}, {out})")
        elif isinstance(expr, sp.Piecewise):
            self._piecewise(expr, out, depth)
        elif isinstance(expr, (sp.Max, sp.Min)) and len(expr.args) == 2:
            name = "maximum" if isinstance(expr, sp.Max) else "minimum"
            a, b = self._order(list(expr.args), out)
            self._fold([a, b], out, depth, lambda src, b, _: f"{fn(name)}({src}, {b}, out={out})")
        elif type(expr) in self.printer.ufuncs:
            arg = self._value(expr.args[0], out, depth)
            self.lines.append(f"{fn(self.printer.ufuncs[type(expr)])}({arg}, {out})")
        elif isinstance(expr, sp.Pow) and expr.exp.is_Number:
            self._power(expr, out, depth)
        elif isinstance(expr, sp.Add):
            self._add(expr, out, depth)
        elif isinstance(expr, sp.Mul):
            self._mul(expr, out, depth)
        else:  # pragma: no cover - every kernel of the calculus layer has a case above
            self.lines.append(f"{out}[...] = {self.printer.doprint(expr)}")
        return out

    def _other(self, expr: sp.Expr, depth: int) -> str:
        """A name holding ``expr`` other than the current ``out``: a scratch buffer if needed."""
        if not self._is_array(expr) or expr.is_Symbol or self._is_invariant(expr):
            return self._value(expr, "", depth)
        buf = self._tmp(depth)
        self._emit(expr, buf, depth + 1)
        return buf

    def _piecewise(self, expr, out, depth) -> None:
        fn = self._fn
        (e1, c1), (e2, c2) = expr.args if len(expr.args) == 2 else ((None, None), (None, None))
        x = getattr(c1, "lhs", None)
        ok = (
            c2 == sp.true
            and isinstance(c1, sp.StrictGreaterThan)
            and c1.rhs == 0
            and x is not None
            and x.is_Symbol
        )
        if ok and e1.is_Number and e2.is_Number:
            # a step: the comparison is written into the float buffer, no bool array
            self.lines.append(f"{fn('greater')}({self.printer.doprint(x)}, 0.0, {out})")
            if e1 - e2 != 1:
                self.lines.append(f"{fn('multiply')}({out}, {self._scalar(e1 - e2)}, {out})")
            if e2 != 0:
                self.lines.append(f"{fn('add')}({out}, {self._scalar(e2)}, {out})")
            return
        if ok and e1 == x and (e2 / x).is_Number and 0 <= e2 / x < 1:
            # max(x, c x) for 0 <= c < 1 (relu, leaky relu)
            src = self.printer.doprint(x)
            if e2 == 0:
                self.lines.append(f"{fn('maximum')}({src}, 0.0, out={out})")
                return
            low = self._tmp(depth) if src == out else out
            self.lines.append(f"{fn('multiply')}({src}, {self._scalar(e2 / x)}, {low})")
            self.lines.append(f"{fn('maximum')}({src}, {low}, out={out})")
            return
        self.lines.append(f"{out}[...] = {self.printer.doprint(expr)}")

    def _power(self, expr, out, depth) -> None:
        fn = self._fn
        base = self._value(expr.base, out, depth)
        if expr.exp == -1:
            self.lines.append(f"{fn('reciprocal')}({base}, {out})")
        elif expr.exp == 2:
            self.lines.append(f"{fn('multiply')}({base}, {base}, {out})")
        elif expr.exp == sp.Rational(1, 2):
            self.lines.append(f"{fn('sqrt')}({base}, {out})")
        else:
            self.lines.append(f"{fn('power')}({base}, {self._scalar(expr.exp)}, {out})")

    def _order(self, terms: list, out: str) -> list:
        """The term written into ``out`` first: one reading ``out``'s old value, else the most
        complex one (the others fold into it)."""
        return sorted(terms, key=lambda t: (not self._reads(t, out), t.is_Symbol, -sp.count_ops(t)))

    def _fold(self, terms, out, depth, combine) -> str:
        """Write ``terms[0]`` into ``out`` and fold each other term in with ``combine(src, name,
        negated) -> line``. Other terms that read ``out`` are computed before it is written."""
        early: dict[int, str] = {}
        level = depth
        for i, t in enumerate(terms[1:], 1):
            core = _split_sign(t)[0]
            if self._reads(core, out) and not core.is_Symbol:
                early[i] = self._other(core, level)
                level += 1
        src = self._value(terms[0], out, level)
        for i, t in enumerate(terms[1:], 1):
            core, negated = _split_sign(t)
            name = early[i] if i in early else self._other(core, level)
            self.lines.append(combine(src, name, negated))
            src = out
        return src

    def _add(self, expr, out, depth) -> None:
        fn = self._fn
        arrays = [t for t in expr.args if self._is_array(t)]
        scalars = [t for t in expr.args if not self._is_array(t)]
        terms = self._order(arrays, out)
        if scalars and len(terms) == 1 and _split_sign(terms[0])[1]:
            # c - x in one call
            src = self._value(_split_sign(terms[0])[0], out, depth)
            self.lines.append(f"{fn('subtract')}({self._scalar(sp.Add(*scalars))}, {src}, {out})")
            return
        if _split_sign(terms[0])[1] and not self._reads(terms[0], out):
            # -x + y: start from a positive term
            positive = [t for t in terms if not _split_sign(t)[1]]
            if positive:
                terms.remove(positive[0])
                terms.insert(0, positive[0])
        first, first_neg = _split_sign(terms[0])
        if first_neg:
            src = self._value(first, out, depth)
            self.lines.append(f"{fn('negative')}({src}, {out})")
            first = sp.Dummy(out)  # already in out
            self.names[first.name] = out
            self.arrays.add(first.name)

        def combine(src, name, negated):
            return f"{fn('subtract' if negated else 'add')}({src}, {name}, {out})"

        src = self._fold([first] + terms[1:], out, depth, combine)
        if scalars:
            self.lines.append(f"{fn('add')}({src}, {self._scalar(sp.Add(*scalars))}, {out})")
            src = out
        if src != out:
            self.lines.append(f"{fn('copyto')}({out}, {src})")

    def _mul(self, expr, out, depth) -> None:
        fn = self._fn
        coeff = sp.Mul(*[f for f in expr.args if not self._is_array(f)])
        arrays = [f for f in expr.args if self._is_array(f)]

        def negative_power(f):
            return isinstance(f, sp.Pow) and f.exp.is_Number and f.exp < 0

        fixed = [f for f in arrays if self._is_invariant(f)]
        if fixed and self._is_invariant(coeff):
            # the loop-invariant factors, arrays included, are one array computed before the loop
            hoisted = sp.Dummy(self._hoist(self.printer.doprint(coeff * sp.Mul(*fixed))))
            self.names[hoisted.name] = hoisted.name
            self.arrays.add(hoisted.name)
            arrays = [hoisted] + [f for f in arrays if not self._is_invariant(f)]
            coeff = sp.Integer(1)
        denominators = [f.base ** (-f.exp) for f in arrays if negative_power(f)]
        numerators = [f for f in arrays if not negative_power(f)]
        if coeff == -1 and len(numerators) == 1 and not denominators:
            src = self._value(numerators[0], out, depth)
            self.lines.append(f"{fn('negative')}({src}, {out})")
            return
        if not numerators:
            src = self._product(self._order(denominators, out), out, depth)
            self.lines.append(f"{fn('reciprocal')}({src}, {out})")
        elif denominators and len(numerators) == 1 and numerators[0].is_Symbol:
            # x / d: d into out, then one divide
            den = self._product(self._order(denominators, out), out, depth)
            num = self.printer.doprint(numerators[0])
            self.lines.append(f"{fn('divide')}({num}, {den}, {out})")
        else:
            src = self._product(self._order(numerators, out), out, depth)
            if denominators:
                den = self._other(sp.Mul(*denominators), depth)
                self.lines.append(f"{fn('divide')}({src}, {den}, {out})")
            elif coeff != 1:
                self.lines.append(f"{fn('multiply')}({src}, {self._scalar(coeff)}, {out})")
                return
            elif src != out:
                self.lines.append(f"{fn('copyto')}({out}, {src})")
        if coeff == -1:
            self.lines.append(f"{fn('negative')}({out}, {out})")
        elif coeff != 1:
            self.lines.append(f"{fn('multiply')}({out}, {self._scalar(coeff)}, {out})")

    def _product(self, factors, out, depth) -> str:
        """A name holding ``prod(factors)`` (array factors only)."""
        if len(factors) == 1:
            return self._value(factors[0], out, depth)
        multiply = self._fn("multiply")
        return self._fold(factors, out, depth, lambda s, b, _: f"{multiply}({s}, {b}, {out})")


def _split_sign(term: sp.Expr) -> tuple[sp.Expr, bool]:
    """``(x, True)`` when ``term`` is ``-x``, else ``(term, False)``."""
    if isinstance(term, sp.Mul) and term.args[0].is_Number and term.args[0] < 0:
        rest = sp.Mul(-term.args[0], *term.args[1:])
        return rest, True
    return term, False
