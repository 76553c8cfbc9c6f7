"""Stated limits: the memory a training run needs, and the sizes symgrad accepts.

``training_memory_bytes`` is the formula the README states and ``tests/test_limits.py`` checks
against tracemalloc on a real run.
"""

from __future__ import annotations

import os
import re

import numpy as np

from .. import optimizers
from ..errors import LimitError
from ..spec import MAX_HESSIAN_PARAMS, MAX_INPUTS, MAX_LAYERS, MAX_UNITS, NEWTON_EXACT_MAX, Spec

__all__ = [
    "DEFAULT_MAX_MEMORY",
    "MAX_HESSIAN_PARAMS",
    "MAX_INPUTS",
    "MAX_LAYERS",
    "MAX_UNITS",
    "MEMORY_ENV",
    "MODEL_BYTES_PER_PARAMETER",
    "NEWTON_EXACT_MAX",
    "check_model_memory",
    "check_training_memory",
    "format_bytes",
    "hessian_memory_bytes",
    "memory_limit_bytes",
    "model_memory_bytes",
    "training_memory_bytes",
]

#: The most memory symgrad lets a model (or a training run) take: 16 GiB, or 80% of the
#: physical memory when that is less. ``SYMGRAD_MAX_MEMORY`` overrides it (``8G``, ``512MiB``,
#: ``2.5GB`` or a number of bytes; K, M, G and T are powers of 1024).
DEFAULT_MAX_MEMORY = 16 * 2**30
MEMORY_ENV = "SYMGRAD_MAX_MEMORY"
#: Bytes per parameter to import a generated module and construct its model: the index and
#: mask vectors of the storage layout (int64/float64), the parameters, and the temporaries of
#: the initialisation (measured: about 38 per parameter in float64).
MODEL_BYTES_PER_PARAMETER = 48

#: A size: a number of bytes, or with a suffix K, M, G or T (powers of 1024; ``GiB``, ``GB``).
_SIZE = re.compile(r"([0-9]+(?:\.[0-9]*)?)\s*([kmgt]?)(?:i?b)?", re.IGNORECASE)


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
            + 2 * m (d + K)                # per batch size: the buffers shuffled rows go to
            + 2 n K                        # the epoch's output rows kept for the metrics
            + 4 c K ]                      # the metrics' work on a chunk of c = min(n, 65,536)
                                           # rows (gathered targets, the loss's temporaries)
        + 8 n                              # class labels for the accuracy (classifiers)
        + 2 P^2 s                          # Newton with the exact Hessian (P <= 2,000)

    ``shuffle`` is accepted for symmetry; the gather buffers exist either way.
    """
    s = np.dtype(dtype or spec.dtype).itemsize
    n = int(n_samples)
    m = min(int(batch_size or spec.optimizer.batch_size or n), n)
    d, K, P = spec.inputs, spec.outputs, spec.n_params
    k = len(optimizers.get(spec.optimizer.name).state)  # its parameter-sized state vectors
    if spec.optimizer.name in ("gd", "sgd", "momentum") and not (
        spec.regularization.l2 or spec.regularization.l1
    ):
        k -= 1  # no work vector
    sizes = {m, n % m} - {0}
    total = (3 + k) * P * s
    total += sum(_batch_bytes(spec, size, s) + size * (d + K) * s for size in sizes)
    total += 2 * n * K * s + 4 * min(n, m * max(1, 65536 // m)) * K * s
    if spec.is_classifier:
        total += 8 * n
    if spec.optimizer.name == "newton" and P <= NEWTON_EXACT_MAX:
        total += 2 * P * P * s  # the Hessian and NumPy's copy in the solve
    return total


def hessian_memory_bytes(spec: Spec, dtype=None) -> int:
    """Bytes of the P x P Hessian (``hessian()`` refuses above ``MAX_HESSIAN_PARAMS``)."""
    s = np.dtype(dtype or spec.dtype).itemsize
    return spec.n_params**2 * s


def format_bytes(n: float) -> str:
    """``488.3 GiB``, ``12.0 MiB``, ``512 bytes``."""
    for unit, size in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{int(n)} bytes"


def _physical_memory() -> int | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, OSError, ValueError):  # pragma: no cover - not POSIX
        return None


def memory_limit_bytes() -> int:
    """The memory limit: ``$SYMGRAD_MAX_MEMORY``, else :data:`DEFAULT_MAX_MEMORY` (see there)."""
    text = os.environ.get(MEMORY_ENV, "").strip()
    if text:
        m = _SIZE.fullmatch(text)
        if m is None:
            raise LimitError(
                f"{MEMORY_ENV}={text!r}: expected a size such as 8G, 512MiB or 2000000000"
            )
        number, prefix = m.groups()
        value = int(float(number) * 1024 ** (" kmgt".index(prefix.lower() or " ")))
        if value <= 0:
            raise LimitError(f"{MEMORY_ENV}={text!r}: expected a positive size")
        return value
    physical = _physical_memory()
    return DEFAULT_MAX_MEMORY if not physical else min(DEFAULT_MAX_MEMORY, int(0.8 * physical))


def model_memory_bytes(spec: Spec, dtype=None) -> int:
    """Bytes to import the generated module of ``spec`` and construct its model (an estimate)."""
    s = np.dtype(dtype or spec.dtype).itemsize
    return spec.n_params * (MODEL_BYTES_PER_PARAMETER + max(0, s - 8))


def _refuse(needed: int, what: str) -> None:
    limit = memory_limit_bytes()
    if needed > limit:
        raise LimitError(
            f"{what} needs about {format_bytes(needed)}, more than the memory limit of "
            f"{format_bytes(limit)} (set {MEMORY_ENV}, such as {MEMORY_ENV}=64G, to allow more)"
        )


def check_model_memory(spec: Spec, dtype=None) -> None:
    """Refuse (:class:`~symgrad.errors.LimitError`) a model whose parameters do not fit."""
    _refuse(
        model_memory_bytes(spec, dtype),
        f"the model {spec.name!r} ({spec.n_params:,} parameters)",
    )


def check_training_memory(
    spec: Spec, n_samples: int, batch_size: int | None = None, dtype=None
) -> None:
    """Refuse a training run that would need more than the limit (model and work arrays)."""
    if n_samples <= 0:
        return
    needed = model_memory_bytes(spec, dtype) + training_memory_bytes(
        spec, n_samples, batch_size, dtype
    )
    _refuse(needed, f"training {spec.name!r} on {n_samples:,} samples")
