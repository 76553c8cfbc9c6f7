"""The cost, the regulariser and the output layer's equations (delta, curvature, Gauss-Newton S)."""

from __future__ import annotations

import sympy as sp
from sympy.matrices.expressions.diagonal import DiagMatrix

from .. import calculus as C
from . import notation as nt
from .ir import Derivation, Equation
from .units import at, dfdz, fprime

_COST = "Cost"
_REG = "Regulariser"
_DELTA = "Output delta"
_SECOND = "Second order"


def _reg_terms(d: Derivation, value) -> sp.Expr:
    """``value(w, l)`` summed over every weight of every layer (a double sum per layer)."""
    total = sp.Integer(0)
    for layer in d.layers:
        l = layer.index
        total += sp.Sum(value(nt.w(l)[nt.j, nt.i]), (nt.i, 1, d.width_in(l)), (nt.j, 1, nt.n(l)))
    return total


def reg_kernel(d: Derivation) -> sp.Expr:
    """The regulariser of one weight ``w``: ``lambda_2 w^2 / (2N) + lambda_1 |w| / N``."""
    reg = d.spec.regularization
    w = nt.weight
    out = sp.Integer(0)
    if reg.l2:
        out += nt.lambda_2 / (2 * nt.N) * w**2
    if reg.l1:
        out += nt.lambda_1 / nt.N * sp.Abs(w)
    return out


def build_cost(d: Derivation) -> None:
    spec, loss = d.spec, d.loss
    L = d.depth
    reg = spec.regularization
    has_reg = bool(reg.l2 or reg.l1)
    data = sp.Sum(nt.C_x, (nt.sample, 1, nt.N)) / nt.N
    d.add(
        Equation(
            "cost",
            _COST,
            nt.C,
            data + nt.R if has_reg else data,
            prose=(
                f"The cost: the {C.LOSS_TITLES.get(loss.name, f'custom loss {loss.name!r}')} "
                "of each training sample x, averaged over the N samples of the training set",
                " plus the regulariser R on the weights." if has_reg else ".",
            ),
        ),
        loss=loss.ell,
    )
    a_j, y_j = nt.a(L)[nt.j], nt.y[nt.j]
    d.add(
        Equation(
            "cost.sample",
            _COST,
            nt.C_x,
            sp.Sum(at(loss.ell, L, nt.j), (nt.j, 1, nt.n(L))),
            steps=(sp.Sum(nt.ell(a_j, y_j), (nt.j, 1, nt.n(L))),),
            prose=("The loss of one sample: the per-unit loss summed over the output units.",),
            kernel=loss.ell,
        )
    )
    if has_reg:
        w = nt.weight
        value = reg_kernel(d)
        d.add(
            Equation(
                "reg.value",
                _COST,
                nt.R,
                _reg_terms(d, lambda wl: value.subs(w, wl)),
                prose=(
                    "The regulariser penalises the weights only (never the biases), with the "
                    "training-set size N, so its strength does not depend on the batch size.",
                ),
                kernel=value,
            )
        )
    if loss.stable_in_z and loss.rewrites:
        identities = []
        for lhs, rhs in loss.rewrites:
            identities += [sp.Eq(lhs, rhs, evaluate=False), ", "]
        d.add(
            Equation(
                "cost.stable",
                _COST,
                nt.ell(a_j, y_j),
                at(loss.stable, L, nt.j),
                steps=(at(loss.ell, L, nt.j),),
                prose=(
                    "The same loss written on the logits z for numerical stability, using ",
                    *identities[:-1],
                    " (each proved by SymPy).",
                ),
                kernel=loss.stable,
            ),
            stable_loss=loss.stable,
        )


