"""The closed-form Hessian of a model without hidden layers, printed from its matrix form.

For outputs that do not interact (every output but softmax) ``hess.closed``'s matrix form is the
block of output unit j over its parameters ``[w_j, b_j]``::

    H_j = c X~^T S_j X~  (+ lambda_2/N [[I, 0], [0, 0]])

with ``c = 1/m``, ``X~ = [X, 1]`` (``X`` when the layer has no bias) and ``S_j = diag(s_j)`` the
output curvature of unit j (the kernel of ``hess.out``) over the batch. :func:`closed_hessian`
reads that right side, checks it has this shape (else :class:`ClosedFormError`: the equation
and the code would disagree) and prints one unit's block as statements. The regulariser's term
(the one with lambda_2) is the diagonal the trainer's ``_reg_hess`` adds, printed from the
regulariser's own kernel (``reg.hess``).

The lowering, stated once here rather than typed in the template:

- ``X^T diag(s) X`` with every ``s >= 0`` is ``B^T B`` with ``B = X sqrt(s)`` (rows scaled):
  NumPy computes ``B.T @ B`` by a symmetric rank-m update (BLAS syrk), half the flops of
  ``(X s)^T X``, which is what is printed where some ``s < 0`` (tested on the batch, unless
  the kernel is a number);
- with one output unit ``X~ = [X, 1]`` is not formed: ``X~^T S X~ = [[X^T S X, X^T s],
  [s^T X, 1^T s]]``, its blocks computed from ``X`` (the last column and row: ``X^T s`` and
  ``sum s``); with several, ``X~`` is formed once (:attr:`ClosedHessian.augment`, one copy of
  X) and each unit's block is one syrk of ``X~ sqrt(s_j)`` (one pass over the batch per unit,
  where the blocks from X would take two: the syrk and ``X^T s``);
- the scalar factor ``c`` multiplies the block in place (``/= m`` for ``c = 1/m``).
"""

from __future__ import annotations

from dataclasses import dataclass

import sympy as sp

from ..derivation import notation as nt
from ..printers.numpy import NumPyPrinter
from . import kernels


class ClosedFormError(ValueError):
    """The closed form's matrix form is not ``c X~^T diag(s) X~ (+ the L2 term)``."""


def _factors(expr: sp.Basic) -> tuple[sp.Expr, list]:
    """``(scalar, matrices)`` of a (nested) product (identity matrices dropped)."""
    if isinstance(expr, sp.MatMul):
        scalar, mats = sp.Integer(1), []
        for arg in expr.args:
            s, m = _factors(arg)
            scalar, mats = scalar * s, mats + m
        return scalar, mats
    if isinstance(expr, sp.Identity):
        return sp.Integer(1), []
    if expr.is_Matrix:
        return sp.Integer(1), [expr]
    return expr, []


