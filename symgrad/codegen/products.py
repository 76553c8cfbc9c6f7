"""The training pass's matrix products, printed from the equations' matrix forms.

The pass (``_pass``: ``forward``, ``backward``) writes every product into a buffer allocated
before the loop (BLAS with ``out=``), so its statements are not the equations' right sides as
:class:`~symgrad.printers.matrix_numpy.MatrixNumPyPrinter` prints them, but their *lowering*:

- the matrix form of ``forward.l`` (``Z_l = A W_l^T + 1 b_l``), of ``input.l`` (a skip
  connection's merged input), of the data terms of ``grad.W.l`` and ``grad.b.l`` and of layer l's
  term of ``backprop.sum.s`` (``dC/dA_s``) are read from the Derivation;
- the pass's ``delta_l`` holds ``scale * Delta_l`` (``scale`` = 1/m, or eta/m when the learning rate
  is folded into the output delta), so a data term T = (1/m) ... is computed as ``m scale T`` and a
  backprop term as ``scale T``, with ``Delta_l -> delta_l / scale``: SymPy reduces both to a product
  of the pass's arrays, and a coefficient left over is an error (:class:`LoweringError`);
- a layer that stores the rows ``[W_l | b_l]`` and reads ``[A_{l-1} | 1]`` computes its forward
  product and both gradients in one product each: ``A W^T + 1 b = [A | 1] [W | b^T]^T`` and
  ``[Delta^T A | Delta^T 1] = Delta^T [A | 1]``, each identity checked by ``block_collapse``
  against the equations before it is printed;
- ``1^T M`` (a sum over the batch) is ``add.reduce(M, 0, None, out)``, ``1 b`` a broadcast add.

The regulariser's terms of ``grad.W.l`` are not the pass's: the trainer adds them from
``reg.grad`` (:mod:`.regulariser`). The template only places the statements.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import sympy as sp

from ..derivation import notation as nt
from ..printers.matrix_numpy import Array, text

__all__ = ["LoweringError", "Products", "SCALE"]

#: the factor the pass's deltas carry (the ``scale`` argument of ``_pass``)
SCALE = sp.Symbol("scale", positive=True)


class LoweringError(ValueError):
    """An equation whose matrix form the pass cannot compute as written: a bug in symgrad."""


def _reads(e: sp.Basic, name: str) -> bool:
    return any(s.name == name for s in e.atoms(sp.MatrixSymbol))


def _collapse(e: sp.Basic) -> sp.Basic:
    return sp.block_collapse(e)


def _same(a: sp.Basic, b: sp.Basic) -> bool:
    """Whether SymPy proves ``a = b`` (the same canonical form, else a zero difference)."""
    if a == b or a.doit() == b.doit():
        return True
    return sp.simplify((a - b).doit()) == sp.ZeroMatrix(*a.shape)


class Products:
    """Lowers the pass's equations for one backend's names.

    Args:
        d: the Derivation.
        names: matrix symbol name -> the array of the pass that holds it (``X`` -> ``x``,
            ``W_2`` -> ``W_2``, ``Delta_2`` -> ``delta_2``; a column block ``W_6_1`` -> a view).
        fn: the array module's function of a name (``np.add``); a product is written into its
            buffer by ``fn("dot")`` unless a call names another (``np.matmul``).
    """

    def __init__(
        self,
        d,
        names: Mapping[str, str],
        fn: Callable[[str], str] = lambda name: f"np.{name}",
    ):
        self.d = d
        self.names = dict(names)
        self.fn = fn
        self.dot = fn("dot")

    # -- printing ---------------------------------------------------------------------------------
    def code(self, e: sp.Basic) -> str:
        """A factor of a lowered product: an array, or its transpose."""
        if isinstance(e, sp.Transpose):
            return self.code(e.arg) + ".T"
        if isinstance(e, sp.MatrixSymbol):
            try:
                return self.names[e.name]
            except KeyError:
                raise LoweringError(f"no array of the pass holds {e.name}") from None
        raise LoweringError(f"no factor {e} in the pass")

    def expression(self, e: sp.Basic) -> str:
        """A lowered product as one expression (``a @ b``), for a statement without ``out=``."""
        mats = self._factors(e)
        return " @ ".join(self.code(x) for x in mats)

    def _factors(self, e: sp.Basic) -> list:
        if isinstance(e, sp.MatrixSymbol | sp.Transpose):
            return [e]
        if not isinstance(e, sp.MatMul):
            raise LoweringError(f"not a product of the pass's arrays: {e}")
        coeff, mats = e.as_coeff_matrices()
        if coeff != 1:
            raise LoweringError(f"a coefficient {coeff} is left in the product {e}")
        return list(mats)

    def into(self, target: str, e: sp.Basic, dot: str | None = None) -> str:
        """``target <- e`` for a product of two arrays (BLAS, ``out=``), or a sum over the batch
        (``1^T M``: ``add.reduce``)."""
        mats = self._factors(e)
        if len(mats) == 2 and self._is_ones(mats[0]):
            return f"{self.fn('add')}.reduce({self.code(mats[1])}, 0, None, {target})"
        if len(mats) != 2:
            raise LoweringError(f"the pass computes products of two arrays, not {e}")
        return f"{dot or self.dot}({self.code(mats[0])}, {self.code(mats[1])}, {target})"

    @staticmethod
    def _is_ones(x: sp.Basic) -> bool:
        if isinstance(x, sp.Transpose):
            x = x.arg
        return isinstance(x, sp.MatrixSymbol) and x.name == nt.ones_m.name

    # -- the pass's forms of the equations -------------------------------------------------------
    def _deltas(self, e: sp.Basic) -> dict:
        """``Delta_l -> delta_l / scale`` for every delta of ``e``."""
        out = {}
        for s in e.atoms(sp.MatrixSymbol):
            if s.name.startswith("Delta_"):
                out[s] = sp.MatrixSymbol(f"pass_{s.name}", *s.shape) / SCALE
                self.names.setdefault(f"pass_{s.name}", self.names.get(s.name, s.name))
        return out

    def scaled(self, e: sp.Basic, factor: sp.Expr) -> sp.Basic:
        """``factor e`` over the pass's deltas (``Delta_l = delta_l / scale``), reduced to a
        product of arrays."""
        out = (factor * e).xreplace(self._deltas(e)).doit()
        if isinstance(out, sp.MatMul):
            coeff, mats = out.as_coeff_matrices()
            if coeff != 1:
                raise LoweringError(f"{factor} * ({e}) leaves the coefficient {coeff}")
        return out

    def data_term(self, key: str, l: int) -> sp.Basic:
        """The term of equation ``key``'s matrix form that reads Delta_l (the data term of a
        gradient, layer l's term of a backprop sum)."""
        rhs = self.d.equation(key).matrix[1]
        terms = rhs.args if isinstance(rhs, sp.MatAdd) else (rhs,)
        found = [t for t in terms if _reads(t, nt.Delta(l).name)]
        if len(found) != 1:
            raise LoweringError(f"{key} has {len(found)} terms in Delta_{l}")
        return found[0]

    # -- statements --------------------------------------------------------------------------------
    def forward(self, l: int, target: str, dot: str | None = None, augmented=None) -> list[str]:
        """``Z_l`` (forward.l) into ``target``; ``augmented``: the names of ``[A | 1]`` and
        ``[W | b^T]`` when the layer stores its bias as a column of W's rows."""
        if augmented:
            return [self.folded_forward(l, augmented, dot).format(target=target)]
        product, rows = self.forward_parts(l)
        lines = [self.into(target, product, dot)]
        for row in rows:  # 1 b_l: the row broadcast over the batch
            lines.append(f"{self.fn('add')}({target}, {self.code(row)}, {target})")
        return lines

    def _augmented(self, l, product, bias, names) -> tuple[str, str]:
        inp = product.args[0] if isinstance(product, sp.MatMul) else None
        if len(bias) != 1 or inp is None:
            raise LoweringError(f"forward.{l} has no bias to fold into [W | b]")
        b = self._factors(bias[0])[1]
        aug = sp.BlockMatrix([[inp, nt.ones_m]])
        W = next(x for x in product.atoms(sp.MatrixSymbol) if x.name == nt.W(l).name)
        wb = sp.BlockMatrix([[W, b.T]])
        if not _same(_collapse(aug * wb.T), sp.MatAdd(product, *bias)):
            raise LoweringError(f"forward.{l} is not [A | 1] [W | b]^T")
        return names

    def merge(self, l: int, target: str) -> tuple[str, list[str]]:
        """A skip connection's merged input (input.l): the sum of its sources added into
        ``target``, or their concatenation written into its column blocks."""
        lhs, rhs = self.d.equation(f"input.{l}").matrix
        if isinstance(rhs, sp.MatAdd):
            srcs = [self.code(t) for t in rhs.args]
            add = self.fn("add")
            lines = [f"{add}({srcs[0]}, {srcs[1]}, {target})"]
            lines += [f"{add}({target}, {s}, {target})" for s in srcs[2:]]
            return "+", lines
        if isinstance(rhs, sp.BlockMatrix):
            lines, lo = [], 0
            for block in rhs.blocks[0, :]:
                hi = lo + self._width(block)
                lines.append(f"{target}[:, {lo}:{hi}] = {self.code(block)}")
                lo = hi
            return "|", lines
        raise LoweringError(f"input.{l}: no merge form for {rhs}")

    def _width(self, block: sp.MatrixSymbol) -> int:
        n = block.shape[1]
        sizes = self.d.spec.sizes
        for l, size in enumerate(sizes):
            if n == nt.n(l):
                return size
        raise LoweringError(f"no width for {block}")

    def gradients(
        self,
        l: int,
        targets: tuple[str, str | None],
        dot: str | None = None,
        augmented=None,
        step: tuple[str, str] | None = None,
    ) -> list[str]:
        """The data terms of grad.W.l and grad.b.l, times m scale, into ``targets`` (gW, gb);
        ``augmented``: the names of ``[A | 1]`` and of the gradient's rows ``[gW | gb]``;
        ``step``: gemm's ``(alpha, beta)`` when the targets are the parameters themselves
        (``C <- alpha A B + beta C``: the weight product applies an affine step)."""
        m = nt.m
        pw = self.scaled(self.data_term(f"grad.W.{l}", l), m * SCALE)
        pb = None
        if f"grad.b.{l}" in self.d:
            pb = self.scaled(self.data_term(f"grad.b.{l}", l), m * SCALE)
        if augmented:
            if pb is None:
                raise LoweringError(f"grad.W.{l}: no bias gradient to fold into [gW | gb]")
            inp_name, target = augmented
            mats = self._factors(pw)
            aug = sp.BlockMatrix([[mats[1], nt.ones_m]])
            blocks = _collapse(mats[0] * aug)
            if not (_same(blocks.blocks[0, 0], pw) and _same(blocks.blocks[0, 1], pb.T)):
                raise LoweringError(f"grad.W.{l}, grad.b.{l} are not delta^T [A | 1]")
            line = f"{dot or self.dot}({self.code(mats[0])}, {inp_name}, {target})"
            return [line if step is None else f"{line[:-1]}, {step[0]}, {step[1]})"]
        lines = [self.into(targets[0], pw, dot)]
        if step is not None:
            if lines[0].startswith(f"{self.fn('add')}.reduce("):
                raise LoweringError(f"grad.W.{l} is a sum over the batch, not a product: {pw}")
            lines[0] = f"{lines[0][:-1]}, {step[0]}, {step[1]})"
        if pb is not None and targets[1] is not None:
            lines.append(self.into(targets[1], pb, dot))
        return lines

    def backprop(self, l: int, s: int) -> sp.Basic:
        """Layer l's term of dC/dA_s (backprop.sum.s) over the pass's deltas (times scale)."""
        return self.scaled(self.data_term(f"backprop.sum.{s}", l), SCALE)

    def recurrence(self, l: int) -> tuple[sp.Basic, sp.Basic]:
        """backprop.l's matrix form, checked to be ``FP_l o dC/dA_l`` (backprop.sum.l's right
        side): the pass multiplies the delta it summed by f'_l entrywise (the kernel of
        act.l.df); returns the equation's sides for a comment."""
        lhs, rhs = self.d.equation(f"backprop.{l}").matrix
        summed = self.d.equation(f"backprop.sum.{l}").matrix[1]
        fp = [a for a in getattr(rhs, "args", ()) if _reads(a, nt.FP(l).name)]
        if not (
            isinstance(rhs, sp.HadamardProduct)
            and len(rhs.args) == 2
            and len(fp) == 1
            and isinstance(fp[0], sp.MatrixSymbol)
            and sp.HadamardProduct(fp[0], summed) == rhs
        ):
            raise LoweringError(f"backprop.{l} is not f'_{l} times dC/dA_{l} entrywise: {rhs}")
        return lhs, rhs

    def forward_parts(self, l: int) -> tuple[sp.Basic, list]:
        """forward.l's matrix product and the rows its bias terms broadcast (``1 b_l``: b_l),
        for a backend that adds the bias inside a fused loop."""
        rhs = self.d.equation(f"forward.{l}").matrix[1]
        terms = list(rhs.args) if isinstance(rhs, sp.MatAdd) else [rhs]
        product = next(t for t in terms if _reads(t, nt.W(l).name))
        rows = []
        for t in terms:
            if t is product:
                continue
            mats = self._factors(t)
            if len(mats) != 2 or not self._is_ones(mats[0]):
                raise LoweringError(f"forward.{l}: no broadcast form for {t}")
            rows.append(mats[1])
        return product, rows

    def folded_forward(self, l: int, names: tuple[str, str], dot: str | None = None) -> str:
        """forward.l for a layer storing [W_l | b_l] and reading [A | 1] (``names``), checked."""
        product, rows = self.forward_parts(l)
        inp, wb = self._augmented(l, product, [nt.ones_m * r for r in rows], names)
        return f"{dot or self.dot}({inp}, {wb}.T, {{target}})"

    def folded_backprop(self, l: int, s: int, names: tuple[str, str], target: str) -> str:
        """Layer l's term of dC/dA_s (times scale) through the stored rows ``[W_l | b_l]``:
        ``delta [W | b^T] = [delta W | delta b^T]``, whose first block is the term (checked);
        ``names``: the arrays of delta_l and of the rows."""
        term = self.backprop(l, s)
        mats = self._factors(term)
        b = nt.B(l)
        blocks = _collapse(mats[0] * sp.BlockMatrix([[mats[1], b.T]]))
        if not _same(blocks.blocks[0, 0], term):
            raise LoweringError(f"backprop.sum.{s}: layer {l}'s term is not delta [W | b] first")
        return f"{self.dot}({names[0]}, {names[1]}, {target})"

    def comment(self, e: sp.Basic) -> str:
        """A lowered expression as text, in the pass's names."""
        names = self.names
        return self.text(
            e.xreplace(
                {
                    s: sp.MatrixSymbol(names.get(s.name, s.name), *s.shape)
                    for s in e.atoms(sp.MatrixSymbol)
                }
            )
        )

    @staticmethod
    def text(e: sp.Basic) -> str:
        """``e`` as text, a row of blocks written ``[A | B]``."""
        blocks = {
            b: sp.MatrixSymbol(f"[{' | '.join(text(x) for x in b.blocks[0, :])}]", *b.shape)
            for b in e.atoms(sp.BlockMatrix)
            if b.blockshape[0] == 1
        }
        return text(e.xreplace(blocks))

    def matrix(self, e: sp.Basic, printer) -> str:
        """``e`` (over the equations' or the pass's symbols) as one expression of ``printer`` (a
        :class:`~symgrad.printers.matrix_numpy.MatrixNumPyPrinter` class), the arrays named as
        the pass names them."""
        table = {
            s.name: Array(self.names[s.name])
            for s in e.atoms(sp.MatrixSymbol)
            if s.name in self.names
        }
        return printer(table).matrix(e)
