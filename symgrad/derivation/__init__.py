"""The Derivation: the single intermediate representation (SymPy objects only)."""

from . import notation
from .build import derive
from .ir import Derivation, Equation, LayerCalculus

__all__ = ["Derivation", "Equation", "LayerCalculus", "derive", "notation"]
