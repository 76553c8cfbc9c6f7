"""Stated limits: the memory a training run needs, and the sizes symgrad accepts.

``training_memory_bytes`` is the formula the README states and ``tests/test_limits.py`` checks
against tracemalloc on a real run.
"""

from __future__ import annotations

import numpy as np

from ..spec import MAX_HESSIAN_PARAMS, MAX_INPUTS, MAX_LAYERS, MAX_UNITS, NEWTON_EXACT_MAX, Spec

__all__ = [
    "MAX_HESSIAN_PARAMS",
    "MAX_INPUTS",
    "MAX_LAYERS",
    "MAX_UNITS",
    "NEWTON_EXACT_MAX",
    "hessian_memory_bytes",
    "training_memory_bytes",
]

#: Parameter-sized vectors per optimiser: its state (velocity, squares, moments).
_STATE_VECTORS = {
    "gd": 0,
    "sgd": 0,
    "momentum": 1,
    "nesterov": 1,
    "adagrad": 1,
    "rmsprop": 1,
    "adam": 2,
    "newton": 0,
}


def _batch_bytes(spec: Spec, m: int, itemsize: int) -> int:
    """Work arrays of one batch size: per layer [a | 1], delta, z and scratch (at most 2)."""
    total = 0
    for i, layer in enumerate(spec.layers):
        u = layer.units
        hidden = i < len(spec.layers) - 1
        # a (with the ones column when it feeds the next layer), delta, and up to
        # two more (m, u) arrays: z when it is kept, and one scratch buffer
        total += m * (u + (1 if hidden else 0)) + m * u + 2 * m * u
    return total * itemsize


def training_memory_bytes(
    spec: Spec, n_samples: int, batch_size: int | None = None, dtype=None, shuffle: bool = True
) -> int:
    """An upper bound on the bytes ``fit`` allocates (besides the caller's X and Y).

    With P parameters, widths u_l, d inputs, K outputs, n samples, batch size m and item size s::

        s * [ (3 + k) P                    # gradient, work vector (not for plain gd/sgd/momentum),
                                           # last good parameters, k optimiser state vectors
            + 2 * sum_l m (4 u_l + 1)      # per batch size (full and last): a, delta, z, scratch
            + 2 * m (d + K) ]              # per batch size: the buffers shuffled rows go to
        + 8 n                              # class labels for the accuracy (classifiers)
        + 2 P^2 s                          # Newton with the exact Hessian (P <= 2,000)

    ``shuffle`` is accepted for symmetry; the gather buffers exist either way.
    """
    s = np.dtype(dtype or spec.dtype).itemsize
    n = int(n_samples)
    m = min(int(batch_size or spec.optimizer.batch_size or n), n)
    d, K, P = spec.inputs, spec.outputs, spec.n_params
    k = _STATE_VECTORS[spec.optimizer.name]
    if spec.optimizer.name in ("gd", "sgd", "momentum") and not (
        spec.regularization.l2 or spec.regularization.l1
    ):
        k -= 1  # no work vector
    sizes = {m, n % m} - {0}
    total = (3 + k) * P * s
    total += sum(_batch_bytes(spec, size, s) + size * (d + K) * s for size in sizes)
    if spec.is_classifier:
        total += 8 * n
    if spec.optimizer.name == "newton" and P <= NEWTON_EXACT_MAX:
        total += 2 * P * P * s  # the Hessian and NumPy's copy in the solve
    return total


def hessian_memory_bytes(spec: Spec, dtype=None) -> int:
    """Bytes of the P x P Hessian (``hessian()`` refuses above ``MAX_HESSIAN_PARAMS``)."""
    s = np.dtype(dtype or spec.dtype).itemsize
    return spec.n_params**2 * s
