"""NumPy source for the matrix forms of the Derivation (``MatrixSymbol``, ``MatMul``, ...).

The code generator gives a symbol table: each matrix symbol of an expression is an array of the
code (:class:`Array`: its name, and whether it carries a leading axis of k directions, as the
R-operator's ``R{Z_l}`` of k directions at once do), or an entrywise kernel printed in place
(:class:`Entrywise`: ``F''_l`` is f''_l at every entry of ``Z_l``). Then:

- ``A B`` prints ``A @ B`` (NumPy's matmul broadcasts over the directions);
- ``A^T`` prints ``A.T``, or ``A.transpose(0, 2, 1)`` for an array of k directions;
- ``A o B`` (Hadamard) prints the product of its factors as one entrywise expression, kernels
  substituted (:class:`~symgrad.printers.numpy.NumPyPrinter` prints it);
- ``c M`` prints ``c * M``, and ``(1/m) M`` prints ``M / m``;
- ``1 r`` (the column of ones times a row) prints ``r``, which NumPy broadcasts over the rows,
  and ``1^T M`` prints ``M.sum(axis=-2, keepdims=True)``;
- on the right, a column of ones over the columns (:class:`Ones` in the table: softmax's
  ``1_{n_L}``): ``M 1`` prints ``M.sum(axis=-1, keepdims=True)``, and ``r 1^T`` (a column r
  times the row of ones) prints ``r``, broadcast over the columns.

:meth:`MatrixNumPyPrinter.assign` writes one equation as statements: with the equation's
Gauss-Newton marks it keeps the dropped terms under ``if not gauss_newton:`` (added in place),
and a replaced factor (``S`` -> ``S^G``) as the two branches of an ``if``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import sympy as sp
from sympy.printing.precedence import PRECEDENCE
from sympy.printing.str import StrPrinter

from ..derivation.ir import without_zeros
from .numpy import NumPyPrinter, stable_rewrite
from .pylayout import format_code

__all__ = ["Array", "Entrywise", "MatrixNumPyPrinter", "Ones", "PrintError", "text"]

#: the flag of the generated method that selects the Gauss-Newton sweep
GAUSS_NEWTON = "gauss_newton"


class PrintError(ValueError):
    """A matrix expression this printer has no NumPy form for: a bug in symgrad."""


@dataclass(frozen=True)
class Array:
    """A matrix symbol held in the code as the array ``code``; ``batched``: with a leading axis
    of k directions (shape ``(k, rows, cols)``, else ``(rows, cols)``)."""

    code: str
    batched: bool = False


@dataclass(frozen=True)
class Entrywise:
    """A matrix symbol whose entries are the kernel ``expr`` (over the calculus symbols), printed
    in place with ``names`` (symbol name -> array of the code)."""

    expr: sp.Expr
    names: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Ones(Entrywise):
    """A column of ones (every entry the kernel 1) multiplied from the right: ``M 1`` is a row
    sum, ``r 1^T`` the column r repeated over the columns; the code holds no array for it."""

    expr: sp.Expr = sp.Integer(1)


Entry = Array | Entrywise
#: operator precedence of a printed piece: an atom, a product (``*``, ``/``, ``@``), a sum
ATOM, PRODUCT, SUM = 3, 2, 1


class MatrixNumPyPrinter(NumPyPrinter):
    """Matrix forms -> NumPy source (see the module's docstring).

    Args:
        table: matrix symbol name -> :class:`Array` or :class:`Entrywise`; the column of ones
            is the symbol called ``ones``.
        names: scalar symbol name -> code (``m``).
        ones: the name of the column of ones (``ones_m``).
        entrywise: the backend's printer of entrywise expressions (a Hadamard product, a
            kernel); its array module is the generated code's.
        zeros: the code of an array of zeros of a given ``{shape}`` (a zero block of ``[A | B]``).
    """

    def __init__(
        self,
        table: Mapping[str, Entry],
        names: Mapping[str, str] | None = None,
        ones: str = "ones_m",
        entrywise: type[NumPyPrinter] = NumPyPrinter,
        zeros: str = "np.zeros({shape})",
    ):
        super().__init__(dict(names or {}))
        self.zeros = zeros
        self.table = dict(table)
        self.ones = ones
        self.entrywise = entrywise

    # -- one expression -------------------------------------------------------------------------
    def matrix(self, expr: sp.Basic) -> str:
        """``expr`` (a matrix expression) as one NumPy expression."""
        return format_code(self._piece(expr)[0])

    def batched(self, expr: sp.Basic) -> bool:
        """Whether ``expr`` has a leading axis of directions (one of its arrays has)."""
        return any(
            isinstance(self._entry(s), Array) and self._entry(s).batched
            for s in expr.atoms(sp.MatrixSymbol)
            if s.name != self.ones
        )

    def _entry(self, sym: sp.MatrixSymbol) -> Entry:
        try:
            return self.table[sym.name]
        except KeyError:
            raise PrintError(f"no array of the code holds the matrix {sym.name}") from None

    def _piece(self, e: sp.Basic) -> tuple[str, int]:
        """``(code, precedence)`` of a matrix expression."""
        if isinstance(e, sp.MatrixSymbol):
            entry = self._entry(e)
            if isinstance(entry, Entrywise):
                return self._hadamard([e])
            return entry.code, ATOM
        if isinstance(e, sp.Transpose):
            code = self._wrap(e.arg, ATOM)
            return code + (".transpose(0, 2, 1)" if self.batched(e.arg) else ".T"), ATOM
        if isinstance(e, sp.MatMul):
            return self._matmul(e)
        if isinstance(e, sp.MatAdd):
            return self._matadd(e)
        if isinstance(e, sp.HadamardProduct):
            return self._hadamard(list(e.args))
        if isinstance(e, sp.BlockMatrix) and e.blockshape[0] == 1:
            return self._blocks(e)
        raise PrintError(f"no NumPy form for the matrix expression {type(e).__name__}: {e}")

    def _blocks(self, e: sp.BlockMatrix) -> tuple[str, int]:
        """``[A | B | ...]`` (one row of blocks, a skip connection's merged input): the blocks
        concatenated along the last axis; a zero block is an array of zeros of the model's
        dtype (``zeros``), with the leading axis of directions when another block has one."""
        batched = self.batched(e)
        parts = []
        for block in e.blocks[0, :]:
            if isinstance(block, sp.ZeroMatrix):
                shape = ", ".join(self._scalar(n) for n in block.shape)
                parts.append(self.zeros.format(shape=f"({'k, ' if batched else ''}{shape})"))
            else:
                parts.append(self._wrap(block, ATOM))
        return f"{self.fn('concatenate')}(({', '.join(parts)}), axis=-1)", ATOM

    def _wrap(self, e: sp.Basic, at_least: int) -> str:
        code, prec = self._piece(e)
        return code if prec >= at_least else f"({code})"

    def _scalar(self, c: sp.Expr) -> str:
        return self.doprint(c)

    def _matmul(self, e: sp.MatMul) -> tuple[str, int]:
        coeff, mats = e.as_coeff_matrices()
        mats = list(mats)
        ones = [k for k, x in enumerate(mats) if self._is_ones(x)]
        if len(mats) > 1 and ones and ones[0] > 0 and self._is_ones(mats[-1]):
            code, prec = self._right_ones(mats)
        elif ones == [0] and len(mats) == 2 and mats[1].shape[0] == 1:
            # 1 r: the row r broadcast over the rows (in a sum with an m-row term)
            code, prec = self._piece(mats[1])
        elif ones == [0] and isinstance(mats[0], sp.Transpose):
            # 1^T M: M summed over its rows
            rest = mats[1] if len(mats) == 2 else sp.MatMul(*mats[1:])
            code, prec = self._wrap(rest, ATOM) + ".sum(axis=-2, keepdims=True)", ATOM
        elif ones:
            raise PrintError(f"no NumPy form for the column of ones in {e}")
        elif len(mats) == 1:
            code, prec = self._piece(mats[0])
        else:
            first = self._wrap(mats[0], PRODUCT)
            rest = [self._wrap(x, ATOM) for x in mats[1:]]
            code, prec = " @ ".join([first, *rest]), PRODUCT
        return self._scaled(coeff, code, prec)

    def _is_ones(self, x: sp.Basic) -> bool:
        if isinstance(x, sp.Transpose):
            x = x.arg
        if not isinstance(x, sp.MatrixSymbol):
            return False
        return x.name == self.ones or isinstance(self.table.get(x.name), Ones)

    def _right_ones(self, mats: list) -> tuple[str, int]:
        """``M 1`` (the row sums of M, a column) and ``r 1^T`` (the column r, which NumPy
        broadcasts over the columns): the columns of ones on the right of a product."""
        *rest, last = mats
        if any(self._is_ones(x) for x in rest[:-1]):
            raise PrintError(f"no NumPy form for the columns of ones in {sp.MatMul(*mats)}")
        inner = rest[0] if len(rest) == 1 else sp.MatMul(*rest)
        if isinstance(last, sp.Transpose):
            if inner.shape[1] != 1:
                raise PrintError(f"a row of ones times the matrix {inner}: not a column")
            return self._piece(inner)
        if self._is_ones(inner):
            raise PrintError(f"no NumPy form for a product of columns of ones: {inner}")
        return self._wrap(inner, ATOM) + ".sum(axis=-1, keepdims=True)", ATOM

    def _scaled(self, coeff: sp.Expr, code: str, prec: int) -> tuple[str, int]:
        if coeff == 1:
            return code, prec
        if coeff == -1:
            return f"-{code if prec >= ATOM else f'({code})'}", PRODUCT
        num, den = sp.fraction(coeff)
        if num == 1 and den != 1:
            den_code = self._scalar(den)
            if not (den.is_Symbol or den.is_Integer):
                den_code = f"({den_code})"
            return f"{code if prec >= PRODUCT else f'({code})'} / {den_code}", PRODUCT
        c = self._scalar(coeff)
        if not (coeff.is_Symbol or coeff.is_Number):
            c = f"({c})"
        return f"{c} * {code if prec >= ATOM else f'({code})'}", PRODUCT

    def _matadd(self, e: sp.MatAdd) -> tuple[str, int]:
        out = ""
        for k, term in enumerate(e.args):
            coeff, mats = (sp.S.One, [])
            if isinstance(term, sp.MatMul):
                coeff, mats = term.as_coeff_matrices()
            negative = coeff.is_Number and coeff < 0
            code, prec = self._piece(sp.MatMul(-coeff, *mats) if negative else term)
            if negative:
                code = code if prec > SUM else f"({code})"
                out += f"-{code}" if k == 0 else f" - {code}"
            elif k and prec > SUM and code.startswith("-"):
                # an entrywise product printed with its sign (u = -a): ``x - a * y``
                out += f" - {code[1:]}"
            else:
                out += code if k == 0 else f" + {code}"
        return out, SUM

    def _hadamard(self, factors: list) -> tuple[str, int]:
        """The entrywise product of ``factors`` as one scalar expression: an array is a symbol
        named by its code (so the product's order is that of the names), a kernel its
        expression, anything else its printed code in parentheses."""
        names: dict[str, str] = {}
        product = sp.Integer(1)
        for f in factors:
            entry = self._entry(f) if isinstance(f, sp.MatrixSymbol) else None
            if isinstance(entry, Entrywise):
                expr = entry.expr
                for s in sorted(expr.free_symbols, key=lambda s: s.name):
                    code = entry.names.get(s.name, self.names.get(s.name, s.name))
                    if names.get(s.name, code) != code:  # two kernels, one symbol, two arrays
                        own = sp.Symbol(code, **s.assumptions0)
                        expr = expr.xreplace({s: own})
                        names[own.name] = code
                    else:
                        names[s.name] = code
                product *= expr
                continue
            code, prec = self._piece(f)
            if prec < ATOM:
                code = f"({code})"
            names[code] = code
            product *= sp.Symbol(code, real=True)
        printer = self.entrywise({**self.names, **names})
        return printer.doprint(stable_rewrite(product)), PRODUCT

    # -- statements -----------------------------------------------------------------------------
    def assign(
        self,
        target: str,
        rhs: sp.Basic,
        gauss_newton: tuple = (),
        temp: Callable[[int], str] | None = None,
    ) -> list[str]:
        """``target = rhs`` as statements; ``gauss_newton``: the equation's marks (pairs ``(part,
        replacement)``, see ``Equation.gauss_newton``). A dropped term is added in place under
        ``if not gauss_newton:``; a sum that holds one, inside a product, is computed first into
        ``temp(0)``, ``temp(1)``, ...; a replaced factor gives the two branches of an ``if``."""
        self._marks = dict(gauss_newton)
        self._temps = temp or (lambda k: f"{target}_{k}")
        self._used = 0
        return self._assign(target, rhs)

    def _marked(self, e: sp.Basic) -> bool:
        return any(e.has(part) for part in self._marks)

    def _dropped(self, e: sp.Basic) -> bool:
        return isinstance(self._marks.get(e), sp.ZeroMatrix)

    def _assign(self, target: str, rhs: sp.Basic) -> list[str]:
        if not self._marked(rhs):
            return [f"{target} = {self.matrix(rhs)}"]
        coeff, mats = rhs.as_coeff_matrices() if isinstance(rhs, sp.MatMul) else (1, [rhs])
        if coeff != 1 and len(mats) == 1 and not self._dropped(mats[0]):
            # c M: M, then scaled in place
            lines = self._assign(target, mats[0])
            num, den = sp.fraction(coeff)
            if num == 1:
                return [*lines, f"{target} /= {self._scalar(den)}"]
            return [*lines, f"{target} *= {self._scalar(coeff)}"]
        if isinstance(rhs, sp.MatAdd):
            # the term that holds marks first (it is written into target), the others added
            kept = sorted(
                (t for t in rhs.args if not self._dropped(t)), key=lambda t: not self._marked(t)
            )
            dropped = [t for t in rhs.args if self._dropped(t)]
            if kept and not any(self._marked(t) for t in kept[1:]):
                lines = self._assign(target, kept[0])
                lines += [f"{target} += {self.matrix(t)}" for t in kept[1:]]
                if dropped:
                    lines.append(f"if not {GAUSS_NEWTON}:")
                    lines += [f"    {target} += {self.matrix(t)}" for t in dropped]
                return lines
        if isinstance(rhs, sp.HadamardProduct):
            inner = [f for f in rhs.args if self._marked(f)]
            if len(inner) == 1 and isinstance(inner[0], sp.MatAdd):
                # the marked sum first, into a temporary array of its own
                name = self._temps(self._used)
                self._used += 1
                lines = self._assign(name, inner[0])
                sym = sp.MatrixSymbol(name, *inner[0].shape)
                self.table[name] = Array(name, self.batched(inner[0]))
                rest = rhs.xreplace({inner[0]: sym})
                return [*lines, f"{target} = {self.matrix(rest)}"]
        # otherwise the two sweeps' right sides, whole
        approx = without_zeros(rhs.xreplace(self._marks))
        return [
            f"if {GAUSS_NEWTON}:",
            f"    {target} = {self.matrix(approx)}",
            "else:",
            f"    {target} = {self.matrix(rhs)}",
        ]


class _Text(StrPrinter):
    """SymPy's plain text, with the Hadamard product written ``A .* B``."""

    def _print_HadamardProduct(self, expr):
        return " .* ".join(self.parenthesize(a, PRECEDENCE["Mul"] + 1) for a in expr.args)


def text(expr: sp.Basic) -> str:
    """``expr`` as plain ASCII text (for a comment that names the equation a line prints)."""
    return _Text().doprint(expr)
