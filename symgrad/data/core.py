"""Load training data for generated trainers: CSV, ``.npz``, IDX and ``mnist.pkl.gz`` pickles.

Everything here treats its input as untrusted.  Bad input raises :class:`DataError` with a
single line that names the file, the row (1-based line number for CSV) or key at fault,
and what was expected.  Pickles are only ever read with a restricted unpickler that admits
NumPy arrays, tuples and lists, never with plain :func:`pickle.load`.

Sources understood by :func:`load_data`:

* ``data.csv`` / ``data.csv.gz``: a header row, then numeric rows; the target column may
  hold class labels, which are one-hot encoded.
* ``data.npz``: arrays ``X`` and ``Y`` (or ``y``, 1-D integer labels).
* ``idx:PREFIX``: ``PREFIX-images-idx3-ubyte[.gz]`` and ``PREFIX-labels-idx1-ubyte[.gz]``
  (MNIST / Fashion-MNIST layout), or a path to one ``...-images-idx3-ubyte[.gz]`` file with
  its labels file beside it.
* ``mnist.pkl.gz[:train|validation|test]``: the gzipped pickle used by Nielsen's
  *Neural Networks and Deep Learning* (written by Python 2, so read with ``latin1``).
"""

from __future__ import annotations

import _compat_pickle
import contextlib
import csv
import gzip as gzip_lib
import io
import math
import os
import pickle
import re
import struct
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import IO, Any

import numpy as np

from ..errors import DataError
from ..runtime.atomic import atomic_write_bytes

try:  # NumPy 2.x
    from numpy._core import multiarray as _multiarray
except ImportError:  # pragma: no cover - NumPy 1.x
    from numpy.core import multiarray as _multiarray  # type: ignore[no-redef]

__all__ = [
    "Dataset",
    "load_data",
    "one_hot",
    "read_idx",
    "safe_load_pickle",
    "write_idx",
]

_GZIP_MAGIC = b"\x1f\x8b"
_CHUNK = 1 << 22
_SUPPORTED = (
    "supported formats are .csv, .csv.gz, .npz, idx:PREFIX, an ...-images-idx3-ubyte[.gz] "
    "file, and a .pkl/.pkl.gz pickle of (X, y) pairs (PATH[:train|validation|test])"
)

# IDX type code -> big-endian dtype.
_IDX_TYPES: dict[int, np.dtype] = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_IDX_CODES: dict[tuple[str, int], int] = {
    (dt.kind, dt.itemsize): code for code, dt in _IDX_TYPES.items()
}
_SPLITS = ("train", "validation", "test")
_PICKLE_SOURCE = re.compile(r"^(.*\.(?:pkl|pickle)(?:\.gz)?)(?::([^:/\\]*))?$", re.IGNORECASE)
_MAX_PICKLE_DEPTH = 16


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


# ---------------------------------------------------------------------------------------------
# public entry point
# ---------------------------------------------------------------------------------------------


def load_data(
    source: str | os.PathLike,
    *,
    n_inputs: int,
    n_outputs: int,
    targets: Sequence[str] | None = None,
    classes: Sequence | None = None,
    dtype: Any = np.float64,
    limit: int | None = None,
) -> Dataset:
    """Load ``source`` and check it against a spec with ``n_inputs`` and ``n_outputs``.

    ``targets`` names the target columns of a CSV file (default: the last column(s)).
    ``classes`` fixes the class labels and their one-hot column order whenever labels are
    encoded (default: sorted labels for CSV, ``0..n_outputs-1`` for integer labels); it is
    ignored when the targets are already numeric columns.  ``limit`` keeps only the first
    ``limit`` samples.  Raises :class:`DataError` for anything that does not fit.
    """
    if isinstance(source, bytes):
        source = os.fsdecode(source)
    text = os.fspath(source)
    _check_positive("n_inputs", n_inputs)
    _check_positive("n_outputs", n_outputs)
    if limit is not None:
        _check_positive("limit", limit)
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
        raw = _load_idx_prefix(text[4:], n_outputs, classes, limit)
    elif (match := _PICKLE_SOURCE.match(text)) is not None:
        raw = _load_pickle_source(match.group(1), match.group(2), n_outputs, classes, limit)
    elif text.lower().endswith((".csv", ".csv.gz")):
        raw = _load_csv(text, n_inputs, n_outputs, targets, classes, limit)
    elif text.lower().endswith(".npz"):
        raw = _load_npz(text, n_outputs, classes, limit)
    elif _strip_gz(os.path.basename(text)).endswith("idx3-ubyte"):
        raw = _load_idx_files(text, _labels_path_for(text), n_outputs, classes, limit)
    else:
        raise DataError(f"{text}: unsupported data source; {_SUPPORTED}")
    return _finish(raw, n_inputs, n_outputs, np_dtype, limit)


# ---------------------------------------------------------------------------------------------
# shared helpers
# ---------------------------------------------------------------------------------------------


