"""The PyTorch backend: the trainer computed on ``torch`` tensors of one ``device``, no autograd.

The module is rendered from ``templates/torch`` with the context the NumPy trainer is rendered
from (:func:`.generate.build_context` with :data:`TORCH`, whose printer is
:class:`~symgrad.printers.torch.TorchPrinter`): the loss, the output delta, f'_l, the
regulariser and every R-operator statement are the same kernels and matrix forms of the
Derivation, printed as tensor code. What the NumPy trainer writes in place (ufunc calls with
``out=``), this backend prints as whole-tensor expressions, added to the context here:

- ``tc_layers[l].f``: the activation kernel ``act.l.f`` over ``z_l`` (softmax: its kernel
  ``exp(z - logsumexp(z))``, the row's logsumexp computed by ``torch.logsumexp``);
- ``tc_layers[l].df``: ``act.l.df`` over ``z_l``, ``a_l`` (backpropagation below layer l+1);
- ``tc_step``: the training step, the optimiser's ``updates`` (and the regulariser's gradient,
  the L1 soft threshold ``reg.prox`` and ``after_prox``) printed over the parameter vector, each
  assignment into the tensor that holds it (``theta.copy_(...)``).

The template holds structure only (loops over batches, where each printed line goes, the
file format). NumPy is used by the generated module for its random generator (the initial
weights and each epoch's batch order are drawn exactly as the NumPy trainer draws them, so the
two trainers agree), for reading NumPy inputs and for the ``.npz`` files ``save`` writes: the
same format the NumPy trainer reads and writes.

Supported: dense layers (with or without bias) with element-wise activations (custom ones too)
and a softmax output, in chains or with skip connections (``from``, ``merge``: concat is
``torch.cat``, add a sum; node graphs compile to these; the R-operator lines of a graph are the
NumPy trainer's, printed for torch), every loss, L2 and L1 (proximal step), the first-order
optimisers with element-wise updates (gd, sgd, momentum, nesterov, adagrad, rmsprop, adam) and
Newton (``templates/torch/newton.py.jinja``: the exact solve with its damping shift up to
NEWTON_EXACT_MAX parameters, conjugate gradients on ``hvp`` above), float64 and float32;
``hvp``, ``hessian`` (R-operator sweeps over the identity), ``gauss_newton``. Refused with a
one-line :class:`~symgrad.errors.SpecError` naming the spec key: a softmax hidden layer
(``layers[i].activation``), a curvature optimiser without a torch template (L-BFGS, trust
region: ``optimizer.name``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import sympy as sp

from .. import optimizers
from .._paths import template_root
from ..derivation import derive
from ..derivation import notation as nt
from ..derivation.graph import Wblock
from ..errors import SpecError
from ..optimizers.base import Update, eta, g, t, theta, u
from ..optimizers.newton import p
from ..printers.matrix_numpy import text
from ..printers.pylayout import layout
from ..printers.torch import MatrixTorchPrinter, TorchPrinter
from ..spec import Spec
from . import kernels
from .backend import Backend
from .generate import TEMPLATE, _environment, build_context, check_compiles, spec_and_file
from .products import SCALE, Products
from .regulariser import smooth_gradient
from .step import _hyper_values

TORCH = Backend("torch", TorchPrinter, "torch")

#: the step's symbols as the torch runner names them (state vectors are ``s_<key>``)
STEP_NAMES = {
    theta.name: "theta",
    g.name: "g",
    eta.name: "lr",
    t.name: "t",
    u.name: "before",
    "lambda_2": "l2",
    "lambda_1": "l1",
    "N": "n",
    "p": "p",
}
#: symbols that are Python numbers in the runner (printed with ``math``, not ``torch``)
STEP_SCALARS = ("t", "eta", "N", "lr", "n")
#: the runner's line width and the indentation of the step's lines in it
WIDTH, INDENT = 100, 12


def supported_optimizers() -> tuple[str, ...]:
    """The registered optimisers this backend lays out."""
    out = []
    for name in optimizers.names():
        try:
            _check_optimizer(name)
        except SpecError:
            continue
        out.append(name)
    return tuple(out)


def _check_optimizer(name: str) -> None:
    """First-order optimisers whose update is element-wise."""
    opt = optimizers.get(name)
    if not opt.first_order:  # laid out where the torch template set has its template
        try:
            template_root(f"torch/{name}.py.jinja")
        except FileNotFoundError:
            raise SpecError(
                "optimizer.name",
                f"the torch backend does not lay out {name!r}; use newton, gd, sgd, momentum, "
                "nesterov, adagrad, rmsprop or adam, or the numpy backend",
            ) from None
    allowed = {theta, g, eta, t, u, p, *opt.state, *opt.hyper}
    for up in (*opt.updates, *opt.after_prox):
        if up.value.free_symbols - allowed or up.target not in {theta, *opt.state}:
            raise SpecError(
                "optimizer.name",
                f"the torch backend does not lay out {name!r} (its update is not element-wise)",
            )


def check(spec: Spec) -> None:
    """Refuse what the torch backend does not lay out, naming the spec's key (one line)."""
    for i, layer in enumerate(spec.layers[:-1]):
        if layer.activation == "softmax":
            raise SpecError(
                f"layers[{i}].activation",
                "the torch backend lays out softmax on the output layer only",
            )
    _check_optimizer(spec.optimizer.name)


