"""IDX files (MNIST, Fashion-MNIST), gzipped or not: reading, writing, image/label pairs.

An IDX file is ``00 00 <type> <ndim>``, ``ndim`` big-endian uint32 sizes, then the data.  The
header is checked before anything is read or allocated: at most :data:`MAX_DIMS` sizes, and
a declared size within the data size limit.
"""

from __future__ import annotations

import gzip as gzip_lib
import math
import os
import struct

import numpy as np

from ..errors import DataError
from ..runtime.atomic import atomic_write_bytes
from .dataset import Raw
from .io import RAISE_HINT, open_data, read_up_to, resolve_max_bytes, strip_gz
from .labels import encode_array

__all__ = ["MAX_DIMS", "labels_path_for", "load_idx_files", "load_idx_prefix", "read_idx"]

MAX_DIMS = 32  # NumPy 1.x's limit (NumPy 2 allows 64); IDX data sets use 1 to 4

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


def _read_idx(path: str, max_bytes: int, limit: int | None = None) -> tuple[np.ndarray, int]:
    """Read an IDX file (optionally only the first ``limit`` items); return (array, count).

    ``count`` is the number of items the header declares.  Without ``limit`` the payload
    must be exactly the declared size; with it only the part read is checked.
    """
    with open_data(path, max_bytes) as stream:
        head = read_up_to(stream, 4)
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
        if ndim > MAX_DIMS:
            raise DataError(
                f"{path}: IDX header declares {ndim} dimensions; at most {MAX_DIMS} are supported"
            )
        dims_raw = read_up_to(stream, 4 * ndim)
        if len(dims_raw) < 4 * ndim:
            raise DataError(f"{path}: IDX header is truncated: expected {ndim} dimension sizes")
        dims = struct.unpack(f">{ndim}I", dims_raw)
        dtype = _IDX_TYPES[code]
        count = dims[0]
        keep = count if limit is None else min(count, limit)
        item_bytes = math.prod(dims[1:]) * dtype.itemsize
        want = keep * item_bytes
        shape_text = "x".join(str(d) for d in dims)
        # An item larger than the limit cannot be read even when the count is 0, and NumPy
        # cannot even describe an empty array whose other sizes multiply past 2**63.
        declared = max(want, item_bytes)
        if declared > max_bytes:
            what = f"{want} bytes of data" if want >= item_bytes else f"{item_bytes} bytes per item"
            raise DataError(
                f"{path}: IDX header declares shape {shape_text} of {dtype.name}, {what}, over "
                f"the data size limit of {max_bytes} bytes ({RAISE_HINT})"
            )
        payload = read_up_to(stream, want)
        if len(payload) < want:
            raise DataError(
                f"{path}: IDX payload is truncated: shape {shape_text} needs "
                f"{count * item_bytes} bytes of data, found {len(payload)}"
            )
        if limit is None and stream.read(1):
            raise DataError(
                f"{path}: IDX payload is larger than its header declares: shape {shape_text} "
                f"needs {want} bytes of data, found more"
            )
    array = np.frombuffer(payload, dtype=dtype).reshape((keep, *dims[1:]))
    return array.astype(dtype.newbyteorder("=")), count


def read_idx(path: str | os.PathLike, *, max_bytes: int | None = None) -> np.ndarray:
    """Read one IDX file, gzipped or not (decided by its magic bytes, not its name).

    Returns a native-endian array with the declared shape.  A bad magic number, unknown
    type code, more than :data:`MAX_DIMS` dimensions, a truncated header or payload, trailing
    bytes, or more than ``max_bytes`` of data (default
    :data:`symgrad.data.io.DEFAULT_MAX_BYTES`, after decompression) raise :class:`DataError`.
    """
    return _read_idx(os.fspath(path), resolve_max_bytes(max_bytes))[0]


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
    if not 1 <= arr.ndim <= MAX_DIMS:
        raise DataError(f"{os.fspath(path)}: IDX needs 1 to {MAX_DIMS} dimensions, got {arr.ndim}")
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


def labels_path_for(images_path: str) -> str:
    """The labels file beside an ``...images-idx3-ubyte[.gz]`` file, or a DataError."""
    folder, name = os.path.split(images_path)
    stem = strip_gz(name)[: -len("idx3-ubyte")]
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


def load_idx_prefix(
    prefix: str, n_outputs: int, classes: list | None, limit: int | None, max_bytes: int
) -> Raw:
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
    return load_idx_files(paths[0], paths[1], n_outputs, classes, limit, max_bytes)


def load_idx_files(
    images_path: str,
    labels_path: str,
    n_outputs: int,
    classes: list | None,
    limit: int | None,
    max_bytes: int,
) -> Raw:
    """Flatten and scale the images, encode the labels, check the counts agree."""
    images, n_images = _read_idx(images_path, max_bytes, limit)
    labels, n_labels = _read_idx(labels_path, max_bytes, limit)
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
    enc = encode_array(labels, n_outputs, classes, labels_path)
    features = [f"pixel{i}" for i in range(X.shape[1])]
    indices = labels if enc.indices is None else enc.indices
    return Raw(images_path, X, enc.Y, enc.classes, features, enc.names, indices)
