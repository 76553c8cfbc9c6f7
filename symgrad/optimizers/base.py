"""The optimiser interface: each optimiser is one module with its state and its update equations.

An optimiser's update is a list of assignments ``target <- expression`` over scalar SymPy symbols
(one element of the flat parameter vector), applied in order: the derivation prints them
(``symgrad derive``) and the code generator prints the same expressions into the trainer's
training loop. Adding an optimiser is one new module in this package that calls :func:`register`
(the package imports every module in it; the spec accepts every registered name).

The gradient ``g`` is that of the smooth part of the cost on the mini-batch,
``(1/m) sum_x dC_x/dtheta + (lambda_2/N) w``. An L1 penalty is not in ``g``: after the update,
each weight takes a proximal (soft-threshold) step ``w <- sign(w) max(|w| - s lambda_1/N, 0)``
with the optimiser's per-coordinate step size ``s = step_size``, and ``after_prox`` corrects the
state for what the threshold changed (``u`` is the parameter before it). A weight at zero then
stays there while ``|g| < lambda_1/N``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import sympy as sp

from ..spec import registry

# Scalar symbols shared by every update rule (one element of the flat vectors).
theta = sp.Symbol("theta", real=True)  # a parameter
g = sp.Symbol("g", real=True)  # its gradient on the mini-batch: (1/m) sum_x dC_x/dtheta + dR/dtheta
eta = sp.Symbol("eta", positive=True)  # the learning rate
t = sp.Symbol("t", integer=True, positive=True)  # the step number, 1, 2, ...
u = sp.Symbol("u", real=True)  # the parameter after the update, before the L1 threshold


@dataclass(frozen=True)
class Update:
    """One assignment ``target <- value`` of an update rule."""

    target: sp.Symbol
    value: sp.Expr


@dataclass(frozen=True)
class Optimizer:
    """An update rule.

    Attributes:
        name: the spec's ``optimizer.name``.
        title: how the derivation and the generated docstring name it.
        updates: the assignments of one step, in order (the last assigns ``theta``).
        state: state vectors (each the size of the parameter vector, saved in checkpoints), as
            symbols used by ``updates``; they start at zero.
        keys: state symbol -> its name in the trainer's state and saved files (``opt_<key>``);
            the symbol's name when absent.
        hyper: hyperparameter symbol -> the ``optimizer`` spec field that gives its value.
        step_size: the per-coordinate step size of the update (what multiplies the gradient
            estimate), over the state after ``updates``: the L1 proximal step thresholds at
            ``step_size * lambda_1 / N``.
        after_prox: assignments after the L1 threshold (``u`` is theta before it), e.g. setting
            a velocity to the step actually taken.
        prose: one sentence for the derivation.
        first_order: False for rules that need the Hessian (Newton), which the trainer lays out
            separately.
    """

    name: str
    title: str
    updates: tuple[Update, ...]
    state: tuple[sp.Symbol, ...] = ()
    keys: dict[sp.Symbol, str] = field(default_factory=dict)
    hyper: dict[sp.Symbol, str] = field(default_factory=dict)
    step_size: sp.Expr = eta
    after_prox: tuple[Update, ...] = ()
    prose: str = ""
    first_order: bool = True

    def key(self, sym: sp.Symbol) -> str:
        """The storage name of state vector ``sym``."""
        return self.keys.get(sym, sym.name)

    @property
    def counts_steps(self) -> bool:
        """Whether the update reads the step number ``t`` (a counter saved with the state)."""
        return any(t in u.value.free_symbols for u in self.updates)


def register(opt: Optimizer) -> Optimizer:
    """Add ``opt`` to the registry (:mod:`symgrad.spec.registry`): its ``name`` is then what a
    spec's ``optimizer.name`` may select. Registering a name again replaces it."""
    registry.register_optimizer(opt.name, opt)
    return opt


def get(name: str) -> Optimizer:
    """The registered optimiser ``name`` (KeyError when there is none)."""
    entry = registry.optimizer(name)
    if entry is None:
        raise KeyError(name)
    return entry.definition


def names() -> tuple[str, ...]:
    """Registered optimiser names, in registration order."""
    return registry.optimizers()