def build_regulariser(d: Derivation) -> None:
    """The regulariser's gradient and Hessian diagonal for one weight."""
    reg = d.spec.regularization
    if not (reg.l2 or reg.l1):
        return
    w = nt.weight
    value = reg_kernel(d)
    grad = sp.Integer(0)
    if reg.l2:
        grad += nt.lambda_2 / nt.N * w
    if reg.l1:
        grad += nt.lambda_1 / nt.N * sp.sign(w)
    d.add(
        Equation(
            "reg.grad",
            _REG,
            sp.Derivative(nt.R, w),
            grad,
            prose=(
                "The regulariser's derivative by one weight w",
                (" (for w other than 0: |w| has no derivative at 0, see the proximal step)")
                if reg.l1
                else "",
                "; biases get none.",
            ),
            kernel=grad,
        )
    )
    if reg.l2:
        hess = sp.diff(value, w, 2).subs(sp.DiracDelta(w), 0)
        d.add(
            Equation(
                "reg.hess",
                _REG,
                sp.Derivative(nt.R, (w, 2)),
                hess,
                prose=(
                    "Its Hessian is diagonal: this on each weight, 0 on each bias (and between "
                    "parameters).",
                ),
                kernel=hess,
            )
        )


def build_output_delta(d: Derivation) -> None:
    loss, out, L = d.loss, d.output, d.depth
    if out.vector:
        _softmax_delta(d)
        return
    j = nt.j
    zj, aj, yj = nt.z(L)[j], nt.a(L)[j], nt.y[j]
    fp = fprime(out)
    chain = sp.Derivative(nt.ell(aj, yj), aj) * dfdz(L, j)
    steps = [sp.Derivative(nt.C_x, zj), chain]
    product = sp.Mul(at(loss.dl_da, L, j), at(fp, L, j), evaluate=False)
    if fp != 1:
        steps.append(product)
    rhs = at(loss.delta, L, j)
    if sp.Mul(*steps[-1].args) == rhs:
        steps.pop()  # the product is already the simplified form
    matrix = (nt.Delta(L), sp.MatAdd(nt.A(L), -nt.Y(L))) if loss.matching else None
    if loss.matching:
        how = "simplified by SymPy: the matching loss, whose fused form is also the stable one."
    elif loss.delta_in_z:
        how = "kept in z (the output activation has no output form)."
    else:
        how = "simplified by SymPy, in the output activations."
    d.add(
        Equation(
            "delta.out",
            _DELTA,
            nt.delta(L)[j],
            rhs,
            steps=tuple(steps),
            matrix=matrix,
            prose=(
                "The output delta of one sample by the chain rule (the loss of unit j depends on ",
                zj,
                " only through ",
                aj,
                "), ",
                how,
            ),
            kernel=loss.delta,
        ),
        delta_out=loss.delta,
    )


def _softmax_delta(d: Derivation) -> None:
    loss, L = d.loss, d.depth
    j, k = nt.j, nt.k
    a, y, z = nt.a(L), nt.y, nt.z(L)
    n_out = nt.n(L)
    dak_dzj = a[k] * (sp.KroneckerDelta(k, j) - a[j])
    dl = at(loss.dl_da, L, k)
    steps = (
        sp.Derivative(nt.C_x, z[j]),
        sp.Sum(sp.Derivative(nt.ell(a[k], y[k]), a[k]) * sp.Derivative(a[k], z[j]), (k, 1, n_out)),
        sp.Sum(sp.Mul(dl, dak_dzj, evaluate=False), (k, 1, n_out)),
        sp.Sum(y[k], (k, 1, n_out)) * a[j] - y[j],
    )
    d.add(
        Equation(
            "delta.out",
            _DELTA,
            nt.delta(L)[j],
            at(loss.delta, L, j),
            steps=steps,
            matrix=(nt.Delta(L), sp.MatAdd(nt.A(L), -nt.Y(L))),
            prose=(
                "The output delta for softmax: every ",
                a[k],
                " depends on every ",
                z[j],
                ", so the chain rule sums over the output units k; targets are one-hot, ",
                sp.Eq(sp.Sum(y[k], (k, 1, n_out)), 1, evaluate=False),
                ", and it fuses to the difference between output and target.",
            ),
            kernel=loss.delta,
        ),
        delta_out=loss.delta,
    )


