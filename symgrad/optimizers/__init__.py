"""Optimisers as objects: one module each, registered by name (see :mod:`.base`)."""

from . import gd  # noqa: F401 - registers itself
from .base import Optimizer, Update, get, names, register

__all__ = ["Optimizer", "Update", "get", "names", "register"]
