"""The Derivation: the single intermediate representation (SymPy objects only)."""

from .ir import Derivation, Equation, derive

__all__ = ["Derivation", "Equation", "derive"]
