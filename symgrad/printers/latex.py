"""The Derivation as LaTeX, printed from its SymPy objects by a ``LatexPrinter`` subclass.

Each equation is one ``equation`` environment with a ``split`` inside (``lhs &= ... \\ &= ...``),
tagged with its number; the matrix form is the last line of the same ``split``. A chain member too
wide for the page is broken between the terms of a sum (inside ``\\bigl( ... \\bigr)`` when the sum
sits inside a product or a sum over x). Widths are estimated from the unicode pretty printer's
layout of the same object (:func:`symgrad.printers.text.width`). Prose is LaTeX text with inline
maths printed from its SymPy parts. ``render`` is the entry point of ``symgrad derive``. (Over
400 lines: one ``_print_<Node>`` method per kind of object, plus the line breaking.)

Longer than 400 lines on purpose: the printer subclass and the line-breaking of long chains
share the width estimates.
"""

from __future__ import annotations

import sympy as sp
from sympy.matrices.expressions.applyfunc import ElementwiseApplyFunction
from sympy.printing.latex import LatexPrinter
from sympy.printing.precedence import PRECEDENCE

from ..derivation import Derivation, Equation
from . import notation as pn

_PREAMBLE = r"""\documentclass[11pt]{article}
\usepackage{amsmath,amssymb}
\usepackage[margin=2cm]{geometry}
\allowdisplaybreaks
\setlength{\emergencystretch}{3em}
\begin{document}
"""

#: widest chain member on one line, in characters of the pretty printer's layout
LINE_WIDTH = 68


