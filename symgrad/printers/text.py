"""The Derivation as text for a terminal, printed by SymPy's unicode pretty printer (subclassed).

Every equation and every inline formula is laid out by :class:`DerivationPrettyPrinter` from the
IR's SymPy objects; nothing is converted from LaTeX.
"""

from __future__ import annotations

import functools

import sympy as sp
from sympy.printing.pretty.pretty import PrettyPrinter
from sympy.printing.pretty.stringpict import prettyForm, stringPict

from ..derivation import Derivation, Equation
from . import notation as pn


class DerivationPrettyPrinter(PrettyPrinter):
    """SymPy's unicode pretty printer with the derivation's display names and notation."""

    def __init__(self, settings: dict | None = None) -> None:
        super().__init__({"use_unicode": True, "wrap_line": False, **(settings or {})})

    # -- names -----------------------------------------------------------------------------------
    def _print_Symbol(self, e, bold_name=False):
        shown = pn.unicode_name(e)
        return prettyForm(shown) if shown is not None else super()._print_Symbol(e, bold_name)

    def _print_MatrixSymbol(self, e):
        shown = pn.unicode_name(e)
        return prettyForm(shown) if shown is not None else super()._print_MatrixSymbol(e)

    def _print_IndexedBase(self, e):
        shown = pn.unicode_name(e)
        return prettyForm(shown) if shown is not None else self._print(e.label)

    def _print_Indexed(self, e):
        base = self._print(e.base)
        idx = [str(i) for i in e.indices]
        if all(s in pn.SUBSCRIPT for s in idx):
            return prettyForm(*base.right("".join(pn.SUBSCRIPT[s] for s in idx)))
        return prettyForm(*base.right("[" + ",".join(idx) + "]"))

    def _print_Function(self, e, sort=False, func_name=None, left="(", right=")"):
        shown = pn.unicode_name(e)
        if shown is not None:
            func_name = shown
        return super()._print_Function(e, sort=sort, func_name=func_name, left=left, right=right)

    def _print_sigma(self, e):
        return self._print_Function(e, func_name="σ")

    def _as_ordered_terms(self, expr, order=None):
        return pn.ordered_terms(expr, super()._as_ordered_terms(expr, order=order))

    def _print_Mul(self, product):
        if pn.unevaluated(product):
            parts = []
            for f in product.args:
                form = self._print(f)
                if pn.needs_parens(f) or isinstance(f, sp.Sum):
                    form = prettyForm(*form.parens())
                parts.append(form)
            out = parts[0]
            for form in parts[1:]:
                out = prettyForm(*out.right("⋅", form))
            out.binding = prettyForm.MUL
            return out
        sums = [f for f in product.args if isinstance(f, sp.Sum)]
        if isinstance(product, sp.Mul) and sums and len(sums) < len(product.args):
            coeff = sp.Mul(*[f for f in product.args if not isinstance(f, sp.Sum)])
            out = self._print(sums[0])
            for s in sums[1:]:
                out = prettyForm(*out.right(" ", self._print(s)))
            if coeff == -1:
                out = prettyForm(*out.left("-"))
            elif coeff != 1:
                head = self._print(coeff)
                if isinstance(coeff, sp.Add):
                    head = prettyForm(*head.parens())
                out = prettyForm(*head.right(" ", out))
            out.binding = prettyForm.MUL
            return out
        return super()._print_Mul(product)

    # -- calculus --------------------------------------------------------------------------------
    def _print_Derivative(self, deriv):
        inner = deriv.expr
        counts = deriv.variable_count
        if (
            isinstance(inner, sp.core.function.AppliedUndef)
            and len(inner.args) == 1
            and len(counts) == 1
            and counts[0][0] == inner.args[0]
        ):
            name = pn.unicode_name(inner) or inner.func.__name__
            primes = "′" * int(counts[0][1])
            arg = prettyForm(*self._print(inner.args[0]).parens())
            return prettyForm(*prettyForm(name + primes).right(arg))
        total = sum(int(n) for _, n in counts)
        if isinstance(inner, sp.core.function.AppliedUndef):
            num = prettyForm(pn.unicode_name(inner) or inner.func.__name__)
        else:
            num = self._print(inner)
        top = prettyForm("∂" if total == 1 else "∂" + str(total).translate(_SUP))
        top = prettyForm(*top.right(num))
        bottom = None
        for var, n in counts:
            piece = prettyForm(*self._print(var).left("∂"))
            if n > 1:
                piece = prettyForm(*piece.right(str(n).translate(_SUP)))
            bottom = piece if bottom is None else prettyForm(*bottom.right(" ", piece))
        out = prettyForm(*top.below(stringPict.LINE, bottom))
        out.baseline = top.height()
        out.binding = prettyForm.MUL
        return out

    def _print_Sum(self, expr):
        if any(pn.is_sample_sum(lim) for lim in expr.limits):
            body = self._print(expr.function)
            if isinstance(expr.function, sp.Add):
                body = prettyForm(*body.parens())
            out = prettyForm(*prettyForm("Σₓ ").right(body))
            out.binding = prettyForm.MUL
            return out
        return super()._print_Sum(expr)

    def _print_SampleSum(self, expr):
        body = self._print(expr.summand)
        if isinstance(expr.summand, sp.MatAdd):
            body = prettyForm(*body.parens())
        out = prettyForm(*prettyForm("Σₓ ").right(body))
        out.binding = prettyForm.MUL
        return out

    def _print_KroneckerDelta(self, e):
        i, j = (str(a) for a in e.args)
        sub = "".join(pn.SUBSCRIPT.get(c, c) for c in (i, j))
        return prettyForm("δ" + sub if all(c in pn.SUBSCRIPT for c in (i, j)) else f"δ[{i},{j}]")

    def _print_HadamardProduct(self, expr):
        return self._print_seq(
            expr.args, None, None, " ⊙ ", parenthesize=lambda x: x.is_MatAdd or x.is_MatMul
        )

    def _print_MatAdd(self, expr):
        out = None
        for term in expr.args:
            negative = pn.negative_term(term)
            form = self._print(-term if negative else term)
            if out is None:
                out = prettyForm(*form.left("-")) if negative else form
            else:
                out = prettyForm(*out.right(" - " if negative else " + ", form))
        out.binding = prettyForm.ADD
        return out

    def _print_Identity(self, expr):
        return prettyForm("I")

    def _print_DiagMatrix(self, expr):
        return self._applied("diag", expr.args[0])

    def _print_ElementwiseApplyFunction(self, expr):
        return self._applied(expr.function(sp.Dummy()).func.__name__, expr.expr)

    def _applied(self, name: str, arg) -> prettyForm:
        return prettyForm(*prettyForm(name).right(prettyForm(*self._print(arg).parens())))

    def _print_Transpose(self, expr):
        base = self._print(expr.arg)
        if not isinstance(expr.arg, sp.MatrixSymbol):
            base = prettyForm(*base.parens())
        return prettyForm(*base.right("ᵀ"))


