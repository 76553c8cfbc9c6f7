"""Optimisers as objects: one module each, registered by name (see :mod:`.base`).

Every module of this package is imported here (in sorted order, so registration is deterministic):
adding an optimiser is adding its module.
"""

import importlib
import pkgutil

from .base import Optimizer, Update, get, names, register

for _module in sorted(m.name for m in pkgutil.iter_modules(__path__)):
    if _module != "base":
        importlib.import_module(f"{__name__}.{_module}")  # registers itself

__all__ = ["Optimizer", "Update", "get", "names", "register"]