@dataclass
class _Raw:
    """What a format loader hands back before the common checks and the dtype cast."""

    where: str
    X: np.ndarray
    Y: np.ndarray
    classes: list | None
    feature_names: list[str]
    target_names: list[str]
    labels: np.ndarray | None = None


def _check_positive(name: str, value: Any) -> None:
    """Require ``value`` to be a positive integer (bools are not integers here)."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise DataError(f"{name} must be a positive integer, got {value!r}")


def _strip_gz(name: str) -> str:
    """``name`` without a trailing ``.gz``."""
    return name[:-3] if name.lower().endswith(".gz") else name


def _finish(
    raw: _Raw, n_inputs: int, n_outputs: int, dtype: np.dtype, limit: int | None
) -> Dataset:
    """Apply ``limit``, check shapes, counts and finiteness against the spec, cast to dtype."""
    X, Y, labels = raw.X, raw.Y, raw.labels
    if limit is not None:
        X, Y = X[:limit], Y[:limit]
        labels = None if labels is None else labels[:limit]
    if X.ndim != 2:
        raise DataError(
            f"{raw.where}: expected 2-D inputs (samples, inputs), found shape {X.shape}"
        )
    if Y.ndim != 2:
        raise DataError(
            f"{raw.where}: expected 2-D targets (samples, outputs), found shape {Y.shape}"
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
        bad = _first_non_finite(arr)
        if bad is not None:
            raise DataError(
                f"{raw.where}: {name} have a non-finite value ({arr[bad]}) at index {bad}"
                f"{' after conversion to ' + str(dtype) if dtype != np.float64 else ''}"
            )
    if labels is not None:
        labels = np.asarray(labels, dtype=np.int64)
    return Dataset(X, Y, raw.classes, list(raw.feature_names), list(raw.target_names), labels)


def _first_non_finite(arr: np.ndarray) -> tuple[int, ...] | None:
    """Index of the first NaN or infinity in a float array, or None."""
    if arr.dtype.kind not in "fc":
        return None
    finite = np.isfinite(arr)
    if finite.all():
        return None
    return tuple(int(i) for i in np.argwhere(~finite)[0])


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


def _class_index(classes: list, where: str) -> dict:
    """Map each class's key to its column; duplicate classes are an error."""
    index: dict = {}
    for position, cls in enumerate(classes):
        key = _label_key(cls)
        if key in index:
            raise DataError(f"{where}: class {cls!r} appears twice in classes")
        index[key] = position
    return index


def _one_hot_from_indices(indices: np.ndarray, n_columns: int) -> np.ndarray:
    """A float64 one-hot matrix with ones at ``indices``."""
    out = np.zeros((indices.shape[0], n_columns), dtype=np.float64)
    out[np.arange(indices.shape[0]), indices] = 1.0
    return out


def _encode_array_labels(
    labels: np.ndarray, n_outputs: int, classes: list | None, where: str
) -> tuple[np.ndarray, list | None, np.ndarray | None, list[str]]:
    """Turn 1-D numeric labels into targets for an IDX, npz or pickle source.

    Returns ``(Y, classes, label_indices, target_names)``.  With ``classes`` given, labels are
    matched against them.  Otherwise a single output takes the labels as its numeric column,
    and several outputs one-hot encode integer labels ``0..n_outputs-1``.
    """
    if classes is not None:
        expected = 2 if n_outputs == 1 else n_outputs
        if len(classes) != expected:
            raise DataError(
                f"{where}: {len(classes)} classes given but the spec has {n_outputs} "
                f"output{'s' if n_outputs != 1 else ''} (expected {expected} classes)"
            )
        index = _class_index(classes, where)
        keys = [_label_key(v) for v in labels.tolist()]
        indices = np.empty(len(keys), dtype=np.int64)
        for i, key in enumerate(keys):
            column = index.get(key)
            if column is None:
                raise DataError(
                    f"{where}: index {i}: label {labels[i].item()!r} is not one of the classes "
                    f"{_format_classes(classes)}"
                )
            indices[i] = column
        if n_outputs == 1:
            Y = indices.reshape(-1, 1).astype(np.float64)
        else:
            Y = _one_hot_from_indices(indices, n_outputs)
        return Y, classes, indices, ["label"] if n_outputs == 1 else [f"label={c}" for c in classes]
    if n_outputs == 1:
        return labels.reshape(-1, 1), None, None, ["label"]
    values = labels
    if values.dtype.kind == "f":
        whole = np.isfinite(values) & (values == np.round(values))
    elif values.dtype.kind in "iub":
        whole = np.ones(values.shape, dtype=bool)
    else:
        raise DataError(f"{where}: labels have dtype {values.dtype}; expected integers")
    ok = whole & (values >= 0) & (values < n_outputs)
    if not ok.all():
        i = int(np.argmin(ok))
        raise DataError(
            f"{where}: index {i}: label {values[i].item()!r} is out of range for {n_outputs} "
            f"outputs (expected integers 0..{n_outputs - 1})"
        )
    indices = values.astype(np.int64)
    names = [f"label={c}" for c in range(n_outputs)]
    return _one_hot_from_indices(indices, n_outputs), list(range(n_outputs)), indices, names


