"""symgrad: SymPy-derived gradients and Hessians, printed as LaTeX and as NumPy trainers."""

__version__ = "0.1.0"

from .codegen import generate_source, load_trainer  # noqa: E402
from .derivation import Derivation, derive  # noqa: E402
from .errors import DataError, ExpressionError, SpecError, SymgradError  # noqa: E402
from .spec import Spec, load_spec  # noqa: E402

__all__ = [
    "DataError",
    "Derivation",
    "ExpressionError",
    "Spec",
    "SpecError",
    "SymgradError",
    "__version__",
    "derive",
    "generate_source",
    "load_trainer",
    "load_spec",
]


def __getattr__(name: str):
    """``symgrad.sklearn`` on first use (scikit-learn itself is imported only when needed)."""
    if name == "sklearn":
        import importlib

        return importlib.import_module(".sklearn", __name__)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
