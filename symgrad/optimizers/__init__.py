"""Optimisers as objects: one module each, registered by name (see :mod:`.base`)."""

from . import adagrad, adam, gd, momentum, nesterov, newton, rmsprop, sgd  # noqa: F401 - register
from .base import Optimizer, Update, get, names, register

__all__ = ["Optimizer", "Update", "get", "names", "register"]