def one_hot(labels: Any, classes: Sequence | None = None) -> tuple[np.ndarray, list]:
    """One-hot encode 1-D ``labels``; return ``(matrix, classes)``.

    ``classes`` fixes the column order; by default it is the sorted distinct labels.  Labels
    are matched by value, so ``3``, ``3.0`` and ``"3"`` are the same class.  A label not in
    ``classes`` raises :class:`DataError` naming its index, its value and the classes.
    """
    values = np.asarray(labels)
    if values.ndim != 1:
        raise DataError(f"one_hot: labels must be 1-D, found shape {values.shape}")
    if classes is None:
        try:
            class_list = np.unique(values).tolist()
        except TypeError as exc:
            raise DataError(f"one_hot: labels cannot be sorted: {exc}") from exc
    else:
        if isinstance(classes, (str, bytes)):
            raise DataError(f"one_hot: classes must be a sequence, got the string {classes!r}")
        class_list = list(classes)
    index = _class_index(class_list, "one_hot")
    indices = np.empty(values.shape[0], dtype=np.int64)
    for i, value in enumerate(values.tolist()):
        column = index.get(_label_key(value))
        if column is None:
            raise DataError(
                f"one_hot: label {value!r} at index {i} is not one of the classes "
                f"{_format_classes(class_list)}"
            )
        indices[i] = column
    return _one_hot_from_indices(indices, len(class_list)), class_list


@contextlib.contextmanager
def _open_binary(path: str) -> Iterator[IO[bytes]]:
    """Open ``path`` for reading bytes, transparently gunzipping when it starts with 1f 8b."""
    if os.path.isdir(path):
        raise DataError(f"{path}: is a directory, expected a file")
    try:
        raw = open(path, "rb")  # noqa: SIM115 - closed below
    except FileNotFoundError as exc:
        raise DataError(f"{path}: file not found") from exc
    except OSError as exc:
        raise DataError(f"{path}: cannot open file: {exc.strerror or exc}") from exc
    try:
        magic = raw.read(2)
        raw.seek(0)
        if magic == _GZIP_MAGIC:
            with gzip_lib.GzipFile(fileobj=raw, mode="rb") as unzipped:
                yield unzipped
        else:
            yield raw
    finally:
        raw.close()


def _read_up_to(stream: IO[bytes], size: int) -> bytes:
    """Read ``size`` bytes or until EOF, in chunks so a lying header cannot force a huge read."""
    parts = bytearray()
    while len(parts) < size:
        chunk = stream.read(min(_CHUNK, size - len(parts)))
        if not chunk:
            break
        parts += chunk
    return bytes(parts)


@contextlib.contextmanager
def _reading(path: str) -> Iterator[None]:
    """Turn decompression and I/O failures inside the block into one-line DataErrors."""
    try:
        yield
    except DataError:
        raise
    except (gzip_lib.BadGzipFile, EOFError, zlib.error) as exc:
        raise DataError(f"{path}: corrupt or truncated gzip data ({exc})") from exc
    except OSError as exc:
        raise DataError(f"{path}: cannot read file: {exc.strerror or exc}") from exc


# ---------------------------------------------------------------------------------------------
# CSV
# ---------------------------------------------------------------------------------------------


def _parse_number(text: str) -> float | None:
    """``float(text)`` or None when the cell is not a number."""
    try:
        return float(text)
    except ValueError:
        return None


def _read_csv_rows(path: str, limit: int | None) -> tuple[list[str], list[tuple[int, list[str]]]]:
    """Header and ``(line number, cells)`` rows; checks emptiness, blank lines and raggedness."""
    rows: list[tuple[int, list[str]]] = []
    header: list[str] | None = None
    blank_line: int | None = None
    with _reading(path), _open_binary(path) as binary:
        text = io.TextIOWrapper(binary, encoding="utf-8-sig", newline="")
        reader = csv.reader(text)
        try:
            for cells in reader:
                line = reader.line_num
                if not cells or all(not c.strip() for c in cells):
                    if blank_line is None:
                        blank_line = line
                    continue
                if blank_line is not None:
                    raise DataError(
                        f"{path}: row {blank_line} is blank; blank lines are only allowed at "
                        "the end of the file"
                    )
                if header is None:
                    header = [c.strip() for c in cells]
                    continue
                if len(cells) != len(header):
                    raise DataError(
                        f"{path}: row {line} has {len(cells)} cells, header has {len(header)}"
                    )
                rows.append((line, [c.strip() for c in cells]))
                if limit is not None and len(rows) >= limit:
                    break
        except csv.Error as exc:
            raise DataError(f"{path}: row {reader.line_num}: malformed CSV ({exc})") from exc
        except UnicodeDecodeError as exc:
            raise DataError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from exc
        finally:
            text.detach()
    if header is None:
        raise DataError(f"{path}: file is empty; expected a header row and data rows")
    if not rows:
        raise DataError(f"{path}: has a header but no data rows")
    return header, rows


