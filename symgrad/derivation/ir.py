"""The Derivation: the single intermediate representation between a spec and its printers.

It holds SymPy objects only: each :class:`Equation` is a key, a section, its two sides in index
form (``IndexedBase``/``Sum``/``Derivative``), the steps of a chain, the matrix form
(``MatrixSymbol``/``HadamardProduct``/transposes), prose as plain text and inline SymPy, and the
per-element *kernel* that the code generator prints. It is computed for one representative unit
per layer, so its cost grows with the number of layers, never with their widths. Nothing here
prints: the printers (:mod:`symgrad.printers`) and the code generator read it.

The equations are built by :mod:`.cost` (cost, regulariser, output layer), :mod:`.dense` (a dense
layer's forward pass, backpropagation and gradients) with :mod:`.rop` (its R-operator rows),
:mod:`.second_order` (Hessians, Gauss-Newton), :mod:`.update` (the optimiser's step) and
:mod:`.newton` (Newton's method, for the ``newton`` optimiser only).
"""

from __future__ import annotations

from dataclasses import dataclass

import sympy as sp

from .. import calculus as C
from ..spec import Spec
from . import notation


@dataclass(frozen=True)
class Equation:
    """One equation of the derivation, as SymPy objects only (the printers number it).

    Attributes:
        key: stable name (``"cost"``, ``"forward.2"``, ``"delta.out"``, ``"grad.W.2"``, ...).
        section: the heading it is printed under.
        lhs, rhs: the two sides in index form (``IndexedBase``/``Sum``/``Derivative``).
        steps: intermediate right sides of a chain: ``lhs = steps[0] = ... = rhs``.
        matrix: ``(lhs, rhs)`` in matrix form (``MatrixSymbol``, ``HadamardProduct``...), or None.
        prose: parts of the sentence that explains it: ``str`` (plain text) or SymPy (inline).
        kernel: the per-element expression the code prints (over :mod:`symgrad.calculus`'s
            ``z, a, y`` or the optimiser's symbols), or None when no code uses it.
        relation: ``"="``, or ``"<-"`` for an update.
        gauss_newton: the Gauss-Newton approximation of an R-operator equation, as pairs ``(part,
            replacement)`` of the matrix form's right side: a term that carries second-order
            terms of the network or the loss (f'', delta V, Delta^T R{A}) replaced by a
            ZeroMatrix (dropped), the output curvature S by its Gauss-Newton S^G. Empty when the
            Gauss-Newton sweep computes the equation as it is.
    """

    key: str
    section: str
    lhs: sp.Basic
    rhs: sp.Basic
    steps: tuple = ()
    matrix: tuple | None = None
    prose: tuple = ()
    kernel: sp.Expr | None = None
    relation: str = "="
    gauss_newton: tuple = ()

    @property
    def sides(self) -> tuple:
        """``(lhs, *steps, rhs)``: every member of the chain, in order."""
        return (self.lhs, *self.steps, self.rhs)

    @property
    def gauss_newton_matrix(self) -> sp.Basic | None:
        """The matrix form's right side under the Gauss-Newton approximation (dropped terms
        removed); None without a matrix form."""
        if self.matrix is None:
            return None
        return without_zeros(self.matrix[1].xreplace(dict(self.gauss_newton)))


def without_zeros(expr: sp.Basic) -> sp.Basic:
    """``expr`` without the zero matrices a replacement left in its sums and products."""
    if not isinstance(expr, sp.MatrixExpr) or not expr.args:
        return expr
    args = [without_zeros(a) for a in expr.args]
    if isinstance(expr, sp.MatAdd):
        kept = [a for a in args if not isinstance(a, sp.ZeroMatrix)]
        if not kept:
            return sp.ZeroMatrix(*expr.shape)
        return kept[0] if len(kept) == 1 else sp.MatAdd(*kept)
    if isinstance(expr, (sp.MatMul, sp.HadamardProduct)) and any(
        isinstance(a, sp.ZeroMatrix) for a in args
    ):
        return sp.ZeroMatrix(*expr.shape)
    return expr.func(*args)


@dataclass(frozen=True)
class LayerCalculus:
    """What the derivation knows about layer ``index`` (1-based)."""

    index: int
    units: int
    fan_in: int
    activation: C.ActivationCalculus
    #: whether the layer's units add a bias (the spec's ``bias``)
    bias: bool = True


