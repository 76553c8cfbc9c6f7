"""Kernels (over the calculus symbols ``z, a, y``) placed on the units of a layer.

A kernel is the per-element expression the code prints; the displayed equation is the same
object with ``z -> z^{(l)}_j``, ``a -> a^{(l)}_j``, ``y -> y_j``.
"""

from __future__ import annotations

import sympy as sp

from .. import calculus as C
from . import notation as nt


def at(expr: sp.Expr, l: int, idx: sp.Symbol) -> sp.Expr:
    """``expr`` on unit ``idx`` of layer ``l`` (``logsumexp`` becomes ``log sum_k e^{z_k}``)."""
    if expr.has(C.logsumexp):
        k = nt.k if idx != nt.k else nt.p
        lse = sp.log(sp.Sum(sp.exp(nt.z(l)[k]), (k, 1, nt.n(l))))
        expr = expr.replace(C.logsumexp, lambda arg: lse)
    return expr.xreplace({C.z: nt.z(l)[idx], C.a: nt.a(l)[idx], C.y: nt.y[idx]})


def fprime(act: C.ActivationCalculus) -> sp.Expr:
    """The kernel of ``f'`` the code uses: the output form (in ``a``) where it exists."""
    return act.df_out if act.has_output_form else act.df


def fsecond(act: C.ActivationCalculus) -> sp.Expr:
    """The kernel of ``f''`` the code uses (output form where it exists)."""
    return act.d2f_out if act.d2f_out is not None else act.d2f


def readable_at(act: C.ActivationCalculus, form: sp.Expr, l: int, idx: sp.Symbol) -> sp.Expr:
    """A readable z-form (``a`` standing for ``f(z)``) on unit ``idx`` of layer ``l``."""
    f_of_z = nt.f(l)(nt.z(l)[idx])
    return at(form.subs(C.a, f_of_z), l, idx)


def dfdz(l: int, idx: sp.Symbol, order: int = 1) -> sp.Derivative:
    """``f_l'(z^{(l)}_idx)`` (or ``f''``) as an unevaluated derivative."""
    zj = nt.z(l)[idx]
    return sp.Derivative(nt.f(l)(zj), (zj, order))