def _check_header(path: str, header: list[str]) -> None:
    """Reject duplicate column names and a first row that is numbers rather than names."""
    seen: set[str] = set()
    for name in header:
        if name in seen:
            raise DataError(f"{path}: row 1 (header): column name {name!r} appears twice")
        seen.add(name)
    if all(_parse_number(name) is not None for name in header):
        raise DataError(
            f"{path}: row 1 holds only numbers ({', '.join(header[:4])}"
            f"{', ...' if len(header) > 4 else ''}); expected a header row naming the columns"
        )


def _csv_numeric_column(
    path: str, rows: list[tuple[int, list[str]]], col: int, name: str
) -> np.ndarray:
    """Parse one column of cells as finite floats, naming the row and column on failure."""
    out = np.empty(len(rows), dtype=np.float64)
    for i, (line, cells) in enumerate(rows):
        value = _parse_number(cells[col])
        if value is None:
            raise DataError(f"{path}: row {line}, column {name!r}: {cells[col]!r} is not a number")
        if not math.isfinite(value):
            raise DataError(
                f"{path}: row {line}, column {name!r}: {cells[col]!r} is not a finite number"
            )
        out[i] = value
    return out


def _csv_labels(
    path: str,
    rows: list[tuple[int, list[str]]],
    col: int,
    name: str,
    n_outputs: int,
    classes: list | None,
) -> tuple[np.ndarray, list, np.ndarray, list[str]]:
    """Encode a class-label column: one-hot for several outputs, 0/1 for a single output."""
    cells = [cells[col] for _, cells in rows]
    expected = 2 if n_outputs == 1 else n_outputs
    if classes is None:
        numbers = [_parse_number(c) for c in cells]
        if all(v is not None and math.isfinite(v) for v in numbers):
            distinct = sorted(set(numbers))  # type: ignore[type-var]
            found: list = [int(v) if float(v).is_integer() else v for v in distinct]
            keys = {float(v): i for i, v in enumerate(distinct)}
            lookup = [keys[float(v)] for v in numbers]  # type: ignore[arg-type]
        else:
            found = sorted(set(cells))
            keys = {v: i for i, v in enumerate(found)}
            lookup = [keys[c] for c in cells]
        if len(found) != expected:
            if n_outputs == 1:
                need = "a single output needs numbers or exactly 2 classes"
            else:
                need = f"the spec has {n_outputs} outputs; pass classes to fix the set"
            raise DataError(
                f"{path}: column {name!r} holds {len(found)} classes "
                f"{_format_classes(found)}; {need}"
            )
        class_list = found
        indices = np.asarray(lookup, dtype=np.int64)
    else:
        if len(classes) != expected:
            raise DataError(
                f"{path}: {len(classes)} classes given for column {name!r} but the spec has "
                f"{n_outputs} output{'s' if n_outputs != 1 else ''} (expected {expected} classes)"
            )
        index = _class_index(classes, path)
        indices = np.empty(len(rows), dtype=np.int64)
        for i, (line, row) in enumerate(rows):
            column = index.get(_label_key(row[col]))
            if column is None:
                raise DataError(
                    f"{path}: row {line}, column {name!r}: label {row[col]!r} is not one of "
                    f"the classes {_format_classes(classes)}"
                )
            indices[i] = column
        class_list = classes
    if n_outputs == 1:
        return indices.reshape(-1, 1).astype(np.float64), class_list, indices, [name]
    names = [f"{name}={c}" for c in class_list]
    return _one_hot_from_indices(indices, n_outputs), class_list, indices, names


