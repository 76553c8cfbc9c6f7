"""The R-operator sweeps of ``_rop``: every statement printed from an equation's matrix form.

The symbol table (:func:`table`) says which array of the generated code holds each matrix of the
Derivation: ``R{Z_l}``, ``R{A_l}``, ``R{Delta_l}``, the direction's ``V_l`` and ``vb_l`` and the
rows ``(H v)_W``, ``(H v)_b`` carry a leading axis of k directions (``_rop`` sweeps k columns of
V at once); ``F''_l`` and the output curvature ``S`` (and its Gauss-Newton ``S^G``; for softmax
the kernels ``S_d``, ``S_u``, ``S_v`` of ``S = diag(d) + u v^T``) are kernels printed in place,
and softmax's column of ones ``1_{n_L}`` is a row sum or a broadcast (:class:`Ones`).
:class:`~symgrad.printers.matrix_numpy.MatrixNumPyPrinter` prints each equation with its
Gauss-Newton marks (``Equation.gauss_newton``), so the Gauss-Newton sweep (``if not
gauss_newton:``) comes from the Derivation too. The template only places the lines.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import sympy as sp

from ..derivation import notation as nt
from ..derivation.graph import RU, U, Vblock, Wblock, graph_layers
from ..derivation.second_order import SG, S_parts, ones_n
from ..printers.matrix_numpy import Array, Entrywise, MatrixNumPyPrinter, Ones, text
from ..printers.numpy import NumPyPrinter
from . import kernels
from .cite import Citations
from .regulariser import NAMES


@dataclass
class LayerROp:
    """The printed statements of layer l's equations in ``_rop`` (each list starts with its
    citation comment; empty when the sweep does not need the equation)."""

    forward: list[str] = field(default_factory=list)  # rop.forward.l: R{Z_l}
    act: list[str] = field(default_factory=list)  # rop.act.l: R{A_l}
    grad_w: list[str] = field(default_factory=list)  # rop.grad.W.l: (H v)_W_l
    grad_b: list[str] = field(default_factory=list)  # rop.grad.b.l: (H v)_b_l
    back: list[str] = field(default_factory=list)  # backprop.sum.l: Delta_{l+1} W_{l+1}
    delta: list[str] = field(default_factory=list)  # backprop.l: Delta_l
    backward: list[str] = field(default_factory=list)  # rop.backward.l: R{Delta_l}
    #: a skip connection's input.l (U_l) and rop.input.l (R{U_l}); empty for a chain
    inp: list[str] = field(default_factory=list)
    #: the arrays holding (H v)_W_l and (H v)_b_l, one row of k directions each
    hv_w: str = ""
    hv_b: str = ""


@dataclass
class ROp:
    """The sweep's statements: per layer, and the output's R{Delta_L} (``rop.out``; for softmax
    its rank-one part is a row sum, ``M 1``, repeated over the units, ``r 1^T``)."""

    layers: list[LayerROp]
    out: list[str] = field(default_factory=list)


def table(d) -> dict:
    """Matrix symbol name -> the array (or kernel) of ``_rop`` that holds it."""
    L = d.depth
    t: dict = {nt.A(0).name: Array("X")}
    for layer in d.layers:
        l = layer.index
        t.update(
            {
                nt.W(l).name: Array(f"self.W_{l}"),
                nt.V(l).name: Array(f"V_{l}", batched=True),
                nt.Vb(l).name: Array(f"vb_{l}", batched=True),
                nt.A(l).name: Array(f"a_{l}"),
                nt.Delta(l).name: Array(f"delta_{l}"),
                nt.FP(l).name: Array(f"fp_{l}"),
                nt.dCdA(l).name: Array(f"back_{l}"),
                nt.RZ(l).name: Array(f"Rz_{l}", batched=True),
                nt.RA(l).name: Array(f"Ra_{l}", batched=True),
                nt.RDelta(l).name: Array(f"Rdelta_{l}", batched=True),
                nt.HvW(l).name: Array(f"HvW_{l}", batched=True),
                nt.Hvb(l).name: Array(f"Hvb_{l}", batched=True),
            }
        )
        fpp = kernels.kernel(d, f"act.{l}.d2f")
        if fpp is not None:
            t[nt.FPP(l).name] = Entrywise(fpp, {"z": f"z_{l}", "a": f"a_{l}"})
    if d.graph:
        t.update(_graph_table(d))
    out_names = {"z": f"z_{L}", "a": f"a_{L}", "y": "Y"}
    curvature = [(nt.S(L), "hess.out"), (SG(L), "gauss_newton.s")]
    if d.output.vector:  # softmax: S = diag(d) + u v^T, its kernels over the batch
        curvature = list(zip(S_parts(L), ("hess.out.diag", "hess.out.u", "hess.out.v")))
        t[ones_n(L).name] = Ones()
    for sym, key in curvature:
        k = kernels.kernel(d, key)
        if k is not None:
            t[sym.name] = Entrywise(k, out_names)
    return t


def _graph_table(d) -> dict:
    """A skip connection's arrays: U_l (u_l), R{U_l}, and the column blocks of W_j and V_j
    that read layer i (views, no copies)."""
    t: dict = {}
    sizes = d.spec.sizes
    for layer in graph_layers(d):
        l = layer.index
        if not layer.merged:
            continue
        t[U(l, layer.width).name] = Array(f"u_{l}")
        t[RU(l, layer.width).name] = Array(f"Ru_{l}", batched=True)
        if layer.merge == "add":
            continue
        lo = 0
        for s in layer.sources:
            hi = lo + sizes[s]
            t[Wblock(l, s).name] = Array(f"self.W_{l}[:, {lo}:{hi}]")
            t[Vblock(l, s).name] = Array(f"V_{l}[:, :, {lo}:{hi}]", batched=True)
            lo = hi
    return t


class _Sweep:
    """Prints the equations of the sweep in order, with the arrays already computed."""

    def __init__(self, d, cite: Citations, printer: type[NumPyPrinter]):
        self.d = d
        self.cite = cite
        # the regulariser's scalars as the trainer's methods name them (N: the n they are given)
        names = {**NAMES, nt.m.name: "m"}
        if d.graph:  # the widths of a zero block (R{X} in R{U_l})
            names.update({nt.n(l).name: str(size) for l, size in enumerate(d.spec.sizes)})
        # a backend's printer may name its matrix printer (PyTorch's: ``.mT``)
        matrix = getattr(printer, "matrix_printer", MatrixNumPyPrinter)
        self.printer = matrix(
            table(d),
            names,
            entrywise=printer,
            zeros=getattr(printer, "zeros_code", "np.zeros({shape}, dtype=X.dtype)"),
        )
        #: right sides computed into an array already (Delta_{l+1} W_{l+1} -> dC/dA_l)
        self.known: dict = {}

    def equation(self, key: str, temp=None) -> list[str]:
        """The statements of equation ``key``'s matrix form under a comment citing it:
        ``# (N) lhs = rhs`` as the Derivation writes it."""
        eq = self.d.equation(key)
        lhs, rhs = eq.matrix
        marks = tuple((p.xreplace(self.known), r) for p, r in eq.gauss_newton)
        target = self.printer.table[lhs.name].code
        lines = self.printer.assign(target, rhs.xreplace(self.known), marks, temp)
        return [f"# {self.cite(key)} {text(lhs)} = {text(rhs)}", *lines]

    def reads(self, key: str, sym: sp.MatrixSymbol) -> bool:
        """Whether the printed equation ``key`` reads ``sym``."""
        if key not in self.d:
            return False
        return self.d.equation(key).matrix[1].xreplace(self.known).has(sym)


