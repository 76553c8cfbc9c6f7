"""The one label encoder: class labels to column indices, one-hot targets and target names.

Labels are matched by value, so ``3``, ``3.0`` and ``"3"`` are the same class.  CSV label
columns, the 1-D labels of IDX, ``.npz`` and pickle sources, and :func:`one_hot` all go
through :func:`encode`; only how the class set is chosen differs (given, inferred from the
labels, or ``0..n-1`` for integer labels).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import DataError

__all__ = ["Encoded", "encode", "encode_array", "infer_classes", "one_hot"]


@dataclass(frozen=True)
class Encoded:
    """Targets made from labels.

    ``Y`` is ``(samples, outputs)`` float64: one-hot columns, or for a single output the 0/1
    class index (or, for unencoded numeric labels, the labels themselves).  ``classes`` is in
    column order; ``indices`` holds each sample's class index (int64), None when not encoded.
    """

    Y: np.ndarray
    classes: list | None
    indices: np.ndarray | None
    names: list[str]


def _label_key(value: Any) -> Any:
    """Comparison key for a class label: finite numbers (also numeric strings) as floats."""
    if isinstance(value, (bool, np.bool_)):
        return float(value)
    if isinstance(value, (int, float, np.integer, np.floating)):
        number = float(value)
        return number if math.isfinite(number) else str(value)
    if isinstance(value, str):
        stripped = value.strip()
        try:
            number = float(stripped)
        except ValueError:
            return stripped
        return number if math.isfinite(number) else stripped
    return value


def _format_classes(classes: Sequence) -> str:
    """Classes as a short readable list for error messages."""
    items = list(classes)
    shown = ", ".join(repr(c) for c in items[:20])
    more = f", ... ({len(items)} in all)" if len(items) > 20 else ""
    return f"[{shown}{more}]"


def _keys(values: Sequence, where: str) -> list:
    """The comparison key of every label (computed once per distinct label)."""
    cache: dict = {}
    keys = []
    try:
        for value in values:
            key = cache.get(value, cache)
            if key is cache:
                key = cache[value] = _label_key(value)
            keys.append(key)
    except TypeError as exc:  # unhashable labels from an object array
        raise DataError(f"{where}: labels must be numbers or strings ({exc})") from exc
    return keys


def infer_classes(values: Sequence, where: str, keys: list | None = None) -> list:
    """The distinct labels, sorted: as numbers (ints when whole) if all are numbers, else text."""
    found: dict = {}
    for key, value in zip(_keys(values, where) if keys is None else keys, values):
        found.setdefault(key, value)
    if all(isinstance(key, float) for key in found):
        return [int(key) if key.is_integer() else key for key in sorted(found)]
    shown = [value.strip() if isinstance(value, str) else value for value in found.values()]
    return sorted(shown, key=str)


def _class_index(classes: list, where: str) -> dict:
    """Map each class's key to its column; duplicate classes are an error."""
    index: dict = {}
    for position, cls in enumerate(classes):
        key = _label_key(cls)
        if key in index:
            raise DataError(f"{where}: class {cls!r} appears twice in classes")
        index[key] = position
    return index


def _targets(indices: np.ndarray, classes: list, n_outputs: int | None, name: str) -> Encoded:
    """One-hot columns (or one 0/1 column for a single output) from class indices."""
    if n_outputs == 1:
        return Encoded(indices.reshape(-1, 1).astype(np.float64), classes, indices, [name])
    Y = np.zeros((indices.shape[0], len(classes)), dtype=np.float64)
    Y[np.arange(indices.shape[0]), indices] = 1.0
    return Encoded(Y, classes, indices, [f"{name}={c}" for c in classes])


def _expected(n_outputs: int) -> int:
    """How many classes ``n_outputs`` columns encode (a single output holds two classes)."""
    return 2 if n_outputs == 1 else n_outputs


