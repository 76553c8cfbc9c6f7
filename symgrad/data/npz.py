"""``.npz`` archives: arrays ``X`` and ``Y`` (or 1-D labels ``y``), read without pickles.

NumPy's own ``np.load`` allocates whatever a member's header declares and returns raw bytes
for a member without a ``.npy`` header, so members are read here instead: the header is
parsed by NumPy's bounded header reader, the declared size is checked against the data size
limit before anything is allocated, and the (possibly deflated) member is streamed, reading
at most the declared size plus one byte.
"""

from __future__ import annotations

import io
import math
import os
import struct
import zipfile
import zlib
from typing import IO, Any

import numpy as np
from numpy.lib import format as npy_format

from ..errors import DataError
from .dataset import Raw, first_non_finite, from_arrays
from .io import RAISE_HINT, open_file, read_up_to, resolve_max_bytes

__all__ = ["load_npz", "read_npz_xy"]

_NPY_MAGIC = b"\x93NUMPY"
_ZIP_MAGICS = (b"PK\x03\x04", b"PK\x05\x06")
_PICKLE_PROTO = b"\x80"
_MAX_DIMS = 32
_MAX_HEADER = 10000  # NumPy's own default max_header_size
_HEADER_READERS = {
    (1, 0): npy_format.read_array_header_1_0,
    (2, 0): npy_format.read_array_header_2_0,
}


class _Budget:
    """The bytes the arrays of one archive may still take under the data size limit."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.used = 0

    def take(self, where: str, shape: tuple, dtype: np.dtype) -> int:
        """Reserve the bytes of an array of ``shape`` and ``dtype``, or raise DataError."""
        nbytes = math.prod(shape) * dtype.itemsize
        if self.used + nbytes > self.max_bytes:
            left = f", {self.max_bytes - self.used} bytes left," if self.used else ""
            raise DataError(
                f"{where}: header declares shape {shape} of {dtype}, {nbytes} bytes, over the "
                f"data size limit{left} of {self.max_bytes} bytes ({RAISE_HINT})"
            )
        self.used += nbytes
        return nbytes


def _read_header(stream: IO[bytes], where: str, member: str) -> tuple[tuple, bool, np.dtype]:
    """Parse a member's ``.npy`` magic and header: ``(shape, fortran_order, dtype)``."""
    magic = bytes(read_up_to(stream, len(_NPY_MAGIC) + 2))
    if len(magic) < len(_NPY_MAGIC) + 2 or not magic.startswith(_NPY_MAGIC):
        raise DataError(f"{where}: member {member!r} does not start with a NumPy array header")
    version = (magic[-2], magic[-1])
    reader = _HEADER_READERS.get(version)
    if reader is None:
        raise DataError(
            f"{where}: member {member!r} has .npy format version {version[0]}.{version[1]}; "
            "expected 1.0 or 2.0"
        )
    length_format = "<H" if version == (1, 0) else "<I"
    length = bytes(read_up_to(stream, struct.calcsize(length_format)))
    if len(length) < struct.calcsize(length_format):
        raise DataError(f"{where}: member {member!r} has a truncated NumPy array header")
    size = struct.unpack(length_format, length)[0]
    if size > _MAX_HEADER:  # NumPy reads the whole header before it checks its length
        raise DataError(
            f"{where}: member {member!r} declares a NumPy array header of {size} bytes; "
            f"at most {_MAX_HEADER} are allowed"
        )
    header = io.BytesIO(length + read_up_to(stream, size))
    try:
        shape, fortran, dtype = reader(header)
    except (ValueError, SyntaxError, TypeError, struct.error, UserWarning) as exc:
        raise DataError(f"{where}: invalid NumPy array header ({exc})") from exc
    if len(shape) > _MAX_DIMS or any(d < 0 for d in shape):
        raise DataError(
            f"{where}: header declares shape {shape}; expected at most {_MAX_DIMS} "
            "non-negative sizes"
        )
    return tuple(int(d) for d in shape), fortran, dtype


