"""Chunked training data for the Dask driver: Zarr arrays and folders of ``.npz`` shards.

A chunked source is opened as a pair of lazy ``dask.array`` objects: the client reads only
metadata (shapes, dtypes, chunk sizes), and each worker reads its own partitions, so the data is
never loaded whole on the client. Every partition is checked where it is read (finite inputs,
targets of the right shape, labels in range) and a bad one raises :class:`DataError` naming the
file and the row.

Sources (``open_chunked``):

* ``PATH.zarr`` or ``zarr:PATH``: a Zarr group holding ``X`` (samples, inputs) and ``Y``
  (samples, outputs) or ``y`` (samples,) labels. The row chunks of ``X`` are the partitions.
* a folder holding ``*.npz`` shards, each with ``X`` and ``Y`` (or ``y``), taken in name order;
  one shard is one partition (``np.savez`` or ``np.savez_compressed``; no pickles).
* anything else is read whole by :func:`symgrad.data.load_data` (CSV, one ``.npz``, IDX,
  pickle) and split into partitions on the client: fine for data that fits one machine.

Labels (``y``, 1-D): with one output they are used as they are (0/1 for a classifier); with
``k > 1`` outputs they must be whole numbers ``0..k-1`` and are one-hot encoded per partition.
Zarr paths and shard folders must be readable by every worker (a shared file system or an
object store URL that Zarr understands).
"""

from __future__ import annotations

import os
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DataError

__all__ = [
    "ChunkedData",
    "is_chunked_source",
    "open_chunked",
    "write_npz_shards",
    "write_zarr",
]

_ZARR_PREFIX = "zarr:"


@dataclass
class ChunkedData:
    """Training data as lazy dask arrays with one column chunk and matching row chunks.

    ``X`` is ``(samples, inputs)`` and ``Y`` is ``(samples, outputs)``, both of the requested
    dtype; ``kind`` is ``"zarr"``, ``"npz-shards"`` or ``"in-memory"``.
    """

    X: Any
    Y: Any
    source: str
    kind: str
    classes: list | None = None

    @property
    def samples(self) -> int:
        return int(self.X.shape[0])

    @property
    def partitions(self) -> int:
        return len(self.X.chunks[0])


def _zarr_path(source: str) -> str | None:
    if source.startswith(_ZARR_PREFIX):
        return source[len(_ZARR_PREFIX) :]
    if source.rstrip("/\\").lower().endswith(".zarr"):
        return source
    return None


def is_chunked_source(source: str | os.PathLike) -> bool:
    """Whether ``source`` names a Zarr group or a folder (read partition by partition)."""
    text = os.fspath(source)
    return _zarr_path(text) is not None or os.path.isdir(text)


