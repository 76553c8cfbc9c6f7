"""Atomic file writes: a new temporary file in the same folder, then ``os.replace``.

The temporary file is created by :func:`tempfile.mkstemp` (``O_CREAT | O_EXCL | O_NOFOLLOW``:
never an existing file, never through a planted symlink). The result keeps the mode of the file
it replaces, or gets the umask's default for a new file (``private`` files stay 0600).
"""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO


def _umask() -> int:
    """The process umask, read without changing it where the system allows."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    old = os.umask(0o022)  # elsewhere: set and restore at once
    os.umask(old)
    return old


def _final_mode(target: Path) -> int:
    try:
        return stat.S_IMODE(os.stat(target).st_mode)
    except OSError:
        return 0o666 & ~_umask()


@contextlib.contextmanager
def atomic_open(
    path: str | os.PathLike[str], mode: str = "w", *, private: bool = False, **kwargs
) -> Iterator[IO]:
    """Open a new temporary sibling of ``path`` for writing; rename it into place on success.

    On any exception the temporary file is removed and ``path`` is untouched. The file keeps
    the mode of the one it replaces (the umask's default when new); ``private`` keeps 0600.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        if not private and hasattr(os, "fchmod"):
            os.fchmod(fd, _final_mode(target))
        with os.fdopen(fd, mode, **kwargs) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_text(path: str | os.PathLike[str], text: str, *, private: bool = False) -> None:
    """Write ``text`` to ``path`` atomically (UTF-8)."""
    with atomic_open(path, "w", private=private, encoding="utf-8", newline="\n") as fh:
        fh.write(text)


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes, *, private: bool = False) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_open(path, "wb", private=private) as fh:
        fh.write(data)