@dataclass
class TorchLayer:
    """A layer's printed kernels and products: its activation, and f' where backpropagation
    reads it; its forward product ``z`` (forward.l), the data terms of its gradients times m
    scale (``grad_w``, ``grad_b``), and with skip connections what it reads (``inp``: ``X``,
    ``a_s`` or its merged ``u_l``, and the merge's right side ``merged``, input.l); per source
    layer s > 0 its term of dC/dA_s times scale (backprop.sum.s) and whether this layer is the
    last to read it (it starts dC/dA_s). Every product is printed from the equation's matrix
    form (:mod:`.products`)."""

    f: str
    df: str = ""
    inp: str = ""
    merged: str = ""
    z: str = ""
    grad_w: str = ""
    grad_b: str = ""
    back: list = field(default_factory=list)
    eq_merged: str = ""
    eq_forward: str = ""
    eq_grad: str = ""
    eq_back: str = ""


def _layers(d, cite) -> list[TorchLayer]:
    out = []
    for layer in d.layers:
        l = layer.index
        names = {"z": f"z_{l}", "a": f"a_{l}", "y": "Y", "logsumexp": "lse"}
        p = TorchPrinter(names)
        ctx = TorchLayer(p.expression(kernels.kernel(d, f"act.{l}.f")))
        src = d.spec.sources[l - 1]
        name = {0: "X"} | {s: f"a_{s}" for s in range(1, l)}
        ctx.inp = name[src[0]]
        table = {nt.A(s).name: code for s, code in name.items()}
        table |= {nt.W(l).name: f"self.W_{l}", nt.Delta(l).name: f"delta_{l}"}
        if layer.bias:
            table[nt.B(l).name] = f"self.b_{l}"
        if len(src) > 1:
            ctx.inp = f"u_{l}"
            table[d.equation(f"input.{l}").matrix[0].name] = ctx.inp
        fan_in = d.spec.fan_ins[l - 1]
        blocks = []
        for s, lo, hi in d.spec.blocks(l):
            block = f"self.W_{l}" if hi - lo == fan_in else f"self.W_{l}[:, {lo}:{hi}]"
            if s > 0 and d.graph:
                table[Wblock(l, s).name] = block
                last = l == max(j for j, r in enumerate(d.spec.sources, 1) if s in r)
                blocks.append((s, last))
        prod = Products(d, table)
        if len(src) > 1:
            lhs, rhs = d.equation(f"input.{l}").matrix
            ctx.merged = prod.matrix(rhs, MatrixTorchPrinter)
            ctx.eq_merged = f"{cite(f'input.{l}')} {prod.text(lhs)} = {prod.text(rhs)}"
        lhs, rhs = d.equation(f"forward.{l}").matrix
        ctx.z = prod.matrix(rhs, MatrixTorchPrinter)
        eqs = cite(f"forward.{l}", "forward") + ", " + cite(f"act.{l}.f", "forward.layers")
        then = f"then {text(nt.A(l))} = f_{l}({text(lhs)})"
        ctx.eq_forward = f"{eqs} {text(lhs)} = {text(rhs)}, {then}"
        grads = [prod.scaled(prod.data_term(f"grad.W.{l}", l), nt.m * SCALE)]
        ctx.grad_w = prod.matrix(grads[0], MatrixTorchPrinter)
        if layer.bias:
            grads.append(prod.scaled(prod.data_term(f"grad.b.{l}", l), nt.m * SCALE))
            ctx.grad_b = prod.matrix(grads[1], MatrixTorchPrinter)
        keys = cite(f"grad.W.{l}", f"grad.{l}")
        if layer.bias:
            keys += ", " + cite(f"grad.b.{l}", f"grad.{l}")
        what = ", ".join(prod.comment(g) for g in grads)
        ctx.eq_grad = f"{keys} the data terms of the gradient times m*scale: {what}"
        if d.graph:
            for s, last in blocks:
                term = prod.backprop(l, s)
                head = f"{cite(f'backprop.sum.{s}')} layer {l}'s term of scale*dC_dA_{s}"
                ctx.back.append((s, prod.matrix(term, MatrixTorchPrinter), last, head))
        elif l > 1:
            term = prod.backprop(l, l - 1)
            head = f"{cite(f'backprop.sum.{l - 1}')} scale*dC_dA_{l - 1} = {prod.comment(term)}"
            ctx.back.append((l - 1, prod.matrix(term, MatrixTorchPrinter), True, head))
        if l < d.depth:
            df = kernels.kernel(d, f"act.{l}.df")
            ctx.df = "" if df == 1 else p.expression(df)  # f' = 1 multiplies nothing
            lhs, rhs = prod.recurrence(l)
            ctx.eq_back = f"{cite(f'backprop.{l}')} {text(lhs)} = {text(rhs)}"
        out.append(ctx)
    return out