def open_chunked(
    source: str | os.PathLike,
    *,
    n_inputs: int,
    n_outputs: int,
    dtype: Any = np.float64,
    limit: int | None = None,
    targets: Sequence[str] | None = None,
    classes: Sequence | None = None,
    partition_rows: int | None = None,
) -> ChunkedData:
    """Open ``source`` lazily as dask arrays checked against ``n_inputs`` and ``n_outputs``.

    Args:
        source: a Zarr group (``*.zarr`` or ``zarr:PATH``), a folder of ``.npz`` shards, or any
            source of :func:`symgrad.data.load_data` (read whole, then split).
        n_inputs, n_outputs: the spec's sizes.
        dtype: the floating-point dtype of the returned arrays.
        limit: keep only the first ``limit`` samples (later partitions are never read).
        targets: CSV target columns (only for sources read by ``load_data``).
        classes: the class labels in one-hot order (only for sources read by ``load_data``;
            chunked sources hold labels 0..k-1 or one-hot targets).
        partition_rows: rows per partition for sources read whole (default: 8 partitions).

    Returns:
        A :class:`ChunkedData`. Raises :class:`DataError` for anything that does not fit.
    """
    import dask.array as da

    text = os.fspath(source)
    dtype = np.dtype(dtype)
    if dtype.kind != "f":
        raise DataError(f"dtype must be a floating-point type, got {dtype}")
    if limit is not None and limit < 1:
        raise DataError(f"limit must be at least 1, got {limit}")
    zarr_path = _zarr_path(text)
    if zarr_path is not None:
        if "://" not in zarr_path:  # workers have other working directories
            zarr_path = os.path.abspath(zarr_path)
        X, Y = _open_zarr(zarr_path, n_inputs, n_outputs, dtype)
        kind = "zarr"
    elif os.path.isdir(text):
        X, Y = _open_npz_folder(os.path.abspath(text), n_inputs, n_outputs, dtype)
        kind = "npz-shards"
    else:
        from . import load_data

        ds = load_data(
            text,
            n_inputs=n_inputs,
            n_outputs=n_outputs,
            targets=targets,
            classes=classes,
            dtype=dtype,
            limit=limit,
        )
        n = ds.X.shape[0]
        rows = partition_rows or max(1, -(-n // 8))
        X = da.from_array(ds.X, chunks=(rows, -1))
        Y = da.from_array(ds.Y, chunks=(rows, -1))
        return ChunkedData(X, Y, text, "in-memory", ds.classes)
    if targets:
        raise DataError(f"{text}: --target names CSV columns; a {kind} source has X and Y arrays")
    if classes:
        raise DataError(
            f"{text}: --classes names labels; a {kind} source holds labels 0..k-1 or one-hot Y"
        )
    if limit is not None and limit < X.shape[0]:
        X, Y = X[:limit], Y[:limit]
    return ChunkedData(X, Y, text, kind)


# ---------------------------------------------------------------------------------------------
# checks run on the worker, one partition at a time
# ---------------------------------------------------------------------------------------------


def _check_inputs(block: np.ndarray, where: str, first_row: int, dtype: np.dtype) -> np.ndarray:
    """Cast a block of ``X`` to ``dtype``; refuse a non-finite value, naming its row."""
    if block.dtype.kind not in "biuf":
        raise DataError(f"{where}: X has dtype {block.dtype}; expected numbers")
    out = np.asarray(block, dtype=dtype)
    if not np.isfinite(out).all():
        row, col = np.argwhere(~np.isfinite(out))[0]
        raise DataError(
            f"{where}: X has a non-finite value ({out[row, col]}) at row {first_row + row}, "
            f"column {col}"
        )
    return out


def _targets(
    block: np.ndarray, n_outputs: int, dtype: np.dtype, where: str, first_row: int
) -> np.ndarray:
    """Targets ``(rows, n_outputs)`` from a block of ``Y`` (2-D) or of labels ``y`` (1-D)."""
    if block.dtype.kind not in "biuf":
        raise DataError(f"{where}: the targets have dtype {block.dtype}; expected numbers")
    values = np.asarray(block, dtype=np.float64)
    if not np.isfinite(values).all():
        row = int(np.argwhere(~np.isfinite(values))[0][0])
        raise DataError(f"{where}: non-finite target at row {first_row + row}")
    if values.ndim == 2:
        return values.astype(dtype, copy=False)
    if n_outputs == 1:
        return values.astype(dtype)[:, None]
    bad = (values != np.round(values)) | (values < 0) | (values >= n_outputs)
    if bad.any():
        row = int(np.argmax(bad))
        raise DataError(
            f"{where}: label {block[row].item()!r} at row {first_row + row} is not one of the "
            f"classes 0..{n_outputs - 1}"
        )
    out = np.zeros((values.shape[0], n_outputs), dtype=dtype)
    out[np.arange(values.shape[0]), values.astype(np.int64)] = 1
    return out


# ---------------------------------------------------------------------------------------------
# Zarr
# ---------------------------------------------------------------------------------------------


def _open_zarr(path: str, n_inputs: int, n_outputs: int, dtype: np.dtype):
    try:
        import zarr
    except ImportError as exc:
        raise DataError(
            f"{path}: reading Zarr needs the zarr package: pip install 'symgrad[cluster]'"
        ) from exc
    import dask.array as da

    try:
        group = zarr.open_group(path, mode="r")
    except Exception as exc:  # FileNotFoundError, GroupNotFoundError, ...
        raise DataError(f"{path}: not a Zarr group with arrays X and Y ({exc})") from exc
    names = set(group.array_keys())
    found = ", ".join(sorted(repr(k) for k in names)) or "none"
    if "X" not in names:
        raise DataError(f"{path}: missing array 'X' (arrays found: {found})")
    y_key = "Y" if "Y" in names else "y" if "y" in names else None
    if y_key is None:
        raise DataError(f"{path}: missing array 'Y' or 'y' (arrays found: {found})")
    x_meta, y_meta = group["X"], group[y_key]
    _check_shapes(path, tuple(x_meta.shape), tuple(y_meta.shape), y_key, n_inputs, n_outputs)
    X = da.from_zarr(path, component="X")
    Y = da.from_zarr(path, component=y_key)
    X = X.rechunk({1: -1})
    Y = Y.rechunk((X.chunks[0],) + ((-1,) if Y.ndim == 2 else ()))
    X = X.map_blocks(_zarr_inputs, where=f"{path}/X", out_dtype=dtype, dtype=dtype)
    Y = Y.map_blocks(
        _zarr_targets,
        n_outputs=n_outputs,
        where=f"{path}/{y_key}",
        out_dtype=dtype,
        dtype=dtype,
        chunks=(X.chunks[0], (n_outputs,)),
        **({"new_axis": 1} if Y.ndim == 1 else {}),
    )
    return X, Y


def _first_row(block_info) -> int:
    return int(block_info[0]["array-location"][0][0]) if block_info else 0


def _zarr_inputs(block, where, out_dtype, block_info=None):
    return _check_inputs(block, where, _first_row(block_info), np.dtype(out_dtype))


def _zarr_targets(block, n_outputs, where, out_dtype, block_info=None):
    return _targets(block, n_outputs, np.dtype(out_dtype), where, _first_row(block_info))


def _check_shapes(where, x_shape, y_shape, y_key, n_inputs, n_outputs) -> None:
    if len(x_shape) != 2:
        raise DataError(f"{where}: 'X' must be 2-D (samples, inputs), found shape {x_shape}")
    if x_shape[1] != n_inputs:
        raise DataError(f"{where}: 'X' has {x_shape[1]} columns but the spec has {n_inputs} inputs")
    if len(y_shape) not in (1, 2):
        raise DataError(
            f"{where}: {y_key!r} must be 2-D (samples, outputs) or 1-D labels, found shape "
            f"{y_shape}"
        )
    if y_shape[0] != x_shape[0]:
        raise DataError(f"{where}: 'X' has {x_shape[0]} samples but {y_key!r} has {y_shape[0]}")
    if len(y_shape) == 2 and y_shape[1] != n_outputs:
        raise DataError(
            f"{where}: {y_key!r} has {y_shape[1]} columns but the spec has {n_outputs} outputs"
        )


# ---------------------------------------------------------------------------------------------
# folders of .npz shards
# ---------------------------------------------------------------------------------------------


def _npy_header(path: str, key: str) -> tuple[tuple[int, ...], np.dtype] | None:
    """Shape and dtype of ``key`` in an .npz archive, read from its header only."""
    with zipfile.ZipFile(path) as archive:
        member = f"{key}.npy"
        if member not in archive.namelist():
            return None
        with archive.open(member) as fh:
            version = np.lib.format.read_magic(fh)
            if version == (1, 0):
                shape, _, dtype = np.lib.format.read_array_header_1_0(fh)
            else:
                shape, _, dtype = np.lib.format.read_array_header_2_0(fh)
    return tuple(shape), np.dtype(dtype)


def _shard_meta(path: str, n_inputs: int, n_outputs: int):
    try:
        x = _npy_header(path, "X")
        y_key = next((k for k in ("Y", "y") if _npy_header(path, k) is not None), None)
    except (OSError, zipfile.BadZipFile, ValueError) as exc:
        raise DataError(f"{path}: not an .npz archive ({exc})") from exc
    if x is None:
        raise DataError(f"{path}: missing array 'X'")
    if y_key is None:
        raise DataError(f"{path}: missing array 'Y' or 'y'")
    y = _npy_header(path, y_key)
    for key, (_, dt) in (("X", x), (y_key, y)):
        if dt.hasobject or dt.kind not in "biuf":
            raise DataError(f"{path}: {key!r} has dtype {dt}; expected a numeric array")
    _check_shapes(path, x[0], y[0], y_key, n_inputs, n_outputs)
    return x[0][0], y_key


def _read_shard(path: str, key: str, stamp: tuple[int, int]) -> np.ndarray:  # noqa: ARG001
    """One array of one shard (``stamp``, the file's size and mtime, only keys the task)."""
    try:
        with np.load(path, allow_pickle=False) as archive:
            return archive[key]
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        raise DataError(f"{path}: key {key!r}: cannot read array ({exc})") from exc


def _shard_inputs(path, stamp, dtype, first_row):
    return _check_inputs(_read_shard(path, "X", stamp), path, first_row, dtype)


def _shard_targets(path, key, stamp, n_outputs, dtype, first_row):
    return _targets(_read_shard(path, key, stamp), n_outputs, dtype, f"{path}: {key}", first_row)


def _open_npz_folder(folder: str, n_inputs: int, n_outputs: int, dtype: np.dtype):
    import dask.array as da
    from dask import delayed

    shards = sorted(p for p in Path(folder).iterdir() if p.suffix == ".npz" and p.is_file())
    if not shards:
        raise DataError(f"{folder}: a folder with no .npz shards")
    xs, ys = [], []
    first = 0
    for shard in shards:
        path = str(shard)
        rows, y_key = _shard_meta(path, n_inputs, n_outputs)
        if rows == 0:
            continue
        st = shard.stat()
        stamp = (st.st_size, st.st_mtime_ns)
        x = delayed(_shard_inputs, pure=True)(path, stamp, dtype, first)
        y = delayed(_shard_targets, pure=True)(path, y_key, stamp, n_outputs, dtype, first)
        xs.append(da.from_delayed(x, shape=(rows, n_inputs), dtype=dtype))
        ys.append(da.from_delayed(y, shape=(rows, n_outputs), dtype=dtype))
        first += rows
    if not xs:
        raise DataError(f"{folder}: every .npz shard is empty")
    return da.concatenate(xs, axis=0), da.concatenate(ys, axis=0)


# ---------------------------------------------------------------------------------------------
# writers (for tests, benchmarks and converting data once)
# ---------------------------------------------------------------------------------------------


def write_zarr(path: str | os.PathLike, X, Y, chunk_rows: int) -> str:
    """Write ``X`` and ``Y`` (NumPy or dask arrays) as a Zarr group with row chunks."""
    import dask.array as da
    import zarr

    path = os.fspath(path)
    group = zarr.open_group(path, mode="w")
    for key, arr in (("X", X), ("Y" if np.ndim(Y) == 2 else "y", Y)):
        chunks = (chunk_rows,) + tuple(arr.shape[1:])
        target = group.create_array(key, shape=arr.shape, chunks=chunks, dtype=arr.dtype)
        if isinstance(arr, da.Array):
            da.store(arr.rechunk(chunks), target, lock=False)
        else:
            target[...] = arr
    return path


def write_npz_shards(
    folder: str | os.PathLike, X: np.ndarray, Y: np.ndarray, rows_per_shard: int
) -> list[str]:
    """Write ``X`` and ``Y`` as ``part-00000.npz``, ``part-00001.npz``, ... in ``folder``.

    Each shard is written to a temporary name and renamed into place.
    """
    os.makedirs(folder, exist_ok=True)
    key = "Y" if np.ndim(Y) == 2 else "y"
    paths = []
    for i, lo in enumerate(range(0, X.shape[0], rows_per_shard)):
        path = os.path.join(folder, f"part-{i:05d}.npz")
        tmp = os.path.join(folder, f".part-{i:05d}.{os.getpid()}.tmp")
        with open(tmp, "wb") as fh:
            np.savez(fh, X=X[lo : lo + rows_per_shard], **{key: Y[lo : lo + rows_per_shard]})
        os.replace(tmp, path)
        paths.append(path)
    return paths
