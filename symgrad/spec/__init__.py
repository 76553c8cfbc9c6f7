"""The model spec: plain validated data read from ``net.yaml`` (knows nothing about SymPy)."""

from . import registry
from .model import (
    BUILTIN_ACTIVATIONS,
    BUILTIN_LOSSES,
    MAX_HESSIAN_PARAMS,
    MAX_INPUTS,
    MAX_LAYERS,
    MAX_NAME_LENGTH,
    MAX_SPEC_BYTES,
    MAX_UNITS,
    NEWTON_EXACT_MAX,
    Layer,
    Optimizer,
    Regularization,
    Spec,
    load_spec,
    parse_yaml,
    spec_from_dict,
)

__all__ = [
    "BUILTIN_ACTIVATIONS",
    "BUILTIN_LOSSES",
    "MAX_HESSIAN_PARAMS",
    "MAX_INPUTS",
    "MAX_LAYERS",
    "MAX_NAME_LENGTH",
    "MAX_SPEC_BYTES",
    "MAX_UNITS",
    "NEWTON_EXACT_MAX",
    "Layer",
    "Optimizer",
    "Regularization",
    "Spec",
    "load_spec",
    "parse_yaml",
    "registry",
    "spec_from_dict",
]
