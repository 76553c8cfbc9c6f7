"""The dense layer's code: z_l = a_{l-1} W_l^T + b_l, a_l = f_l(z_l), and its backward terms.

The layer owns its names, its offsets in the parameter vector, the printed statements of its
activation (forward, in place), of f'_l (backpropagation, in place) and the expressions of f'_l
(R-operator) and f''_l (the two-layer Hessian); the statements of its R-operator equations come
from :mod:`..rop`. ``templates/<backend>/layers/dense.jinja`` lays them out.
Storage: layer 1 keeps W_1 (row-major) then b_1 and reads X directly; a later layer keeps the rows
``[W_l | b_l]`` so one product with ``[a_{l-1} | 1]`` includes the bias. A layer without bias
(``bias: false``) keeps W_l alone and reads a_{l-1}; the public order is W_l, then b_l where
present.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import sympy as sp

from ... import calculus as C
from ...derivation import notation as nt
from ...derivation.graph import Wblock
from ...printers.inplace import InplaceEmitter
from ...printers.matrix_numpy import text
from ...printers.numpy import NumPyPrinter
from .. import kernels
from ..cite import Citations
from ..products import SCALE, LoweringError, Products

#: the macros of this layer type, in the backend's template set
MACROS = "layers/dense.jinja"


@dataclass
class Dense:
    """Code context of dense layer ``l`` (1-based) of a chain of ``depth`` layers."""

    l: int
    units: int
    fan_in: int
    depth: int
    #: public offsets: W_l at [w0, w1), b_l at [w1, b1); internal storage [i0, i1)
    w0: int = 0
    w1: int = 0
    b1: int = 0
    i0: int = 0
    i1: int = 0
    softmax: bool = False
    #: whether the layer has a bias; whether a_l carries a ones column (the next layer's bias)
    bias: bool = True
    ones: bool = False
    keep_z: bool = False
    forward_lines: list[str] = field(default_factory=list)
    fp_lines: list[str] = field(default_factory=list)
    #: the comment over fp_lines: backprop.l's matrix form
    fp_comment: str = ""
    scratch: int = 0
    fp_expr: str = ""
    fp_needs_z: bool = False
    fpp_needs_z: bool = False
    fpp_zero: bool = True
    chunk_curvature: str = ""  # f''_l back_l (the two-layer Hessian)
    init_scale: str = ""
    eq_forward: str = ""
    eq_grad: str = ""
    eq_backprop: str = ""
    grad_names: tuple[str, str] = ("", "")
    #: the statements of the layer's R-operator equations (a ``LayerROp`` of :mod:`..rop`)
    rop: object = None
    kind: str = "dense"
    macros: str = MACROS
    #: skip connections (a network where some layer reads more than the layer below): every
    #: layer then stores W_l then b_l (no [W | b] rows, no ones columns) and reads ``inp``: x,
    #: a_s, or ``u_l`` (its sources merged: ``merge`` concat or add); ``srcs``: per source
    #: (s, its array, first column, last column + 1, whether this layer writes delta_s first)
    graph: bool = False
    merged: bool = False
    merge: str = "concat"
    inp: str = ""
    srcs: list = field(default_factory=list)
    #: backward, per source layer s > 0 in order: (s, the block of W_l that reads it, whether
    #: this layer is the last reader (it initialises delta_s), the source whose delta already
    #: holds the same product (merge add) or None)
    back: list = field(default_factory=list)
    #: the pass's statements printed from the matrix forms (:mod:`..products`): the forward
    #: product (and a skip connection's merge) under its comment, the gradients' products, and
    #: the backprop products into the deltas of the layers read (per source for a graph)
    forward_products: list[str] = field(default_factory=list)
    grad_products: list[str] = field(default_factory=list)
    back_products: list[str] = field(default_factory=list)

    @property
    def last(self) -> bool:
        return self.l == self.depth

    @property
    def z(self) -> str:
        """Where the pass writes z_l: its own buffer when kept, else a_l's (overwritten)."""
        return f"z_{self.l}" if self.keep_z else f"a_{self.l}"


def _uses(expr: sp.Expr | None, sym: sp.Symbol) -> bool:
    return expr is not None and sym in expr.free_symbols


