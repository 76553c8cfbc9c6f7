"""``load_data``: check the arguments, pick the format from the source's name, check the result."""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..errors import DataError
from .csv import load_csv
from .dataset import Dataset, finish
from .idx import labels_path_for, load_idx_files, load_idx_prefix
from .io import check_positive, resolve_max_bytes, strip_gz
from .npz import load_npz
from .pickle import load_pickle_source

__all__ = ["load_data"]

_SUPPORTED = (
    "supported formats are .csv, .csv.gz, .npz, idx:PREFIX, an ...-images-idx3-ubyte[.gz] "
    "file, and a .pkl/.pkl.gz pickle of (X, y) pairs (PATH[:train|validation|test])"
)
_PICKLE_SOURCE = re.compile(r"(.*\.(?:pkl|pickle)(?:\.gz)?)(?::([^:/\\]*))?", re.IGNORECASE)


def load_data(
    source: str | os.PathLike,
    *,
    n_inputs: int,
    n_outputs: int,
    targets: Sequence[str] | None = None,
    classes: Sequence | None = None,
    dtype: Any = np.float64,
    limit: int | None = None,
    max_bytes: int | None = None,
) -> Dataset:
    """Load ``source`` and check it against a spec with ``n_inputs`` and ``n_outputs``.

    ``targets`` names the target columns of a CSV file (default: the last column(s)).
    ``classes`` fixes the class labels and their one-hot column order whenever labels are
    encoded (default: sorted labels for CSV, ``0..n_outputs-1`` for integer labels); it is
    ignored when the targets are already numeric columns.  ``limit`` keeps only the first
    ``limit`` samples.  ``max_bytes`` caps what is read from each file, after decompression
    (default :data:`symgrad.data.DEFAULT_MAX_BYTES`, 1 GiB).  Raises :class:`DataError` for
    anything that does not fit.
    """
    if isinstance(source, bytes):
        source = os.fsdecode(source)
    text = os.fspath(source)
    check_positive("n_inputs", n_inputs)
    check_positive("n_outputs", n_outputs)
    if limit is not None:
        check_positive("limit", limit)
    cap = resolve_max_bytes(max_bytes)
    try:
        np_dtype = np.dtype(dtype)
    except TypeError as exc:
        raise DataError(f"dtype {dtype!r} is not a NumPy dtype") from exc
    if np_dtype.kind != "f":
        raise DataError(f"dtype must be a floating-point type, got {np_dtype}")
    if classes is not None:
        if isinstance(classes, (str, bytes)):
            raise DataError(f"classes must be a sequence of labels, got the string {classes!r}")
        classes = list(classes)

    if text.startswith("idx:"):
        raw = load_idx_prefix(text[4:], n_outputs, classes, limit, cap)
    elif (match := _PICKLE_SOURCE.fullmatch(text)) is not None:
        raw = load_pickle_source(match.group(1), match.group(2), n_outputs, classes, limit, cap)
    elif text.lower().endswith((".csv", ".csv.gz")):
        raw = load_csv(text, n_inputs, n_outputs, targets, classes, limit, cap)
    elif text.lower().endswith(".npz"):
        raw = load_npz(text, n_outputs, classes, limit, cap)
    elif strip_gz(os.path.basename(text)).endswith("idx3-ubyte"):
        raw = load_idx_files(text, labels_path_for(text), n_outputs, classes, limit, cap)
    else:
        raise DataError(f"{text}: unsupported data source; {_SUPPORTED}")
    return finish(raw, n_inputs, n_outputs, np_dtype, limit)