class DerivationLatexPrinter(LatexPrinter):
    """SymPy's LaTeX printer with the derivation's display names and notation."""

    def __init__(self, settings: dict | None = None) -> None:
        super().__init__({"mul_symbol": None, **(settings or {})})

    # -- names -----------------------------------------------------------------------------------
    def _print_Symbol(self, expr, style="plain"):
        shown = pn.latex_name(expr)
        return shown if shown is not None else super()._print_Symbol(expr, style=style)

    def _print_MatrixSymbol(self, expr):
        shown = pn.latex_name(expr)
        return shown if shown is not None else super()._print_MatrixSymbol(expr)

    def _print_IndexedBase(self, expr):
        shown = pn.latex_name(expr)
        return shown if shown is not None else self._print(expr.label)

    def _print_Indexed(self, expr):
        base = self._print(expr.base)
        idx = [self._print(i) for i in expr.indices]
        sub = "".join(idx) if all(len(s) == 1 for s in idx) else ",".join(idx)
        if _has_top_level(base, "_"):
            base = "{%s}" % base
        tex = "%s_{%s}" % (base, sub)
        # braced when it carries a superscript, so that a power or a prime can follow
        return "{%s}" % tex if _has_top_level(base, "^") else tex

    def _print_Function(self, expr, exp=None):
        shown = pn.latex_name(expr)
        if shown is None:
            return super()._print_Function(expr, exp=exp)
        args = ", ".join(self._print(a) for a in expr.args)
        name = shown if exp is None else "%s^{%s}" % (shown, exp)
        return r"%s\left(%s\right)" % (name, args)

    # -- calculus --------------------------------------------------------------------------------
    def _print_Derivative(self, expr):
        inner = expr.expr
        counts = expr.variable_count
        if (
            isinstance(inner, sp.core.function.AppliedUndef)
            and len(inner.args) == 1
            and len(counts) == 1
            and counts[0][0] == inner.args[0]
        ):
            primes = "'" * int(counts[0][1])
            name = pn.latex_name(inner) or self._print(sp.Symbol(inner.func.__name__))
            return r"%s%s\left(%s\right)" % (name, primes, self._print(inner.args[0]))
        total = sum(int(n) for _, n in counts)
        if isinstance(inner, sp.core.function.AppliedUndef):
            num = pn.latex_name(inner) or self._print(sp.Symbol(inner.func.__name__))
        else:
            num = self._print(inner)
        power = "" if total == 1 else "^{%d}" % total
        dens = []
        for var, n in counts:
            v = self._print(var)
            dens.append(r"\partial %s" % v if n == 1 else r"\partial %s^{%d}" % (v, n))
        return r"\frac{\partial%s %s}{%s}" % (power, num, " ".join(dens))

    def _print_Sum(self, expr):
        body = expr.function
        text = self.parenthesize(body, PRECEDENCE["Mul"], strict=True)
        prefix = ""
        for limit in reversed(expr.limits):
            prefix += _sum_sign(self, limit) + " "
        return prefix + text

    def _as_ordered_terms(self, expr, order=None):
        return pn.ordered_terms(expr, super()._as_ordered_terms(expr, order=order))

    def _print_Mul(self, expr):
        if pn.unevaluated(expr):
            return " ".join(
                r"\left(%s\right)" % self._print(f) if pn.needs_parens(f) else self._print(f)
                for f in expr.args
            )
        if not isinstance(expr, sp.Mul):  # a negative power, printed as a fraction
            return super()._print_Mul(expr)
        sums = [f for f in expr.args if isinstance(f, sp.Sum)]
        if sums and len(sums) < len(expr.args):
            coeff = sp.Mul(*[f for f in expr.args if not isinstance(f, sp.Sum)])
            head = "-" if coeff == -1 else "" if coeff == 1 else self._print(coeff) + " "
            if isinstance(coeff, sp.Add):
                head = r"\left(%s\right) " % self._print(coeff)
            return head + " ".join(self._print(s) for s in sums)
        return super()._print_Mul(expr)

    def _print_KroneckerDelta(self, expr, exp=None):
        i, j = (self._print(a) for a in expr.args)
        tex = r"\delta_{%s%s}" % (i, j)
        return tex if exp is None else r"%s^{%s}" % (tex, exp)

    def _print_sign(self, expr, exp=None):
        tex = r"\operatorname{sign}\left(%s\right)" % self._print(expr.args[0])
        return tex if exp is None else r"%s^{%s}" % (tex, exp)

    def _print_Pow(self, expr):
        base, exp = expr.args
        if isinstance(base, sp.Derivative) and exp.is_Integer and exp > 0:
            return r"\left(%s\right)^{%s}" % (self._print(base), self._print(exp))
        return super()._print_Pow(expr)

    # -- matrices --------------------------------------------------------------------------------
    def _print_Identity(self, expr):
        return "I"

    def _print_Transpose(self, expr):
        mat = expr.arg
        if isinstance(mat, sp.MatrixSymbol):
            shown = self._print(mat)
            head, sep, tail = shown.rpartition("^{(")
            if sep and tail.endswith(")}") and "{" not in tail and "_" not in tail:
                return shown[:-1] + r"\top}"  # W^{(2)\top}
            if _has_top_level(shown, "^") or _has_top_level(shown, "_"):
                return r"{%s}^{\top}" % shown
            return r"%s^{\top}" % shown
        return r"\left(%s\right)^{\top}" % self._print(mat)

    def _print_HadamardProduct(self, expr):
        return r" \odot ".join(
            r"\left(%s\right)" % self._print(a)
            if isinstance(a, (sp.MatMul, sp.MatAdd))
            else self._print(a)
            for a in expr.args
        )

    def _print_DiagMatrix(self, expr):
        return r"\operatorname{diag}\left(%s\right)" % self._print(expr.args[0])

    def _print_ElementwiseApplyFunction(self, expr: ElementwiseApplyFunction):
        fn = expr.function(sp.Dummy())
        name = self._print(fn.func(sp.Symbol("x")))
        name = name.split(r"\left(")[0]
        return r"%s\left(%s\right)" % (name, self._print(expr.expr))

    def _print_SampleSum(self, expr):
        return r"\sum_{x} %s" % self.parenthesize(expr.summand, PRECEDENCE["Mul"], strict=True)

    def _print_MatMul(self, expr):
        coeff, mats = expr.as_coeff_matrices()
        # a Hadamard product is a factor of its own: (A o B) C, not A o B C
        body = " ".join(
            r"\left(%s\right)" % self._print(m)
            if isinstance(m, sp.HadamardProduct)
            else self.parenthesize(m, PRECEDENCE["Mul"], strict=True)
            for m in mats
        )
        if coeff == 1:
            return body
        if coeff == -1:
            return "-" + body
        return self._print(coeff) + " " + body

    def _print_MatAdd(self, expr):
        out = []
        for n, term in enumerate(expr.args):
            negative = pn.negative_term(term)
            tex = self._print(-term if negative else term)
            if n or negative:
                out.append("-" if negative else "+")
            out.append(tex)
        return " ".join(out)