def encode(
    values: Sequence,
    classes: list | None,
    *,
    where: str,
    describe: Callable[[int], str],
    n_outputs: int | None = None,
    name: str = "label",
    subject: str = "",
) -> Encoded:
    """Encode ``values`` against ``classes`` (inferred from the values when None).

    ``describe(i)`` names the i-th label in an error (``row 3, column 'y': label 'fox'``).
    With ``n_outputs`` the class count must fit the spec (a single output takes 2 classes as
    a 0/1 column); ``subject`` (``column 'y'``) is what the count messages talk about.
    """
    keys = _keys(values, where)
    if classes is None:
        classes = infer_classes(values, where, keys)
        if n_outputs is not None and len(classes) != _expected(n_outputs):
            if n_outputs == 1:
                need = "a single output needs numbers or exactly 2 classes"
            else:
                need = f"the spec has {n_outputs} outputs; pass classes to fix the set"
            raise DataError(
                f"{where}: {subject or 'labels'} holds {len(classes)} classes "
                f"{_format_classes(classes)}; {need}"
            )
    elif n_outputs is not None and len(classes) != _expected(n_outputs):
        raise DataError(
            f"{where}: {len(classes)} classes given{' for ' + subject if subject else ''} but "
            f"the spec has {n_outputs} output{'s' if n_outputs != 1 else ''} "
            f"(expected {_expected(n_outputs)} classes)"
        )
    index = _class_index(classes, where)
    indices = np.empty(len(values), dtype=np.int64)
    for i, key in enumerate(keys):
        column = index.get(key)
        if column is None:
            raise DataError(
                f"{where}: {describe(i)} is not one of the classes {_format_classes(classes)}"
            )
        indices[i] = column
    return _targets(indices, classes, n_outputs, name)


def encode_array(labels: np.ndarray, n_outputs: int, classes: list | None, where: str) -> Encoded:
    """Targets for the 1-D labels of an IDX, ``.npz`` or pickle source.

    With ``classes`` the labels are matched against them.  Otherwise a single output takes
    the labels as its numeric column, and several outputs one-hot encode integer labels
    ``0..n_outputs-1``.
    """
    if classes is not None:
        return encode(
            labels.tolist(),
            classes,
            where=where,
            describe=lambda i: f"index {i}: label {labels[i].item()!r}",
            n_outputs=n_outputs,
        )
    if n_outputs == 1:
        return Encoded(labels.reshape(-1, 1), None, None, ["label"])
    if labels.dtype.kind == "f":
        whole = np.isfinite(labels) & (labels == np.round(labels))
    elif labels.dtype.kind in "iub":
        whole = np.ones(labels.shape, dtype=bool)
    else:
        raise DataError(f"{where}: labels have dtype {labels.dtype}; expected integers")
    ok = whole & (labels >= 0) & (labels < n_outputs)
    if not ok.all():
        i = int(np.argmin(ok))
        raise DataError(
            f"{where}: index {i}: label {labels[i].item()!r} is out of range for {n_outputs} "
            f"outputs (expected integers 0..{n_outputs - 1})"
        )
    return _targets(labels.astype(np.int64), list(range(n_outputs)), n_outputs, "label")


def one_hot(labels: Any, classes: Sequence | None = None) -> tuple[np.ndarray, list]:
    """One-hot encode 1-D ``labels``; return ``(matrix, classes)``.

    ``classes`` fixes the column order; by default it is the sorted distinct labels (numbers
    in numeric order, whole numbers as ints).  Labels are matched by value, so ``3``, ``3.0``
    and ``"3"`` are the same class.  A label not in ``classes`` raises :class:`DataError`
    naming its index, its value and the classes.
    """
    values = np.asarray(labels)
    if values.ndim != 1:
        raise DataError(f"one_hot: labels must be 1-D, found shape {values.shape}")
    if isinstance(classes, (str, bytes)):
        raise DataError(f"one_hot: classes must be a sequence, got the string {classes!r}")
    items = values.tolist()
    encoded = encode(
        items,
        None if classes is None else list(classes),
        where="one_hot",
        describe=lambda i: f"label {items[i]!r} at index {i}",
    )
    return encoded.Y, list(encoded.classes or [])
