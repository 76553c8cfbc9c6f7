"""The names a spec may use, with the facts the spec checks: filled by the modules that define them.

The spec (rank 1) cannot import the calculus or the optimisers, so they come to it: each built-in
activation and loss registers here where :mod:`symgrad.calculus.core` defines it (one call carries
its SymPy expression as an opaque ``definition`` and its facts), and
:func:`symgrad.optimizers.register` registers each optimiser. Importing :mod:`symgrad` (which any
``import symgrad.spec`` does first) imports both, so the registry is full before a spec is
validated; a spec validated against an empty registry raises :class:`RegistryError` rather than
refusing every name.

Adding an activation, a loss or an optimiser is therefore one place: its definition.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

#: The layer keys an activation may take as its parameter (the spec's ``layers[i].alpha``).
PARAMETERS = ("alpha",)


class RegistryError(RuntimeError):
    """An internal error: a name registered twice, a bad fact, or an empty registry."""


@dataclass(frozen=True)
class ActivationFacts:
    """What the spec knows of an activation.

    Attributes:
        name: the name a spec's ``layers[i].activation`` gives.
        parameter: the layer key of its parameter (``alpha``), or None when it takes none.
        default: the parameter's value when a layer gives none (documentation; the definer keeps
            the exact value).
        output_only: allowed on the output layer only (a vector activation).
        min_units: the fewest units a layer with it may have.
        needs_loss: when not empty, an output layer with it needs one of these losses.
        classifier: an output layer with it makes the model a classifier (accuracy in ``score``).
        definition: what the definer attaches (the calculus: its SymPy expression); never read
            by the spec.
    """

    name: str
    parameter: str | None = None
    default: float | None = None
    output_only: bool = False
    min_units: int = 1
    needs_loss: tuple[str, ...] = ()
    classifier: bool = False
    definition: Any = None


@dataclass(frozen=True)
class LossFacts:
    """What the spec knows of a loss.

    Attributes:
        name: the name a spec's ``loss`` gives.
        outputs: when not empty, the built-in output activations the loss needs.
        custom_outputs: whether a custom output activation is accepted as well (its range is the
            user's responsibility).
        output_error: the error when the output activation is not accepted, after the loss's
            name; ``{activation!r}`` is replaced by the output activation.
        classifier: the loss makes the model a classifier (accuracy in ``score``).
        definition: what the definer attaches (the calculus: its expression and title).
    """

    name: str
    outputs: tuple[str, ...] = ()
    custom_outputs: bool = False
    output_error: str = ""
    classifier: bool = False
    definition: Any = None


@dataclass(frozen=True)
class OptimizerEntry:
    """A registered optimiser: its name and its definition (the :class:`Optimizer` object)."""

    name: str
    definition: Any = None


_ACTIVATIONS: dict[str, ActivationFacts] = {}
_LOSSES: dict[str, LossFacts] = {}
_OPTIMIZERS: dict[str, OptimizerEntry] = {}
_TABLES = {"activation": _ACTIVATIONS, "loss": _LOSSES, "optimizer": _OPTIMIZERS}
_FILLED_BY = {
    "activation": "symgrad.calculus",
    "loss": "symgrad.calculus",
    "optimizer": "symgrad.optimizers",
}


def _add(kind: str, entry, replace: bool):
    table = _TABLES[kind]
    if not isinstance(entry.name, str) or not entry.name.isidentifier():
        raise RegistryError(f"a {kind} name must be an identifier, got {entry.name!r}")
    if entry.name in table and not replace:
        raise RegistryError(f"{kind} {entry.name!r} is registered already")
    table[entry.name] = entry
    return entry


def register_activation(name: str, *, replace: bool = False, **facts: Any) -> ActivationFacts:
    """Register activation ``name`` with its facts (see :class:`ActivationFacts`)."""
    entry = ActivationFacts(name, **facts)
    if entry.parameter is not None and entry.parameter not in PARAMETERS:
        raise RegistryError(
            f"activation {name!r}: a layer's parameter is one of {', '.join(PARAMETERS)}, "
            f"not {entry.parameter!r}"
        )
    if entry.min_units < 1:
        raise RegistryError(f"activation {name!r}: min_units must be at least 1")
    return _add("activation", entry, replace)


def register_loss(name: str, *, replace: bool = False, **facts: Any) -> LossFacts:
    """Register loss ``name`` with its facts (see :class:`LossFacts`)."""
    entry = LossFacts(name, **facts)
    if (entry.outputs or entry.custom_outputs) and not entry.output_error:
        raise RegistryError(f"loss {name!r}: a loss that restricts its output needs output_error")
    return _add("loss", entry, replace)


def register_optimizer(
    name: str, definition: Any = None, *, replace: bool = True
) -> OptimizerEntry:
    """Register optimiser ``name`` (what a spec's ``optimizer.name`` selects)."""
    return _add("optimizer", OptimizerEntry(name, definition), replace)


def unregister(kind: str, name: str) -> None:
    """Remove ``name`` from the registry of ``kind`` (``activation``, ``loss``, ``optimizer``)."""
    _TABLES[kind].pop(name, None)


@contextlib.contextmanager
def restored() -> Iterator[None]:
    """Put the registry back as it was on exit (tests register toy entries inside)."""
    saved = {kind: dict(table) for kind, table in _TABLES.items()}
    try:
        yield
    finally:
        for kind, table in _TABLES.items():
            table.clear()
            table.update(saved[kind])


def _filled(kind: str) -> dict:
    table = _TABLES[kind]
    if not table:
        raise RegistryError(
            f"no {kind} is registered: import {_FILLED_BY[kind]} (importing symgrad does) "
            "before validating a spec"
        )
    return table


def activation(name: str) -> ActivationFacts | None:
    """The facts of activation ``name``, or None when it is not registered."""
    return _filled("activation").get(name)


def loss(name: str) -> LossFacts | None:
    """The facts of loss ``name``, or None when it is not registered."""
    return _filled("loss").get(name)


def optimizer(name: str) -> OptimizerEntry | None:
    """The entry of optimiser ``name``, or None when it is not registered."""
    return _filled("optimizer").get(name)


def activations() -> tuple[str, ...]:
    """Registered activation names, in registration order."""
    return tuple(_filled("activation"))


def losses() -> tuple[str, ...]:
    """Registered loss names, in registration order."""
    return tuple(_filled("loss"))


def optimizers() -> tuple[str, ...]:
    """Registered optimiser names, in registration order."""
    return tuple(_filled("optimizer"))


class Names(Sequence):
    """A live, read-only view of the registered names of one kind (a tuple when compared)."""

    def __init__(self, kind: str) -> None:
        self._kind = kind

    def _names(self) -> tuple[str, ...]:
        return tuple(_filled(self._kind))

    def __getitem__(self, index):
        return self._names()[index]

    def __len__(self) -> int:
        return len(self._names())

    def __contains__(self, name: object) -> bool:
        return name in _filled(self._kind)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, (Names, tuple, list)):
            return self._names() == tuple(other)
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self._names())

    def __repr__(self) -> str:
        return repr(self._names())