def dense_layer(
    d,
    layer,
    offsets: tuple[int, int],
    printer: type[NumPyPrinter],
    cite: Citations,
    output_kernels: tuple,
) -> Dense:
    """The code context of ``layer`` (a ``LayerCalculus`` of the Derivation).

    ``offsets`` are the first public and internal indices of its parameters; ``output_kernels``
    the output layer's kernels that read z (loss, delta, curvature) when this is the last layer.
    """
    l, units, fan_in = layer.index, layer.units, layer.fan_in
    w0, i0 = offsets
    ctx = Dense(l, units, fan_in, d.depth, softmax=layer.activation.vector, bias=layer.bias)
    ctx.ones = l < d.depth and d.layers[l].bias and not d.graph
    ctx.w0, ctx.w1 = w0, w0 + units * fan_in
    ctx.b1 = ctx.w1 + (units if layer.bias else 0)
    ctx.i0, ctx.i1 = i0, i0 + units * (fan_in + (1 if layer.bias else 0))
    if not ctx.softmax:  # softmax is laid out by the template's helper (no elementwise kernel)
        f, fp, fpp = (kernels.kernel(d, f"act.{l}.{k}") for k in ("f", "df", "d2f"))
        ctx.fp_needs_z, ctx.fpp_needs_z = _uses(fp, C.z), _uses(fpp, C.z)
    # z_l is kept apart from a_l when some code reads it after the activation
    reads_z = (ctx.fp_needs_z or ctx.fpp_needs_z) and not ctx.last
    reads_z = reads_z or any(_uses(k, C.z) for k in output_kernels)
    ctx.keep_z = ctx.softmax or reads_z
    names = {"z": ctx.z, "a": f"a_{l}", "delta": f"delta_{l}", "y": "Y"}
    arrays = ("z", "a", "delta", "y")
    if not ctx.softmax:
        em = InplaceEmitter(names, arrays, lambda k: f"t_{l}_{k}", printer=printer)
        em.assign(C.a, f)
        ctx.forward_lines = em.lines
        readable = printer({"z": f"z_{l}", "a": f"a_{l}", "y": "Y"})
        ctx.fp_expr = readable.expression(fp)
        if fp.is_Number:
            ctx.fp_expr = f"{readable.fn('full_like')}(a_{l}, {ctx.fp_expr})"
        ctx.fpp_zero = fpp == 0
        back = sp.Symbol("back")
        curv = printer({"z": f"z_{l}", "a": f"a_{l}", "back": f"back_{l}"})
        ctx.chunk_curvature = curv.expression(fpp * back)
        if not ctx.last:  # the output layer's f' is fused into its delta
            back = InplaceEmitter(names, arrays, lambda k: f"t_{l}_{k}", printer=printer)
            back.multiply(sp.Symbol("delta", real=True), fp)
            ctx.fp_lines = back.lines
            em.scratch_used = max(em.scratch_used, back.scratch_used)
        ctx.scratch = em.scratch_used
    ctx.eq_forward = cite(f"forward.{l}", "forward") + ", " + cite(f"act.{l}.f", "forward.layers")
    ctx.eq_grad = cite(f"grad.W.{l}", f"grad.{l}")
    if layer.bias:
        ctx.eq_grad += ", " + cite(f"grad.b.{l}", f"grad.{l}")
    if l > 1:
        ctx.eq_backprop = cite(f"backprop.{l - 1}")
    if d.graph:
        _graph(ctx, d, cite)
    _products(ctx, d, cite, printer)
    return ctx


#: how a layer storing the rows [W_l | b_l] computes z_l (checked against forward.l)
AUGMENTED = " = [A_%d | ones_m]*[W_%d | b_%d.T].T"


def pass_names(d, ctx: Dense) -> dict[str, str]:
    """Matrix symbol name -> the array of ``_pass`` that holds it, for layer ``ctx.l``."""
    l = ctx.l
    names = {nt.A(0).name: "x", nt.W(l).name: f"W_{l}", nt.Delta(l).name: f"delta_{l}"}
    names.update({nt.A(s).name: f"a_{s}" for s in range(1, l)})
    if ctx.bias:
        names[nt.B(l).name] = f"b_{l}"
    if ctx.graph:
        if ctx.merged:
            names[d.equation(f"input.{l}").matrix[0].name] = ctx.inp
        for s, W, _first, _via in ctx.back:
            names[Wblock(l, s).name] = W
    return names