def build_output_curvature(d: Derivation) -> None:
    """``s = d delta / dz`` (or the softmax Jacobian) and the S of Gauss-Newton."""
    loss, out, L = d.loss, d.output, d.depth
    j, k = nt.j, nt.k
    if out.vector:
        a = nt.a(L)
        av = nt.vec("a", L)
        u, v = loss.jac_outer
        diag, uk, vj = at(loss.jac_diag, L, k), at(u, L, k), at(v, L, j)
        d.add(
            Equation(
                "hess.out",
                _SECOND,
                sp.Derivative(nt.delta(L)[k], nt.z(L)[j]),
                a[k] * (sp.KroneckerDelta(k, j) - a[j]),
                steps=(nt.hd[k] * sp.KroneckerDelta(k, j) + nt.hu[k] * nt.hv[j],),
                prose=(
                    "The Jacobian of the output delta (the softmax Jacobian, as the delta is the "
                    "output minus the target): diagonal plus rank one, ",
                    sp.Eq(
                        nt.Sx(L), sp.MatAdd(DiagMatrix(av), sp.MatMul(-1, av, av.T)), evaluate=False
                    ),
                    ", with the three kernels below.",
                ),
            ),
            s_out=loss.jac_diag,
        )
        for key, lhs, rhs, kernel in (
            ("hess.out.diag", nt.hd[k], diag, loss.jac_diag),
            ("hess.out.u", nt.hu[k], uk, u),
            ("hess.out.v", nt.hv[j], vj, v),
        ):
            d.add(Equation(key, _SECOND, lhs, rhs, kernel=kernel))
        return
    d.add(
        Equation(
            "hess.out",
            _SECOND,
            nt.s(L)[j],
            at(loss.s, L, j),
            steps=(sp.Derivative(nt.delta(L)[j], nt.z(L)[j]),),
            prose=(
                "The curvature of the loss by the output pre-activation (sympy.diff of the fused "
                "delta); for one sample ",
                sp.Eq(nt.Sx(L), DiagMatrix(nt.vec("s", L)), evaluate=False),
                ".",
            ),
            kernel=loss.s,
        ),
        s_out=loss.s,
    )
    gn = gauss_newton_kernel(d)
    aj, yj = nt.a(L)[j], nt.y[j]
    if loss.matching:
        steps = (nt.s(L)[j],)
        prose = ("For the matching loss the Gauss-Newton S is the exact output curvature s.",)
    else:
        steps = (sp.Derivative(nt.ell(aj, yj), (aj, 2)) * dfdz(L, j) ** 2,)
        prose = (
            "For a loss not matched to its output activation, Gauss-Newton keeps the curvature "
            "of the loss in a, ",
            sp.Derivative(nt.ell(aj, yj), (aj, 2)),
            ", on the Jacobian of a, which is ",
            dfdz(L, j),
            " times that of z: its weight on the Jacobian of z is this product (positive "
            "semi-definite whenever the loss is convex in a).",
        )
    d.add(
        Equation(
            "gauss_newton.s",
            _SECOND,
            nt.sG(L)[j],
            at(gn, L, j),
            steps=steps,
            prose=prose,
            kernel=gn,
        )
    )


def gauss_newton_kernel(d: Derivation) -> sp.Expr:
    """The S of G = J^T S J on ``dz/dtheta``: ``s`` when matching, else ``l''(a) f'(z)^2``."""
    loss, out = d.loss, d.output
    if loss.matching:
        return loss.s
    fp = fprime(out)
    d2l = loss.d2l_da2.subs(C.a, out.f) if loss.delta_in_z else loss.d2l_da2
    return d2l * fp**2
