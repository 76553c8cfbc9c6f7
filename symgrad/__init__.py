"""symgrad: SymPy-derived gradients and Hessians, printed as LaTeX and as NumPy trainers.

The pipeline, one package per stage: ``spec`` (validated data) -> ``calculus`` (SymPy) ->
``derivation`` (the IR) -> ``printers`` (LaTeX, text, code) -> ``codegen`` (templates) ->
``runtime`` (loader, checks, adapters); ``data`` reads training data; ``cli`` sits on top.

``symgrad.derive`` and ``symgrad.generate_source`` are the bounded entry points of
:mod:`symgrad.runtime.bounded`: one time budget and a memory limit from any thread (the stage
functions ``symgrad.derivation.derive`` and ``symgrad.codegen.generate_source`` have none).
"""

from ._version import __version__
from .derivation import Derivation
from .errors import DataError, ExpressionError, SpecError, SymgradError
from .printers import jupyter as _jupyter
from .runtime.bounded import derive, generate_source
from .runtime.loader import load_trainer
from .spec import Spec, load_spec

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

_jupyter.install()  # Derivation renders itself in Jupyter (the IR imports no printer)


def __getattr__(name: str):
    """``symgrad.sklearn`` on first use (scikit-learn itself is imported only when needed)."""
    if name == "sklearn":
        import importlib

        return importlib.import_module(".sklearn", __name__)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