def _load_csv(
    path: str,
    n_inputs: int,
    n_outputs: int,
    targets: Sequence[str] | None,
    classes: list | None,
    limit: int | None,
) -> _Raw:
    """Load a CSV file with a header row; see :func:`load_data` for the column rules."""
    header, rows = _read_csv_rows(path, limit)
    _check_header(path, header)
    m = len(header)
    if targets is None:
        if m == n_inputs + n_outputs:
            target_cols = list(range(n_inputs, m))
            label_column = False
        elif m == n_inputs + 1:
            target_cols = [m - 1]
            label_column = True
        else:
            counts = (
                f"{n_inputs + n_outputs}"
                if n_outputs == 1
                else f"n_inputs + n_outputs = {n_inputs + n_outputs} or n_inputs + 1 = "
                f"{n_inputs + 1}"
            )
            raise DataError(f"{path}: expected {counts} columns for the spec, found {m}")
    else:
        if isinstance(targets, str):
            targets = [targets]
        target_cols = []
        for name in targets:
            if name not in header:
                raise DataError(
                    f"{path}: unknown target column {name!r}; the header has "
                    f"{', '.join(repr(h) for h in header)}"
                )
            if header.index(name) in target_cols:
                raise DataError(f"{path}: target column {name!r} is named twice")
            target_cols.append(header.index(name))
        if len(target_cols) == n_outputs:
            label_column = False
        elif len(target_cols) == 1:
            label_column = True
        else:
            raise DataError(
                f"{path}: {len(target_cols)} target columns named but the spec has "
                f"{n_outputs} outputs; expected {n_outputs} columns or 1 class-label column"
            )
    input_cols = [c for c in range(m) if c not in target_cols]
    if len(input_cols) != n_inputs:
        raise DataError(
            f"{path}: expected {n_inputs} input columns for the spec, found {len(input_cols)}"
        )

    X = np.empty((len(rows), n_inputs), dtype=np.float64)
    for j, col in enumerate(input_cols):
        X[:, j] = _csv_numeric_column(path, rows, col, header[col])

    result_classes: list | None = None
    labels: np.ndarray | None = None
    if n_outputs == 1 and len(target_cols) == 1:
        col = target_cols[0]
        numeric = [_parse_number(cells[col]) is not None for _, cells in rows]
        if classes is not None or not any(numeric):
            Y, result_classes, labels, target_names = _csv_labels(
                path, rows, col, header[col], 1, classes
            )
        else:
            Y = _csv_numeric_column(path, rows, col, header[col]).reshape(-1, 1)
            target_names = [header[col]]
    elif label_column:
        col = target_cols[0]
        Y, result_classes, labels, target_names = _csv_labels(
            path, rows, col, header[col], n_outputs, classes
        )
    else:
        Y = np.empty((len(rows), len(target_cols)), dtype=np.float64)
        for j, col in enumerate(target_cols):
            Y[:, j] = _csv_numeric_column(path, rows, col, header[col])
        target_names = [header[c] for c in target_cols]
    return _Raw(path, X, Y, result_classes, [header[c] for c in input_cols], target_names, labels)


# ---------------------------------------------------------------------------------------------
# .npz
# ---------------------------------------------------------------------------------------------


def _npz_array(path: str, archive: Any, key: str) -> np.ndarray:
    """Read one array, refusing object arrays and anything not numeric."""
    try:
        arr = archive[key]
    except ValueError as exc:
        if "pickle" in str(exc).lower() or "object" in str(exc).lower():
            raise DataError(f"{path}: key {key!r}: object arrays are not allowed") from exc
        raise DataError(f"{path}: key {key!r}: cannot read array ({exc})") from exc
    except (OSError, EOFError, zlib.error, KeyError) as exc:
        raise DataError(f"{path}: key {key!r}: cannot read array ({exc})") from exc
    if arr.dtype.kind not in "biuf":
        raise DataError(f"{path}: key {key!r} has dtype {arr.dtype}; expected a numeric array")
    bad = _first_non_finite(arr)
    if bad is not None:
        raise DataError(
            f"{path}: key {key!r} has a non-finite value ({arr[bad]}) at index "
            f"{bad[0] if len(bad) == 1 else bad}"
        )
    return arr


def _load_npz(path: str, n_outputs: int, classes: list | None, limit: int | None) -> _Raw:
    """Load ``X`` and ``Y`` (or 1-D labels ``y``) from an ``.npz`` archive without pickles."""
    if os.path.isdir(path):
        raise DataError(f"{path}: is a directory, expected a file")
    try:
        handle = open(path, "rb")  # noqa: SIM115 - closed by the with below
    except FileNotFoundError as exc:
        raise DataError(f"{path}: file not found") from exc
    except OSError as exc:
        raise DataError(f"{path}: cannot open file: {exc.strerror or exc}") from exc
    with _reading(path), handle:
        try:
            archive = np.load(handle, allow_pickle=False)
        except ValueError as exc:
            if "pickle" in str(exc).lower():
                raise DataError(
                    f"{path}: holds pickled data, which is not allowed; expected an .npz archive"
                ) from exc
            raise DataError(f"{path}: not an .npz archive ({exc})") from exc
        except Exception as exc:  # zipfile.BadZipFile and friends
            raise DataError(f"{path}: not an .npz archive ({exc})") from exc
        if not isinstance(archive, np.lib.npyio.NpzFile):
            raise DataError(f"{path}: holds a single array, expected an .npz archive with X and Y")
        with archive:
            keys = list(archive.files)
            found = ", ".join(repr(k) for k in keys) if keys else "none"
            if "X" not in keys:
                raise DataError(f"{path}: missing array 'X' (keys found: {found})")
            y_key = "Y" if "Y" in keys else "y" if "y" in keys else None
            if y_key is None:
                raise DataError(f"{path}: missing array 'Y' or 'y' (keys found: {found})")
            X = _npz_array(path, archive, "X")
            Y = _npz_array(path, archive, y_key)
    if X.ndim != 2:
        raise DataError(f"{path}: key 'X' must be 2-D (samples, inputs), found shape {X.shape}")
    if Y.ndim not in (1, 2):
        raise DataError(
            f"{path}: key {y_key!r} must be 2-D (samples, outputs) or 1-D labels, "
            f"found shape {Y.shape}"
        )
    if X.shape[0] != Y.shape[0]:
        raise DataError(
            f"{path}: key 'X' has {X.shape[0]} samples but key {y_key!r} has {Y.shape[0]}"
        )
    if limit is not None:
        X, Y = X[:limit], Y[:limit]
    feature_names = [f"x{i}" for i in range(X.shape[1])]
    if Y.ndim == 2:
        if Y.shape[1] != n_outputs:
            raise DataError(
                f"{path}: key {y_key!r} has {Y.shape[1]} columns but the spec has "
                f"{n_outputs} outputs"
            )
        names = [f"y{i}" for i in range(Y.shape[1])]
        return _Raw(path, X, Y, None, feature_names, names)
    Y2, result_classes, labels, names = _encode_array_labels(
        Y, n_outputs, classes, f"{path}: key {y_key!r}"
    )
    return _Raw(path, X, Y2, result_classes, feature_names, names, labels)