def _step(d, step) -> list[tuple[str, list[str]]]:
    """The training step over the parameter vector, block by block: (comment, lines), each
    printed from its SymPy assignment; an assignment writes into the tensor that holds it."""
    spec = d.spec
    opt = optimizers.get(spec.optimizer.name)
    values = _hyper_values(opt, spec.optimizer)
    updates = [Update(up.target, up.value.subs(values)) for up in opt.updates]
    if step.fold:
        updates = [Update(up.target, up.value.subs(g, g / eta)) for up in updates]
    names = dict(STEP_NAMES)
    for sym in opt.state:
        names[sym.name] = f"s_{opt.key(sym)}"
    hoisted: list[tuple[str, str]] = []
    q = TorchPrinter(names, scalars=STEP_SCALARS, hoisted=hoisted)

    temps: list[str] = []

    def fitted(lhs: str, value: sp.Expr) -> list[str]:
        """``lhs = value`` on one line of the runner (``WIDTH``); a longer one first computes
        its longest array argument into a temporary ``w_k``, until it fits."""
        code = q.expression(value)
        if len(f"{' ' * INDENT}{lhs} = {code}") <= WIDTH:
            return [f"{lhs} = {code}"]
        parts = [
            a
            for a in sp.preorder_traversal(value)
            if a is not value and isinstance(a, sp.Expr) and not a.is_Atom and not q._is_scalar(a)
        ]
        if not parts:
            return [f"{lhs} = {code}"]
        part = max(parts, key=lambda a: (len(q.expression(a)), -parts.index(a)))
        name = f"w_{len(temps)}"
        temps.append(name)
        names[name] = name
        lines = fitted(name, part)
        return lines + fitted(lhs, value.xreplace({part: sp.Symbol(name, real=True)}))

    def assign(target: sp.Symbol, value: sp.Expr) -> list[str]:
        return fitted(f"{names[target.name]}[:]", value)

    blocks: list[tuple[str, list[str]]] = []
    if step.l2:
        reg = smooth_gradient(d).subs(kernels.w, theta)
        if step.fold:
            reg = eta * reg
        blocks.append((step.blocks[0][0], fitted("g", g + reg)))
    comment = next(c for c, _ in step.blocks if c.endswith(opt.title))
    blocks.append((comment, [line for up in updates for line in assign(up.target, up.value)]))
    if step.l1:
        prox = kernels.kernel(d, "reg.prox").subs(values)
        lines = ["before = theta.clone()"] if opt.after_prox else []
        lines += assign(theta, prox.subs(u, theta))
        prox_comment = next(c for c, _ in step.blocks if "soft threshold" in c)
        blocks.append((prox_comment, lines))
        for up in opt.after_prox:
            cmt = next(c for c, _ in step.blocks if c.endswith("after the threshold"))
            blocks.append((cmt, assign(up.target, up.value.subs(values))))
    if hoisted:  # the step's scalar factors (functions of t, eta, N), once per step
        scalars = [f"{name} = {code}" for name, code in hoisted]
        blocks.insert(0, ("the step's scalar factors", scalars))
    return blocks


def torch_context(d, spec_file: str) -> dict:
    """The NumPy trainer's context printed with :data:`TORCH`, plus the tensor expressions."""
    check(d.spec)
    context = build_context(d, spec_file, TORCH)
    context["tc_layers"] = _layers(d, context["cite"])
    context["tc_step"] = _step(d, context["step"])
    # what fit keeps of each batch for the epoch's metrics: z_L (-2) and/or a_L (-1) of the cache
    index = {f"z_{d.depth}": -2, f"a_{d.depth}": -1}
    context["tc_track"] = tuple(index[name] for name in context["out"].track_names.split(", "))
    # the forward pass's cache: [a_0, z_1, a_1, ..., z_L, a_L]
    context["tc_cache"] = ", ".join(["X"] + [f"z_{l}, a_{l}" for l in range(1, d.depth + 1)])
    return context


def torch_source(spec: Spec | str | os.PathLike, spec_file: str | None = None) -> str:
    """The PyTorch trainer module of ``spec`` (a Spec or a YAML path); raises SpecError for
    what it does not lay out."""
    spec, spec_file = spec_and_file(spec, spec_file)
    check(spec)
    d = derive(spec)
    context = torch_context(d, spec_file)
    source = _environment().get_template(TEMPLATE).render(**context)
    check_compiles(source, spec.name)
    source = layout(source)
    check_compiles(source, spec.name)
    return source


__all__ = ["TORCH", "TorchPrinter", "check", "supported_optimizers", "torch_source"]
