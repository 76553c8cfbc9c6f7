"""The training step: the regulariser's gradient, the optimiser's update, the L1 proximal step.

All three are SymPy assignments (the optimiser object's ``updates``, the Derivation's ``reg.grad``
and ``reg.prox`` kernels) printed in place over the flat parameter vector by one
:class:`~symgrad.printers.numpy.InplaceEmitter`; nothing here knows an optimiser by name.

Conventions: g is the gradient of the smooth part of the cost on the mini-batch,
``(1/m) sum_x dC_x/dtheta + (lambda_2/N) w`` with N the training set's size. When the update reads
g only through ``eta g`` (gd, sgd, momentum, Nesterov) eta is folded into the output delta's
scale, so the backward pass yields ``eta g`` directly. With an L1 penalty each step ends with the
soft threshold ``w <- sign(w) max(|w| - s lambda_1/N, 0)``, s the optimiser's per-coordinate
``step_size``, then the optimiser's ``after_prox`` corrections.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import sympy as sp

from ..optimizers.base import Optimizer, Update, eta, g, t, theta, u
from ..printers.inplace import InplaceEmitter
from ..printers.numpy import NumPyPrinter
from . import kernels
from .cite import Citations
from .regulariser import smooth_gradient

#: the step's symbols as the runner names them (state vectors are ``opt_<key>``)
NAMES = {
    "theta": "store",
    "g": "grad",
    "eta": "lr",
    "t": "t",
    "u": "before",
    "lambda_2": "l2",
    "lambda_1": "l1",
    "N": "n",
    "p": "p",
}
#: constant within one runner (its cache key holds the learning rate, l2, l1 and n)
INVARIANT = ("eta", "lambda_2", "lambda_1", "N")


@dataclass
class Step:
    """The printed training step of one optimiser."""

    name: str
    title: str
    fold: bool = False
    blocks: list[tuple[str, list[str]]] = field(default_factory=list)
    hoisted: list[tuple[str, str]] = field(default_factory=list)
    state: list[tuple[str, str]] = field(default_factory=list)  # (local name, key)
    counts_steps: bool = False
    work: list[str] = field(default_factory=list)
    scratch: list[str] = field(default_factory=list)  # the runner's vectors (P,), by name
    keeps_before: bool = False  # the L1 step's after_prox reads theta before the threshold
    l2: bool = False
    l1: bool = False

    @property
    def state_keys(self) -> tuple[str, ...]:
        return tuple(key for _, key in self.state)

    @property
    def scratch_keys(self) -> tuple[str, ...]:
        return tuple(self.scratch)


def _hyper_values(opt: Optimizer, settings) -> dict[sp.Symbol, sp.Rational]:
    """Hyperparameters as exact decimals (1 - 0.9 prints 0.1, not 0.09999999999999998)."""
    hyper = opt.hyper.items()
    return {sym: sp.Rational(repr(float(getattr(settings, field)))) for sym, field in hyper}


def step_code(d, opt: Optimizer, printer: type[NumPyPrinter], cite: Citations) -> Step:
    spec = d.spec
    step = Step(opt.name, opt.title)
    values = _hyper_values(opt, spec.optimizer)
    names = dict(NAMES)
    arrays = {"theta", "g", "u", "lambda_2", "lambda_1", "p"}
    for sym in opt.state:
        names[sym.name] = f"opt_{opt.key(sym)}"
        arrays.add(sym.name)
        step.state.append((names[sym.name], opt.key(sym)))
    em = InplaceEmitter(names, arrays, lambda k: f"work_{k}", invariant=INVARIANT, printer=printer)
    updates = [Update(up.target, up.value.subs(values)) for up in opt.updates]
    step.fold = opt.first_order and all(
        eta not in up.value.subs(g, g / eta).free_symbols for up in updates
    )
    if step.fold:
        updates = [Update(up.target, up.value.subs(g, g / eta)) for up in updates]
    reg_grad = smooth_gradient(d).subs(kernels.w, theta)
    if reg_grad != 0 and opt.first_order:  # Newton's gradient holds it already
        step.l2 = True
        if step.fold:
            reg_grad = eta * reg_grad
        lines = em.assign(g, g + reg_grad)
        step.blocks.append((f"{cite('reg.grad', 'cost')} the regulariser's gradient", lines))
    lines = []
    for up in updates:
        lines += em.assign(up.target, up.value)
    keys = [f"opt.{opt.name}.{up.target.name}" for up in updates] if opt.first_order else ["newton"]
    first, last = cite.maybe(keys[0]), cite.maybe(keys[-1])
    cited = first if first == last else f"{first.strip()}-{last}"
    step.blocks.append((f"{cited}{opt.title}", lines))
    step.counts_steps = any(t in up.value.free_symbols for up in updates)
    prox = kernels.kernel(d, "reg.prox")
    if prox is not None and prox != u:
        # the threshold is the optimiser's step size times lambda_1/N (in the kernel already)
        step.l1 = True
        lines = []
        if opt.after_prox:
            step.keeps_before = True
            lines += em.assign(u, theta)
        lines += em.assign(theta, prox.subs(values).subs(u, theta))
        step.blocks.append((f"{cite('reg.prox', 'cost')} L1: the weights' soft threshold", lines))
        for up in opt.after_prox:
            cited = cite.maybe(f"opt.{opt.name}.{up.target.name}.prox")
            lines = em.assign(up.target, up.value.subs(values))
            step.blocks.append((f"{cited}after the threshold", lines))
    step.hoisted = em.hoisted
    step.work = [f"work_{k}" for k in range(em.scratch_used)]
    step.scratch = (["grad"] if opt.first_order else []) + step.work
    step.scratch += ["before"] if step.keeps_before else []
    return step
