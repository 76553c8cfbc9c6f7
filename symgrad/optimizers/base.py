"""The optimiser interface: each optimiser is one module with its state and its update equations.

An optimiser's update is a list of assignments ``target <- expression`` over scalar SymPy symbols
(one element of the flat parameter vector): the derivation prints them (``symgrad derive``) and the
code generator prints the same expressions into the trainer's training loop. Adding an optimiser is
one new module in this package that calls :func:`register`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import sympy as sp

# Scalar symbols shared by every update rule (one element of the flat vectors).
theta = sp.Symbol("theta", real=True)  # a parameter
g = sp.Symbol("g", real=True)  # its gradient on the mini-batch: (1/m) sum_x dC_x/dtheta + dR/dtheta
eta = sp.Symbol("eta", positive=True)  # the learning rate
t = sp.Symbol("t", integer=True, positive=True)  # the step number, 1, 2, ...


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
        state: state vectors (each the size of the parameter vector, saved in checkpoints), as
            symbols used by ``updates``; they start at zero.
        hyper: hyperparameter symbol -> the ``optimizer`` spec field that gives its value.
        updates: the assignments of one step, in order (the last assigns ``theta``).
        prose: one sentence for the derivation.
        first_order: False for rules that need the Hessian (Newton), which the template lays out
            separately.
    """

    name: str
    title: str
    updates: tuple[Update, ...]
    state: tuple[sp.Symbol, ...] = ()
    hyper: dict[sp.Symbol, str] = field(default_factory=dict)
    prose: str = ""
    first_order: bool = True


_REGISTRY: dict[str, Optimizer] = {}


def register(opt: Optimizer) -> Optimizer:
    """Add ``opt`` to the registry (its ``name`` is what a spec's ``optimizer.name`` selects)."""
    _REGISTRY[opt.name] = opt
    return opt


def get(name: str) -> Optimizer:
    """The registered optimiser ``name``."""
    return _REGISTRY[name]


def names() -> tuple[str, ...]:
    """Registered optimiser names, in registration order."""
    return tuple(_REGISTRY)