@dataclass
class ClosedHessian:
    """One output unit's block of the Hessian, printed from ``hess.closed``'s matrix form.

    ``s``: the diagonal of ``S_j`` for every unit at once, (m, n_L) or a number (NumPy
    broadcasts it); ``block(target, column)``: the statements that write the block into the
    array ``target`` ((d, d), d the block's size) from ``column``, the unit's s (m, 1), over the
    input batch ``X``."""

    s: str
    scale: sp.Expr  # c
    bias: bool  # X~ = [X, 1]
    inputs: int  # n_0, the columns of X
    signed: bool  # whether s can be negative (the syrk form is then tested on the batch)
    printer: NumPyPrinter

    @property
    def augment(self) -> list[str]:
        """The statement forming ``Xt = [X, 1]`` (none without a bias): before the units' loop
        of ``block(..., formed=True)``."""
        if not self.bias:
            return []
        ones = f"{self.printer.fn('ones')}((m, 1), dtype=X.dtype)"
        return [f"Xt = {self.printer.fn('hstack')}([X, {ones}])"]

    @property
    def size(self) -> int:
        """The rows of the block: n_0 (+ 1 with a bias)."""
        return self.inputs + self.bias

    def _scaled(self, target: str) -> str:
        c = self.scale
        base, exp = c.as_base_exp()
        if exp == -1 and base != 1:  # c = 1/x: divided, as the derivation writes it
            return f"{target} /= {self.printer.doprint(base)}"
        return f"{target} *= {self.printer.doprint(c)}"

    def block(self, target: str, column: str, formed: bool = False) -> list[str]:
        """The block's statements; ``formed``: over ``Xt`` (see :attr:`augment`)."""
        d = self.inputs
        X = "Xt" if formed and self.bias else "X"
        bias = self.bias and not formed  # the bias's row and column computed from X
        square = f"{target}[:{d}, :{d}]" if bias else f"{target}[:]"
        syrk = [
            f"B = {X} * {self.printer.fn('sqrt')}({column})",
            f"{square} = B.T @ B  # symmetric rank-m update: NumPy calls syrk for B.T @ B",
        ]
        if self.signed:
            lines = [f"if {self.printer.fn('all')}({column} >= 0):"]
            lines += [f"    {line}" for line in syrk]
            lines += ["else:", f"    {square} = ({X} * {column}).T @ {X}"]
        else:
            lines = syrk
        if bias:  # the column and the row of the bias: X^T s and 1^T s
            lines += [
                f"{target}[:{d}, {d}] = {X}.T @ {column}[:, 0]",
                f"{target}[{d}, :{d}] = {target}[:{d}, {d}]",
                f"{target}[{d}, {d}] = {column}.sum()",
            ]
        if self.scale != 1:
            lines.append(self._scaled(target))
        return lines


def closed_hessian(d, printer: type[NumPyPrinter]) -> ClosedHessian | None:
    """The printed block of ``hess.closed``'s matrix form; None where it has none (softmax
    regression: every pair of units is coupled) or the model has hidden layers."""
    if "hess.closed" not in d:
        return None
    eq = d.equation("hess.closed")
    if eq.matrix is None:
        return None
    _, rhs = eq.matrix
    terms = rhs.args if isinstance(rhs, sp.MatAdd) else (rhs,)
    xs = {nt.Xt(), nt.A(0)}
    data = [t for t in terms if xs & t.atoms(sp.MatrixSymbol)]
    for term in terms:
        if term not in data and nt.lambda_2 not in term.free_symbols:
            raise ClosedFormError(f"hess.closed: a term that is neither data nor L2: {term}")
    if len(data) != 1:
        raise ClosedFormError(f"hess.closed: expected one term c X~^T S X~, got {data}")
    if (len(terms) > 1) != bool(d.spec.regularization.l2):
        # the trainer adds _reg_hess (reg.hess) exactly when the spec has an L2 term
        raise ClosedFormError("hess.closed: its L2 term and the spec's regularization.l2 disagree")
    scale, mats = _factors(data[0])
    bias = d.layers[0].bias
    xt = nt.Xt() if bias else nt.A(0)
    middle = mats[1:-1]
    if (
        len(mats) not in (2, 3)
        or mats[0] != xt.T
        or mats[-1] != xt
        or any(not (isinstance(f, sp.MatrixSymbol) and f.name.startswith("Sdiag")) for f in middle)
        or scale.free_symbols - {nt.m}
    ):
        raise ClosedFormError(f"hess.closed: {data[0]} is not c X~^T diag(s) X~ (c over m)")
    # S_j = diag(s_j): the output curvature, the kernel of hess.out (s_L[j]); X~^T X~: s = 1
    s = kernels.kernel(d, "hess.out") if middle else sp.Integer(1)
    L = d.depth
    names = {"z": f"z_{L}", "a": f"a_{L}", "y": "Y", "logsumexp": "lse", "m": "m"}
    p = printer(names)
    return ClosedHessian(
        s=p.expression(s),
        scale=scale,
        bias=bias,
        inputs=d.spec.sizes[0],
        signed=not (s.is_number and s >= 0),
        printer=p,
    )