def _sum_sign(printer: LatexPrinter, limit: tuple) -> str:
    if pn.is_sample_sum(limit) or len(limit) == 1:
        return r"\sum_{x}"
    var, lo, hi = limit
    return r"\sum_{%s=%s}^{%s}" % (printer._print(var), printer._print(lo), printer._print(hi))


def _has_top_level(tex: str, char: str) -> bool:
    depth = 0
    for c in tex:
        depth += {"{": 1, "}": -1}.get(c, 0)
        if depth == 0 and c == char:
            return True
    return False


_PRINTER = DerivationLatexPrinter()


def latex(expr) -> str:
    """One SymPy object in the derivation's notation."""
    return _PRINTER.doprint(expr)


# -- equations ------------------------------------------------------------------------------------
def _width(expr) -> int:
    from .text import width

    return width(expr)


def _broken(expr, budget: int) -> list[str]:
    """``expr`` as lines of LaTeX no wider than ``budget`` (pretty-printer characters).

    A sum is broken between its terms; a product or a sum over x whose last factor is a sum keeps
    its prefix and breaks that sum inside ``\\bigl( ... \\bigr)``.
    """
    if _width(expr) <= budget:
        return [latex(expr)]
    if isinstance(expr, sp.Add) and not isinstance(expr, sp.MatrixExpr):
        terms = list(sp.Add.make_args(expr))
        return _pack(terms, budget, lambda t: _signed(t))
    if isinstance(expr, sp.MatAdd):
        return _pack(list(expr.args), budget, lambda t: _signed(t))
    if isinstance(expr, sp.Mul):
        sums = [f for f in expr.args if isinstance(f, (sp.Sum, sp.Add))]
        if sums:  # the last sum is broken (f'(z) (a + b) (sum + sum): the sum over children)
            rest = sp.Mul(*[f for f in expr.args if f is not sums[-1]])
            head = "" if rest == 1 else "-" if rest == -1 else latex(rest) + " "
            inner = sums[-1]
            if isinstance(inner, sp.Sum):
                return _wrap(head, inner, budget)
            return _bracket(head, list(sp.Add.make_args(inner)), budget, r"\bigl(", r"\bigr)")
    if isinstance(expr, sp.Sum):
        return _wrap("", expr, budget)
    return [latex(expr)]


def _wrap(head: str, s: sp.Sum, budget: int) -> list[str]:
    prefix = head + " ".join(_sum_sign(_PRINTER, lim) for lim in reversed(s.limits)) + " "
    body = s.function
    if isinstance(body, sp.Add):
        return _bracket(prefix, list(sp.Add.make_args(body)), budget, r"\bigl[", r"\bigr]")
    return [prefix + latex(body)]


def _bracket(prefix: str, terms: list, budget: int, open_: str, close: str) -> list[str]:
    lines = _pack(terms, budget - 4, _signed)
    lines[0] = prefix + open_ + lines[0]
    lines[-1] = lines[-1] + close
    return lines


def _signed(term) -> tuple[str, bool]:
    """LaTeX of one term of a sum, and whether it carries its own minus sign."""
    tex = latex(term)
    return tex, tex.startswith("-")


def _pack(terms: list, budget: int, show) -> list[str]:
    """Terms of a sum greedily packed into lines of at most ``budget`` characters."""
    lines: list[str] = []
    current: list[str] = []
    used = 0
    for term in terms:
        w = _width(term) + 3
        if w > budget:
            parts = _broken(term, budget)
        else:
            parts = [latex(term)]
        tex = parts[0]
        joined = tex if tex.startswith("-") or (not current and not lines) else "+ " + tex
        if current and used + w > budget:
            lines.append(" ".join(current))
            current, used = [], 0
        current.append(joined)
        used += w
        if len(parts) > 1:
            lines.append(" ".join(current))
            lines.extend(parts[1:-1])
            current, used = [parts[-1]], _width(term) // 2
    if current:
        lines.append(" ".join(current))
    return lines


def _relation(eq: Equation) -> str:
    return r"\leftarrow" if eq.relation == "<-" else "="


