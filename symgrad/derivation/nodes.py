"""Seed 002's notation: the network traced node by node (``symgrad derive --notation seed002``).

A node graph (``graph:`` in the spec) keeps its own node numbers; a layer spec numbers its
nodes from the inputs up, layer by layer (seed 002's network: input node 1, hidden nodes 2, 3
and 4, 5, output node 6). For node j, ``X_j`` is its input (the weighted sum of its parents'
outputs, plus its bias where it has one), ``Y_j = F(X_j)`` its output (an input node's output
is the sample's feature), ``W_ij`` the weight of the edge from node i to node j and ``E`` the
error of one sample (the spec's loss summed over the output nodes, ``T_k`` the target of output
node k). The equations are SymPy objects like every other of the IR: the right sides come from
the activation and loss calculus (``sympy.diff``), the chain over the downstream nodes from the
graph (``dE/dY_i = sum over the children j of i of W_ij dE/dX_j``, however many there are).
They go first, under their own sections, and the general rule for layer l and l + 1 (the rest
of the derivation) follows.

For networks of element-wise activations with at most :data:`MAX_NODES` nodes, chains or graphs
whose layers concatenate what they read (``merge: add`` sums nodes, it has no edges): one
equation per node and per edge is a tracing aid, not a way to print a large network.
"""

from __future__ import annotations

import sympy as sp

from .. import calculus as C
from ..errors import SymgradError
from . import notation as nt
from .ir import Derivation, Equation

#: sections of the node-by-node equations
FORWARD = "Node by node (seed 002's notation): forward"
BACKWARD = "Node by node (seed 002's notation): backpropagation"
SECTIONS = (FORWARD, BACKWARD)
#: the most nodes (inputs included) traced one equation each
MAX_NODES = 32

E = sp.Symbol("node_E", real=True)  # the error of one sample
nt._register("node_E", "E", "E")


class NodeNotationError(SymgradError):
    """The spec cannot be traced node by node (too many nodes, or a vector activation)."""


def _name(stem: str, *ids: int, total: int) -> sp.Symbol:
    """The node symbol ``stem`` with subscript ``ids`` (``W_46``; ``W_{10,11}`` where some node
    number has two digits or more, ``total`` the largest).

    Its SymPy name is private (``node_W_4_6``) and its display registered: a plain ``W_46`` would
    take the display of the 46th layer's weight matrix once a network that deep was derived."""
    sep = "" if total < 10 else ","
    text = sep.join(str(i) for i in ids)
    name = f"node_{stem}_{'_'.join(str(i) for i in ids)}"
    nt._register(name, f"{stem}_{{{text}}}", stem + nt.sub(text.replace(",", "")))
    return sp.Symbol(name, real=True)


class Nodes:
    """The symbols of a traced network: ``X[j]``, ``Y[j]``, ``W[i, j]``, ``b[j]``, ``T[k]``;
    ``layers[l]`` the node numbers of layer l (0 the input), in the order of its units."""

    def __init__(self, d: Derivation) -> None:
        spec = d.spec
        self.layers = spec.node_numbers
        count = sum(len(layer) for layer in self.layers)
        if count > MAX_NODES:
            raise NodeNotationError(
                f"--notation seed002 traces one equation per node: at most {MAX_NODES} nodes, "
                f"this network has {count}"
            )
        if any(layer.merge == "add" and layer.sources for layer in spec.layers):
            raise NodeNotationError(
                "--notation seed002 traces layers that concatenate what they read; merge: add "
                "sums nodes (it has no edges of its own)"
            )
        if any(layer.activation.vector for layer in d.layers):
            raise NodeNotationError(
                "--notation seed002 traces element-wise activations only (softmax couples the "
                "output nodes)"
            )
        total = max(j for layer in self.layers for j in layer)
        self.total = total
        self.spec = spec
        self.calc = d.layers  # LayerCalculus per layer (1-based index = position + 1)
        self.loss = d.loss
        nodes = [j for layer in self.layers for j in layer]
        self.X = {j: _name("X", j, total=total) for j in nodes}
        self.Y = {j: _name("Y", j, total=total) for j in nodes}
        self.T = {k: _name("T", k, total=total) for k in self.layers[-1]}
        self.x = {j: _name("x", n + 1, total=0) for n, j in enumerate(self.layers[0])}
        self.W: dict[tuple[int, int], sp.Symbol] = {}
        self.b: dict[int, sp.Symbol] = {}
        for l in range(1, len(self.layers)):
            for j in self.layers[l]:
                for s in spec.sources[l - 1]:
                    for i in self.layers[s]:
                        self.W[i, j] = _name("W", i, j, total=total)
                if d.layers[l - 1].bias:
                    self.b[j] = _name("b", j, total=total)

    def column(self, i: int, j: int) -> int:
        """The column of layer l's weight matrix (l node j's layer) that reads node i."""
        for s, lo, _ in self.spec.blocks(self.layer_of(j)):
            if i in self.layers[s]:
                return lo + self.layers[s].index(i)
        raise KeyError((i, j))

    def parents(self, j: int) -> list[int]:
        return [i for (i, jj) in self.W if jj == j]

    def children(self, i: int) -> list[int]:
        return [j for (ii, j) in self.W if ii == i]

    def layer_of(self, j: int) -> int:
        return next(l for l, layer in enumerate(self.layers) if j in layer)

    def activation(self, j: int) -> C.ActivationCalculus:
        return self.calc[self.layer_of(j) - 1].activation

    def net_input(self, j: int) -> sp.Expr:
        """``sum_i W_ij Y_i (+ b_j)`` over the parents of node j."""
        total = sp.Add(*[self.W[i, j] * self.Y[i] for i in self.parents(j)])
        return total + self.b[j] if j in self.b else total

    def output(self, j: int) -> sp.Expr:
        """``F(X_j)``: the layer's activation at the node's input."""
        return self.activation(j).f.subs(C.z, self.X[j])

    def slope(self, j: int) -> sp.Expr:
        """``F'(X_j)`` in output form (in ``Y_j``) where the activation has one."""
        act = self.activation(j)
        if act.df_out is not None:
            return act.df_out.subs(C.a, self.Y[j])
        return act.df.subs(C.z, self.X[j])

    def error(self) -> sp.Expr:
        """``E = sum_k l(Y_k, T_k)`` over the output nodes."""
        ell = self.loss.ell
        return sp.Add(*[ell.subs({C.a: self.Y[k], C.y: self.T[k]}) for k in self.layers[-1]])


