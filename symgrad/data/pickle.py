"""The restricted unpickler, and Nielsen-style ``mnist.pkl.gz`` sources built on it.

A pickle names the callables it wants run; this unpickler admits only the path NumPy's own
array pickles take, and checks each step's arguments instead of trusting them:

1. ``numpy.core.multiarray._reconstruct(numpy.ndarray, (0,), b'b')`` (also spelled
   ``numpy._core.multiarray``) makes an empty placeholder, never an array;
2. ``numpy.dtype(code, False, True)`` with a plain code (``'f4'``, ``'i8'``, ...), then its
   state ``(3, byteorder, None, None, None, -1, -1, 0)``;
3. the placeholder's state ``(1, shape, dtype, fortran_order, data)`` with ``data`` a bytes
   payload of exactly ``prod(shape) * itemsize`` bytes: the array is built here from a copy
   of those bytes (bool, integer or float dtype; C or Fortran order; no offset or strides;
   it owns its data), and checked once more;
4. ``_codecs.encode(text, 'latin1')``, which protocol 0-2 pickles use to spell bytes.

``numpy.ndarray`` itself is only a token for step 1: calling it (with an offset, a buffer,
strides, or none, which would hand back uninitialised memory) is refused, as is every other
global.  The loaded value must then be tuples and lists of such arrays.
"""

from __future__ import annotations

import _compat_pickle
import math
import os
import pickle
import re
from collections.abc import Callable
from typing import IO, Any

import numpy as np

from ..errors import DataError
from .dataset import Raw, from_arrays
from .io import open_data, resolve_max_bytes

__all__ = ["load_pickle_source", "safe_load_pickle"]

RULE = "only NumPy arrays, tuples and lists are allowed"
ARRAY_RULE = "only arrays in the form NumPy itself pickles them are allowed"
SPLITS = ("train", "validation", "test")
_MAX_DEPTH = 16
_MAX_DIMS = 32
_DTYPE_CODES = frozenset("b1 i1 u1 i2 u2 i4 u4 i8 u8 f2 f4 f8".split())
_DTYPE_CODE = re.compile(r"[A-Za-z][0-9]{0,3}")
_BYTE_ORDERS = ("<", ">", "=", "|")


def _short(value: Any, depth: int = 0) -> str:
    """A short repr for a message, cheap even for a 100 MB payload or a huge int."""
    kind = type(value)
    if kind in (bytes, str) and len(value) > 8:
        return f"{value[:8]!r}..."
    if kind in (tuple, list) and depth < 3:
        items = [_short(v, depth + 1) for v in value[:8]] + (["..."] if len(value) > 8 else [])
        if kind is list:
            return f"[{', '.join(items)}]"
        return f"({items[0]},)" if len(items) == 1 else f"({', '.join(items)})"
    if kind is int and value.bit_length() > 64:
        return f"<int of {value.bit_length()} bits>"
    if kind in (int, float, bool, bytes, str, type(None), _Global, _Dtype, _Array):
        return repr(value)
    return f"<{kind.__name__}>"


def _is_int(value: Any, *allowed: int) -> bool:
    """Whether ``value`` is a Python int or bool equal to one of ``allowed``."""
    return type(value) in (int, bool) and value in allowed


def _bad_state(where: str, what: str, state: Any) -> DataError:
    """The error for a state NumPy would not have written."""
    return DataError(
        f"{where}: refusing to unpickle {what} with state {_short(state)}: {ARRAY_RULE}"
    )


class _Global:
    """A global the unpickler admits: callable as the pickle asks, but no state may be set."""

    __slots__ = ("name", "_call", "_where")

    def __init__(self, name: str, call: Callable[..., Any], where: str) -> None:
        self.name, self._call, self._where = name, call, where

    def __call__(self, *args: Any) -> Any:
        return self._call(*args)

    def __repr__(self) -> str:
        return self.name

    def __setstate__(self, state: Any) -> None:
        raise DataError(f"{self._where}: refusing to set a state on '{self.name}': {ARRAY_RULE}")


