"""Assembles a Derivation: the Notation section, then the equations in print order."""

from __future__ import annotations

import sympy as sp
from sympy.matrices.expressions.diagonal import DiagMatrix

from .. import calculus as C
from ..spec import Spec
from . import notation as nt
from .cost import (
    build_cost,
    build_output_curvature,
    build_output_delta,
    build_regulariser,
)
from .dense import Dense
from .graph import graph_layers
from .ir import Derivation
from .laplace import build_laplace, build_structured
from .second_order import (
    build_blocks,
    build_closed_form,
    build_gauss_newton,
    build_rop_output,
)
from .update import build_update


def build(d: Derivation) -> None:
    _conventions(d)
    if d.graph:
        return _build_graph(d)
    layers = [Dense(layer, layer.index == d.depth) for layer in d.layers]
    _forward_and_output(d, layers)
    for upper in reversed(layers[1:]):
        upper.backprop(d, d.layers[upper.index - 2])
    for layer in layers:
        layer.gradients(d)
    build_regulariser(d)
    # second order
    build_output_curvature(d)
    if not d.has_hidden:
        build_closed_form(d)
    if d.depth == 2:
        build_blocks(d)
    build_gauss_newton(d)
    for layer in layers:
        layer.rop_forward(d)
    build_rop_output(d)
    for layer in reversed(layers[:-1]):
        layer.rop_backward(d)
    for layer in reversed(layers):
        layer.rop_gradients(d)
    d.alias("rop.forward", "rop.forward.1")
    d.alias("rop.backward", "rop.out")
    d.alias("rop.grad", "rop.grad.b.1" if d.layers[0].bias else "rop.grad.W.1")
    build_structured(d)  # K-FAC factors and the Gauss-Newton diagonal (curvature tools' models)
    build_laplace(d)  # uncertainty, for the small models among those
    build_update(d)  # the chosen optimiser's step (Newton's method only for "newton")


def _forward_and_output(d: Derivation, layers) -> None:
    """The cost, each layer's forward pass and activation (an activation shared by several
    layers is derived once and cited by the others), and the output delta."""
    build_cost(d)
    for layer in layers:
        layer.forward(d)
    users: dict[tuple, list[int]] = {}
    for layer in layers:
        users.setdefault((layer.act.name, layer.act.f), []).append(layer.index)
    for layer in layers:
        same = users[(layer.act.name, layer.act.f)]
        first = same[0]
        layer.activation(d, None if first == layer.index else first, tuple(same))
    build_output_delta(d)


def _build_graph(d: Derivation) -> None:
    """A network with skip connections (:mod:`.graph`): each layer's input merges its sources,
    each hidden layer's delta sums over the layers that read it; the exact Hessian and
    Gauss-Newton matrix are the R-operator's (no block or closed form)."""
    layers = graph_layers(d)
    by_index = {layer.index: layer for layer in layers}
    _forward_and_output(d, layers)
    for layer in reversed(layers[:-1]):
        layer.backprop_graph(d, by_index)
    for layer in layers:
        layer.gradients(d)
    build_regulariser(d)
    build_output_curvature(d)
    build_gauss_newton(d)
    for layer in layers:
        layer.rop_forward(d)
    build_rop_output(d)
    for layer in reversed(layers[:-1]):
        layer.rop_backward_graph(d, by_index)
    for layer in reversed(layers):
        layer.rop_gradients(d)
    d.alias("rop.forward", "rop.forward.1")
    d.alias("rop.backward", "rop.out")
    d.alias("rop.grad", "rop.grad.b.1" if d.layers[0].bias else "rop.grad.W.1")
    build_update(d)


