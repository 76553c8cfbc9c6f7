"""A dense layer's equations: forward pass, activation derivatives, backpropagation, gradients
(the R-operator rows: :mod:`.rop`).

``z^{(l)} = W^{(l)} a^{(l-1)} + b^{(l)}`` (without ``+ b^{(l)}`` for a layer with
``bias: false``), ``a^{(l)} = f_l(z^{(l)})``. Each method appends the
layer's equations for one part of the derivation; :mod:`.build` calls them in print order. A new
layer type (a skip connection, a merge node) is a new class with the same methods.
"""

from __future__ import annotations

from dataclasses import dataclass

import sympy as sp

from .. import calculus as C
from . import notation as nt
from .ir import Derivation, Equation, LayerCalculus
from .rop import DenseROp
from .rop import mul as _mul
from .units import at, dfdz, fprime, fsecond, readable_at

FORWARD = "Forward pass"
ACTIVATION = "Activation derivatives"
BACKPROP = "Backpropagation"
GRADIENTS = "Gradients"

# The representative chain-rule partials come from sympy.diff of z_j = w_ji a_i + b_j + r_j
# (r_j collects the other inputs of unit j, which do not depend on w_ji, a_i, b_j).
_w, _a, _b, _r = sp.symbols("w_ji a_i b_j r_j", real=True)
_Z = _w * _a + _b + _r
DZ_DA = sp.diff(_Z, _a)  # w_ji
DZ_DW = sp.diff(_Z, _w)  # a_i
DZ_DB = sp.diff(_Z, _b)  # 1


