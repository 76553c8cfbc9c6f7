"""A dense layer's R-operator rows (Pearlmutter): Hessian-vector products by differentiating the
forward pass, the delta recurrence and the gradients along a direction v.

``R{g}`` is the derivative by r of g at theta + r v, at r = 0; v has a weight part ``v_l`` and a
bias part ``vb_l`` like the parameters. The index forms are of C (1/N), the matrix forms of the
batch cost C_B (1/m), as the gradients of :mod:`.dense`.

Each equation marks the terms of its matrix form that the Gauss-Newton approximation drops
(``Equation.gauss_newton``): the delta V and f'' terms of R{delta}, the Delta^T R{A} term of the
weight rows. What is left is the sweep of J^T S J v (J the Jacobian of z_L).
"""

from __future__ import annotations

import sympy as sp

from . import notation as nt
from .ir import Derivation, Equation
from .units import at, dfdz, fprime, fsecond

ROP = "Hessian-vector products (R-operator)"


def mul(*factors: sp.Expr) -> sp.Expr:
    """A product kept in the order written (``w_ji a_i``, not SymPy's canonical ``a_i w_ji``)."""
    return sp.Mul(*factors, evaluate=False)


_mul = mul


class DenseROp:
    """The R-operator methods of :class:`.dense.Dense` (which sets ``index``, ``act``, ``last``)."""

    def rop_forward(self, d: Derivation) -> None:
        l, i, j = self.index, nt.i, nt.j
        w, v, vb = nt.w(l), nt.v(l), nt.vb(l)
        a_prev = nt.a(l - 1)
        if l == 1:
            rhs = sp.Sum(_mul(v[j, i], a_prev[i]), (i, 1, nt.n(0)))
            matrix = nt.A(0) * nt.V(l).T
        else:
            ra = nt.Ra(l - 1)
            rhs = sp.Sum(_mul(w[j, i], ra[i]) + _mul(v[j, i], a_prev[i]), (i, 1, nt.n(l - 1)))
            matrix = nt.RA(l - 1) * nt.W(l).T + nt.A(l - 1) * nt.V(l).T
        if self.layer.bias:
            rhs, matrix = rhs + vb[j], matrix + nt.ones_m * nt.Vb(l)
        prose: tuple = ()
        if l == 1:
            prose = (
                "Hessian-vector products H v by the R-operator, which differentiates along the "
                "direction v: R{g} is the derivative by r of g at theta + r v, at r = 0. Applied "
                "to the forward pass; v has a weight part and a bias part like the parameters "
                "(the inputs do not depend on them).",
            )
            if not all(layer.bias for layer in d.layers):
                prose = (
                    prose[0][:-1] + " A layer without bias has no bias part of v and no bias "
                    "rows of H v.",
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

    def rop_backward(self, d: Derivation) -> None:
        """``R{delta}`` of this (hidden) layer from the layer above."""
        l, up, i, j = self.index, self.index + 1, nt.i, nt.j
        w, v, delta, rdelta = nt.w(up), nt.v(up), nt.delta(up), nt.Rdelta(up)
        fp, fpp = fprime(self.act), fsecond(self.act)
        n_up = nt.n(up)
        first = _mul(
            at(fp, l, i), sp.Sum(_mul(w[j, i], rdelta[j]) + _mul(v[j, i], delta[j]), (j, 1, n_up))
        )
        back = nt.Delta(up) * nt.W(up)
        delta_v = nt.Delta(up) * nt.V(up)
        mat = sp.HadamardProduct(nt.FP(l), nt.RDelta(up) * nt.W(up) + delta_v)
        zero = sp.ZeroMatrix(nt.m, nt.n(l))
        gauss_newton = [(delta_v, zero)]
        rhs = first
        if fpp != 0:
            back_sum = sp.Sum(_mul(w[j, i], delta[j]), (j, 1, n_up))
            rhs = first + _mul(at(fpp, l, i), nt.Rz(l)[i], back_sum)
            mat = mat + sp.HadamardProduct(nt.FPP(l), nt.RZ(l), back)
            # the term as the sum holds it (SymPy orders the factors of a Hadamard product)
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
                    "R{.} of the delta recurrence (product rule): f' and f'' are the activation "
                    "derivatives above",
                    "; the f'' term vanishes for this activation." if fpp == 0 else ".",
                ),
            )
        )

    def rop_gradients(self, d: Derivation) -> None:
        l, i, j = self.index, nt.i, nt.j
        reg = d.spec.regularization
        rdelta, delta = nt.Rdelta(l), nt.delta(l)
        a_prev = nt.a(l - 1)
        inner = _mul(rdelta[j], a_prev[i])
        mat = nt.RDelta(l).T * nt.A(l - 1)
        gauss_newton: tuple = ()
        if l > 1:
            inner += _mul(delta[j], nt.Ra(l - 1)[i])
            curvature = nt.Delta(l).T * nt.RA(l - 1)
            mat = mat + curvature
            gauss_newton = ((curvature, sp.ZeroMatrix(nt.n(l), nt.n(l - 1))),)
        rhs = sp.Sum(inner, (nt.sample, 1, nt.N)) / nt.N
        mat = sp.MatMul(1 / nt.m, mat)
        if reg.l2:
            rhs += nt.lambda_2 / nt.N * nt.v(l)[j, i]
            mat = sp.MatAdd(mat, nt.lambda_2 / nt.N * nt.V(l))
        _check_marks(mat, gauss_newton)
        d.add(
            Equation(
                f"rop.grad.W.{l}",
                ROP,
                nt.HvW_(l)[j, i],
                rhs,
                matrix=(nt.HvW(l), mat),
                gauss_newton=gauss_newton,
                prose=(
                    "R{.} of the weight gradient: the Hessian-vector product's weight part (the "
                    "batch form: that of the Hessian ",
                    sp.Symbol("H_B"),
                    " of the batch cost, 1/m)",
                    *(
                        (", with the L2 term's Hessian ", nt.lambda_2 / nt.N, " on the weights.")
                        if reg.l2
                        else (".",)
                    ),
                    " L1 has no curvature away from 0." if reg.l1 else "",
                ),
            )
        )
        if not self.layer.bias:  # no bias, no bias rows of H v
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


def _check_marks(matrix: sp.Basic, marks) -> None:
    """Every term marked for the Gauss-Newton approximation is a part of the matrix form."""
    for part, _ in marks:
        if not matrix.has(part):
            raise AssertionError(f"the Gauss-Newton mark {part} is not a term of {matrix}")