def equation_lines(eq: Equation) -> list[tuple[str, bool]]:
    """The rows of ``eq``'s ``split``/``aligned`` block, each with True where a gap precedes it.

    ``lhs &= ...`` then ``&= ...`` per chain member (all on one row when they fit), then the
    matrix form after a gap.
    """
    rel = _relation(eq)
    lhs = latex(eq.lhs)
    members = [*eq.steps, eq.rhs]
    lhs_w = _width(eq.lhs)
    budget = LINE_WIDTH - min(lhs_w, 24)
    rows: list[tuple[str, bool]] = []
    one_line = lhs_w + sum(_width(m) + 3 for m in members)
    if one_line <= LINE_WIDTH:
        rows.append(
            ("%s &%s %s" % (lhs, rel, (" %s " % rel).join(latex(m) for m in members)), False)
        )
    else:
        for n, member in enumerate(members):
            lines = _broken(member, budget)
            start = lhs if n == 0 else ""
            rows.append(("%s &%s %s" % (start, rel, lines[0]), False))
            rows.extend((r"&\quad %s" % line, False) for line in lines[1:])
    if eq.matrix is not None:
        mlhs, mrhs = eq.matrix
        lines = _broken(mrhs, LINE_WIDTH - min(_width(mlhs), 24))
        rows.append(("%s &%s %s" % (latex(mlhs), rel, lines[0]), True))
        rows.extend((r"&\quad %s" % line, False) for line in lines[1:])
    return rows


def equation_latex(d: Derivation, eq: Equation) -> str:
    r"""The display body of ``eq`` as :func:`render_latex` prints it inside ``equation``:
    the ``split`` block, without ``\tag`` (for other displays, e.g. the HTML page's MathML)."""
    return equation_block(eq, "split")


def inline_latex(expr) -> str:
    """One SymPy object of the prose as inline LaTeX, with the display names of the equations."""
    return latex(expr)


def equation_block(eq: Equation, env: str = "split") -> str:
    r"""``\begin{env} rows \end{env}``, rows joined by ``\\`` (``\\[1ex]`` before a gap)."""
    out = []
    for n, (row, gap) in enumerate(equation_lines(eq)):
        if n:
            out.append("\\\\[1ex]\n" if gap else "\\\\\n")
        out.append(row)
    return "\\begin{%s}\n%s\n\\end{%s}" % (env, "".join(out), env)


# -- prose ----------------------------------------------------------------------------------------
_TEXT_ESCAPES = {
    "\\": r"\textbackslash{}",
    "{": r"\{",
    "}": r"\}",
    "$": r"\$",
    "&": r"\&",
    "#": r"\#",
    "^": r"\textasciicircum{}",
    "_": r"\_",
    "%": r"\%",
    "~": r"\textasciitilde{}",
}


def text(s: str) -> str:
    """Plain text made safe for LaTeX."""
    return "".join(_TEXT_ESCAPES.get(c, c) for c in s)


def prose(parts) -> str:
    """Prose parts: text escaped, SymPy objects as inline maths."""
    return "".join(text(p) if isinstance(p, str) else r"\(%s\)" % latex(p) for p in parts)


# -- document -------------------------------------------------------------------------------------
def _notation(d: Derivation) -> list[str]:
    lines = [r"\subsection*{%s}" % pn.NOTATION]
    for para in d.conventions:
        lines += [prose(para), ""]
    lines.append(text(pn.SEED_INTRO))
    lines.append("")
    lines.append(r"\begin{tabular}{llll}")
    lines.append(" & ".join(text(h) for h in pn.SEED_HEADER) + r" \\ \hline")
    for src, sym, meaning, ours in d.seed_symbols:
        lines.append(
            r"%s & \(%s\) & %s & \(%s\) \\" % (text(src), latex(sym), text(meaning), latex(ours))
        )
    lines.append(r"\end{tabular}")
    return lines


def render_latex(d: Derivation, standalone: bool = False) -> str:
    """The derivation as LaTeX: one ``equation`` per step, tagged with its number."""
    lines = []
    if standalone:
        lines.append(_PREAMBLE)
    lines.append(r"\section*{%s}" % text(pn.heading(d)))
    lines.append(text(pn.summary(d)))
    lines.append("")
    lines += _notation(d)
    for section, group in pn.sections(d):
        lines += ["", r"\subsection*{%s}" % text(section)]
        for number, eq in group:
            if eq.prose:
                lines += ["", prose(eq.prose)]
            lines.append(r"\begin{equation}")
            lines.append(equation_block(eq, "split"))
            lines.append(r"\tag{%s}" % number)
            lines.append(r"\end{equation}")
    if standalone:
        lines.append(r"\end{document}")
    return "\n".join(lines) + "\n"
