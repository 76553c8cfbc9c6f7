"""What a loader hands back (:class:`Raw`), the checks every source shares, and the Dataset."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import DataError
from .labels import encode_array

__all__ = ["Dataset", "Raw", "finish", "first_non_finite", "from_arrays"]


@dataclass
class Dataset:
    """Samples ready for training.

    ``X`` is ``(samples, inputs)`` and ``Y`` is ``(samples, outputs)``, both of the requested
    dtype.  ``classes`` lists the class labels in one-hot column order when labels were
    encoded (for a single 0/1 output, ``classes[1]`` is the label encoded as 1); ``labels``
    then holds each sample's class index into ``classes`` as a 1-D int64 array.
    """

    X: np.ndarray
    Y: np.ndarray
    classes: list | None
    feature_names: list[str]
    target_names: list[str]
    labels: np.ndarray | None = None


@dataclass
class Raw:
    """What a format loader hands back before the common checks and the dtype cast."""

    where: str
    X: np.ndarray
    Y: np.ndarray
    classes: list | None
    feature_names: list[str]
    target_names: list[str]
    labels: np.ndarray | None = None


def first_non_finite(arr: np.ndarray) -> tuple[int, ...] | None:
    """Index of the first NaN or infinity in a float array, or None."""
    if arr.dtype.kind not in "fc":
        return None
    finite = np.isfinite(arr)
    if finite.all():
        return None
    return tuple(int(i) for i in np.argwhere(~finite)[0])


def from_arrays(
    where: str,
    X: np.ndarray,
    Y: np.ndarray,
    *,
    names: tuple[str, str],
    n_outputs: int,
    classes: list | None,
    limit: int | None,
) -> Raw:
    """Check an ``(X, Y)`` pair of arrays (``.npz``, pickle) and encode 1-D labels ``Y``.

    ``names`` says how messages call the two arrays (``key 'X'`` / ``X``).
    """
    x_name, y_name = names
    if X.ndim != 2:
        raise DataError(f"{where}: {x_name} must be 2-D (samples, inputs), found shape {X.shape}")
    if Y.ndim not in (1, 2):
        raise DataError(
            f"{where}: {y_name} must be 2-D (samples, outputs) or 1-D labels, found shape {Y.shape}"
        )
    if X.shape[0] != Y.shape[0]:
        raise DataError(f"{where}: {x_name} has {X.shape[0]} samples but {y_name} has {Y.shape[0]}")
    if limit is not None:
        X, Y = X[:limit], Y[:limit]
    features = [f"x{i}" for i in range(X.shape[1])]
    if Y.ndim == 2:
        if Y.shape[1] != n_outputs:
            raise DataError(
                f"{where}: {y_name} has {Y.shape[1]} columns but the spec has {n_outputs} outputs"
            )
        return Raw(where, X, Y, None, features, [f"y{i}" for i in range(Y.shape[1])])
    enc = encode_array(Y, n_outputs, classes, f"{where}: {y_name}")
    return Raw(where, X, enc.Y, enc.classes, features, enc.names, enc.indices)


def finish(raw: Raw, n_inputs: int, n_outputs: int, dtype: np.dtype, limit: int | None) -> Dataset:
    """Apply ``limit``, check shapes, counts and finiteness against the spec, cast to dtype."""
    X, Y, labels = raw.X, raw.Y, raw.labels
    if limit is not None:
        X, Y = X[:limit], Y[:limit]
        labels = None if labels is None else labels[:limit]
    for name, arr, what in (("inputs", X, "inputs"), ("targets", Y, "outputs")):
        if arr.ndim != 2:
            raise DataError(
                f"{raw.where}: expected 2-D {name} (samples, {what}), found shape {arr.shape}"
            )
    if X.shape[1] != n_inputs:
        raise DataError(
            f"{raw.where}: expected {n_inputs} input columns for the spec, found {X.shape[1]}"
        )
    if Y.shape[1] != n_outputs:
        raise DataError(
            f"{raw.where}: expected {n_outputs} output columns for the spec, found {Y.shape[1]}"
        )
    if X.shape[0] != Y.shape[0]:
        raise DataError(
            f"{raw.where}: inputs have {X.shape[0]} samples but targets have {Y.shape[0]}"
        )
    if X.shape[0] == 0:
        raise DataError(f"{raw.where}: no samples")
    X = np.ascontiguousarray(X, dtype=dtype)
    Y = np.ascontiguousarray(Y, dtype=dtype)
    for name, arr in (("inputs", X), ("targets", Y)):
        bad = first_non_finite(arr)
        if bad is not None:
            raise DataError(
                f"{raw.where}: {name} have a non-finite value ({arr[bad]}) at index {bad}"
                f"{' after conversion to ' + str(dtype) if dtype != np.float64 else ''}"
            )
    if labels is not None:
        labels = np.asarray(labels, dtype=np.int64)
    return Dataset(X, Y, raw.classes, list(raw.feature_names), list(raw.target_names), labels)
