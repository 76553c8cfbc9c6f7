"""The Derivation: the single intermediate representation (SymPy objects only)."""

from . import notation
from .ir import Derivation, Equation, LayerCalculus, derive

__all__ = ["Derivation", "Equation", "LayerCalculus", "derive", "notation"]