# ---------------------------------------------------------------------------------------------
# IDX
# ---------------------------------------------------------------------------------------------


def _read_idx(path: str, limit: int | None = None) -> tuple[np.ndarray, int]:
    """Read an IDX file (optionally only the first ``limit`` items); return (array, count).

    ``count`` is the number of items the header declares.  Without ``limit`` the payload
    must be exactly the declared size; with it only the part read is checked.
    """
    with _reading(path), _open_binary(path) as stream:
        head = _read_up_to(stream, 4)
        if len(head) < 4:
            raise DataError(f"{path}: too short for an IDX header ({len(head)} bytes)")
        if head[0] != 0 or head[1] != 0:
            raise DataError(
                f"{path}: not an IDX file (expected magic 0x0000, found 0x{head[:2].hex()})"
            )
        code, ndim = head[2], head[3]
        if code not in _IDX_TYPES:
            raise DataError(
                f"{path}: unknown IDX type code 0x{code:02X} (expected 0x08, 0x09, 0x0B, "
                "0x0C, 0x0D or 0x0E)"
            )
        if ndim == 0:
            raise DataError(f"{path}: IDX header declares 0 dimensions")
        dims_raw = _read_up_to(stream, 4 * ndim)
        if len(dims_raw) < 4 * ndim:
            raise DataError(f"{path}: IDX header is truncated: expected {ndim} dimension sizes")
        dims = struct.unpack(f">{ndim}I", dims_raw)
        dtype = _IDX_TYPES[code]
        count = dims[0]
        keep = count if limit is None else min(count, limit)
        item_bytes = math.prod(dims[1:]) * dtype.itemsize
        want = keep * item_bytes
        payload = _read_up_to(stream, want)
        shape_text = "x".join(str(d) for d in dims)
        if len(payload) < want:
            declared = count * item_bytes
            raise DataError(
                f"{path}: IDX payload is truncated: shape {shape_text} needs {declared} bytes "
                f"of data, found {len(payload)}"
            )
        if limit is None and stream.read(1):
            raise DataError(
                f"{path}: IDX payload is larger than its header declares: shape {shape_text} "
                f"needs {want} bytes of data, found more"
            )
    array = np.frombuffer(payload, dtype=dtype).reshape((keep, *dims[1:]))
    return array.astype(dtype.newbyteorder("=")), count


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read one IDX file, gzipped or not (decided by its magic bytes, not its name).

    Returns a native-endian array with the declared shape.  A bad magic number, unknown
    type code, truncated header or payload, or trailing bytes raise :class:`DataError`.
    """
    return _read_idx(os.fspath(path))[0]


def write_idx(path: str | os.PathLike, array: np.ndarray, gzip: bool = False) -> None:
    """Write ``array`` as an IDX file (gzip-compressed when ``gzip``), atomically.

    Supported dtypes: uint8, int8, int16, int32, float32, float64.
    """
    arr = np.asarray(array)
    code = _IDX_CODES.get((arr.dtype.kind, arr.dtype.itemsize))
    if code is None:
        raise DataError(
            f"{os.fspath(path)}: cannot write dtype {arr.dtype} as IDX; supported dtypes are "
            "uint8, int8, int16, int32, float32 and float64"
        )
    if not 1 <= arr.ndim <= 255:
        raise DataError(f"{os.fspath(path)}: IDX needs 1 to 255 dimensions, got {arr.ndim}")
    if any(d >= 2**32 for d in arr.shape):
        raise DataError(f"{os.fspath(path)}: IDX dimension sizes must be below 2**32")
    header = bytes([0, 0, code, arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape)
    payload = header + arr.astype(_IDX_TYPES[code], copy=False).tobytes(order="C")
    if gzip:
        payload = gzip_lib.compress(payload, mtime=0)
    atomic_write_bytes(path, payload)


def _existing(base: str) -> str | None:
    """``base`` or ``base.gz``, whichever exists (the uncompressed file wins a tie)."""
    for candidate in (base, base + ".gz"):
        if os.path.isfile(candidate):
            return candidate
    return None


def _labels_path_for(images_path: str) -> str:
    """The labels file beside an ``...images-idx3-ubyte[.gz]`` file, or a DataError."""
    folder, name = os.path.split(images_path)
    plain = _strip_gz(name)
    stem = plain[: -len("idx3-ubyte")]
    if "images" not in stem:
        raise DataError(
            f"{images_path}: cannot find the labels file: the name has no 'images' to replace "
            "with 'labels'"
        )
    cut = stem.rfind("images")
    base = os.path.join(folder, stem[:cut] + "labels" + stem[cut + 6 :] + "idx1-ubyte")
    found = _existing(base)
    if found is None:
        raise DataError(
            f"{images_path}: no labels file beside it (looked for {base} and {base}.gz)"
        )
    return found


def _load_idx_prefix(prefix: str, n_outputs: int, classes: list | None, limit: int | None) -> _Raw:
    """Load ``PREFIX-images-idx3-ubyte[.gz]`` with ``PREFIX-labels-idx1-ubyte[.gz]``."""
    if not prefix:
        raise DataError("idx:: empty prefix; expected idx:PREFIX, e.g. idx:data/train")
    paths = []
    for kind, dims in (("images", 3), ("labels", 1)):
        base = f"{prefix}-{kind}-idx{dims}-ubyte"
        found = _existing(base)
        if found is None:
            raise DataError(f"idx:{prefix}: no {kind} file (looked for {base} and {base}.gz)")
        paths.append(found)
    return _load_idx_files(paths[0], paths[1], n_outputs, classes, limit)


def _load_idx_files(
    images_path: str, labels_path: str, n_outputs: int, classes: list | None, limit: int | None
) -> _Raw:
    """Flatten and scale the images, encode the labels, check the counts agree."""
    images, n_images = _read_idx(images_path, limit)
    labels, n_labels = _read_idx(labels_path, limit)
    if images.ndim < 2:
        raise DataError(
            f"{images_path}: expected an images file with 3 dimensions (count, rows, columns), "
            f"found {images.ndim}"
        )
    if labels.ndim != 1:
        raise DataError(
            f"{labels_path}: expected a labels file with 1 dimension, found {labels.ndim}"
        )
    if labels.dtype.kind not in "iu":
        raise DataError(f"{labels_path}: labels have dtype {labels.dtype}; expected integers")
    if n_images != n_labels:
        raise DataError(f"{images_path}: {n_images} images but {labels_path} has {n_labels} labels")
    X = images.reshape(images.shape[0], -1)
    if images.dtype == np.uint8:
        X = X.astype(np.float64) / 255.0
    Y, result_classes, indices, names = _encode_array_labels(
        labels, n_outputs, classes, labels_path
    )
    features = [f"pixel{i}" for i in range(X.shape[1])]
    return _Raw(
        images_path, X, Y, result_classes, features, names, labels if indices is None else indices
    )


# ---------------------------------------------------------------------------------------------
# pickles (restricted)
# ---------------------------------------------------------------------------------------------


def _latin1_encode(text: Any, encoding: str = "utf-8", errors: str = "strict") -> bytes:
    """Stand-in for ``_codecs.encode`` as Python 3 protocol-2 pickles use it for ``bytes``.

    Pickles written by Python 3 at protocol 0-2 store each ``bytes`` object (for instance
    an array's raw data) as ``_codecs.encode(str, 'latin1')``.  Only that exact use is
    admitted; anything else is refused.
    """
    if (
        isinstance(text, str)
        and isinstance(encoding, str)
        and encoding.lower().replace("_", "-") in ("latin1", "latin-1", "iso-8859-1")
        and errors == "strict"
    ):
        return text.encode("latin-1")
    raise pickle.UnpicklingError("_codecs.encode is only allowed as encode(str, 'latin1')")


_PICKLE_ALLOWED: dict[tuple[str, str], Any] = {
    ("numpy.core.multiarray", "_reconstruct"): _multiarray._reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _multiarray._reconstruct,
    ("numpy.core.multiarray", "scalar"): _multiarray.scalar,
    ("numpy._core.multiarray", "scalar"): _multiarray.scalar,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("_codecs", "encode"): _latin1_encode,
}
_PICKLE_RULE = "only NumPy arrays, tuples and lists are allowed"


class _RestrictedUnpickler(pickle.Unpickler):
    """An unpickler whose ``find_class`` admits only what NumPy arrays need."""

    def __init__(self, file: IO[bytes], where: str) -> None:
        super().__init__(file, encoding="latin1")
        self._where = where

    def find_class(self, module: str, name: str) -> Any:
        """Return an admitted callable or raise DataError naming the refused global."""
        # Protocol 0-2 pickles spell Python 3 names the Python 2 way (__builtin__.eval).
        shown_module, shown_name = module, name
        if (module, name) in _compat_pickle.NAME_MAPPING:
            shown_module, shown_name = _compat_pickle.NAME_MAPPING[(module, name)]
        elif module in _compat_pickle.IMPORT_MAPPING:
            shown_module = _compat_pickle.IMPORT_MAPPING[module]
        if shown_module in ("posix", "nt") and hasattr(os, shown_name):
            shown_module = "os"  # os.system pickles as posix.system; show the familiar name
        allowed = _PICKLE_ALLOWED.get((module, name))
        if allowed is None:
            raise DataError(
                f"{self._where}: refusing to unpickle '{shown_module}.{shown_name}': {_PICKLE_RULE}"
            )
        return allowed

    def persistent_load(self, pid: Any) -> Any:
        """Persistent ids would hand objects in from outside: refuse them."""
        raise DataError(f"{self._where}: refusing to unpickle a persistent id: {_PICKLE_RULE}")


def _check_pickled(value: Any, where: str, at: str = "", depth: int = 0) -> None:
    """Require ``value`` to be nested tuples/lists of numeric ndarrays (or numeric scalars)."""
    location = f" at {at}" if at else ""
    if depth > _MAX_PICKLE_DEPTH:
        raise DataError(
            f"{where}: refusing to unpickle nesting deeper than "
            f"{_MAX_PICKLE_DEPTH}{location}: {_PICKLE_RULE}"
        )
    if isinstance(value, (tuple, list)) and type(value) in (tuple, list):
        for i, item in enumerate(value):
            _check_pickled(item, where, f"{at}[{i}]", depth + 1)
        return
    if type(value) is np.ndarray or isinstance(value, np.generic):
        if value.dtype.kind not in "biuf":
            raise DataError(
                f"{where}: refusing to unpickle an array of dtype {value.dtype}{location}: "
                f"{_PICKLE_RULE} (numeric dtypes only)"
            )
        return
    kind = type(value).__name__
    article = "an" if kind[:1].lower() in "aeiou" else "a"
    raise DataError(f"{where}: refusing to unpickle {article} {kind}{location}: {_PICKLE_RULE}")


def safe_load_pickle(path: str | os.PathLike) -> object:
    """Load a (possibly gzipped) pickle holding only tuples, lists and numeric NumPy arrays.

    Uses a restricted unpickler (``encoding='latin1'`` so Python 2 pickles such as
    Nielsen's ``mnist.pkl.gz`` load) whose ``find_class`` admits just the NumPy array
    reconstructors; any other global, e.g. ``os.system`` or ``builtins.eval``, is refused
    before it can be called.  The result is then checked to contain nothing but tuples,
    lists and numeric arrays.  Every failure raises :class:`DataError`.
    """
    where = os.fspath(path)
    with _reading(where), _open_binary(where) as stream:
        try:
            value = _RestrictedUnpickler(stream, where).load()
        except DataError:
            raise
        except (zlib.error, gzip_lib.BadGzipFile):
            raise
        except EOFError as exc:
            if isinstance(stream, gzip_lib.GzipFile):
                raise
            raise DataError(f"{where}: pickle is truncated ({exc})") from exc
        except RecursionError as exc:
            raise DataError(f"{where}: pickle nests too deeply") from exc
        except Exception as exc:  # UnpicklingError, ValueError, TypeError from bad states, ...
            raise DataError(f"{where}: not a valid pickle of NumPy arrays ({exc})") from exc
    _check_pickled(value, where)
    return value


def _is_pair(value: Any) -> bool:
    """Whether ``value`` looks like an ``(X, y)`` pair of arrays."""
    return (
        isinstance(value, (tuple, list))
        and len(value) == 2
        and all(isinstance(v, np.ndarray) for v in value)
    )


def _load_pickle_source(
    path: str, split: str | None, n_outputs: int, classes: list | None, limit: int | None
) -> _Raw:
    """Load one split of a Nielsen-style ``(training, validation, test)`` pickle."""
    if split is not None and split not in _SPLITS:
        raise DataError(f"{path}: unknown split {split!r}; expected train, validation or test")
    data = safe_load_pickle(path)
    if _is_pair(data) and split is None:
        X, y = data  # type: ignore[misc]
        where = path
    else:
        if not (
            isinstance(data, (tuple, list))
            and len(data) == 3
            and all(_is_pair(part) for part in data)
        ):
            size = f"of {len(data)} items" if isinstance(data, (tuple, list)) else ""
            raise DataError(
                f"{path}: expected a tuple (training, validation, test) of (X, y) array "
                f"pairs, found a {type(data).__name__} {size}".rstrip()
            )
        name = split or "train"
        X, y = data[_SPLITS.index(name)]  # type: ignore[index]
        where = f"{path}:{name}"
    if X.ndim != 2:
        raise DataError(f"{where}: X must be 2-D (samples, inputs), found shape {X.shape}")
    if y.ndim not in (1, 2):
        raise DataError(f"{where}: y must be 1-D labels or 2-D targets, found shape {y.shape}")
    if X.shape[0] != y.shape[0]:
        raise DataError(f"{where}: X has {X.shape[0]} samples but y has {y.shape[0]}")
    if limit is not None:
        X, y = X[:limit], y[:limit]
    features = [f"x{i}" for i in range(X.shape[1])]
    if y.ndim == 2:
        return _Raw(where, X, y, None, features, [f"y{i}" for i in range(y.shape[1])])
    Y, result_classes, indices, names = _encode_array_labels(y, n_outputs, classes, f"{where}: y")
    return _Raw(where, X, Y, result_classes, features, names, indices)