def _read_member(
    archive: zipfile.ZipFile, path: str, key: str, member: str, budget: _Budget
) -> np.ndarray:
    """Read one numeric array; its header is checked before its data is read."""
    where = f"{path}: key {key!r}"
    with archive.open(member) as stream:
        shape, fortran, dtype = _read_header(stream, where, member)
        if dtype.hasobject:
            raise DataError(f"{where}: object arrays are not allowed")
        if dtype.kind not in "biuf" or dtype.fields is not None or dtype.subdtype is not None:
            raise DataError(f"{path}: key {key!r} has dtype {dtype}; expected a numeric array")
        nbytes = budget.take(where, shape, dtype)
        data = read_up_to(stream, nbytes + 1)
    if len(data) < nbytes:
        raise DataError(
            f"{where}: array data is truncated: shape {shape} of {dtype} needs {nbytes} bytes, "
            f"found {len(data)}"
        )
    if len(data) > nbytes:
        raise DataError(
            f"{where}: member {member!r} holds more data than its header declares "
            f"(shape {shape} of {dtype}, {nbytes} bytes)"
        )
    return np.frombuffer(data, dtype=dtype).reshape(shape, order="F" if fortran else "C")


def _array(archive: zipfile.ZipFile, path: str, key: str, member: str, budget: _Budget) -> Any:
    """:func:`_read_member` with zip and decompression failures as one-line DataErrors."""
    try:
        arr = _read_member(archive, path, key, member, budget)
    except DataError:
        raise
    except (
        zipfile.BadZipFile,
        zlib.error,
        EOFError,
        OSError,
        RuntimeError,  # an encrypted member
        NotImplementedError,  # an unsupported compression method
        ValueError,
    ) as exc:
        raise DataError(f"{path}: key {key!r}: cannot read array ({exc})") from exc
    bad = first_non_finite(arr)
    if bad is not None:
        raise DataError(
            f"{path}: key {key!r} has a non-finite value ({arr[bad]}) at index "
            f"{bad[0] if len(bad) == 1 else bad}"
        )
    return arr


def _open_archive(path: str, handle: IO[bytes]) -> zipfile.ZipFile:
    """Open ``handle`` as a zip archive; anything else gets a message saying what it is."""
    head = handle.read(len(_NPY_MAGIC))
    if head.startswith(_NPY_MAGIC):
        raise DataError(f"{path}: holds a single array, expected an .npz archive with X and Y")
    if not head.startswith(_ZIP_MAGICS):
        if head.startswith(_PICKLE_PROTO):
            raise DataError(
                f"{path}: holds pickled data, which is not allowed; expected an .npz archive"
            )
        raise DataError(f"{path}: not an .npz archive (it does not start with a zip header)")
    try:
        handle.seek(0)
        return zipfile.ZipFile(handle)
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError) as exc:
        raise DataError(f"{path}: not an .npz archive ({exc})") from exc


def read_npz_xy(
    path: str | os.PathLike, *, max_bytes: int | None = None
) -> tuple[np.ndarray, np.ndarray, str]:
    """Read ``X`` and ``Y`` (or ``y``) from an ``.npz`` archive; return ``(X, Y, key of Y)``.

    Only those two members are read, each checked before its data is: a ``.npy`` header,
    a numeric dtype, finite values, and together at most ``max_bytes`` of array data
    (default :data:`symgrad.data.io.DEFAULT_MAX_BYTES`).  Shapes are not checked here.
    """
    where = os.fspath(path)
    budget = _Budget(resolve_max_bytes(max_bytes))
    with open_file(where) as handle, _open_archive(where, handle) as archive:
        members: dict[str, str] = {}
        for name in archive.namelist():
            members.setdefault(name[:-4] if name.endswith(".npy") else name, name)
        found = ", ".join(repr(k) for k in members) if members else "none"
        if "X" not in members:
            raise DataError(f"{where}: missing array 'X' (keys found: {found})")
        y_key = "Y" if "Y" in members else "y" if "y" in members else None
        if y_key is None:
            raise DataError(f"{where}: missing array 'Y' or 'y' (keys found: {found})")
        X = _array(archive, where, "X", members["X"], budget)
        Y = _array(archive, where, y_key, members[y_key], budget)
    return X, Y, y_key


def load_npz(
    path: str, n_outputs: int, classes: list | None, limit: int | None, max_bytes: int
) -> Raw:
    """Load ``X`` and ``Y`` (or 1-D labels ``y``) from an ``.npz`` archive without pickles."""
    X, Y, y_key = read_npz_xy(path, max_bytes=max_bytes)
    names = ("key 'X'", f"key {y_key!r}")
    return from_arrays(path, X, Y, names=names, n_outputs=n_outputs, classes=classes, limit=limit)