class _Dtype:
    """``numpy.dtype(code, False, True)`` before and after its state is set."""

    __slots__ = ("base", "dtype", "_where")

    def __init__(self, base: np.dtype, where: str) -> None:
        self.base, self.dtype, self._where = base, None, where

    def __repr__(self) -> str:
        return f"numpy.dtype({self.base.str[1:]!r})"

    def __setstate__(self, state: Any) -> None:
        if self.dtype is not None or type(state) is not tuple or len(state) != 8:
            raise _bad_state(self._where, "a dtype", state)
        order = state[1]
        if order not in _BYTE_ORDERS or type(order) is not str:
            raise _bad_state(self._where, "a dtype", state)
        if self.base.str[1:] not in _DTYPE_CODES:  # refused later, with the array's place
            self.dtype = self.base.newbyteorder(order)
            return
        plain = state[0] == 3 and state[2:5] == (None, None, None) and state[5:] == (-1, -1, 0)
        if not plain or not all(_is_int(v, v) for v in (state[0], *state[5:])):
            raise _bad_state(self._where, "a dtype", state)
        if order == "|" and self.base.itemsize > 1:
            raise _bad_state(self._where, "a dtype", state)
        self.dtype = self.base.newbyteorder(order)


class _Array:
    """The placeholder ``_reconstruct`` returns; its state builds (or refuses) the array."""

    __slots__ = ("array", "refused", "_where")

    def __init__(self, where: str) -> None:
        self.array: np.ndarray | None = None
        self.refused: str | None = None
        self._where = where

    def __repr__(self) -> str:
        return "numpy.ndarray(...)"

    def __setstate__(self, state: Any) -> None:
        if self.array is not None or self.refused is not None:
            raise DataError(
                f"{self._where}: refusing to unpickle an array whose state is set twice"
            )
        if type(state) is not tuple or len(state) != 5 or not _is_int(state[0], 1):
            raise _bad_state(self._where, "an array", state)
        _, shape, dtype, fortran, data = state
        if type(dtype) is not _Dtype or dtype.dtype is None:
            raise _bad_state(self._where, "an array", state)
        if dtype.dtype.kind not in "biuf" or dtype.base.str[1:] not in _DTYPE_CODES:
            self.refused = str(dtype.dtype)  # reported with the array's place in the value
            return
        shape_ok = type(shape) is tuple and len(shape) <= _MAX_DIMS
        if not shape_ok or not all(type(d) is int and d >= 0 for d in shape):
            raise _bad_state(self._where, "an array", state)
        if not _is_int(fortran, 0, 1):
            raise _bad_state(self._where, "an array", state)
        if type(data) is str:  # a Python 2 str read with encoding='latin1'
            try:
                data = data.encode("latin-1")
            except UnicodeEncodeError as exc:
                raise _bad_state(self._where, "an array", state) from exc
        if type(data) is not bytes:
            raise _bad_state(self._where, "an array", state)
        self.array = self._build(shape, dtype.dtype, bool(fortran), data)

    def _build(self, shape: tuple, dtype: np.dtype, fortran: bool, data: bytes) -> np.ndarray:
        """A fresh array owning a copy of ``data``, after checking its size against ``shape``."""
        expected = math.prod(shape) * dtype.itemsize
        if len(data) != expected:
            raise DataError(
                f"{self._where}: refusing to unpickle an array of shape {shape} and dtype "
                f"{dtype} with {len(data)} bytes of data (expected {expected}): {ARRAY_RULE}"
            )
        order = "F" if fortran else "C"
        try:
            array = np.frombuffer(data, dtype=dtype).reshape(shape, order=order).copy(order)
        except ValueError as exc:  # an empty array whose sizes overflow
            raise DataError(
                f"{self._where}: refusing to unpickle an array of shape {shape}: {ARRAY_RULE}"
            ) from exc
        contiguous = array.flags.c_contiguous or array.flags.f_contiguous
        if not (array.flags.owndata and array.base is None and contiguous):
            raise DataError(f"{self._where}: refusing to unpickle an array view: {ARRAY_RULE}")
        return array


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