def _conventions(d: Derivation) -> None:
    """The Notation section: the convention, block tags, S, non-smooth points, seed symbols."""
    L = d.depth
    zl, wl, al, a0 = nt.zl, nt.wl, nt.al, nt.a0
    m, N = nt.m, nt.N
    l1 = d.layers[0].index
    d.conventions = [
        (
            "Index form: one sample x at a time, as column vectors: ",
            zl[nt.j],
            " is unit j of layer l, ",
            wl[nt.j, nt.i],
            " the weight from unit i of layer l - 1 to unit j of layer l, ",
            nt.n(L),
            " the width of the output layer, and the inputs are layer 0, ",
            sp.Eq(a0[nt.i], nt.x[nt.i], evaluate=False),
            ". Matrix form: a batch of m samples stored row-wise, with distinct capital symbols: ",
            nt.Z(l1),
            ", ",
            nt.A(l1),
            " and ",
            nt.Delta(l1),
            " have one row per sample, ",
            nt.W(l1),
            " holds ",
            nt.w(l1)[nt.j, nt.i],
            *_bias_convention(d),
        ),
        (
            "The widths of this network: ",
            *[
                part
                for l, size in enumerate(d.spec.sizes)
                for part in ((", " if l else ""), sp.Eq(nt.n(l), size, evaluate=False))
            ],
            ". The equations are written for any widths: their cost grows with the depth only.",
        ),
        (
            "The loss of one sample is ",
            sp.Eq(nt.C_x, sp.Sum(nt.ell(nt.a(L)[nt.j], nt.y[nt.j]), (nt.j, 1, nt.n(L)))),
            ", its delta ",
            sp.Eq(nt.delta(L)[nt.j], sp.Derivative(nt.C_x, nt.z(L)[nt.j]), evaluate=False),
            " (per sample, no average). The cost averages it over the N samples of the "
            "training set and adds the regulariser R, which penalises weights only, also with N: ",
            sp.Eq(nt.C, sp.Sum(nt.C_x, (nt.sample, 1, N)) / N + nt.R),
            " (the index forms). A step on a batch of ",
            m,
            " samples uses the batch cost ",
            sp.Eq(nt.C_B, sp.Sum(nt.C_x, (nt.sample, 1, m)) / m + nt.R),
            ": the data term averaged over the batch (1/m), R with its 1/N. The matrix forms "
            "of the gradients and Hessian-vector products, and the g of the Update section, "
            "are those of ",
            nt.C_B,
            ", which is C when the batch is the whole training set (m = N).",
        ),
        (
            "The entrywise (Hadamard) product is written ",
            sp.HadamardProduct(nt.Z(l1), nt.A(l1)),
            "; ",
            nt.FP(l1),
            " holds the derivative of the activation at every entry of ",
            nt.Z(l1),
            ". The output curvature of one sample is s and ",
            sp.Eq(nt.Sx(L), DiagMatrix(nt.vec("s", L)), evaluate=False),
            " its matrix (for softmax the full Jacobian, diagonal plus rank one). A block tag "
            "[p, q] in the block Hessian names the block of H whose rows belong to the "
            "parameters p and columns to q. A sum over x runs over the N samples of the training "
            "set, or over the m samples of the batch in C_B and g.",
        ),
        (
            "Non-smooth points: a piecewise activation takes at z = 0 the derivative of its "
            "piece for ",
            sp.Le(C.z, 0),
            " (ReLU: ",
            sp.Eq(sp.Symbol("f'(0)"), 0, evaluate=False),
            "), as the code does. |w| has no derivative at 0: the gradient uses sign(w) for w "
            "other than 0, and training applies L1 by a proximal (soft-threshold) step, so a "
            "weight at 0 stays there while the data gradient is smaller than ",
            nt.lambda_1 / N,
            ".",
        ),
    ]
    if d.graph:
        d.conventions.append(_graph_convention(d))
    seed = [
        ("seed 001", "C", "the quadratic cost 1/(2n) sum_x ||y - a||^2", nt.C),
        ("seed 001", "n", "the number of training inputs", nt.N),
        ("seed 001", "a", "the network's output", nt.a(L)[nt.j]),
        ("seed 001", "eta", "the learning rate (Delta v = -eta grad C)", nt.eta),
        ("seed 001", "m", "the mini-batch size", nt.m),
        ("seed 002", "X_j", "the input of node j", zl[nt.j]),
        ("seed 002", "Y_j", "the output of node j", al[nt.j]),
        ("seed 002", "E", "the error of one sample", nt.C_x),
        ("seed 002", "W_ij", "the weight of the edge from node i to node j", wl[nt.j, nt.i]),
        ("seed 002", "alpha", "the learning rate", nt.eta),
    ]
    d.seed_symbols = [(src, sp.Symbol(sym), meaning, ours) for src, sym, meaning, ours in seed]


def _graph_convention(d: Derivation) -> tuple:
    """The Notation paragraph of a network with skip connections: what each layer reads."""
    from .graph import Wblock

    nt._register("u_l", "u^{(l)}", "u⁽ˡ⁾")
    reads, block = [], ()
    for l, (src, layer) in enumerate(zip(d.spec.sources, d.spec.layers, strict=True), 1):
        names = ", ".join("the input" if s == 0 else f"layer {s}" for s in src)
        how = f" ({layer.merge})" if len(src) > 1 else ""
        reads.append(f"layer {l} reads {names}{how}")
        if len(src) > 1 and layer.merge == "concat" and not block and any(src):
            i = next(s for s in src if s)
            block = (
                " ",
                Wblock(l, i),
                f" is the block of the columns of W^({l}) that reads layer {i} (for add: all "
                "of W).",
            )
    return (
        "Skip connections: " + "; ".join(reads) + ". Layer l's input ",
        sp.IndexedBase("u_l", real=True),
        " holds its sources stacked in the listed order (concat) or added (add); a layer "
        "without skip connections reads the layer below, as in a chain. So ",
        nt.wl[nt.j, nt.i],
        " is the weight from unit i of that input. A layer read by several later layers (its "
        "children) gets the sum of their error signals.",
        *block,
    )


def derive(spec: Spec) -> Derivation:
    """Derive gradients and Hessians of ``spec`` (SymPy); see :class:`Derivation`.

    In Jupyter a Derivation renders itself once :mod:`symgrad` is imported (the printers attach
    ``_repr_latex_``/``_repr_html_``; the IR imports no printer).
    """
    d = Derivation(spec)
    build(d)
    d.number()
    return d


def _bias_convention(d: Derivation) -> tuple:
    """The end of the matrix-form convention: the bias row of the first layer with a bias (a
    network whose layers all have ``bias: false`` has none)."""
    with_bias = [layer.index for layer in d.layers if layer.bias]
    if not with_bias:
        return (" in row j and column i; no layer has a bias (bias: false).",)
    tail = ""
    if len(with_bias) < len(d.layers):
        without = ", ".join(str(layer.index) for layer in d.layers if not layer.bias)
        tail = (
            f" Layers {without} have no bias (bias: false)."
            if "," in without
            else (f" Layer {without} has no bias (bias: false).")
        )
    return (
        " in row j and column i, the bias ",
        nt.B(with_bias[0]),
        " is a row, and ",
        nt.ones_m,
        " is the column of m ones." + tail,
    )