def rop_code(d, cite: Citations, printer: type[NumPyPrinter] = NumPyPrinter) -> ROp:
    """The statements of every equation of the R-operator sweep, for the template to place
    (``printer``: the backend's, for the entrywise products and kernels)."""
    L = d.depth
    sweep = _Sweep(d, cite, printer)
    layers = [LayerROp() for _ in d.layers]
    for l, lines in enumerate(layers, 1):
        lines.forward = sweep.equation(f"rop.forward.{l}")
        if l < L:
            lines.act = sweep.equation(f"rop.act.{l}")
        lines.hv_w, lines.hv_b = (sweep.printer.table[s.name].code for s in (nt.HvW(l), nt.Hvb(l)))
    rop = ROp(layers, out=sweep.equation("rop.out"))
    if d.graph:
        _graph_sweep(d, sweep, layers)
        return rop
    for l in range(L, 0, -1):
        lines = layers[l - 1]
        lines.grad_w = sweep.equation(f"rop.grad.W.{l}")
        if d.layers[l - 1].bias:
            lines.grad_b = sweep.equation(f"rop.grad.b.{l}")
        if l == 1:
            continue
        p, below = l - 1, layers[l - 2]
        # Delta_p (backpropagation) where a row of H v or R{Delta} below reads it
        need_delta = sweep.reads(f"rop.grad.W.{p}", nt.Delta(p)) or sweep.reads(
            f"rop.backward.{p - 1}", nt.Delta(p)
        )
        # Delta_{l} W_{l} (dC/dA_p) into an array of its own where Delta_p or R{Delta_p} reads it
        back = d.equation(f"backprop.sum.{p}").matrix
        if need_delta or sweep.reads(f"rop.backward.{p}", back[1]):
            below.back = sweep.equation(f"backprop.sum.{p}")
            sweep.known[back[1]] = back[0]
        if need_delta:
            below.delta = sweep.equation(f"backprop.{p}")
        below.backward = sweep.equation(
            f"rop.backward.{p}", temp=lambda k, p=p: f"Rback_{p}" + (f"_{k}" if k else "")
        )
    return rop


def _graph_sweep(d, sweep: _Sweep, layers: list[LayerROp]) -> None:
    """A network with skip connections: each layer's merged input and R{input} before its
    forward row; backward, each hidden layer's delta and R{delta} (sums over the layers that
    read it, computed before) and then its rows of H v."""
    L = d.depth
    for l, lines in enumerate(layers, 1):
        for key in (f"input.{l}", f"rop.input.{l}"):
            if key in d:
                lines.inp += sweep.equation(key)
    sources = d.spec.sources
    for l in range(L, 0, -1):
        lines = layers[l - 1]
        if l < L:
            # Delta_l where a row of H v (its R{U} term) or an R{Delta} of a source reads it
            readers = [f"rop.grad.W.{l}"] + [f"rop.backward.{s}" for s in sources[l - 1] if s]
            need_delta = any(sweep.reads(key, nt.Delta(l)) for key in readers)
            back = d.equation(f"backprop.sum.{l}").matrix
            if need_delta or sweep.reads(f"rop.backward.{l}", back[1]):
                lines.back = sweep.equation(f"backprop.sum.{l}")
                sweep.known[back[1]] = back[0]
            if need_delta:
                lines.delta = sweep.equation(f"backprop.{l}")
            lines.backward = sweep.equation(
                f"rop.backward.{l}", temp=lambda k, l=l: f"Rback_{l}" + (f"_{k}" if k else "")
            )
        lines.grad_w = sweep.equation(f"rop.grad.W.{l}")
        if d.layers[l - 1].bias:
            lines.grad_b = sweep.equation(f"rop.grad.b.{l}")