class _RestrictedUnpickler(pickle.Unpickler):
    """An unpickler whose ``find_class`` admits only what NumPy's array pickles need."""

    def __init__(self, file: IO[bytes], where: str) -> None:
        super().__init__(file, encoding="latin1")
        self._where = where
        self._ndarray = _Global("numpy.ndarray", self._call_ndarray, where)
        reconstruct = _Global("numpy.core.multiarray._reconstruct", self._reconstruct, where)
        self._admitted = {
            ("numpy.core.multiarray", "_reconstruct"): reconstruct,
            ("numpy._core.multiarray", "_reconstruct"): reconstruct,
            ("numpy", "ndarray"): self._ndarray,
            ("numpy", "dtype"): _Global("numpy.dtype", self._dtype, where),
            ("_codecs", "encode"): _Global("_codecs.encode", _latin1_encode, where),
        }

    def _refuse(self, call: str, args: tuple) -> DataError:
        """The error for an admitted global called other than as NumPy calls it."""
        shown = ", ".join(_short(a) for a in args)
        return DataError(f"{self._where}: refusing to unpickle '{call}({shown})': {ARRAY_RULE}")

    def _call_ndarray(self, *args: Any) -> Any:
        # ndarray(shape, dtype, buffer, offset, strides) reads memory outside the buffer with
        # a negative offset or stride, and hands back uninitialised memory without a buffer.
        raise DataError(
            f"{self._where}: refusing to unpickle a call to 'numpy.ndarray': {ARRAY_RULE}"
        )

    def _reconstruct(self, *args: Any) -> _Array:
        if len(args) == 3:
            cls, shape, code = args
            empty = type(shape) is tuple and len(shape) == 1 and _is_int(shape[0], 0)
            if cls is self._ndarray and empty and code in ("b", b"b") and type(shape[0]) is int:
                return _Array(self._where)
        raise self._refuse("numpy.core.multiarray._reconstruct", args)

    def _dtype(self, *args: Any) -> _Dtype:
        if len(args) == 3 and _is_int(args[1], 0) and _is_int(args[2], 1):
            code = args[0].decode("latin-1") if type(args[0]) is bytes else args[0]
            if type(code) is str and _DTYPE_CODE.fullmatch(code):
                try:
                    return _Dtype(np.dtype(code), self._where)
                except TypeError:
                    pass
        raise self._refuse("numpy.dtype", args)

    def find_class(self, module: str, name: str) -> Any:
        """Return an admitted global or raise DataError naming the refused one."""
        allowed = self._admitted.get((module, name))
        if allowed is not None:
            return allowed
        # Protocol 0-2 pickles spell Python 3 names the Python 2 way (__builtin__.eval).
        shown_module, shown_name = module, name
        if (module, name) in _compat_pickle.NAME_MAPPING:
            shown_module, shown_name = _compat_pickle.NAME_MAPPING[(module, name)]
        elif module in _compat_pickle.IMPORT_MAPPING:
            shown_module = _compat_pickle.IMPORT_MAPPING[module]
        if shown_module in ("posix", "nt") and hasattr(os, shown_name):
            shown_module = "os"  # os.system pickles as posix.system; show the familiar name
        raise DataError(
            f"{self._where}: refusing to unpickle '{shown_module}.{shown_name}': {RULE}"
        )

    def persistent_load(self, pid: Any) -> Any:
        """Persistent ids would hand objects in from outside: refuse them."""
        raise DataError(f"{self._where}: refusing to unpickle a persistent id: {RULE}")


