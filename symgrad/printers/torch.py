"""Code printers for the PyTorch backend: the same SymPy objects as :mod:`.numpy`, printed as
``torch`` tensor code. No calculus here, and no autograd in what is printed.

:class:`TorchPrinter` is :class:`~symgrad.printers.numpy.NumPyPrinter` with ``module = "torch"``
and the few functions whose PyTorch form differs from NumPy's:

- a ``where`` whose branches are both numbers takes them as tensors of the condition's array
  (``a.new_tensor(0.01)``): two Python numbers would give PyTorch's default float32;
- ``max(x, 0)`` / ``min(x, 0)`` print ``torch.clamp_min`` / ``torch.clamp_max`` (PyTorch's
  ``maximum`` takes two tensors);
- ``softplus(x)`` prints ``torch.logaddexp(x, torch.zeros_like(x))`` (exact; PyTorch's own
  ``softplus`` switches to ``x`` above a threshold);
- a sub-expression over Python scalars only (``scalars``: the step count, the learning rate,
  N) is printed with :class:`~symgrad.printers.numpy.ScalarPrinter` (``math.sqrt(1 -
  0.999**t)``): ``torch.sqrt`` takes tensors only; with ``hoisted`` (a list) each such
  sub-expression is computed once into a name ``c_k`` (its ``(name, code)`` appended).

:class:`MatrixTorchPrinter` prints the matrix forms (the R-operator sweeps): a transpose of k
directions is ``.mT`` (PyTorch's ``transpose`` takes two axes).
"""

from __future__ import annotations

import sympy as sp

from .matrix_numpy import ATOM, MatrixNumPyPrinter
from .numpy import NumPyPrinter, ScalarPrinter

__all__ = ["MatrixTorchPrinter", "TorchPrinter"]


class TorchPrinter(NumPyPrinter):
    """PyTorch source for one expression over tensors (``names``: symbol name -> variable;
    ``scalars``: names of symbols that are Python numbers in the generated code)."""

    module = "torch"

    def __init__(self, names: dict[str, str] | None = None, scalars=(), hoisted=None):
        super().__init__(names)
        self.scalars = frozenset(scalars)
        #: where scalar sub-expressions go, as ``(name, code)``, when given (else in line)
        self.hoisted = hoisted

    def _is_scalar(self, expr) -> bool:
        """A compound expression over Python numbers only, that needs a function or a root."""
        if not isinstance(expr, sp.Expr) or expr.is_Atom or not expr.free_symbols:
            return False
        if not {s.name for s in expr.free_symbols} <= self.scalars:
            return False
        return bool(expr.atoms(sp.Function)) or any(
            not p.exp.is_Integer for p in expr.atoms(sp.Pow)
        )

    def _print(self, expr, **kwargs):
        if self.scalars and self._is_scalar(expr):
            code = ScalarPrinter(self.names).doprint(expr)
            if self.hoisted is None:
                return "(%s)" % code
            for name, known in self.hoisted:
                if known == code:
                    return name
            self.hoisted.append((f"c_{len(self.hoisted)}", code))
            return self.hoisted[-1][0]
        return super()._print(expr, **kwargs)

    def _print_softplus(self, expr):
        x = self._print(expr.args[0])
        return "%s(%s, %s(%s))" % (self.fn("logaddexp"), x, self.fn("zeros_like"), x)

    def _reference(self, cond) -> str:
        """An array of the condition, whose dtype and device a numeric branch takes."""
        syms = sorted(
            cond.free_symbols - {s for s in cond.free_symbols if s.name in self.scalars},
            key=lambda s: s.name,
        )
        if not syms:
            raise ValueError(f"no array in the condition {cond}")
        return self._print(syms[0])

    def _print_Piecewise(self, expr):
        if len(expr.args) == 2 and expr.args[1][1] == sp.true:
            (e1, c1), (e2, _) = expr.args
            both = e1.is_Number and e2.is_Number
            if both and not (e1 == 1 and e2 == 0 and not self._in_sum):
                ref = self._reference(c1)
                return "%s(%s, %s.new_tensor(%s), %s.new_tensor(%s))" % (
                    self.fn("where"),
                    self._print(c1),
                    ref,
                    self.number(e1),
                    ref,
                    self.number(e2),
                )
        return super()._print_Piecewise(expr)

    def _extremum(self, expr, clamp: str, pair: str):
        numbers = [a for a in expr.args if a.is_Number]
        arrays = [a for a in expr.args if not a.is_Number]
        code = self._print(arrays[0])
        for other in arrays[1:]:
            code = "%s(%s, %s)" % (self.fn(pair), code, self._print(other))
        for num in numbers:
            code = "%s(%s, %s)" % (self.fn(clamp), code, self.number(num))
        return code

    def _print_Max(self, expr):
        return self._extremum(expr, "clamp_min", "maximum")

    def _print_Min(self, expr):
        return self._extremum(expr, "clamp_max", "minimum")

    def fn(self, name: str) -> str:
        # NumPy's maximum/minimum with a number (the overflow clamp of ``where``) -> clamp
        return super().fn({"maximum": "clamp_min", "minimum": "clamp_max"}.get(name, name))


class MatrixTorchPrinter(MatrixNumPyPrinter):
    """The matrix forms as PyTorch code: ``@`` broadcasts over k directions as NumPy's does; a
    transpose of a batched array is ``.mT``; blocks ``[A | B]`` are ``torch.concatenate``."""

    module = "torch"

    def _piece(self, e):
        if isinstance(e, sp.Transpose) and self.batched(e.arg):
            return self._wrap(e.arg, ATOM) + ".mT", ATOM
        return super()._piece(e)


TorchPrinter.matrix_printer = MatrixTorchPrinter
#: a zero block of a skip connection's merged R{U_l} (R{X} = 0), on the input's device
TorchPrinter.zeros_code = "torch.zeros({shape}, dtype=X.dtype, device=X.device)"
