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

Softmax regression couples every pair of output units: its matrix form is the block of units k
(rows) and j (columns), with ``S = diag(d) + u v^T`` per sample (the kernels of
``hess.out.diag``, ``.u`` and ``.v``)::

    H_kj = c X~^T (delta_kj S^d_k + S^u_k S^v_j) X~  (+ delta_kj lambda_2/N [[I, 0], [0, 0]])

(:class:`Coupled`). The diagonal term is one unit's block as above, with ``s = d``, on the
diagonal blocks; the rank-one terms of all pairs at once are ``U^T V`` with ``U`` (m, K d) the
rows ``x~`` scaled by ``u_k`` side by side (``V`` likewise with ``v``). Where ``u = r v`` for a
number r (the kernels' ratio, decided on their expressions) ``U^T V = r V^T V``, one symmetric
rank-m update (syrk, half the flops of the product ``U^T V`` and no array U). The factor ``c``
multiplies the whole (K, d, K, d) array once.
"""

from __future__ import annotations

from dataclasses import dataclass

import sympy as sp

from ..derivation import notation as nt
from ..printers.numpy import NumPyPrinter
from . import kernels


class ClosedFormError(ValueError):
    """The closed form's matrix form is not ``c X~^T diag(s) X~ (+ the L2 term)`` (softmax
    regression: ``c X~^T (delta_kj S^d_k + S^u_k S^v_j) X~ (+ delta_kj times the L2 term)``)."""


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


#: the softmax curvature's kernels S = diag(d) + u v^T held by ``nt.Spart(part, ...)``
PARTS = {"d": "hess.out.diag", "u": "hess.out.u", "v": "hess.out.v"}


@dataclass
class Coupled:
    """The rank-one terms ``c X~^T S^u_k S^v_j X~`` of softmax regression's blocks, for every
    pair of units at once (see the module's notes). ``u``, ``v``: the kernels printed;
    ``ratio``: r where ``u = r v`` (then ``u`` is not used), else None."""

    u: str
    v: str
    ratio: sp.Expr | None
    printer: NumPyPrinter

    def lines(self, target: str, X: str, outputs: int) -> list[str]:
        """Statements adding the rank-one terms to ``target`` (K, d, K, d), in the augmented
        order (k, [x, 1]) over ``X`` (``Xt`` or ``X``, (m, d)); the names ``m``, ``K`` and
        ``d`` are the template's."""
        bc = self.printer.fn("broadcast_to")
        rows = "[:, :, None] * " + X + "[:, None, :]).reshape(m, K * d)"
        lines = [
            f"sv = {bc}({self.v}, (m, {outputs}))",
            f"Vr = (sv{rows}",
        ]
        if self.ratio is None:
            lines += [
                f"su = {bc}({self.u}, (m, {outputs}))",
                f"Ur = (su{rows}",
                f"{target} += (Ur.T @ Vr).reshape(K, d, K, d)",
            ]
            return lines
        r = self.ratio
        as_v = self.printer.doprint(r * sp.Symbol("v"))
        syrk = f"(Vr.T @ Vr).reshape(K, d, K, d)  # symmetric rank-m update (syrk): u = {as_v}"
        if r == 1:
            lines.append(f"{target} += {syrk}")
        elif r == -1:
            lines.append(f"{target} -= {syrk}")
        else:
            lines.append(f"{target} += {self.printer.doprint(r)} * {syrk}")
        return lines


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
    outputs: int  # n_1, the units
    signed: bool  # whether s can be negative (the syrk form is then tested on the batch)
    printer: NumPyPrinter
    #: softmax regression: the rank-one terms of every pair of units (s is then the kernel d
    #: of the diagonal term, and ``block(..., scaled=False)`` its diagonal blocks)
    coupled: Coupled | None = None

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

    def scaled(self, target: str) -> str:
        """The statement multiplying ``target`` by the factor c in place."""
        c = self.scale
        base, exp = c.as_base_exp()
        if exp == -1 and base != 1:  # c = 1/x: divided, as the derivation writes it
            return f"{target} /= {self.printer.doprint(base)}"
        return f"{target} *= {self.printer.doprint(c)}"

    def block(
        self, target: str, column: str, formed: bool = False, scaled: bool = True
    ) -> list[str]:
        """The block's statements; ``formed``: over ``Xt`` (see :attr:`augment`); ``scaled``:
        with the factor c (softmax: c multiplies the whole array, :meth:`rank_one`)."""
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
        if scaled and self.scale != 1:
            lines.append(self.scaled(target))
        return lines

    def rank_one(self, target: str) -> list[str]:
        """Softmax regression: the rank-one terms of every pair of units added to ``target``
        (K, d, K, d) in the augmented order, then the factor c (after :meth:`block` with
        ``formed=True, scaled=False`` for the diagonal term of each unit)."""
        X = "Xt" if self.bias else "X"
        lines = self.coupled.lines(target, X, self.outputs)
        if self.scale != 1:
            lines.append(self.scaled(target))
        return lines


def _unit_part(expr, idx: str) -> str | None:
    """``part`` where ``expr`` is ``nt.Spart(part, idx)``, else None."""
    for part in PARTS:
        if expr == nt.Spart(part, idx):
            return part
    return None


def _coupled(middle: sp.Basic) -> tuple[str, str, str]:
    """``(d, u, v)``: the parts of ``delta_kj S^d_k + S^u_k S^v_j`` (softmax regression's
    middle factor), or :class:`ClosedFormError`."""
    terms = middle.args if isinstance(middle, sp.MatAdd) else (middle,)
    diag = rank = None
    for term in terms:
        scalar, mats = _factors(term)
        parts = [_unit_part(f, x) for f, x in zip(mats, "kj")]
        if scalar == sp.KroneckerDelta(nt.k, nt.j) and len(mats) == 1 and parts[0]:
            diag = diag or parts[0]
            continue
        if scalar == 1 and len(mats) == 2 and all(parts):
            rank = rank or tuple(parts)
            continue
        raise ClosedFormError(f"hess.closed: {term} is neither delta_kj S_k nor S_k S_j")
    if diag is None or rank is None or len(terms) != 2:
        raise ClosedFormError(f"hess.closed: {middle} is not delta_kj S^d_k + S^u_k S^v_j")
    return diag, *rank


def _on_diagonal_blocks(term: sp.Basic) -> bool:
    """Whether ``term`` is ``delta_kj`` times a term free of Kronecker deltas."""
    delta = sp.KroneckerDelta(nt.k, nt.j)
    factors = sp.Mul.make_args(_factors(term)[0])
    rest = [f for f in factors if f != delta]
    return len(rest) == len(factors) - 1 and not any(f.has(sp.KroneckerDelta) for f in rest)


def closed_hessian(d, printer: type[NumPyPrinter]) -> ClosedHessian | None:
    """The printed block of ``hess.closed``'s matrix form; None where the model has hidden
    layers (no ``hess.closed``) or the equation has no matrix form."""
    if "hess.closed" not in d:
        return None
    eq = d.equation("hess.closed")
    if eq.matrix is None:
        return None
    _, rhs = eq.matrix
    terms = rhs.args if isinstance(rhs, sp.MatAdd) else (rhs,)
    xs = {nt.Xt(), nt.A(0)}
    data = [t for t in terms if xs & t.atoms(sp.MatrixSymbol)]
    coupled = d.output.vector
    for term in terms:
        if term not in data and nt.lambda_2 not in term.free_symbols:
            raise ClosedFormError(f"hess.closed: a term that is neither data nor L2: {term}")
        if term not in data and coupled and not _on_diagonal_blocks(term):
            # the trainer's _reg_hess is a diagonal: on the blocks of k = j only
            raise ClosedFormError(f"hess.closed: an L2 term off the diagonal blocks: {term}")
    if len(data) != 1:
        raise ClosedFormError(f"hess.closed: expected one term c X~^T S X~, got {data}")
    if (len(terms) > 1) != bool(d.spec.regularization.l2):
        # the trainer adds _reg_hess (reg.hess) exactly when the spec has an L2 term
        raise ClosedFormError("hess.closed: its L2 term and the spec's regularization.l2 disagree")
    scale, mats = _factors(data[0])
    bias = d.layers[0].bias
    xt = nt.Xt() if bias else nt.A(0)
    middle = mats[1:-1]
    if len(mats) not in (2, 3) or mats[0] != xt.T or mats[-1] != xt or scale.free_symbols - {nt.m}:
        raise ClosedFormError(f"hess.closed: {data[0]} is not c X~^T S X~ (c over m)")
    L = d.depth
    names = {"z": f"z_{L}", "a": f"a_{L}", "y": "Y", "logsumexp": "lse", "m": "m"}
    p = printer(names)
    extra = None
    if coupled:
        if len(middle) != 1:
            raise ClosedFormError(f"hess.closed: {data[0]} has no middle factor of softmax's S")
        d_part, u_part, v_part = _coupled(middle[0])
        s = kernels.kernel(d, PARTS[d_part])
        u, v = (kernels.kernel(d, PARTS[x]) for x in (u_part, v_part))
        ratio = sp.simplify(u / v) if v != 0 else None
        extra = Coupled(
            u=p.expression(u),
            v=p.expression(v),
            ratio=ratio if ratio is not None and ratio.is_number and ratio.is_finite else None,
            printer=p,
        )
    else:
        if any(
            not (isinstance(f, sp.MatrixSymbol) and f.name.startswith("Sdiag_")) for f in middle
        ):
            raise ClosedFormError(f"hess.closed: {data[0]} is not c X~^T diag(s) X~")
        # S_j = diag(s_j): the output curvature, the kernel of hess.out (s_L[j]); X~^T X~: s = 1
        s = kernels.kernel(d, "hess.out") if middle else sp.Integer(1)
    return ClosedHessian(
        s=p.expression(s),
        scale=scale,
        bias=bias,
        inputs=d.spec.sizes[0],
        outputs=d.spec.sizes[1],
        signed=not (s.is_number and s >= 0),
        printer=p,
        coupled=extra,
    )
