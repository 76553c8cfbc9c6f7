"""What every printer of a Derivation shares: display names, the title, the document's parts.

The display names come from :data:`symgrad.derivation.notation.DISPLAY` (name -> LaTeX,
unicode); a printer asks :func:`latex_name` / :func:`unicode_name` for any SymPy object that has
a name (a ``Symbol``, the label of an ``IndexedBase``, a ``MatrixSymbol``, an undefined
function). No calculus here.
"""

from __future__ import annotations

from collections.abc import Iterator

import sympy as sp

from ..derivation import Derivation, Equation
from ..derivation import notation as nt

#: unicode subscripts of the index letters that have one
SUBSCRIPT = {
    "i": "ᵢ",
    "j": "ⱼ",
    "k": "ₖ",
    "p": "ₚ",
    "r": "ᵣ",
    "x": "ₓ",
    "m": "ₘ",
    "n": "ₙ",
    "0": "₀",
    "1": "₁",
    "2": "₂",
    "3": "₃",
    "4": "₄",
    "5": "₅",
    "6": "₆",
    "7": "₇",
    "8": "₈",
    "9": "₉",
}


def name_of(obj) -> str | None:
    """The SymPy name of a named object (symbol, indexed base, matrix symbol, function)."""
    if isinstance(obj, sp.IndexedBase):
        return obj.label.name
    if isinstance(obj, (sp.Symbol, sp.MatrixSymbol)):
        return obj.name
    if isinstance(obj, sp.core.function.AppliedUndef):
        return obj.func.__name__
    if isinstance(obj, sp.core.function.UndefinedFunction):
        return obj.__name__
    return None


def latex_name(obj) -> str | None:
    """The LaTeX display of ``obj`` from the notation table, or None."""
    name = name_of(obj)
    shown = nt.display(name) if name is not None else None
    return shown[0] if shown else None


def unicode_name(obj) -> str | None:
    """The unicode display of ``obj`` from the notation table, or None."""
    name = name_of(obj)
    shown = nt.display(name) if name is not None else None
    return shown[1] if shown else None


def title(d: Derivation) -> str:
    spec = d.spec
    sizes = " - ".join(str(s) for s in spec.sizes)
    acts = ", ".join(layer.activation for layer in spec.layers)
    return (
        f"Derivation for {spec.name}: layers {sizes}, activations {acts}, loss {spec.loss}, "
        f"optimiser {spec.optimizer.name}"
    )


def heading(d: Derivation) -> str:
    return f"Derivation for {d.spec.name}"


def summary(d: Derivation) -> str:
    spec = d.spec
    sizes = " - ".join(str(s) for s in spec.sizes)
    acts = ", ".join(layer.activation for layer in spec.layers)
    return f"Layers {sizes}; activations {acts}; loss {spec.loss}; optimiser {spec.optimizer.name}."


NOTATION = "Notation"
SEED_HEADER = ("source", "symbol", "meaning", "symgrad")
SEED_INTRO = "The seed articles' symbols in this notation:"


def sections(d: Derivation) -> Iterator[tuple[str, list[tuple[int | str, Equation]]]]:
    """``(section, [(number, equation), ...])`` in print order (a section may recur); the
    numbers are the derivation's (``d.eq``)."""
    current: str | None = None
    group: list[tuple[int | str, Equation]] = []
    for eq in d.equations:
        number = d.eq(eq.key)
        if eq.section != current:
            if group:
                yield current, group  # type: ignore[misc]
            current, group = eq.section, []
        group.append((number, eq))
    if group:
        yield current, group  # type: ignore[misc]


def is_sample_sum(limit: tuple) -> bool:
    """True for the limit of a sum over the training samples (printed as a sum over x)."""
    return limit[0] == nt.sample


def unevaluated(expr) -> bool:
    """True for a product built with ``evaluate=False`` (its factors print in the given order)."""
    return isinstance(expr, sp.Mul) and tuple(expr.args) != tuple(sp.Mul(*expr.args).args)


def negative_term(term) -> bool:
    """Whether a term of a matrix sum carries a minus sign (``-eta p``, ``-Y``)."""
    if isinstance(term, sp.MatMul):
        coeff = sp.Mul(*[f for f in term.args if not getattr(f, "is_Matrix", False)])
        return coeff.could_extract_minus_sign()
    return False


def needs_parens(factor) -> bool:
    """Whether a factor of a product written in order needs parentheses."""
    if isinstance(factor, (sp.Add, sp.MatAdd)):
        return True
    if factor.is_Number:
        return bool(factor < 0)
    return isinstance(factor, sp.Mul) and factor.could_extract_minus_sign()


def _term_rank(term) -> int:
    if getattr(term, "could_extract_minus_sign", None) and term.could_extract_minus_sign():
        return 3  # subtracted terms last: theta - eta g, 1 - a
    if getattr(term, "has", None) and term.has(sp.Sum):
        return 0  # sum_i w_ji a_i + b_j
    if isinstance(term, (sp.Symbol, sp.Indexed, sp.core.function.AppliedUndef)):
        return 1  # a - y, f(z) + ...
    return 2


def ordered_terms(expr, terms: list) -> list:
    """The terms of sum ``expr`` in print order.

    Those holding a ``Sum`` come first (``sum_i w_ji a_i + b_j``), then bare symbols
    (``a - y``), then the other added terms in SymPy's order, then the subtracted ones
    (``theta - eta g``, ``1 - a``).
    """
    return sorted(terms, key=_term_rank)