def _unwrap(value: Any, where: str, at: str, depth: int, done: dict[int, Any]) -> Any:
    """The loaded value with placeholders replaced by arrays; anything else is refused.

    ``done`` maps ids already seen to their result, so shared objects are visited once (a
    small pickle can share one list thousands of times at every level).
    """
    location = f" at {at}" if at else ""
    if id(value) in done:
        result = done[id(value)]
        if result is None:
            raise DataError(
                f"{where}: refusing to unpickle a list or tuple that contains itself{location}"
            )
        return result
    if depth > _MAX_DEPTH:
        raise DataError(
            f"{where}: refusing to unpickle nesting deeper than {_MAX_DEPTH}{location}: {RULE}"
        )
    if type(value) in (tuple, list):
        done[id(value)] = None
        items = [_unwrap(v, where, f"{at}[{i}]", depth + 1, done) for i, v in enumerate(value)]
        result = tuple(items) if type(value) is tuple else items
    elif type(value) is _Array and value.refused is not None:
        raise DataError(
            f"{where}: refusing to unpickle an array of dtype {value.refused}{location}: "
            f"{RULE} (numeric dtypes only)"
        )
    elif type(value) is _Array and value.array is not None:
        result = value.array
    else:
        kind = {_Array: "array without its state", _Dtype: "dtype"}.get(
            type(value), type(value).__name__
        )
        if type(value) is _Global:
            kind = f"bare '{value.name}'"
        article = "an" if kind[:1].lower() in "aeiou" else "a"
        raise DataError(f"{where}: refusing to unpickle {article} {kind}{location}: {RULE}")
    done[id(value)] = result
    return result


def safe_load_pickle(path: str | os.PathLike, *, max_bytes: int | None = None) -> object:
    """Load a (possibly gzipped) pickle holding only tuples, lists and numeric NumPy arrays.

    Uses a restricted unpickler (``encoding='latin1'`` so Python 2 pickles such as
    Nielsen's ``mnist.pkl.gz`` load) that admits only NumPy's own array reconstruction and
    checks every step of it (see the module docstring); any other global, e.g. ``os.system``
    or ``builtins.eval``, is refused before it can be called.  At most ``max_bytes`` are read
    (after decompression; default :data:`symgrad.data.io.DEFAULT_MAX_BYTES`).  Every failure
    raises :class:`DataError`.
    """
    where = os.fspath(path)
    with open_data(where, resolve_max_bytes(max_bytes)) as stream:
        try:
            value = _RestrictedUnpickler(stream, where).load()
        except DataError:
            raise
        except EOFError as exc:
            raise DataError(f"{where}: pickle is truncated ({exc})") from exc
        except RecursionError as exc:
            raise DataError(f"{where}: pickle nests too deeply") from exc
        except Exception as exc:  # UnpicklingError, ValueError, TypeError, MemoryError, ...
            reason = str(exc) or type(exc).__name__
            raise DataError(f"{where}: not a valid pickle of NumPy arrays ({reason})") from exc
    try:
        return _unwrap(value, where, "", 0, {})
    except RecursionError as exc:
        raise DataError(f"{where}: pickle nests too deeply") from exc


def _is_pair(value: Any) -> bool:
    """Whether ``value`` looks like an ``(X, y)`` pair of arrays."""
    return (
        isinstance(value, (tuple, list))
        and len(value) == 2
        and all(isinstance(v, np.ndarray) for v in value)
    )


def load_pickle_source(
    path: str,
    split: str | None,
    n_outputs: int,
    classes: list | None,
    limit: int | None,
    max_bytes: int,
) -> Raw:
    """Load one split of a Nielsen-style ``(training, validation, test)`` pickle."""
    if split is not None and split not in SPLITS:
        raise DataError(f"{path}: unknown split {split!r}; expected train, validation or test")
    data = safe_load_pickle(path, max_bytes=max_bytes)
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
        X, y = data[SPLITS.index(name)]  # type: ignore[index]
        where = f"{path}:{name}"
    return from_arrays(
        where, X, y, names=("X", "y"), n_outputs=n_outputs, classes=classes, limit=limit
    )