def _products(ctx: Dense, d, cite: Citations, printer: type[NumPyPrinter]) -> None:
    """The pass's products of layer l, printed from its equations (see :mod:`..products`)."""
    l = ctx.l
    fn = printer({}).fn
    prod = Products(d, pass_names(d, ctx), fn=fn)
    # dot needs a contiguous out: a_l with its ones column is a view
    dot = fn("dot") if ctx.keep_z or ctx.last else fn("matmul")
    augmented = ctx.bias and l > 1 and not ctx.graph
    lhs, rhs = d.equation(f"forward.{l}").matrix
    lines = []
    if ctx.merged:
        key = f"input.{l}"
        ulhs, urhs = d.equation(key).matrix
        lines.append(f"# {cite(key)} {prod.text(ulhs)} = {prod.text(urhs)}")
        lines += prod.merge(l, ctx.inp)[1]
    eqs = cite(f"forward.{l}", "forward") + ", " + cite(f"act.{l}.f", "forward.layers")
    fold = AUGMENTED % (l - 1, l, l) if augmented else ""
    then = f"then {text(nt.A(l))} = f_{l}({text(lhs)})"
    lines.append(f"# {eqs} {text(lhs)} = {text(rhs)}{fold}, {then}")
    pair = (f"a_{l - 1}_1", f"Wb_{l}") if augmented else None
    lines += prod.forward(l, ctx.z, dot, augmented=pair)
    ctx.forward_products = lines
    # gradients: the data terms of grad.W.l and grad.b.l, times m scale
    what = f"dC_dW_{l}" + (f", dC_db_{l}" if ctx.bias else "")
    head = f"# {ctx.eq_grad} the data terms of {what} times m*scale"
    if augmented:
        pw = prod.scaled(prod.data_term(f"grad.W.{l}", l), nt.m * SCALE)
        inp = prod.comment(pw.args[-1])
        head += f": delta_{l}.T*[{inp} | ones_m]"
        lines = prod.gradients(l, ("", ""), augmented=(f"a_{l - 1}_1", f"gWb_{l}"))
    else:
        terms = [prod.scaled(prod.data_term(f"grad.W.{l}", l), nt.m * SCALE)]
        if ctx.bias:
            terms.append(prod.scaled(prod.data_term(f"grad.b.{l}", l), nt.m * SCALE))
        head += ": " + ", ".join(prod.comment(t) for t in terms)
        lines = prod.gradients(l, (f"gW_{l}", f"gb_{l}" if ctx.bias else None))
    ctx.grad_products = [head, *lines]
    if not ctx.last:
        lhs, rhs = prod.recurrence(l)
        eq = cite(f"backprop.{l}")
        ctx.fp_comment = f"# {eq} {text(lhs)} = {text(rhs)}: delta_{l} *= f'_{l}"
    if l == 1:
        return
    # layer l's terms of dC/dA_s, s the layers it reads, into delta_s (f'_s multiplies later)
    if not ctx.graph:
        term = prod.backprop(l, l - 1)
        ctx.back_products = [
            f"# {cite(f'backprop.sum.{l - 1}')} scale*dC_dA_{l - 1} = {prod.comment(term)}",
            prod.into(f"delta_{l - 1}", term),
        ]
        return
    lines = []
    done: dict = {}  # a product computed already (the sources of an add merge share one)
    for s, _W, first, via in ctx.back:
        term = prod.backprop(l, s)
        head = f"# {cite(f'backprop.sum.{s}')} layer {l}'s term of scale*dC_dA_{s}"
        if via is not None:
            if done.get(via) != term:
                raise LoweringError(f"layer {l}: its terms of dC/dA_{s} and dC/dA_{via} differ")
            if first:
                call = f"{fn('copyto')}(delta_{s}, delta_{via})"
            else:
                call = f"{fn('add')}(delta_{s}, delta_{via}, delta_{s})"
            lines += [f"{head}, as of a_{via} (add): {prod.comment(term)}", call]
        elif first:
            lines += [f"{head}: {prod.comment(term)}", prod.into(f"delta_{s}", term)]
        else:
            expr = prod.expression(term)
            add = f"{fn('add')}(delta_{s}, {expr}, delta_{s})"
            lines += [f"{head}: {prod.comment(term)}", add]
        done[s] = term
    ctx.back_products = lines


def _graph(ctx: Dense, d, cite: Citations) -> None:
    """What a layer of a network with skip connections reads and where its deltas go."""
    l = ctx.l
    spec = d.spec
    sources = spec.sources
    ctx.graph = True
    ctx.merge = spec.layers[l - 1].merge
    src = sources[l - 1]
    ctx.merged = len(src) > 1
    name = {0: "x"} | {s: f"a_{s}" for s in range(1, l)}
    ctx.inp = f"u_{l}" if ctx.merged else name[src[0]]
    for s, lo, hi in spec.blocks(l):
        first = l == max(j for j, srcs in enumerate(sources, 1) if s in srcs)
        ctx.srcs.append((s, name[s], lo, hi, first, hi - lo == ctx.fan_in))
    # backward: each source layer's term delta_l W_l[s]; the sources of an add merge share one
    # product, computed once (into the delta of a source this layer initialises) and copied
    # into or added to the others
    entries = [e for e in ctx.srcs if e[0] > 0]
    anchor = None
    if ctx.merged and ctx.merge == "add":
        anchor = next((e[0] for e in entries if e[4]), None)
        entries.sort(key=lambda e: e[0] != anchor)
    for s, _, lo, hi, first, whole in entries:
        W = f"W_{l}" if whole else f"W_{l}[:, {lo}:{hi}]"
        ctx.back.append((s, W, first, anchor if anchor not in (None, s) else None))
    if ctx.merged:
        ctx.eq_forward = cite(f"input.{l}") + ", " + ctx.eq_forward
    ctx.eq_backprop = (
        cite(f"backprop.sum.{l}") + ", " + cite(f"backprop.{l}") if l < d.depth else ""
    )


def init_scale(scheme: str, units: int, fan_in: int, printer: NumPyPrinter) -> str:
    """The standard deviation of the initial weights, printed ("" for N(0, 1) weights and
    biases; xavier: sqrt(2 / (fan_in + units)), he: sqrt(2 / fan_in), biases then start at 0)."""
    if scheme == "normal":
        return ""
    # in double precision exactly as NumPy computed it before (the same seed, the same weights)
    return printer.number(math.sqrt(2.0 / (fan_in + units if scheme == "xavier" else fan_in)))
