"""The regulariser's code: its value, gradient and Hessian diagonal on the weights (never biases).

``R = lambda_2/(2N) sum w^2 + lambda_1/N sum |w|`` with N the number of samples the method is
given (``loss``, ``gradients``, ``hessian``) or the training set's size (``fit``). Each piece is
the Derivation's kernel of one weight, printed over the vector of all weights.
"""

from __future__ import annotations

from dataclasses import dataclass

import sympy as sp

from .. import optimizers
from ..derivation import notation as nt
from ..printers.numpy import NumPyPrinter
from . import kernels
from .cite import Citations

#: how the regulariser's symbols are named in the trainer's methods
NAMES = {"w": "w", "lambda_2": "self.l2", "lambda_1": "self.l1", "N": "n"}


@dataclass
class Regulariser:
    """Printed kernels; an empty string where the kernel is zero for this spec."""

    value: str = ""
    grad: str = ""
    hess: str = ""
    #: the value with lambda_1 read from ``l1`` (``_regulariser``'s argument)
    value_l1: str = ""
    #: the L1 soft threshold (``reg.prox``) of the weights ``u`` with the step size ``step``
    prox: str = ""
    eq_value: str = ""
    eq_grad: str = ""
    eq_hess: str = ""
    eq_prox: str = ""
    #: ", l1" when the gradient reads lambda_1: ``_gradient`` takes it as an argument, so Newton's
    #: step can leave the L1 term to the proximal step
    l1_arg: str = ""
    hess_reads_w: bool = False

    @property
    def any(self) -> bool:
        return bool(self.value)

    @property
    def grad_args(self) -> str:
        """The regulariser's parameters of ``_gradient``: N, and lambda_1 where it is read."""
        return (", n" + self.l1_arg) if self.grad else ""

    def call(self, n: str, l1: str) -> str:
        """The arguments passing ``n`` and ``l1`` to ``_gradient``."""
        return (f", {n}" + (f", {l1}" if self.l1_arg else "")) if self.grad else ""


def regulariser_code(d, printer: type[NumPyPrinter], cite: Citations) -> Regulariser:
    p = printer(NAMES)
    reg = Regulariser()
    value, grad, hess = (kernels.kernel(d, f"reg.{k}") for k in ("value", "grad", "hess"))
    if value is not None and value != 0:
        reg.value = p.expression(value)
        reg.value_l1 = printer({**NAMES, "lambda_1": "l1"}).expression(value)
        reg.eq_value = cite("reg.value", "cost")
    if grad is not None and grad != 0:
        reg.grad = printer({**NAMES, "lambda_1": "l1"}).expression(grad)
        reg.l1_arg = ", l1" if kernels.lambda_1 in grad.free_symbols else ""
        reg.eq_grad = cite("reg.grad", "cost")
    if hess is not None and hess != 0:
        # a constant diagonal (L2) is printed once and broadcast over the weights
        reg.hess = printer({**NAMES, "w": "w[_WEIGHTS]"}).expression(hess)
        reg.hess_reads_w = kernels.w in hess.free_symbols
        reg.eq_hess = cite("reg.hess", "cost")
    prox = kernels.kernel(d, "reg.prox")
    if prox is not None and prox != kernels.u:
        names = {**NAMES, "u": "u", "step": "step", "lambda_1": "l1"}
        reg.prox = printer(names).expression(prox_by_step(d, prox))
        reg.eq_prox = cite("reg.prox")
    return reg


#: the step size of :func:`prox_by_step`'s threshold
STEP = sp.Symbol("step", positive=True)


def prox_by_step(d, prox: sp.Expr) -> sp.Expr:
    """``reg.prox``'s soft threshold with the optimiser's step size (eta, or its per-coordinate
    step size) replaced by the symbol ``step``: the threshold any full-batch step takes (a
    cluster's gd, :mod:`symgrad.runtime.cluster`)."""
    try:
        opt = optimizers.get(d.spec.optimizer.name)
    except KeyError:
        opt = None
    size = opt.step_size if opt is not None and opt.first_order else nt.eta
    out = prox.subs(size, STEP)
    if out.free_symbols - {kernels.u, STEP, kernels.lambda_1, kernels.N}:
        raise ValueError(f"reg.prox: {prox} is not a soft threshold of u by the step size {size}")
    return out


def smooth_gradient(d) -> sp.Expr:
    """The gradient of the regulariser without its L1 term (the L1 term is a proximal step)."""
    return kernels.zero_if_none(kernels.kernel(d, "reg.grad")).subs(kernels.lambda_1, 0)
