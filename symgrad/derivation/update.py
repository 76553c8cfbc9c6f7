"""The chosen optimiser's step, from its module in :mod:`symgrad.optimizers` (relation ``<-``)."""

from __future__ import annotations

import sympy as sp

from .. import optimizers
from . import notation as nt
from .ir import Derivation, Equation
from .newton import BUILDERS, build_newton

UPDATE = "Update"


def build_update(d: Derivation) -> None:
    """The batch gradient g, the optimiser's assignments, the L1 proximal step."""
    spec = d.spec
    name = spec.optimizer.name
    reg = spec.regularization
    try:
        opt = optimizers.get(name)
    except KeyError:
        opt = None
    size = spec.optimizer.batch_size
    batch = (
        "the whole training set (m = N)" if size is None else f"mini-batches of m = {size} samples"
    )
    data = sp.MatMul(1 / nt.m, nt.SampleSum(nt.grad_Cx))
    g_rhs = sp.MatAdd(data, sp.MatMul(nt.lambda_2 / nt.N, nt.I_w, nt.theta_v)) if reg.l2 else data
    d.add(
        Equation(
            "opt.grad",
            UPDATE,
            nt.g_v,
            g_rhs,
            prose=(
                f"Each step uses the gradient g of the batch cost on {batch}, over the flat "
                "parameter vector ",
                nt.theta_v,
                " (every weight and bias): the data term averaged over the m samples x of the "
                "batch",
                *(
                    (
                        ", plus the L2 term on the weights only (",
                        nt.I_w,
                        ": 1 on each weight, 0 on each bias)",
                    )
                    if reg.l2
                    else ()
                ),
                ". g is the gradient of the smooth part of the cost: "
                + (
                    "the L1 term is not in g, it is applied by the proximal step below."
                    if reg.l1
                    else "there is no L1 term."
                ),
                *(
                    (
                        " In the update rules below, ",
                        nt.g,
                        " and ",
                        nt.theta,
                        " stand for one entry of these vectors.",
                    )
                    if opt is not None and opt.first_order
                    else ()
                ),
            ),
        )
    )
    if name == "newton" or (opt is not None and not opt.first_order):
        BUILDERS.get(name, build_newton)(d, UPDATE)
    elif opt is None:
        d.add(
            Equation(
                f"opt.{name}",
                UPDATE,
                nt.theta,
                nt.theta - nt.eta * nt.g,
                relation="<-",
                prose=(f"optimiser {name!r} has no module in symgrad.optimizers yet.",),
            )
        )
    else:
        _first_order(d, opt)
    if reg.l1:
        _prox(d, opt)


def _first_order(d: Derivation, opt: optimizers.Optimizer) -> None:
    title = opt.title[:1].upper() + opt.title[1:]
    for n, upd in enumerate(opt.updates):
        prose: tuple = (f"{title}: {opt.prose}",) if n == 0 and opt.prose else ()
        if n == 0 and not opt.prose:
            prose = (f"{title}.",)
        d.add(
            Equation(
                f"opt.{opt.name}.{upd.target.name}",
                UPDATE,
                upd.target,
                upd.value,
                relation="<-",
                prose=prose,
                kernel=upd.value,
            )
        )
    reg = d.spec.regularization
    if reg.l2 and opt.name in ("gd", "sgd"):
        w = nt.weight
        data = sp.Sum(sp.Derivative(nt.C_x, w), (nt.sample, 1, nt.m))
        d.add(
            Equation(
                "opt.weight_decay",
                UPDATE,
                w,
                sp.Mul(1 - nt.eta * nt.lambda_2 / nt.N, w, evaluate=False) - nt.eta / nt.m * data,
                relation="<-",
                prose=(
                    "For a weight the same step reads, with the L2 term written out (seed 001's "
                    "source), as weight decay by the training-set size N:",
                ),
            )
        )


def _prox(d: Derivation, opt: optimizers.Optimizer | None) -> None:
    u, w = nt.u, nt.weight
    step = opt.step_size if opt is not None and opt.first_order else nt.eta
    kernel = sp.sign(u) * sp.Max(sp.Abs(u) - step * nt.lambda_1 / nt.N, 0)
    d.add(
        Equation(
            "reg.prox",
            UPDATE,
            w,
            kernel,
            relation="<-",
            prose=(
                "L1 by a proximal (soft-threshold) step after each update, on weights only: u is "
                "the weight after the step without the L1 term",
                (", and the threshold uses the optimiser's per-coordinate step size")
                if step != nt.eta
                else "",
                ". A weight at 0 stays at 0 while the data gradient is smaller than ",
                nt.lambda_1 / nt.N,
                ", where the subgradient sign(0) = 0 would push it off.",
            ),
            kernel=kernel,
        )
    )
    if opt is not None:
        for upd in opt.after_prox:
            d.add(
                Equation(
                    f"opt.{opt.name}.{upd.target.name}.prox",
                    UPDATE,
                    upd.target,
                    upd.value,
                    relation="<-",
                    kernel=upd.value,
                )
            )
