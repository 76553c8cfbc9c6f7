"""Tolerances, sampling limits and helpers shared by the verifier's modules."""

from __future__ import annotations

import re

import numpy as np
import sympy as sp

from ...spec import Spec
from ..evaluate import NotEvaluable
from ..reference import FD_FLOOR

#: Largest accepted error (see symgrad.runtime.verify), by the trainer's dtype.
TOLERANCE = {"float64": 1e-10, "float32": 1e-4}
#: Below this magnitude the error is measured absolutely (scaled by FLOOR); the same floor
#: scales the finite differences' own accuracy (reference.FD_ACCEPT).
FLOOR = FD_FLOOR
#: Points of the free indices evaluated per equation: all of them up to these counts, else a
#: random sample (finite differences cost 8 evaluations per point, nested ones 64).
POINTS = 2048
POINTS_FD = 8
POINTS_FD2 = 16
#: The Hessian and Gauss-Newton matrices are formed up to this many parameters; entries of the
#: Hessian come from it up to HESSIAN_COLUMNS parameters, and from ``hvp`` columns above.
HESSIAN_MAX = 3000
HESSIAN_COLUMNS = 400

#: What evaluating a side may raise: the row then fails with ``not evaluable: ...``.
EVAL_ERRORS = (NotEvaluable, FloatingPointError, ValueError, TypeError, IndexError, KeyError)

#: The index of the flat parameter vector (``theta_flat[p_]``), and every weight in order
#: (``w_flat[p_]``: W_1 row-major, then W_2, ...) for the equations about "a weight" w.
P_INDEX = sp.Symbol("p_", integer=True, positive=True)
W_FLAT = sp.IndexedBase("w_flat")

_NAME = re.compile(r"(.*)_(\d+)")


def split_name(name: str) -> tuple[str, int | None]:
    """``"delta_2"`` -> ``("delta", 2)``; ``("x", None)`` for a name without a layer."""
    mt = _NAME.fullmatch(name)
    if mt is None:
        return name, None
    return mt.group(1), int(mt.group(2))


def random_batch(spec: Spec, m: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Standard normal inputs; targets in the range of the loss (one-hot, 0/1 or normal)."""
    X = rng.standard_normal((m, spec.inputs))
    K = spec.outputs
    if spec.layers[-1].activation == "softmax":
        Y = np.eye(K)[rng.integers(0, K, m)]
    elif spec.loss == "log_loss":
        Y = (rng.random((m, K)) > 0.5).astype(np.float64)
    elif spec.layers[-1].activation == "sigmoid":
        Y = rng.random((m, K))
    else:
        Y = rng.standard_normal((m, K))
    return X, Y


def flat_params(W: list, b: list, bias: list | None = None) -> np.ndarray:
    """``W``, ``b`` lists (index 0 unused) -> the public flat vector (W_1 row-major, b_1, ...);
    ``bias[l]`` false leaves b_l out (a layer with ``bias: false``)."""
    return np.concatenate(
        [
            np.concatenate([W[l].ravel(), b[l] if bias is None or bias[l] else b[l][:0]])
            for l in range(1, len(W))
        ]
    )


def public(trainer, internal: np.ndarray) -> np.ndarray:
    """A vector of the trainer's internal storage order in the public order."""
    import importlib

    order = getattr(importlib.import_module(type(trainer).__module__), "_PUBLIC", None)
    if order is None:
        return np.asarray(internal)
    out = np.empty_like(np.asarray(internal))
    out[order] = internal
    return out
