"""Skip connections: a dense layer that reads several earlier layers (the spec's ``from``),
merged by concatenation (``merge: concat``) or by addition (``merge: add``).

Layer l's input is ``u^{(l)}`` (the batch ``U^{(l)}``): the listed sources stacked in order
(``U = [A^{(s_1)} | A^{(s_2)} | ...]``) or summed (``U = A^{(s_1)} + A^{(s_2)} + ...``); a layer
with a single source reads it directly (``U = A^{(s)}``). Then ``z = W u + b`` as for a chain.
A layer read by several later ones (its *children*) gets its error signal from each of them:
``dC/da^{(i)} = sum over children j of (W^{(j)} restricted to the block of i)^T delta^{(j)}``,
the block ``W^{(j)}_{[i]}`` being the columns of ``W^{(j)}`` that read layer i (all of W for
``add``). The R-operator sweeps and the weight rows of H v follow the same sums. A chain (every
layer reading the one below) never comes here: :mod:`.dense` prints it as before.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import sympy as sp

from . import notation as nt
from .dense import BACKPROP, FORWARD, Dense
from .ir import Derivation, Equation
from .rop import ROP, _check_marks
from .rop import mul as _mul
from .units import at, dfdz, fprime, fsecond


# -- symbols ---------------------------------------------------------------------------------
@functools.cache
def u(l: int) -> sp.IndexedBase:
    """``u^{(l)}``: the input of layer l (its sources merged), index form."""
    nt._register(f"u_{l}", f"u^{{({l})}}", "u" + nt.sup(l))
    return sp.IndexedBase(f"u_{l}", real=True)


@functools.cache
def Ru(l: int) -> sp.IndexedBase:
    """``R{u^{(l)}}``, index form."""
    nt._register(f"Ru_{l}", r"\mathcal{R}\{u^{(%d)}\}" % l, "R{u" + nt.sup(l) + "}")
    return sp.IndexedBase(f"Ru_{l}", real=True)


@functools.cache
def U(l: int, width: sp.Expr) -> sp.MatrixSymbol:
    """``U^{(l)}`` (m x fan-in): the batch of layer l's inputs."""
    return nt._matrix(f"U_{l}", nt.m, width, f"U^{{({l})}}", "U" + nt.sup(l))


@functools.cache
def RU(l: int, width: sp.Expr) -> sp.MatrixSymbol:
    """``R{U^{(l)}}`` (m x fan-in)."""
    return nt._matrix(
        f"RU_{l}", nt.m, width, r"\mathcal{R}\{U^{(%d)}\}" % l, "R{U" + nt.sup(l) + "}"
    )


@functools.cache
def Wblock(j: int, i: int) -> sp.MatrixSymbol:
    """``W^{(j)}_{[i]}`` (n_j x n_i): the columns of W^{(j)} that read layer i."""
    return nt._matrix(
        f"W_{j}_{i}", nt.n(j), nt.n(i), f"W^{{({j})}}_{{[{i}]}}", "W" + nt.sup(j) + f"[{i}]"
    )


@functools.cache
def Vblock(j: int, i: int) -> sp.MatrixSymbol:
    """``V^{(j)}_{[i]}``: the block of the direction's V^{(j)} on the columns of layer i."""
    return nt._matrix(
        f"V_{j}_{i}", nt.n(j), nt.n(i), f"V^{{({j})}}_{{[{i}]}}", "V" + nt.sup(j) + f"[{i}]"
    )


def _stacked(sources: tuple, base) -> sp.Expr:
    """Unit i of the sources stacked in order (index form): ``sum over sources s of sum_k
    [i = o_s + k] base(s)_k``, o_s the widths before s (the Kronecker delta picks the source
    and its unit); the input's term is left out of R{.} (``base`` Ra: R{x} = 0)."""
    i, k = nt.i, nt.k
    terms, lo = [], sp.Integer(0)
    for s in sources:
        if not (s == 0 and base is nt.Ra):
            term = _mul(sp.KroneckerDelta(i, lo + k), base(s)[k])
            terms.append(sp.Sum(term, (k, 1, nt.n(s))))
        lo = lo + nt.n(s)
    return terms[0] if len(terms) == 1 else sp.Add(*terms, evaluate=False)


