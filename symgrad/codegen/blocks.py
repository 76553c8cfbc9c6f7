"""The block Hessian of a network with one hidden layer, printed from its matrix forms.

One idea in one module (its length is the lowering's cases): the column printer, the shapes of
the terms and the block families share the axis conventions below, and a term only makes sense
with all three.

``hess.blocks.11``, ``.12`` and ``.22`` hold, per pair of units, the block of the Hessian as a
sum of terms over the batch (:func:`symgrad.derivation.second_order.block_forms`)::

    H_ab = c L^T diag(col_1) R + c L^T diag(col_2) R + ... + c L^T col e~_a^T
           (+ delta_ab lambda_2/N [[I, 0], [0, 0]])

with ``c = 1/m``, ``L``, ``R`` the inputs of the two units' layers (``X~ = [X, 1]``, ``A~_1 =
[A_1, 1]``, or ``X``, ``A_1`` without a bias), ``col`` a column over the batch built from the
kernels (``F'_1``, ``F''_1``, ``Delta_2``, ``S`` or softmax's ``S_d, S_u, S_v``), the weights
``W_2`` and the unit columns ``e_a``, ``e_b`` that pick the units of the pair. :func:`block_hessian`
reads those forms and prints them, for every pair at once; anything else is a
:class:`BlockFormError` (the equation and the code would disagree). The lowering:

- a column is printed as an array over the batch and the free units (``(c, U_a, U_b)``): ``M e_a``
  is M with its unit axis named a (all units at once), a product ``M col`` of a batch matrix
  and a column over output units is a matrix product (BLAS), a Hadamard product is NumPy's
  broadcast product, ``w_2[k, j]`` is the array ``W_2`` over the axes k, j, and a factor
  ``delta_ab`` puts its term on the diagonal ``a = b`` (added to the diagonal of the array);
- the terms ``L^T diag(col) R`` of a block are summed into one column array ``C`` (c, U_a,
  U_b). Between layers (``H12``) every pair at once is one product over the batch,
  ``C^T [l r^T]`` with the rows ``l r^T`` of every sample side by side (or, where those rows
  are the larger array, one product ``L^T [C_ab o R]_b`` per row unit a); a term
  ``L^T col e~_a^T`` is ``(L^T col)`` added to column a of unit a's blocks;
- within a layer, where the block is symmetric, ``H_ab = H_ba^T`` (decided on the matrix form:
  evaluated with random integer matrices for its symbols and softmax's ``u = r v``), one product
  ``L^T [C_ab o R]_{b >= a}`` per row unit a, the other blocks mirrored;
- a term ``c_ab = r sum_o M_o (P_oa g_a)(P_ob g_b)`` (a Gauss-Newton term, recognised on the
  form: its factors over b are those over a with the unit columns of a replaced by b's, softmax's
  ``S_u`` read as ``r S_v``) is ``r B^T B`` with the rows ``B = sqrt(M_o) P_oa g_a l^T`` of
  every sample and o side by side: one symmetric rank update (syrk) over the batch, used where B
  has at most RANK_MAX rows per sample (few output units), ``(B M)^T B`` where some ``M < 0``
  (tested on the batch); the terms ``delta_ab (...)`` then add ``C^T [l l^T]`` to the diagonal
  blocks;
- a column that is zero off ``a = b`` gives the diagonal blocks only: ``L^T diag(s) L`` with
  every ``s >= 0`` (tested on the batch) is ``B^T B``, ``B = L sqrt(s)`` (syrk);
- the blocks are views of H itself, in their order (unit, [weights, bias]); after the chunks
  the block between the layers is mirrored and each layer's biases are moved after its weights
  in place (:attr:`BlockHessian.assemble`: one P x P array in all); the factor ``c``
  multiplies H once (each block, where their factors differ); the L2 term is the diagonal the
  trainer's ``_reg_hess`` adds (the regulariser's ``reg.hess``), on weight entries of the blocks
  of a = b only, exactly when the spec has an L2 term.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np
import sympy as sp
from sympy.matrices.expressions.diagonal import DiagMatrix

from .. import calculus as C
from ..derivation import notation as nt
from ..derivation.second_order import S_parts
from ..printers.numpy import NumPyPrinter
from . import kernels
from .closed import _factors

KEYS = ("hess.blocks.11", "hess.blocks.12", "hess.blocks.22")
_UNIT = nt.UNIT_NAME


class BlockFormError(ValueError):
    """A matrix form of ``hess.blocks.*`` that is not a sum of terms ``c L^T diag(col) R``,
    ``c L^T col e~_a^T`` and the L2 term (see the module's notes)."""


@dataclass
class _T:
    """A column printed as an array: ``code`` over ``axes`` (batch ``x``, output units ``o``,
    hidden units ``h``, the pair's units); ``row``/``col``: the matrix's row and column axes
    (None for a column or a scalar); ``diag``: zero off a = b (the axis b folded into a)."""

    code: str
    axes: tuple
    row: str | None = None
    col: str | None = None
    diag: bool = False


@dataclass
class _Sel:
    """A unit column ``e_idx`` over the units of axis ``dim``."""

    dim: str
    idx: str


@dataclass
class Block:
    """One block family ``H_ab`` of the Hessian, printed: ``kernel_lines`` (per chunk, the
    column arrays), ``loop`` (per chunk, the products into ``target``), ``finish`` (after the
    chunks: the mirror of a symmetric block and the factor c)."""

    key: str
    target: str
    shape: tuple  # (U_a, d_L, U_b, d_R)
    kernel_lines: list = field(default_factory=list)
    loop: list = field(default_factory=list)
    finish: list = field(default_factory=list)
    symmetric: bool = False
    l2: bool = False
    rank: bool = False  # the Gauss-Newton terms by B^T B (see the module's notes)
    scale: sp.Expr = sp.Integer(1)  # c


@dataclass
class BlockHessian:
    """The printed statements of the one-hidden-layer Hessian: ``kernels`` (per chunk: f', f'',
    delta_2 and the output curvature over the chunk), ``augment`` (per chunk: ``[X, 1]``,
    ``[A_1, 1]``), then each block's statements (:class:`Block`)."""

    kernels: list
    augment: list
    blocks: list
    width: int  # the most array entries per sample (the chunk of samples is sized by it)
    l2: bool
    #: the factor c of every block, applied to H once after :attr:`assemble` (else empty: each
    #: block's own in its ``finish``)
    scale: list = field(default_factory=list)
    #: the number of layer 1's parameters: H's rows and columns before layer 2's
    split: int = 0
    #: (first index, units, weights per unit) of each layer with a bias: the parameters its
    #: units hold side by side ([weights, bias] per unit) until :attr:`assemble` reorders them
    reorder: list = field(default_factory=list)

    @property
    def allocate(self) -> list[str]:
        """Each block a view of ``H`` (P, P), zeroed, in the blocks' order: layer 1's
        parameters first, unit by unit ([weights, bias]), then layer 2's (no second P x P
        array)."""
        span = {"1": f"0:{self.split}", "2": f"{self.split}:"}
        lines = []
        for b in self.blocks:
            shape = ", ".join(map(str, b.shape))
            lines.append(f"{b.target} = H[{span[b.key[-2]]}, {span[b.key[-1]]}].reshape({shape})")
        return lines

    @property
    def assemble(self) -> list[str]:
        """The statements that finish ``H`` in the public order (the weights of each layer
        row-major, then its biases): the block between the layers mirrored (``H_21 = H_12^T``:
        H is symmetric), then each layer's biases moved after its weights, in place
        (``_bias_last``); then the factor c."""
        s = self.split
        lines = [f"H[{s}:, :{s}] = H[:{s}, {s}:].T"]
        if self.reorder:
            lines.append(f"self._bias_last(H, {tuple(map(tuple, self.reorder))})")
        return lines + self.scale

    def block(self, key: str) -> Block:
        return next(b for b in self.blocks if b.key == key)


class _Printer:
    """Columns of one block family as arrays (see the module's notes)."""

    def __init__(self, a: str, b: str, arrays: dict, dims: dict, units: dict, fn):
        self.a, self.b = a, b
        self.order = ["x", "o", "h", a, b]
        self.arrays = arrays  # MatrixSymbol name -> code
        self.dims = dims  # size symbol -> axis
        self.units = units  # axis -> the number of units (ints)
        self.fn = fn  # the printer's names of NumPy's functions

    def axis(self, size) -> str | None:
        if size == 1:
            return None
        if size not in self.dims:
            raise BlockFormError(f"hess.blocks: no axis for the size {size}")
        return self.dims[size]

    def canonical(self, axes) -> bool:
        pos = [self.order.index(x) for x in axes]
        return pos == sorted(pos) and len(set(axes)) == len(axes)

    def view(self, t: _T, axes: tuple) -> str:
        """``t`` indexed to broadcast over ``axes`` (a superset in canonical order), as a
        factor of a product (a matrix product or a sum in parentheses)."""
        if tuple(t.axes) == tuple(axes):
            return t.code if _factor(t.code) else f"({t.code})"
        if not set(t.axes) <= set(axes):
            raise BlockFormError(f"hess.blocks: {t.code} over {t.axes} cannot broadcast")
        code = t.code if _atomic(t.code) else f"({t.code})"
        return code + "[" + ", ".join(":" if x in t.axes else "None" for x in axes) + "]"

    def union(self, *ts: _T) -> tuple:
        return tuple(x for x in self.order if any(x in t.axes for t in ts))

    def tensor(self, e) -> _T | _Sel:
        if isinstance(e, sp.MatrixSymbol):
            found = _UNIT.fullmatch(e.name)
            if found:
                return _Sel(self.axis(e.shape[0] - (1 if found.group(1) else 0)), found.group(3))
            if e.name not in self.arrays:
                raise BlockFormError(f"hess.blocks: no kernel prints the matrix {e.name}")
            axes = tuple(x for x in (self.axis(e.shape[0]), self.axis(e.shape[1])) if x)
            return _T(self.arrays[e.name], axes, self.axis(e.shape[0]), self.axis(e.shape[1]))
        if isinstance(e, sp.MatMul):
            return self.product(e.args)
        if isinstance(e, sp.HadamardProduct):
            ts = [self.tensor(x) for x in e.args]
            return self.hadamard(ts)
        if isinstance(e, sp.MatAdd):
            ts = [self.tensor(x) for x in e.args]
            if any(t.diag != ts[0].diag for t in ts):
                raise BlockFormError(f"hess.blocks: {e} mixes terms on and off a = b")
            axes = self.union(*ts)
            return _T(" + ".join(self.view(t, axes) for t in ts), axes, ts[0].row, diag=ts[0].diag)
        raise BlockFormError(f"hess.blocks: no rule for {type(e).__name__} ({e})")

    def scalar(self, s) -> _T | None:
        """A scalar factor: None for a KroneckerDelta of the pair (see :meth:`product`)."""
        if isinstance(s, sp.Indexed) and s.base == nt.w(2):
            idx = tuple(str(i) for i in s.indices)
            if set(idx) - {self.a, self.b} or len(set(idx)) != 2:
                raise BlockFormError(f"hess.blocks: {s} is not over the pair's units")
            if self.canonical(idx):
                return _T(self.arrays["W_2"], idx)
            return _T(self.arrays["W_2"] + ".T", idx[::-1])
        if s.is_number:
            return _T(str(s), ())
        raise BlockFormError(f"hess.blocks: no rule for the factor {s}")

    def hadamard(self, ts: list) -> _T:
        if any(isinstance(t, _Sel) for t in ts):
            raise BlockFormError("hess.blocks: a unit column in a Hadamard product")
        rows = {t.row for t in ts if t.row is not None}
        if len(rows) > 1 or any(t.col for t in ts):
            raise BlockFormError("hess.blocks: a Hadamard product of unlike columns")
        axes = self.union(*ts)
        code = " * ".join(self.view(t, axes) for t in ts)
        return _T(code, axes, rows.pop() if rows else None, diag=any(t.diag for t in ts))

    def product(self, args) -> _T:
        scalars, mats = [], []
        for x in args:
            (mats if getattr(x, "is_Matrix", False) else scalars).append(x)
        acc: _T | None = None
        for f in mats:
            t = self.tensor(f)
            if acc is None:
                if isinstance(t, _Sel):
                    raise BlockFormError(f"hess.blocks: a product starting with a unit column {f}")
                acc = t
                continue
            if isinstance(t, _Sel):  # M e_a: M's unit axis named a
                if acc.col != t.dim or t.idx in acc.axes:
                    raise BlockFormError(f"hess.blocks: {f} does not pick a unit of {acc.code}")
                axes = tuple(t.idx if x == t.dim else x for x in acc.axes)
                acc = _T(acc.code, axes, acc.row, None, acc.diag)
                if not self.canonical(axes):
                    raise BlockFormError(f"hess.blocks: unit axes out of order in {acc.code}")
                continue
            acc = self.contract(acc, t)
        for s in scalars:
            for factor in sp.Mul.make_args(s):
                if isinstance(factor, sp.KroneckerDelta):
                    if {str(x) for x in factor.args} != {self.a, self.b}:
                        raise BlockFormError(f"hess.blocks: {factor} is not delta of the pair")
                    if self.b in acc.axes:
                        raise BlockFormError(f"hess.blocks: delta_ab times a term over {self.b}")
                    acc = _T(acc.code, acc.axes, acc.row, acc.col, True)
                    continue
                t = self.scalar(factor)
                axes = self.union(acc, t)
                code = f"{self.view(t, axes)} * {self.view(acc, axes)}"
                acc = _T(code, axes, acc.row, acc.col, acc.diag)
        return acc

    def contract(self, left: _T, right: _T) -> _T:
        """``left right``: the sum over left's column axis (a matrix product)."""
        c = left.col
        if c is None or right.row != c or left.axes[-1] != c or right.axes[0] != c:
            raise BlockFormError(f"hess.blocks: cannot multiply {left.code} by {right.code}")
        rest = left.axes[:-1] + right.axes[1:]
        if set(left.axes[:-1]) & set(right.axes[1:]) or not self.canonical(rest):
            raise BlockFormError(f"hess.blocks: {left.code} {right.code} is not a product")
        lc = left.code if _atomic(left.code) else f"({left.code})"
        rc = right.code if _atomic(right.code) else f"({right.code})"
        if len(left.axes) == 2 and len(right.axes) == 2:
            code = f"{lc} @ {rc}"
        else:
            code = f"{self.fn('tensordot')}({left.code}, {right.code}, axes=1)"
        return _T(code, rest, left.row, right.col, left.diag or right.diag)


def _atomic(code: str) -> bool:
    return re.fullmatch(r"[A-Za-z_][A-Za-z_0-9]*(\.T)?", code) is not None


def _factor(code: str) -> bool:
    """Whether ``code`` can stand as a factor of ``*`` as it is: no ``@``, ``+`` or ``-``
    outside brackets."""
    depth = 0
    for ch in code:
        depth += ch in "([{"
        depth -= ch in ")]}"
        if depth == 0 and ch in "@+-":
            return False
    return True


# -- the shape of a term ---------------------------------------------------------------------


@dataclass
class _Term:
    kind: str  # "diag" (c L^T diag(col) R), "outer" (c L^T col e~^T), "l2"
    scale: sp.Expr = sp.Integer(1)
    column: sp.Basic | None = None
    left: sp.MatrixSymbol | None = None
    right: sp.MatrixSymbol | None = None
    delta: sp.Expr = sp.Integer(1)  # KroneckerDelta factors of the term (on the column)
    sel: str = ""


def _term(key: str, t, inputs: set) -> _Term:
    scalar, mats = _factors(t)
    if not any(m.atoms(sp.MatrixSymbol) & inputs for m in mats):
        if nt.lambda_2 in scalar.free_symbols:
            return _Term("l2", scale=scalar)
        raise BlockFormError(f"{key}: a term that is neither data nor L2: {t}")
    deltas = [f for f in sp.Mul.make_args(scalar) if isinstance(f, sp.KroneckerDelta)]
    rest = sp.Mul(*(f for f in sp.Mul.make_args(scalar) if f not in deltas))
    scale = sp.Mul(*(f for f in sp.Mul.make_args(rest) if not f.free_symbols - {nt.m}))
    other = sp.simplify(rest / scale)
    left = mats[0].arg if isinstance(mats[0], sp.Transpose) else None
    if left not in inputs:
        raise BlockFormError(f"{key}: {t} does not start with the inputs' transpose")
    if len(mats) == 3 and isinstance(mats[1], DiagMatrix) and mats[2] in inputs:
        column = other * sp.Mul(*deltas) * mats[1].args[0]
        return _Term("diag", scale, column, left, mats[2])
    if len(mats) == 3 and isinstance(mats[2], sp.Transpose):
        found = _UNIT.fullmatch(getattr(mats[2].arg, "name", ""))
        if found:
            column = other * sp.Mul(*deltas) * mats[1]
            return _Term("outer", scale, column, left, None, sel=found.group(3))
    raise BlockFormError(f"{key}: {t} is neither c L^T diag(col) R nor c L^T col e^T")


# -- symmetry, decided on the matrix form ----------------------------------------------------


def _symmetric(d, data: sp.Expr, a: str, b: str, ratio) -> bool:
    """Whether ``H_ab = H_ba^T`` for the data terms ``data``: evaluated with random integer
    matrices for its symbols (softmax: ``S_u = r S_v`` where ``u = r v``, r an integer), at a
    few pairs of units."""
    rng = np.random.default_rng(0)
    sizes = {nt.m: 5, nt.n(0): 2, nt.n(1): 3, nt.n(2): 3}

    def size(x) -> int:
        return int(sp.sympify(x).xreplace(sizes))

    values = {}
    for s in sorted(data.atoms(sp.MatrixSymbol), key=lambda s: s.name):
        if not _UNIT.fullmatch(s.name):
            values[s.name] = rng.integers(-3, 4, (size(s.shape[0]), size(s.shape[1])))
    if ratio is not None and d.output.vector:
        if not (ratio.is_integer and S_parts(2)[2].name in values):
            return False
        values[S_parts(2)[1].name] = int(ratio) * values[S_parts(2)[2].name]

    def ev(e, at: dict):
        if isinstance(e, sp.MatrixSymbol):
            found = _UNIT.fullmatch(e.name)
            if found:
                out = np.zeros((size(e.shape[0]), 1), dtype=np.int64)
                out[at[found.group(3)], 0] = 1
                return out
            return values[e.name]
        if isinstance(e, sp.Transpose):
            return ev(e.args[0], at).T
        if isinstance(e, DiagMatrix):
            return np.diag(ev(e.args[0], at)[:, 0])
        if isinstance(e, sp.MatMul | sp.Mul):
            out = 1
            for x in e.args:
                v = ev(x, at)
                out = out @ v if np.ndim(out) == 2 and np.ndim(v) == 2 else out * v
            return out
        if isinstance(e, sp.MatAdd | sp.Add):
            return sum(ev(x, at) for x in e.args)
        if isinstance(e, sp.HadamardProduct):
            out = 1
            for x in e.args:
                out = out * ev(x, at)
            return out
        if isinstance(e, sp.KroneckerDelta):
            i, j = (at[str(x)] for x in e.args)
            return int(i == j)
        if isinstance(e, sp.Indexed) and e.base == nt.w(2):
            return values[nt.W(2).name][at[str(e.indices[0])], at[str(e.indices[1])]]
        if e.is_number:
            return float(e)
        raise BlockFormError(f"hess.blocks: no rule for {e} in the symmetry test")

    pairs = [(0, 1), (1, 2), (0, 2), (1, 1)]
    return all(
        np.allclose(ev(data, {a: i, b: j}), ev(data, {a: j, b: i}).T, rtol=1e-12, atol=0)
        for i, j in pairs
    )


# -- a Gauss-Newton term as a sum of squares -------------------------------------------------

#: the most rows per sample of B (the units of a contraction, 1 for a product of columns) for
#: which ``B^T B`` (one symmetric rank update over the batch) replaces the products by unit
RANK_MAX = 5


def _flat(e) -> list:
    if isinstance(e, sp.HadamardProduct):
        return [f for x in e.args for f in _flat(x)]
    return [e]


def _coefficient(e) -> tuple[sp.Expr, sp.Basic]:
    """``(number, rest)`` of a factor of a Hadamard product."""
    if isinstance(e, sp.MatMul):
        coef, mats = _factors(e)  # nested products flattened
        if coef.is_number and mats:
            return coef, mats[0] if len(mats) == 1 else sp.MatMul(*mats)
    return sp.Integer(1), e


def _square(pr: _Printer, column, swap: dict, ratio) -> tuple | None:
    """``(r, g factors, (M, P) or None)`` where the column ``c_ab`` of a data term is
    ``r sum_o M_o (P_oa g_a)(P_ob g_b)`` over the batch (``g_b`` the factors ``g_a`` with the
    unit columns of a replaced by those of b), checked on the matrix form (softmax: with
    ``S_u = r S_v`` where ``u = r v``); None where it is not."""
    if ratio is not None:
        _, Su, Sv = S_parts(2)
        column = column.xreplace({Su: ratio * Sv})
    coef, ga, gb, contraction = sp.Integer(1), [], [], None
    for f in _flat(column):
        k, f = _coefficient(f)
        coef *= k
        try:
            axes = set(pr.tensor(f).axes)
        except BlockFormError:
            return None
        if axes <= {"x", pr.a} and pr.a in axes:
            ga.append(f)
        elif axes <= {"x", pr.b} and pr.b in axes:
            gb.append(f)
        elif (
            contraction is None
            and isinstance(f, sp.MatMul)
            and len(f.args) == 2
            and isinstance(f.args[0], sp.MatrixSymbol)
            and isinstance(f.args[1], sp.HadamardProduct)
            and len(f.args[1].args) == 2
        ):
            M, (P, Q) = f.args[0], f.args[1].args
            if P.xreplace(swap) != Q:
                P, Q = Q, P
            if P.xreplace(swap) != Q or pr.tensor(M).axes != ("x", "o"):
                return None
            if set(pr.tensor(P).axes) != {"o", pr.a}:
                return None
            contraction = (M, P)
        else:
            return None
    if sorted(map(str, (f.xreplace(swap) for f in ga))) != sorted(map(str, gb)):
        return None
    if not ga or not coef.is_number:
        return None
    return coef, ga, contraction


def _squares(pr: _Printer, terms: list, ratio, units: dict) -> list | None:
    """The data terms without delta_ab as sums of squares ``(r, g, M)`` (g printed over
    ``(x, o, a)`` with a contraction M, else ``(x, a)``), where each is one and the rows of B
    are at most RANK_MAX per sample; None otherwise."""
    selectors = {}
    for t in terms:
        for s in t.column.atoms(sp.MatrixSymbol):
            found = _UNIT.fullmatch(s.name)
            if found and found.group(3) == pr.a:
                other = sp.MatrixSymbol(f"e{found.group(1)}{found.group(2)}_{pr.b}", *s.shape)
                selectors[s] = other
                selectors[other] = s
    r = ratio if ratio is not None and ratio.is_number else None
    out, rows = [], 0
    for t in terms:
        if t.delta != 1 or t.column.has(sp.KroneckerDelta):
            continue
        found = _square(pr, t.column, selectors, r)
        if found is None:
            return None
        coef, ga, contraction = found
        ts = [pr.tensor(f) for f in ga]
        M = None
        if contraction is not None:
            M, P = (pr.tensor(x) for x in contraction)
            ts.append(P)
            rows += units["o"]
        else:
            rows += 1
        axes = pr.union(*ts)
        g = _T(" * ".join(pr.view(x, axes) for x in ts), axes)
        out.append((coef, g, M))
    if not out or rows > RANK_MAX:
        return None
    return out


def _syrk_update(target: str, product: str, coef, p) -> str:
    """``target += coef product``; ``B.T @ B`` is a symmetric rank update (NumPy calls syrk)."""
    note = "  # symmetric rank update (syrk)" if product == "B.T @ B" else ""
    if coef == 1:
        return f"{target} += {product}{note}"
    if coef == -1:
        return f"{target} -= {product}{note}"
    return f"{target} += {p.doprint(coef)} * {product}{note}"


# -- the lowering ----------------------------------------------------------------------------


def block_hessian(d, printer: type[NumPyPrinter]) -> BlockHessian | None:
    """The printed statements of ``hess.blocks.*``'s matrix forms; None where the model is not
    a one-hidden-layer chain or an equation has no matrix form."""
    if any(k not in d for k in KEYS) or any(d.equation(k).matrix is None for k in KEYS):
        return None
    sizes = d.spec.sizes
    n0, n1, n2 = sizes
    b1, b2 = (layer.bias for layer in d.layers)
    p = printer({"z": "z_1", "a": "a_1", "y": "y"})
    q = printer({"z": "z_2", "a": "a_2", "y": "y", "logsumexp": "lse"})
    bc = p.fn("broadcast_to")
    lines = []

    def kernel_line(name: str, key: str, pr, units: int) -> None:
        """``name`` = the kernel over the chunk (c, units): broadcast where it reads no array."""
        k = kernels.kernel(d, key)
        code = pr.expression(k)
        if k.free_symbols & {C.z, C.a, C.y}:
            lines.append(f"{name} = {code}")
        else:
            lines.append(f"{name} = {bc}({code}, (c, {units}))")

    arrays = {"W_2": "W_2"}
    kernel_line("fp_1", "act.1.df", p, n1)
    arrays["FP_1"] = "fp_1"
    if kernels.zero_if_none(kernels.kernel(d, "act.1.d2f")) != 0:
        kernel_line("fpp_1", "act.1.d2f", p, n1)
        arrays["FPP_1"] = "fpp_1"
    kernel_line("delta_2", "delta.out", q, n2)
    arrays["Delta_2"] = "delta_2"
    ratio = None
    if d.output.vector:
        for part, key in zip("duv", ("hess.out.diag", "hess.out.u", "hess.out.v"), strict=True):
            kernel_line(f"s{part}", key, q, n2)
            arrays[f"S{part.upper()}_2"] = f"s{part}"
        u, v = kernels.kernel(d, "hess.out.u"), kernels.kernel(d, "hess.out.v")
        r = sp.simplify(u / v) if v != 0 else None
        ratio = r if r is not None and r.is_number and r.is_finite else None
    else:
        kernel_line("s_2", "hess.out", q, n2)
        arrays["S_2"] = "s_2"
    X = nt.Xt() if b1 else nt.A(0)
    A1 = nt.At(1) if b2 else nt.A(1)
    names = {X: "xt" if b1 else "x", A1: "at_1" if b2 else "a_1"}
    widths = {X: n0 + b1, A1: n1 + b2}
    augment = []
    ones = f"{p.fn('ones')}((c, 1), dtype=x.dtype)"
    if b1:
        augment.append(f"xt = {p.fn('hstack')}([x, {ones}])")
    if b2:
        augment.append(f"at_1 = {p.fn('hstack')}([a_1, {ones}])")
    dims = {nt.m: "x", nt.n(1): "h", nt.n(2): "o"}
    units = {"j": n1, "q": n1, "k": n2, "p": n2, "o": n2, "h": n1}
    blocks = []
    width = 0
    l2 = bool(d.spec.regularization.l2)
    for key in KEYS:
        lhs, rhs = d.equation(key).matrix
        a, b = lhs.name.rsplit("_", 1)[1]
        if isinstance(rhs, sp.MatAdd):
            terms = [_term(key, t, set(names)) for t in rhs.args]
        else:
            terms = [_term(key, rhs, set(names))]
        data = [t for t in terms if t.kind != "l2"]
        regs = [t for t in terms if t.kind == "l2"]
        same_layer = key[-1] == key[-2]
        if len(regs) != (1 if same_layer and l2 else 0):
            raise BlockFormError(f"{key}: its L2 term and the spec's regularization.l2 disagree")
        for t in regs:
            if not any(
                isinstance(f, sp.KroneckerDelta) and {str(x) for x in f.args} == {a, b}
                for f in sp.Mul.make_args(t.scale)
            ):
                raise BlockFormError(f"{key}: an L2 term off the blocks of a = b: {t.scale}")
        if not data:
            raise BlockFormError(f"{key}: no data term")
        scales = {t.scale for t in data}
        lefts = {t.left for t in data}
        rights = {t.right for t in data if t.kind == "diag"}
        if len(scales) != 1 or len(lefts) != 1 or len(rights) > 1:
            raise BlockFormError(f"{key}: its terms do not share c, L and R")
        (scale,) = scales
        if scale.free_symbols - {nt.m}:
            raise BlockFormError(f"{key}: the factor {scale} is not over m")
        (left,) = lefts
        right = rights.pop() if rights else None
        if right is None:
            raise BlockFormError(f"{key}: no term L^T diag(col) R")
        pr = _Printer(a, b, arrays, dims, units, p.fn)
        Ua, Ub = units[a], units[b]
        dL, dR = widths[left], widths[right]
        target = f"H{key[-2:]}"
        blk = Block(key, target, (Ua, dL, Ub, dR), l2=bool(regs))
        col = f"C{key[-2:]}"
        full = [pr.tensor(t.column) for t in data if t.kind == "diag"]
        outer = [(t, pr.tensor(t.column)) for t in data if t.kind == "outer"]
        axes = ("x", a, b)
        off = [t for t in full if not t.diag]
        on = [t for t in full if t.diag]
        for t in off + on:
            if t.row != "x" or t.col is not None:
                raise BlockFormError(f"{key}: a column not over the batch: {t.code}")
        kl = blk.kernel_lines
        L, R = names[left], names[right]
        squares = None
        if off and same_layer and left == right and not outer:
            squares = _squares(pr, [t for t in data if t.kind == "diag"], ratio, units)
        if squares is not None:  # B^T B: the Gauss-Newton terms as sums of squares
            blk.rank = True
            total = f"{Ua * dL}"
            kl.append(f"{target}v = {target}.reshape({total}, {total})")
            for n_sq, (coef, g, M) in enumerate(squares):
                name = f"G{key[-2:]}_{n_sq}"
                kl.append(f"{name} = {g.code}")
                if M is None:
                    rows = f"({name}[:, :, None] * {R}[:, None, :]).reshape(-1, {total})"
                    kl.append(f"B = {rows}")
                    kl.append(_syrk_update(f"{target}v", "B.T @ B", coef, p))
                    continue
                sq = f"{p.fn('sqrt')}({M.code})"
                kl.append(f"if {p.fn('all')}({M.code} >= 0):")
                kl.append(f"    SB = {sq}[:, :, None] * {name}")
                kl.append(
                    f"    B = (SB[:, :, :, None] * {R}[:, None, None, :]).reshape(-1, {total})"
                )
                kl.append("    " + _syrk_update(f"{target}v", "B.T @ B", coef, p))
                kl.append("else:")
                kl.append(
                    f"    B = ({name}[:, :, :, None] * {R}[:, None, None, :]).reshape(-1, {total})"
                )
                kl.append(
                    "    "
                    + _syrk_update(f"{target}v", f"(B * {M.code}.reshape(-1, 1)).T @ B", coef, p)
                )
            off = []
            width = max(
                width, sum(units["o"] if M is not None else 1 for _, _, M in squares) * Ua * dL
            )
        if not off and not on:
            pass
        elif off:
            first = off[0]
            if tuple(first.axes) == axes:
                kl.append(f"{col} = {first.code}")
            else:
                kl.append(f"{col} = {p.fn('zeros')}((c, {Ua}, {Ub}), dtype=x.dtype)")
                kl.append(f"{col} += {pr.view(first, axes)}")
            kl += [f"{col} += {pr.view(t, axes)}" for t in off[1:]]
            if on and Ua != Ub:
                raise BlockFormError(f"{key}: delta_ab between layers")
            for t in on:
                kl.append(f"{col}.reshape(c, -1)[:, :: {Ua} + 1] += {pr.view(t, ('x', a))}")
        else:
            kl.append(f"{col} = {pr.view(on[0], ('x', a))}")
            kl += [f"{col} = {col} + {pr.view(t, ('x', a))}" for t in on[1:]]
        if squares is not None and on:  # the diagonal blocks of the terms delta_ab (...)
            kl.append(f"outer = ({L}[:, :, None] * {R}[:, None, :]).reshape(c, {dL * dR})")
            kl.append(f"diagonal = {p.fn('arange')}({Ua})")
            kl.append(
                f"{target}[diagonal, :, diagonal, :] += ({col}.T @ outer).reshape({Ua}, {dL}, {dR})"
            )
            width = max(width, dL * dR)
        for n_out, (t, tt) in enumerate(outer):
            if t.left != left or t.sel != a or not off:
                raise BlockFormError(f"{key}: the term {t.column} e_{t.sel}^T is not on column a")
            if tt.row != "x" or tt.col is not None:
                raise BlockFormError(f"{key}: a column not over the batch: {tt.code}")
            kl.append(f"O{key[-2:]}_{n_out} = {pr.view(tt, axes)}")
        symmetric = False
        if off and same_layer and left == right and not outer:
            expr = sp.MatAdd(*(sp.MatMul(t.left.T, DiagMatrix(t.column), t.right) for t in data))
            symmetric = _symmetric(d, expr, a, b, ratio)
        blk.symmetric = symmetric
        loop = blk.loop
        if squares is not None:
            pass
        elif off and not symmetric and dL * dR <= max(Ua * Ub * dR, 4096):
            # every pair (a, b) in one product over the batch: sum_x col_ab(x) l(x) r(x)^T,
            # with the rows l r^T of every sample side by side
            loop.append(f"KR = ({L}[:, :, None] * {R}[:, None, :]).reshape(c, {dL * dR})")
            loop.append(f"P = ({col}.reshape(c, -1).T @ KR).reshape({Ua}, {Ub}, {dL}, {dR})")
            loop.append(f"{target} += P.transpose(0, 2, 1, 3)")
            if outer:
                loop.append(f"diagonal = {p.fn('arange')}({Ua})")
            for n_out in range(len(outer)):
                # column a of R (unit a among the inputs of the columns' layer), for unit a
                loop.append(
                    f"P = (O{key[-2:]}_{n_out}.reshape(c, -1).T @ {L}).reshape({Ua}, {Ub}, {dL})"
                )
                loop.append(f"{target}[diagonal, :, :, diagonal] += P.transpose(0, 2, 1)")
            width = max(width, dL * dR, Ua * Ub)
        elif off:
            cols = f"{Ub} - a_" if symmetric else f"{Ub}"
            sl = "a_:" if symmetric else ":"
            loop.append(f"for a_ in range({Ua}):")
            loop.append(f"    T = {col}[:, a_, {sl}, None] * {R}[:, None, :]")
            for n_out in range(len(outer)):
                # column a of R (the unit a among the inputs of the columns' layer)
                loop.append(f"    T[:, :, a_] += O{key[-2:]}_{n_out}[:, a_, :]")
            loop.append(
                f"    {target}[a_, :, {sl}, :] += ({L}.T @ T.reshape(c, -1)).reshape("
                f"{dL}, {cols}, {dR})"
            )
            width = max(width, Ub * dR, Ua * Ub)
        else:  # the diagonal blocks only
            loop.append(f"for a_ in range({Ua}):")
            loop.append(f"    col = {col}[:, a_, None]")
            blk_t = f"{target}[a_, :, a_, :]"
            if left == right:
                syrk = [f"    B = {R} * {p.fn('sqrt')}(col)", f"    {blk_t} += B.T @ B  # syrk"]
                loop.append(f"    if {p.fn('all')}(col >= 0):")
                loop += ["    " + x for x in syrk]
                loop.append("    else:")
                loop.append(f"        {blk_t} += {L}.T @ ({R} * col)")
            else:
                loop.append(f"    {blk_t} += {L}.T @ ({R} * col)")
            width = max(width, dR, Ua)
        if symmetric:
            blk.finish += [
                f"for a_ in range({Ua} - 1):",
                f"    {target}[a_ + 1 :, :, a_, :] = "
                f"{target}[a_, :, a_ + 1 :, :].transpose(1, 2, 0)",
            ]
        blk.scale = scale
        blocks.append(blk)
    width = max(width, n1 * n1, n1 * n2, n0 + 1, n1 + 1)
    bh = BlockHessian(lines, augment, blocks, width, l2)
    # the public order: W_1 row-major, b_1, W_2 row-major, b_2 (the trainer's get_flat)
    w2 = n1 * n0 + (n1 if b1 else 0)
    bh.split = w2
    bh.reorder = ([(0, n1, n0)] if b1 else []) + ([(w2, n2, n1)] if b2 else [])
    if len({b.scale for b in blocks}) == 1:  # one factor c: H scaled once, after assembly
        bh.scale = _scaled("H", blocks[0].scale, p)
    else:
        for b in blocks:
            b.finish += _scaled(b.target, b.scale, p)

    return bh


def _scaled(target: str, scale, p) -> list[str]:
    """``target`` multiplied by the factor c in place (``/= m`` for c = 1/m)."""
    base, exp = scale.as_base_exp()
    if exp == -1 and base != 1:
        return [f"{target} /= {p.doprint(base)}"]
    return [f"{target} *= {p.doprint(scale)}"] if scale != 1 else []