class Derivation:
    """Gradients, Hessians and their explanation for one spec.

    Equations by key (``d.equation("backprop.1")``, numbered by ``d.eq(key)`` in print order),
    kernels by key (``d.kernel("delta.out")``), calculus expressions by name
    (``d["delta_out"]``, ``d["df_1"]``). Renders itself in Jupyter.
    """

    def __init__(self, spec: Spec) -> None:
        self.spec = spec
        self.notation = notation
        self.layers: list[LayerCalculus] = []
        fan_ins = spec.fan_ins  # the width below, or a skip connection's merged sources'
        for i, layer in enumerate(spec.layers):
            act = C.activation_calculus(layer.activation, spec.activations, layer.alpha)
            self.layers.append(LayerCalculus(i + 1, layer.units, fan_ins[i], act, layer.bias))
        #: whether some layer reads more than the layer below (skip connections, :mod:`.graph`)
        self.graph = spec.is_graph
        self.output = self.layers[-1].activation
        self.loss = C.loss_calculus(spec.loss, self.output, spec.losses)
        self.expressions: dict[str, sp.Expr] = {}
        self.equations: list[Equation] = []
        self._by_key: dict[str, Equation] = {}
        self._aliases: dict[str, str] = {}
        #: paragraphs of the Notation section (tuples of str and SymPy parts)
        self.conventions: list[tuple] = []
        #: rows (source, their symbol, meaning, symgrad's symbol) mapping the seeds' notation
        self.seed_symbols: list[tuple] = []
        self._numbers: dict[str, int | str] = {}
        #: sections numbered apart, section -> prefix (seed 002's node-by-node trace: N1, N2,
        #: ...), so that the others keep the numbers the generated code cites in any notation
        self.tagged: dict[str, str] = {}

    def number(self) -> None:
        """Number the equations in print order (the builders call it once they are done): 1, 2,
        ..., and those of a :attr:`tagged` section by their own count after its prefix."""
        counts: dict[str, int] = {}
        self._numbers = {}
        for eq in self.equations:
            prefix = self.tagged.get(eq.section, "")
            counts[prefix] = counts.get(prefix, 0) + 1
            self._numbers[eq.key] = f"{prefix}{counts[prefix]}" if prefix else counts[prefix]

    # -- construction (used by the builders) -----------------------------------------------------
    def add(self, eq: Equation, **expressions: sp.Expr) -> Equation:
        """Append ``eq`` (its key must be new) and record named calculus expressions."""
        if eq.key in self._by_key or eq.key in self._aliases:
            raise ValueError(f"duplicate equation key {eq.key!r}")
        self.equations.append(eq)
        self._by_key[eq.key] = eq
        self.expressions.update(expressions)
        return eq

    def alias(self, key: str, target: str) -> None:
        """Let ``key`` name equation ``target`` too (``grad.2`` is ``grad.W.2``)."""
        self._aliases[key] = self._resolve(target)

    # -- access ----------------------------------------------------------------------------------
    @property
    def depth(self) -> int:
        return len(self.layers)

    @property
    def has_hidden(self) -> bool:
        return len(self.layers) > 1

    @property
    def widths(self) -> dict[sp.Symbol, int]:
        """``{n_0: inputs, n_1: units of layer 1, ...}``: the width symbols' values."""
        return {notation.n(l): size for l, size in enumerate(self.spec.sizes)}

    def width_in(self, l: int) -> sp.Expr:
        """Layer l's fan-in as width symbols: ``n_{l-1}``, or with skip connections the sum of
        its sources' widths (``concat``) or the first one's (``add``: all are equal)."""
        sources = self.spec.sources[l - 1]
        if self.spec.layers[l - 1].merge == "add":
            return notation.n(sources[0])
        return sp.Add(*(notation.n(s) for s in sources))

    @property
    def keys(self) -> list[str]:
        """Equation keys in print order (aliases not included)."""
        return [eq.key for eq in self.equations]

    def __getitem__(self, name: str) -> sp.Expr:
        return self.expressions[name]

    def __contains__(self, key: str) -> bool:
        return key in self._by_key or key in self._aliases

    def _resolve(self, key: str) -> str:
        return self._aliases.get(key, key)

    def equation(self, key: str) -> Equation:
        """The equation called ``key`` (or one of its aliases)."""
        return self._by_key[self._resolve(key)]

    def eq(self, key: str) -> int | str:
        """The number of equation ``key`` as printed (1-based, in print order; ``N3`` in a
        :attr:`tagged` section)."""
        return self._numbers[self._resolve(key)]

    def kernel(self, key: str) -> sp.Expr:
        """The per-element expression of equation ``key`` that the code prints."""
        eq = self.equation(key)
        if eq.kernel is None:
            raise KeyError(f"equation {key!r} has no kernel")
        return eq.kernel