# -- the layer -------------------------------------------------------------------------------
@dataclass(frozen=True)
class GraphDense(Dense):
    """Layer ``layer.index`` of a network with skip connections (see the module docstring)."""

    #: the layers read (0 the input), in the order of ``from``; how they are merged
    sources: tuple = ()
    merge: str = "concat"
    #: the layers that read this one (its children), ascending
    children: tuple = ()

    # what the layer reads
    @property
    def below(self) -> str:  # type: ignore[override]
        if self.merged:
            return "its input u"
        return "the input" if self.sources[0] == 0 else f"layer {self.sources[0]}"

    @property
    def merged(self) -> bool:
        return len(self.sources) > 1

    @property
    def width(self) -> sp.Expr:
        """The fan-in as a sum of width symbols (for the shapes of U and W)."""
        if self.merge == "add":
            return nt.n(self.sources[0])
        return sp.Add(*(nt.n(s) for s in self.sources))

    @property
    def inp(self) -> sp.IndexedBase:
        return u(self.index) if self.merged else nt.a(self.sources[0])

    @property
    def Inp(self) -> sp.MatrixSymbol:
        return U(self.index, self.width) if self.merged else nt.A(self.sources[0])

    @property
    def RInp(self) -> sp.MatrixSymbol | None:
        """``R{U}``; None when the layer reads the input alone (R{X} = 0)."""
        if all(s == 0 for s in self.sources):
            return None
        return RU(self.index, self.width) if self.merged else nt.RA(self.sources[0])

    @property
    def rinp(self) -> sp.IndexedBase | None:
        if all(s == 0 for s in self.sources):
            return None
        return Ru(self.index) if self.merged else nt.Ra(self.sources[0])

    # the weight-shaped matrices: n_l x the fan-in (the merged width)
    def _shaped(self, sym: sp.MatrixSymbol) -> sp.MatrixSymbol:
        return sp.MatrixSymbol(sym.name, sym.rows, self.width)

    @property
    def Wm(self) -> sp.MatrixSymbol:
        return self._shaped(nt.W(self.index))

    @property
    def Vm(self) -> sp.MatrixSymbol:
        return self._shaped(nt.V(self.index))

    @property
    def GWm(self) -> sp.MatrixSymbol:
        return self._shaped(nt.GW(self.index))

    @property
    def HvWm(self) -> sp.MatrixSymbol:
        return self._shaped(nt.HvW(self.index))

    def offset(self, i: int) -> sp.Expr:
        """The first column of source ``i`` in U, less one (0 for ``add``)."""
        if self.merge == "add":
            return sp.Integer(0)
        return sp.Add(*(nt.n(s) for s in self.sources[: self.sources.index(i)]))

    def block(self, i: int, V: bool = False) -> sp.MatrixSymbol:
        """The columns of W (or V) that read source ``i``: all of it unless concatenated."""
        if not self.merged or self.merge == "add":
            return self.Vm if V else self.Wm
        return Vblock(self.index, i) if V else Wblock(self.index, i)

    # -- forward pass ----------------------------------------------------------------------------
    def forward(self, d: Derivation) -> None:
        l, i = self.index, nt.i
        if self.merged:
            names = ", ".join("the input" if s == 0 else f"layer {s}" for s in self.sources)
            if self.merge == "add":
                rhs = sp.Add(*(nt.a(s)[i] for s in self.sources), evaluate=False)
                matrix = sp.MatAdd(*(nt.A(s) for s in self.sources))
                how = "adds the outputs of"
            else:
                rhs = _stacked(self.sources, nt.a)
                matrix = sp.BlockMatrix([[nt.A(s) for s in self.sources]])
                how = "stacks, in this order, the outputs of"
            d.add(
                Equation(
                    f"input.{l}",
                    FORWARD,
                    self.inp[i],
                    rhs,
                    matrix=(self.Inp, matrix),
                    prose=(
                        f"Layer {l}'s input ",
                        self.inp,
                        f" {how} {names} (merge: {self.merge}).",
                    ),
                )
            )
        super().forward(d)

    # -- backpropagation -------------------------------------------------------------------------
    def back_sum(self, d: Derivation, layers: dict) -> tuple:
        """``dC/da^{(l)}`` as the sum over the children (index form, matrix form)."""
        l, i, j = self.index, nt.i, nt.j
        terms, mats = [], []
        for c in self.children:
            child = layers[c]
            w = nt.w(c)[j, child.offset(l) + i]
            terms.append(sp.Sum(_mul(w, nt.delta(c)[j]), (j, 1, nt.n(c))))
            mats.append(nt.Delta(c) * child.block(l))
        index = terms[0] if len(terms) == 1 else sp.Add(*terms, evaluate=False)
        matrix = mats[0] if len(mats) == 1 else sp.MatAdd(*mats)
        return index, matrix

    def backprop_graph(self, d: Derivation, layers: dict) -> None:
        l, i = self.index, nt.i
        summed, matrix = self.back_sum(d, layers)
        kids = ", ".join(str(c) for c in self.children)
        d.add(
            Equation(
                f"backprop.sum.{l}",
                BACKPROP,
                sp.Derivative(nt.C_x, nt.a(l)[i]),
                summed,
                matrix=(nt.dCdA(l), matrix),
                prose=(
                    f"Layer {l} is read by layer{'s' if len(self.children) > 1 else ''} {kids}: "
                    "the error signal of its unit i is the sum over its children j of "
                    "(the block of W^(j) that reads layer "
                    f"{l})^T delta^(j) (seed 002's sum over the downstream nodes).",
                ),
            )
        )
        fp = fprime(self.act)
        d.add(
            Equation(
                f"backprop.{l}",
                BACKPROP,
                nt.delta(l)[i],
                sp.Mul(at(fp, l, i), summed, evaluate=False) if fp != 1 else summed,
                steps=(_mul(dfdz(l, i), sp.Derivative(nt.C_x, nt.a(l)[i])),),
                matrix=(nt.Delta(l), sp.HadamardProduct(nt.FP(l), matrix)),
                prose=(f"The delta recurrence for layer {l}: f' times the sum over its children.",),
                kernel=fp,
            )
        )

    # -- R-operator ------------------------------------------------------------------------------
    def rop_forward(self, d: Derivation) -> None:
        l, i, j = self.index, nt.i, nt.j
        RInp = self.RInp
        if self.merged and RInp is not None:
            if self.merge == "add":
                live = [s for s in self.sources if s]
                rhs = sp.Add(*(nt.Ra(s)[i] for s in live), evaluate=False)
                matrix = sp.MatAdd(*(nt.RA(s) for s in live)) if len(live) > 1 else nt.RA(live[0])
                if len(live) == 1:
                    rhs = nt.Ra(live[0])[i]
            else:
                blocks = [nt.RA(s) if s else sp.ZeroMatrix(nt.m, nt.n(0)) for s in self.sources]
                rhs = _stacked(self.sources, nt.Ra)
                matrix = sp.BlockMatrix([blocks])
            d.add(
                Equation(
                    f"rop.input.{l}",
                    ROP,
                    self.rinp[i],
                    rhs,
                    matrix=(RInp, matrix),
                    prose=("R{.} of layer ", sp.Integer(l), "'s input (R{x} = 0)."),
                )
            )
        w, v, vb, a_in = nt.w(l), nt.v(l), nt.vb(l), self.inp
        n_in = self.width
        if RInp is None:
            rhs = sp.Sum(_mul(v[j, i], a_in[i]), (i, 1, n_in))
            matrix = self.Inp * self.Vm.T
        else:
            rhs = sp.Sum(_mul(w[j, i], self.rinp[i]) + _mul(v[j, i], a_in[i]), (i, 1, n_in))
            matrix = RInp * self.Wm.T + self.Inp * self.Vm.T
        if self.layer.bias:
            rhs, matrix = rhs + vb[j], matrix + nt.ones_m * nt.Vb(l)
        prose: tuple = ()
        if l == 1:
            prose = (
                "Hessian-vector products H v by the R-operator, which differentiates along the "
                "direction v: R{g} is the derivative by r of g at theta + r v, at r = 0. Applied "
                "to the forward pass, whose inputs do not depend on the parameters; with skip "
                "connections R{.} of a layer's input merges its sources' R{a} as the input does.",
            )
        d.add(
            Equation(
                f"rop.forward.{l}", ROP, nt.Rz(l)[j], rhs, matrix=(nt.RZ(l), matrix), prose=prose
            )
        )
        if self.last:
            return
        fp = fprime(self.act)
        d.add(
            Equation(
                f"rop.act.{l}",
                ROP,
                nt.Ra(l)[j],
                _mul(at(fp, l, j), nt.Rz(l)[j]),
                steps=(_mul(dfdz(l, j), nt.Rz(l)[j]),),
                matrix=(nt.RA(l), sp.HadamardProduct(nt.FP(l), nt.RZ(l))),
                kernel=fp,
            )
        )

    def rop_backward_graph(self, d: Derivation, layers: dict) -> None:
        """``R{delta}`` of this hidden layer: the sum over its children."""
        l, i, j = self.index, nt.i, nt.j
        fp, fpp = fprime(self.act), fsecond(self.act)
        terms, kept, dropped = [], [], []
        for c in self.children:
            child = layers[c]
            col = child.offset(l) + i
            terms.append(
                sp.Sum(
                    _mul(nt.w(c)[j, col], nt.Rdelta(c)[j]) + _mul(nt.v(c)[j, col], nt.delta(c)[j]),
                    (j, 1, nt.n(c)),
                )
            )
            kept.append(nt.RDelta(c) * child.block(l))
            dropped.append(nt.Delta(c) * child.block(l, V=True))
        inner = terms[0] if len(terms) == 1 else sp.Add(*terms, evaluate=False)
        rhs = _mul(at(fp, l, i), inner)
        zero = sp.ZeroMatrix(nt.m, nt.n(l))
        mat = sp.HadamardProduct(nt.FP(l), sp.MatAdd(*kept, *dropped))
        gauss_newton = [(t, zero) for t in dropped]
        if fpp != 0:
            summed, back = self.back_sum(d, layers)
            rhs = rhs + _mul(at(fpp, l, i), nt.Rz(l)[i], summed)
            mat = mat + sp.HadamardProduct(nt.FPP(l), nt.RZ(l), back)
            gauss_newton.append((next(t for t in mat.args if t.has(nt.FPP(l))), zero))
        _check_marks(mat, gauss_newton)
        d.add(
            Equation(
                f"rop.backward.{l}",
                ROP,
                nt.Rdelta(l)[i],
                rhs,
                matrix=(nt.RDelta(l), mat),
                gauss_newton=tuple(gauss_newton),
                prose=(
                    "R{.} of the delta recurrence (product rule), summed over the children "
                    "as the delta is",
                    "; the f'' term vanishes for this activation." if fpp == 0 else ".",
                ),
            )
        )

    def rop_gradients(self, d: Derivation) -> None:
        l, i, j = self.index, nt.i, nt.j
        reg = d.spec.regularization
        rdelta, delta = nt.Rdelta(l), nt.delta(l)
        inner = _mul(rdelta[j], self.inp[i])
        mat = nt.RDelta(l).T * self.Inp
        gauss_newton: tuple = ()
        if self.RInp is not None:
            inner += _mul(delta[j], self.rinp[i])
            curvature = nt.Delta(l).T * self.RInp
            mat = mat + curvature
            gauss_newton = ((curvature, sp.ZeroMatrix(nt.n(l), self.width)),)
        rhs = sp.Sum(inner, (nt.sample, 1, nt.N)) / nt.N
        mat = sp.MatMul(1 / nt.m, mat)
        if reg.l2:
            rhs += nt.lambda_2 / nt.N * nt.v(l)[j, i]
            mat = sp.MatAdd(mat, nt.lambda_2 / nt.N * self.Vm)
        _check_marks(mat, gauss_newton)
        d.add(
            Equation(
                f"rop.grad.W.{l}",
                ROP,
                nt.HvW_(l)[j, i],
                rhs,
                matrix=(self.HvWm, mat),
                gauss_newton=gauss_newton,
                prose=(
                    "R{.} of the weight gradient: the Hessian-vector product's weight part "
                    "(batch form: 1/m)",
                    ", with the L2 term's Hessian on the weights." if reg.l2 else ".",
                ),
            )
        )
        if not self.layer.bias:
            return
        d.add(
            Equation(
                f"rop.grad.b.{l}",
                ROP,
                nt.Hvb_(l)[j],
                sp.Sum(rdelta[j], (nt.sample, 1, nt.N)) / nt.N,
                matrix=(nt.Hvb(l), sp.MatMul(1 / nt.m, nt.ones_m.T * nt.RDelta(l))),
            )
        )


def graph_layers(d: Derivation) -> list[GraphDense]:
    """The layers of ``d`` (a spec with skip connections) with their sources and children."""
    sources = d.spec.sources
    children: dict[int, list[int]] = {}
    for l, src in enumerate(sources, 1):
        for s in src:
            children.setdefault(s, []).append(l)
    return [
        GraphDense(
            layer,
            layer.index == d.depth,
            sources=sources[layer.index - 1],
            merge=d.spec.layers[layer.index - 1].merge,
            children=tuple(children.get(layer.index, ())),
        )
        for layer in d.layers
    ]


__all__ = ["RU", "U", "GraphDense", "Ru", "Vblock", "Wblock", "graph_layers", "u"]