def _d(of: sp.Symbol, by: sp.Symbol) -> sp.Derivative:
    return sp.Derivative(of, by, evaluate=False)


def node_equations(d: Derivation) -> list[Equation]:
    """The forward pass and backpropagation of every node and edge of ``d``'s network."""
    g = Nodes(d)
    eqs: list[Equation] = []
    for j, x in g.x.items():
        prose = (f"Input node {j} outputs feature {g.layers[0].index(j) + 1} of the sample.",)
        eqs.append(Equation(f"node.Y.{j}", FORWARD, g.Y[j], x, prose=prose))
    for layer in g.layers[1:]:
        for j in layer:
            eqs.append(Equation(f"node.X.{j}", FORWARD, g.X[j], g.net_input(j)))
            eqs.append(Equation(f"node.Y.{j}", FORWARD, g.Y[j], g.output(j)))
    eqs.append(
        Equation(
            "node.E",
            FORWARD,
            E,
            g.error(),
            prose=("The error of one sample, the loss summed over the output nodes.",),
        )
    )
    outputs = g.layers[-1]
    error = g.error()
    for l in range(len(g.layers) - 1, 0, -1):
        for j in g.layers[l]:
            if j in outputs:
                eqs.append(
                    Equation(f"node.dY.{j}", BACKWARD, _d(E, g.Y[j]), sp.diff(error, g.Y[j]))
                )
            else:
                kids = g.children(j)
                chain = sp.Add(*[g.W[j, k] * _d(E, g.X[k]) for k in kids])
                feeds = ", ".join(str(k) for k in kids)
                prose = (
                    f"Node {j} feeds node{'s' if len(kids) > 1 else ''} {feeds}: its output's "
                    "derivative is the sum over its downstream nodes (seed 002: dE/dY_i = sum_j "
                    "W_ij dE/dX_j).",
                )
                eqs.append(Equation(f"node.dY.{j}", BACKWARD, _d(E, g.Y[j]), chain, prose=prose))
            via = _d(E, g.Y[j]) * _d(g.Y[j], g.X[j])
            eqs.append(
                Equation(
                    f"node.dX.{j}",
                    BACKWARD,
                    _d(E, g.X[j]),
                    _d(E, g.Y[j]) * g.slope(j),
                    steps=(via,),
                )
            )
            for i in g.parents(j):
                w = g.W[i, j]
                eqs.append(
                    Equation(
                        f"node.dW.{i}.{j}",
                        BACKWARD,
                        _d(E, w),
                        g.Y[i] * _d(E, g.X[j]),
                        steps=(_d(E, g.X[j]) * _d(g.X[j], w),),
                    )
                )
            if j in g.b:
                eqs.append(Equation(f"node.db.{j}", BACKWARD, _d(E, g.b[j]), _d(E, g.X[j])))
    return eqs


def trace_nodes(d: Derivation) -> Derivation:
    """``d`` with the node-by-node equations first (renumbered); returns ``d``.

    Raises :class:`NodeNotationError` (one line) for a network that cannot be traced.
    """
    if any(eq.section in SECTIONS for eq in d.equations):
        return d
    eqs = node_equations(d)
    rest = list(d.equations)
    for eq in eqs:
        d.add(eq)
    d.equations[:] = [*eqs, *rest]
    d.tagged.update(dict.fromkeys(SECTIONS, "N"))  # N1, N2, ...: the rest keep their numbers
    d.number()
    return d


#: the notations a derivation can be printed in: ``auto`` is seed 002's for a node graph
#: (``graph:`` in the spec) that can be traced, symgrad's otherwise
NOTATIONS = ("auto", "symgrad", "seed002")


def apply_notation(d: Derivation, notation: str) -> Derivation:
    """``d`` in ``notation``: ``seed002`` traces the nodes (or raises
    :class:`NodeNotationError`), ``auto`` traces a node graph when it can, ``symgrad`` leaves
    ``d`` as it is."""
    if notation not in NOTATIONS:
        raise ValueError(f"notation must be one of {', '.join(NOTATIONS)}, not {notation!r}")
    if notation == "seed002":
        return trace_nodes(d)
    if notation == "auto" and getattr(d.spec, "graph", None) is not None:
        try:
            return trace_nodes(d)
        except NodeNotationError:
            return d
    return d