@dataclass(frozen=True)
class Dense(DenseROp):
    """Layer ``layer.index`` of a chain of dense layers (``last`` for the output layer)."""

    layer: LayerCalculus
    last: bool

    @property
    def index(self) -> int:
        return self.layer.index

    @property
    def act(self) -> C.ActivationCalculus:
        return self.layer.activation

    # what the layer reads: the layer below (a skip connection reads more: :mod:`.graph`)
    @property
    def inp(self) -> sp.IndexedBase:
        return nt.a(self.index - 1)

    @property
    def Inp(self) -> sp.MatrixSymbol:
        return nt.A(self.index - 1)

    @property
    def width(self) -> sp.Expr:
        return nt.n(self.index - 1)

    #: what the forward pass's prose calls the layer's input
    below = "the layer below"

    # the layer's weight-shaped matrices (n_l x its fan-in)
    @property
    def Wm(self) -> sp.MatrixSymbol:
        return nt.W(self.index)

    @property
    def GWm(self) -> sp.MatrixSymbol:
        return nt.GW(self.index)

    # -- forward pass ----------------------------------------------------------------------------
    def forward(self, d: Derivation) -> None:
        l, i, j = self.index, nt.i, nt.j
        w, a_prev, b = nt.w(l), self.inp, nt.b(l)
        total = sp.Sum(_mul(w[j, i], a_prev[i]), (i, 1, self.width))
        matrix = self.Inp * self.Wm.T
        if self.layer.bias:
            total, matrix = total + b[j], matrix + nt.ones_m * nt.B(l)
        prose: tuple = (
            f"Layer {l} ({self.layer.fan_in} to {self.layer.units} units): unit j sums its "
            "inputs through the weights ",
            w[j, i],
            f" (from unit i of {self.below}) and adds its bias; the batch form is one matrix "
            "product."
            if self.layer.bias
            else f" (from unit i of {self.below}); the layer has no bias (bias: false). The "
            "batch form is one matrix product.",
        )
        d.add(
            Equation(
                f"forward.{l}", FORWARD, nt.z(l)[j], total, matrix=(nt.Z(l), matrix), prose=prose
            )
        )
        zj = nt.z(l)[j]
        if self.act.vector:
            k = nt.k
            rhs = sp.exp(zj) / sp.Sum(sp.exp(nt.z(l)[k]), (k, 1, nt.n(l)))
            kernel = sp.exp(C.z - C.logsumexp(C.z))
            prose = (
                "The softmax activation, computed stably as ",
                sp.exp(zj - sp.log(sp.Sum(sp.exp(nt.z(l)[k]), (k, 1, nt.n(l))))),
                ".",
            )
        else:
            rhs = at(self.act.f, l, j)
            kernel = self.act.f
            prose = (f"Its activation, {self.act.name}.",)
        d.add(
            Equation(
                f"act.{l}.f",
                FORWARD,
                nt.a(l)[j],
                rhs,
                steps=(nt.f(l)(zj),),
                prose=prose,
                kernel=kernel,
            ),
            **{f"f_{l}": self.act.f},
        )

    # -- activation derivatives ------------------------------------------------------------------
    def activation(self, d: Derivation, first: int | None, users: tuple[int, ...] = ()) -> None:
        """f' and f'' of this layer; an alias to layer ``first`` when it has the same activation.

        ``users`` lists the layers (this one first) that share this activation.
        """
        l, act = self.index, self.act
        d.expressions[f"df_{l}"] = fprime(act)
        d.expressions[f"d2f_{l}"] = fsecond(act)
        if first is not None:
            d.alias(f"act.{l}.df", f"act.{first}.df")
            if not act.vector:
                d.alias(f"act.{l}.d2f", f"act.{first}.d2f")
            return
        j, k = nt.j, nt.k
        if act.vector:
            a, z = nt.a(l), nt.z(l)
            d.add(
                Equation(
                    f"act.{l}.df",
                    ACTIVATION,
                    sp.Derivative(a[k], z[j]),
                    a[k] * (sp.KroneckerDelta(k, j) - a[j]),
                    prose=(
                        "Softmax differentiated by SymPy on a representative pair of units "
                        "(k = j and k other than j), written with the Kronecker delta.",
                    ),
                ),
                softmax_dkk=act.df_out[0, 0],
                softmax_dkm=act.df_out[0, 1],
            )
            return
        named = {f"act_{act.name}_df": act.df, f"act_{act.name}_d2f": act.d2f}
        if act.has_output_form:
            named[f"act_{act.name}_df_out"] = act.df_out
        for order, key, kernel, z_form in (
            (1, "df", fprime(act), act.df_z if act.df_z is not None else act.df),
            (2, "d2f", fsecond(act), act.d2f_z if act.d2f_z is not None else act.d2f),
        ):
            rhs = at(kernel, l, j)
            shown = readable_at(act, z_form, l, j)
            steps = (shown,) if shown != rhs else ()
            if not kernel.has(C.a):
                # no output form: the code's z-form is proved equal to the readable one shown
                rhs, steps = shown, ()
            prose = self._derivative_prose(order, kernel, users or (l,))
            d.add(
                Equation(
                    f"act.{l}.{key}",
                    ACTIVATION,
                    dfdz(l, j, order),
                    rhs,
                    steps=steps,
                    prose=prose,
                    kernel=kernel,
                ),
                **(named if order == 2 else {}),
            )

    def _derivative_prose(self, order: int, kernel: sp.Expr, users: tuple[int, ...]) -> tuple:
        act = self.act
        which = "f'" if order == 1 else "f''"
        layers = ", ".join(str(u) for u in users)
        plural = "s" if len(users) > 1 else ""
        parts: list = [f"{act.name} (layer{plural} {layers}): {which} by sympy.diff"]
        if kernel.has(C.a):
            parts.append(", then in output form (in terms of the activation a only), proved equal")
        elif order == 1 and not act.has_output_form:
            parts.append(f"; no output form ({act.how})")
        if order == 1:
            s = sp.Symbol("sigma")
            parts += [
                ". The form shown in z is the simplest by operation count (SymPy's count_ops) "
                "among the output form, the factored, cancelled and combined forms and the "
                "substitution ",
                sp.Eq(sp.exp(C.z), s / (1 - s), evaluate=False),
                ", each proved equal",
            ]
        parts.append(".")
        if isinstance(act.f, sp.Piecewise):
            parts += [" At z = 0 it takes the value of its piece for ", sp.Le(C.z, 0), "."]
        return tuple(parts)

    # -- backpropagation -------------------------------------------------------------------------
    def backprop(self, d: Derivation, below: LayerCalculus) -> None:
        """The backprop sum into layer ``below`` (= l - 1) and the delta recurrence there."""
        l, lo = self.index, below.index
        i, j = nt.i, nt.j
        w, delta = nt.w(l), nt.delta(l)
        dz_da = DZ_DA.subs(_w, w[j, i])
        summed = sp.Sum(_mul(dz_da, delta[j]), (j, 1, nt.n(l)))
        d.add(
            Equation(
                f"backprop.sum.{lo}",
                BACKPROP,
                sp.Derivative(nt.C_x, nt.a(lo)[i]),
                summed,
                steps=(
                    sp.Sum(_mul(sp.Derivative(nt.z(l)[j], nt.a(lo)[i]), delta[j]), (j, 1, nt.n(l))),
                ),
                matrix=(nt.dCdA(lo), nt.Delta(l) * nt.W(l)),
                prose=(
                    f"Unit i of layer {lo} feeds every unit j of layer {l}, so its error signal "
                    "is the sum over all downstream units (seed 002's sum over both downstream "
                    "nodes); the partial ",
                    sp.Eq(sp.Derivative(nt.z(l)[j], nt.a(lo)[i]), dz_da, evaluate=False),
                    " is from sympy.diff.",
                ),
            )
        )
        act = below.activation
        fp = fprime(act)
        d.add(
            Equation(
                f"backprop.{lo}",
                BACKPROP,
                nt.delta(lo)[i],
                sp.Mul(at(fp, lo, i), summed, evaluate=False) if fp != 1 else summed,
                steps=(_mul(dfdz(lo, i), sp.Derivative(nt.C_x, nt.a(lo)[i])),),
                matrix=(nt.Delta(lo), sp.HadamardProduct(nt.FP(lo), nt.Delta(l) * nt.W(l))),
                prose=(
                    f"The delta recurrence for layer {lo}, with f' "
                    + (
                        "in output form (only the activations are kept)"
                        if act.has_output_form
                        else "in terms of z (no output form, so z is kept)"
                    )
                    + "; in the batch form ",
                    nt.FP(lo),
                    " holds f' at every entry.",
                ),
                kernel=fp,
            )
        )

    # -- gradients -------------------------------------------------------------------------------
    def gradients(self, d: Derivation) -> None:
        l, i, j = self.index, nt.i, nt.j
        reg = d.spec.regularization
        w = nt.w(l)[j, i]
        delta_j = nt.delta(l)[j]
        a_i = DZ_DW.subs(_a, self.inp[i])
        penalty = sp.Integer(0)
        penalty_m = []
        if reg.l2:
            penalty += nt.lambda_2 / nt.N * w
            penalty_m.append(nt.lambda_2 / nt.N * self.Wm)
        if reg.l1:
            penalty += nt.lambda_1 / nt.N * sp.sign(w)
            penalty_m.append(nt.lambda_1 / nt.N * self.Wm.applyfunc(sp.sign))
        data = sp.Sum(_mul(delta_j, a_i), (nt.sample, 1, nt.N)) / nt.N
        chain = sp.Sum(_mul(delta_j, sp.Derivative(nt.z(l)[j], w)), (nt.sample, 1, nt.N)) / nt.N
        steps = ()
        if penalty != 0:
            steps = (chain + sp.Derivative(nt.R, w),)
        else:
            steps = (chain,)
        batch = sp.MatMul(sp.Rational(1, 1) / nt.m, nt.Delta(l).T * self.Inp)
        matrix_rhs = sp.MatAdd(batch, *penalty_m) if penalty_m else batch
        d.add(
            Equation(
                f"grad.W.{l}",
                GRADIENTS,
                sp.Derivative(nt.C, w),
                data + penalty,
                steps=steps,
                matrix=(self.GWm, matrix_rhs),
                prose=(
                    f"Layer {l}'s weight gradient, with ",
                    sp.Eq(sp.Derivative(nt.z(l)[j], w), a_i, evaluate=False),
                    " (sympy.diff)"
                    + (", plus the regulariser's derivative" if penalty != 0 else "")
                    + ". The batch form is the gradient of the batch cost ",
                    nt.C_B,
                    " on m samples: the data term averaged over the batch (1/m), the regulariser "
                    "with its 1/N; with the whole training set as the batch (m = N) it is the "
                    "gradient of C.",
                ),
            )
        )
        d.alias(f"grad.{l}", f"grad.W.{l}")
        if not self.layer.bias:  # no bias, no bias gradient
            return
        d.add(
            Equation(
                f"grad.b.{l}",
                GRADIENTS,
                sp.Derivative(nt.C, nt.b(l)[j]),
                sp.Sum(delta_j * DZ_DB, (nt.sample, 1, nt.N)) / nt.N,
                matrix=(nt.Gb(l), sp.MatMul(1 / nt.m, nt.ones_m.T * nt.Delta(l))),
                prose=(
                    "Its bias gradient: ",
                    sp.Eq(sp.Derivative(nt.z(l)[j], nt.b(l)[j]), DZ_DB, evaluate=False),
                    ", and biases are not regularised (the batch form: of ",
                    nt.C_B,
                    ", as above).",
                ),
            )
        )
