"""Numbers for the SymPy expressions of the derivation: a small recursive evaluator.

The verifier binds the names of the IR (``IndexedBase`` per layer, ``MatrixSymbol`` per batch
matrix, scalar symbols, the undefined functions ``f_l`` and ``ell``) to arrays and evaluates every
side of every equation. SymPy's ``lambdify`` is not used on the IR itself: it has no rule for
``Sum`` over a concrete range with 1-based ``Indexed`` access, nor for several of the matrix
expression nodes; a recursive walk over the tree is short and says exactly what it cannot do.

Index form (:class:`IndexEvaluator`): an expression with free indices (``j``, ``i``) is evaluated
at a list of *points* (one value of every free index each) for every sample at once. Values are
arrays of ``ndim = 2 + (number of Sum limits)``: axis 0 the samples (size 1 when the value does not
depend on the sample), axis 1 the points, then one axis per ``Sum`` limit. ``Sum`` over the
sample symbol sums axis 0. ``Derivative`` is evaluated by central differences through the
``perturb`` hook of the bindings (see :class:`Bindings`).

Matrix form (:class:`MatrixEvaluator`): ``MatMul``, ``MatAdd``, ``Transpose``,
``HadamardProduct``, ``HadamardPower``, ``ElementwiseApplyFunction``, ``OneMatrix``,
``Identity``, ``ZeroMatrix``, ``Inverse``, ``BlockMatrix``, scalar factors.

The parts: :mod:`.base` (the bindings interface, free indices and their ranges), :mod:`.index`
(the index-form walk), :mod:`.derivatives` (derivatives by central differences), :mod:`.matrix`
(the matrix form).
"""

from .base import Bindings, NotEvaluable, free_indices, grid, index_ranges, symbols_in
from .index import IndexEvaluator
from .matrix import MAX_ENTRIES, MatrixEvaluator

__all__ = [
    "MAX_ENTRIES",
    "Bindings",
    "IndexEvaluator",
    "MatrixEvaluator",
    "NotEvaluable",
    "free_indices",
    "grid",
    "index_ranges",
    "symbols_in",
]