_SUP = str.maketrans("0123456789", "⁰¹²³⁴⁵⁶⁷⁸⁹")
_PRINTER = DerivationPrettyPrinter()


def pretty(expr) -> str:
    """One SymPy object laid out by the pretty printer (possibly several lines)."""
    return _PRINTER.doprint(expr)


@functools.lru_cache(maxsize=4096)
def width(expr) -> int:
    """The width of ``expr`` in the pretty printer's layout (an estimate of its printed width)."""
    return _PRINTER._print(expr).width()


def _relation(eq: Equation) -> str:
    return " ← " if eq.relation == "<-" else " = "


def equation(eq: Equation) -> str:
    """``lhs = step = ... = rhs``, one chain member per line, then the matrix form."""
    rel = _relation(eq)
    lhs = _PRINTER._print(eq.lhs)
    pad = " " * lhs.width()
    blocks = []
    for n, member in enumerate((*eq.steps, eq.rhs)):
        head = prettyForm(*(lhs if n == 0 else prettyForm(pad)).right(rel))
        blocks.append(str(prettyForm(*head.right(_PRINTER._print(member)))))
    if eq.matrix is not None:
        mlhs, mrhs = eq.matrix
        form = prettyForm(*_PRINTER._print(mlhs).right(rel))
        blocks.append(str(prettyForm(*form.right(_PRINTER._print(mrhs)))))
    return "\n".join(blocks)


def prose(parts) -> str:
    """Prose: plain text, with each SymPy part inline when it is one line tall."""
    out = []
    for p in parts:
        if isinstance(p, str):
            out.append(p)
        else:
            shown = pretty(p)
            out.append(shown if "\n" not in shown else "\n" + _indent(shown, "    ") + "\n")
    return "".join(out)


def _indent(block: str, prefix: str) -> str:
    return "\n".join(prefix + line for line in block.splitlines())


def render_text(d: Derivation) -> str:
    """The derivation as plain text for a terminal."""
    lines = [pn.title(d), "", pn.NOTATION, "-" * len(pn.NOTATION)]
    for para in d.conventions:
        lines += [prose(para), ""]
    lines.append(pn.SEED_INTRO)
    rows = [pn.SEED_HEADER] + [
        (src, pretty(sym), meaning, pretty(ours)) for src, sym, meaning, ours in d.seed_symbols
    ]
    widths = [max(len(r[c]) for r in rows) for c in range(4)]
    for row in rows:
        lines.append("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    for section, group in pn.sections(d):
        lines += ["", section, "-" * len(section)]
        for number, eq in group:
            if eq.prose:
                lines.append(prose(eq.prose))
            lines.append(f"({number})")
            lines.append(_indent(equation(eq), "    "))
            lines.append("")
    return "\n".join(lines).rstrip() + "\n"
