"""The one place where code generation reads formulas: the kernels of the Derivation.

A kernel is the per-element SymPy expression an equation's code computes, over the calculus
symbols ``z, a, y`` (activations, losses), the regulariser's ``w, u, lambda_2, lambda_1, N`` or an
optimiser's symbols. Nothing in :mod:`symgrad.codegen` builds a formula itself: every printed
expression is one of these, read by key.
"""

from __future__ import annotations

import sympy as sp

from ..derivation import notation as nt

#: the regulariser's symbols (one weight, its value before the L1 step, strengths, set size)
w, u, lambda_2, lambda_1, N = nt.weight, nt.u, nt.lambda_2, nt.lambda_1, nt.N


def kernel(d, *keys: str) -> sp.Expr | None:
    """The kernel of the first of ``keys`` the Derivation holds with a kernel; None when none
    does (the equation does not exist for this spec, e.g. ``reg.prox`` without an L1 term)."""
    for key in keys:
        try:
            return d.kernel(key)
        except KeyError:
            continue
    return None


def zero_if_none(expr: sp.Expr | None) -> sp.Expr:
    """An absent regulariser term is zero."""
    return sp.Integer(0) if expr is None else expr
