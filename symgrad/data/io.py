"""Reading untrusted files: one-line open errors, gzip by magic bytes, and a cap on every read.

Every format reads through :func:`open_data` (or :func:`open_file` for ``.npz``, which needs a
seekable file), so no loader trusts ``st_size`` (0 for ``/dev/zero`` and pipes) or a header:
a loader consumes at most ``max_bytes + 1`` bytes of a file (after decompression for gzip)
before :class:`DataError` stops the read.

:data:`DEFAULT_MAX_BYTES` is 1 GiB.  A data set is held in memory several times while it
loads (the bytes read, the array, its float64 copy: up to about 10x for ``uint8`` images), so
1 GiB of input can cost ~10 GiB of memory in the worst case and ~3 GiB for float data, which a
workstation survives; it covers every data set the examples use (MNIST's pickle expands to
0.2 GB, Fashion-MNIST's IDX to 0.05 GB, CIFAR-10 as float32 arrays to 0.6 GB) and stops the
decompression bombs of issue 11 (a 190 KB gzip that expands to 1.8 GB).  A fixed figure, not
a fraction of this machine's memory, so that a file loads or fails the same way everywhere.
``load_data(..., max_bytes=...)`` (the CLI's ``--max-data-bytes``) raises or lowers it.
"""

from __future__ import annotations

import contextlib
import gzip
import io
import numbers
import os
import zlib
from collections.abc import Callable, Iterator
from typing import IO, Any

from ..errors import DataError

__all__ = [
    "DEFAULT_MAX_BYTES",
    "RAISE_HINT",
    "check_positive",
    "open_data",
    "open_file",
    "over_limit",
    "read_up_to",
    "resolve_max_bytes",
    "strip_gz",
]

DEFAULT_MAX_BYTES = 1 << 30
GZIP_MAGIC = b"\x1f\x8b"
CHUNK = 1 << 22
RAISE_HINT = "raise it with max_bytes= or --max-data-bytes"


def check_positive(name: str, value: Any) -> None:
    """Require ``value`` to be a positive integer (bools are not integers here)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise DataError(f"{name} must be a positive integer, got {value!r}")


def resolve_max_bytes(max_bytes: int | None) -> int:
    """``max_bytes`` checked, or :data:`DEFAULT_MAX_BYTES` (read at call time) for None."""
    if max_bytes is None:
        return DEFAULT_MAX_BYTES
    check_positive("max_bytes", max_bytes)
    return int(max_bytes)


def over_limit(where: str, what: str, max_bytes: int) -> str:
    """The message for ``what`` (``file``, ``decompressed data``) larger than the cap."""
    return f"{where}: {what} is larger than the data size limit of {max_bytes} bytes ({RAISE_HINT})"


def strip_gz(name: str) -> str:
    """``name`` without a trailing ``.gz``."""
    return name[:-3] if name.lower().endswith(".gz") else name


class _Bounded(io.RawIOBase):
    """A read-only view of ``stream`` that fails once more than ``limit`` bytes are consumed.

    Counting what the reader consumes (not what buffers below it read ahead) makes the limit
    exact: a file of ``limit`` bytes loads, one of ``limit + 1`` does not, and no more than
    ``limit + 1`` bytes are ever asked of ``stream``.  Gzip and I/O failures of the stream
    become one-line :class:`DataError`s naming ``where``.
    """

    def __init__(self, stream: IO[bytes], limit: int, where: str, message: str) -> None:
        super().__init__()
        self._stream = stream
        self._limit = limit
        self._where = where
        self._message = message
        self._count = 0

    def readable(self) -> bool:
        return True

    def _pass(self, size: int | None, call: Callable[[int], Any]) -> Any:
        """``call(n)`` on the stream for at most ``size`` bytes (None: as many as allowed)."""
        room = self._limit + 1 - self._count
        if room <= 0:
            raise DataError(self._message)
        try:
            got = call(room if size is None else min(size, room))
        except DataError:
            raise
        except (gzip.BadGzipFile, EOFError, zlib.error) as exc:  # only GzipFile raises these
            raise DataError(f"{self._where}: corrupt or truncated gzip data ({exc})") from exc
        except OSError as exc:
            raise DataError(f"{self._where}: cannot read file: {exc.strerror or exc}") from exc
        self._count += got if isinstance(got, int) else len(got)
        if self._count > self._limit:
            raise DataError(self._message)
        return got

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        if not len(view):
            return 0
        return self._pass(len(view), lambda n: self._stream.readinto(view[:n]) or 0)

    def read(self, size: int | None = -1) -> bytes:
        # Direct, so a pickle's 100 MB string is not read into a bytearray and then copied.
        if size == 0:
            return b""
        return self._pass(None if size is None or size < 0 else size, self._stream.read)

    def readline(self, size: int | None = -1) -> bytes:
        if size == 0:
            return b""
        return self._pass(None if size is None or size < 0 else size, self._stream.readline)


@contextlib.contextmanager
def open_file(path: str) -> Iterator[io.BufferedReader]:
    """Open ``path`` for reading bytes; a missing file, a folder or no access is a DataError."""
    if os.path.isdir(path):
        raise DataError(f"{path}: is a directory, expected a file")
    try:
        handle = open(path, "rb")  # noqa: SIM115 - closed below
    except FileNotFoundError as exc:
        raise DataError(f"{path}: file not found") from exc
    except OSError as exc:
        raise DataError(f"{path}: cannot open file: {exc.strerror or exc}") from exc
    with handle:
        yield handle


@contextlib.contextmanager
def open_data(path: str, max_bytes: int) -> Iterator[IO[bytes]]:
    """Open ``path`` for bounded reading, gunzipping it when it starts with ``1f 8b``.

    Consuming more than ``max_bytes`` bytes (after decompression), a corrupt gzip stream or
    an I/O failure raises :class:`DataError`.  Only a buffer's worth (8 KiB) is read ahead of
    what the caller consumes.  The compressed input of a gzip file is capped too (at twice
    the limit), so a stream of empty gzip members cannot run forever.
    """
    with open_file(path) as handle:
        try:
            gzipped = handle.peek(2)[:2] == GZIP_MAGIC
        except OSError as exc:
            raise DataError(f"{path}: cannot read file: {exc.strerror or exc}") from exc
        if not gzipped:
            with _Bounded(handle, max_bytes, path, over_limit(path, "file", max_bytes)) as top:
                yield top
            return
        message = over_limit(path, "compressed file", max_bytes).replace(
            "larger than the", "larger than twice the"
        )
        with (
            _Bounded(handle, 2 * max_bytes, path, message) as compressed,
            gzip.GzipFile(fileobj=compressed, mode="rb") as unzipped,
            _Bounded(
                unzipped, max_bytes, path, over_limit(path, "decompressed data", max_bytes)
            ) as top,
        ):
            yield top


def read_up_to(stream: IO[bytes], size: int) -> bytearray:
    """Read ``size`` bytes or until EOF, in chunks, so a lying header cannot force a huge read."""
    parts = bytearray()
    while len(parts) < size:
        chunk = stream.read(min(CHUNK, size - len(parts)))
        if not chunk:
            break
        parts += chunk
    return parts
