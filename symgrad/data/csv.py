"""CSV (``.csv``, ``.csv.gz``): a header row naming the columns, then numeric rows.

The target column(s) are the last ones unless named; one target column of class labels is
encoded by :mod:`symgrad.data.labels`.  Errors name the 1-based line and the column.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Sequence

import numpy as np

from ..errors import DataError
from .dataset import Raw
from .io import open_data
from .labels import encode

__all__ = ["load_csv"]

Rows = list[tuple[int, list[str]]]


def _parse_number(text: str) -> float | None:
    """``float(text)`` or None when the cell is not a number."""
    try:
        return float(text)
    except ValueError:
        return None


def _read_rows(path: str, limit: int | None, max_bytes: int) -> tuple[list[str], Rows]:
    """Header and ``(line number, cells)`` rows; checks emptiness, blank lines and raggedness."""
    rows: Rows = []
    header: list[str] | None = None
    blank_line: int | None = None
    with open_data(path, max_bytes) as binary:
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


def _numeric_column(path: str, rows: Rows, col: int, name: str) -> np.ndarray:
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


def _target_columns(
    path: str, header: list[str], n_inputs: int, n_outputs: int, targets: Sequence[str] | None
) -> tuple[list[int], bool]:
    """The target column indices, and whether they are one class-label column."""
    m = len(header)
    if targets is None:
        if m == n_inputs + n_outputs:
            return list(range(n_inputs, m)), False
        if m == n_inputs + 1:
            return [m - 1], True
        counts = (
            f"{n_inputs + n_outputs}"
            if n_outputs == 1
            else f"n_inputs + n_outputs = {n_inputs + n_outputs} or n_inputs + 1 = {n_inputs + 1}"
        )
        raise DataError(f"{path}: expected {counts} columns for the spec, found {m}")
    if isinstance(targets, str):
        targets = [targets]
    columns: list[int] = []
    for name in targets:
        if name not in header:
            raise DataError(
                f"{path}: unknown target column {name!r}; the header has "
                f"{', '.join(repr(h) for h in header)}"
            )
        if header.index(name) in columns:
            raise DataError(f"{path}: target column {name!r} is named twice")
        columns.append(header.index(name))
    if len(columns) == n_outputs:
        return columns, False
    if len(columns) == 1:
        return columns, True
    raise DataError(
        f"{path}: {len(columns)} target columns named but the spec has {n_outputs} outputs; "
        f"expected {n_outputs} columns or 1 class-label column"
    )


def load_csv(
    path: str,
    n_inputs: int,
    n_outputs: int,
    targets: Sequence[str] | None,
    classes: list | None,
    limit: int | None,
    max_bytes: int,
) -> Raw:
    """Load a CSV file with a header row; see :func:`symgrad.data.load_data` for the rules."""
    header, rows = _read_rows(path, limit, max_bytes)
    _check_header(path, header)
    target_cols, label_column = _target_columns(path, header, n_inputs, n_outputs, targets)
    input_cols = [c for c in range(len(header)) if c not in target_cols]
    if len(input_cols) != n_inputs:
        raise DataError(
            f"{path}: expected {n_inputs} input columns for the spec, found {len(input_cols)}"
        )
    X = np.empty((len(rows), n_inputs), dtype=np.float64)
    for j, col in enumerate(input_cols):
        X[:, j] = _numeric_column(path, rows, col, header[col])
    features = [header[c] for c in input_cols]

    if len(target_cols) == 1 and (label_column or n_outputs == 1):
        col = target_cols[0]
        name = header[col]
        numeric = n_outputs == 1 and classes is None
        if numeric and any(_parse_number(cells[col]) is not None for _, cells in rows):
            Y = _numeric_column(path, rows, col, name).reshape(-1, 1)
            return Raw(path, X, Y, None, features, [name])
        enc = encode(
            [cells[col] for _, cells in rows],
            classes,
            where=path,
            describe=lambda i: f"row {rows[i][0]}, column {name!r}: label {rows[i][1][col]!r}",
            n_outputs=n_outputs,
            name=name,
            subject=f"column {name!r}",
        )
        return Raw(path, X, enc.Y, enc.classes, features, enc.names, enc.indices)
    Y = np.empty((len(rows), len(target_cols)), dtype=np.float64)
    for j, col in enumerate(target_cols):
        Y[:, j] = _numeric_column(path, rows, col, header[col])
    return Raw(path, X, Y, None, features, [header[c] for c in target_cols])
