"""The module loader: generated trainers written to a private cache keyed by their hash, imported.

The cache folder is ``$SYMGRAD_CACHE``, else ``$XDG_CACHE_HOME/symgrad``, else
``~/.cache/symgrad``. It is created with mode 0700; a cache folder that is writable by the group
or by others, or owned by another user, is refused (:class:`~symgrad.errors.CacheError`), since
anyone who can write there could plant code.

An entry is ``<name>_<sha16>.py``, where ``sha16`` starts the SHA-256 of the source. Before an
entry is used, its bytes are hashed and compared with the source's full SHA-256; an entry that
does not match (truncated, edited, planted) is regenerated. Entries are written to a new
temporary file (``O_CREAT | O_EXCL | O_NOFOLLOW``) and renamed into place. The module itself is
compiled from the source in memory (never from the file, and never from a ``.pyc``): the entry
on disk is what tracebacks and ``inspect`` show.
"""

from __future__ import annotations

import hashlib
import importlib.abc
import importlib.util
import os
import stat
import sys
from pathlib import Path
from types import ModuleType

from ..errors import CacheError
from ..spec import Spec, load_spec
from .atomic import atomic_write_text
from .limits import check_model_memory

#: The environment variable naming the cache folder.
CACHE_ENV = "SYMGRAD_CACHE"


def write_module(source: str, path: str | os.PathLike) -> Path:
    """Write a generated module atomically (a new temporary file renamed into place)."""
    path = Path(path)
    atomic_write_text(path, source)
    return path


def default_cache_dir() -> Path:
    """``$SYMGRAD_CACHE``, else ``$XDG_CACHE_HOME/symgrad``, else ``~/.cache/symgrad``."""
    base = os.environ.get(CACHE_ENV) or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "symgrad"
    )
    return Path(base)


def _describe_dir(path: Path) -> str:
    given = os.environ.get(CACHE_ENV)
    if given and Path(given) == path:
        return f"the module cache {CACHE_ENV}={given}"
    return f"the module cache {path}"


def prepare_cache_dir(path: Path | None = None) -> Path:
    """Create the cache folder (0700) if needed and check that it is private and writable.

    Raises:
        CacheError: the path is not a folder, is owned by another user, is writable by the
            group or others, or cannot be created or written.
    """
    path = Path(path) if path is not None else default_cache_dir()
    where = _describe_dir(path)
    try:
        if not os.path.lexists(path):
            if path.parent != path:
                path.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.mkdir(path, 0o700)
            except FileExistsError:
                pass  # created meanwhile by another process: checked below like any other
        info = os.stat(path)
    except (NotADirectoryError, FileExistsError):
        raise CacheError(f"{where}: a part of the path is a file, not a folder") from None
    except OSError as exc:
        raise CacheError(f"{where}: cannot be created ({exc.strerror})") from None
    if not stat.S_ISDIR(info.st_mode):
        raise CacheError(f"{where}: not a folder; point {CACHE_ENV} at a folder")
    if hasattr(os, "geteuid"):
        if info.st_uid != os.geteuid():
            raise CacheError(
                f"{where}: owned by another user (uid {info.st_uid}); "
                f"point {CACHE_ENV} at a folder of your own"
            )
        if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
            raise CacheError(
                f"{where}: writable by other users (mode {stat.S_IMODE(info.st_mode):04o}), who "
                f"could plant code in it; run chmod 700 {path}, or point {CACHE_ENV} elsewhere"
            )
    if not os.access(path, os.W_OK | os.X_OK):
        raise CacheError(f"{where}: not writable; point {CACHE_ENV} at a writable folder")
    return path


def _entry_matches(path: Path, digest: str, size: int) -> bool:
    """Whether ``path`` is a regular file of ours whose bytes hash to ``digest``."""
    try:
        flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
        fd = os.open(path, flags)  # never through a symlink, never waiting on a FIFO
    except OSError:
        return False  # missing, a symlink, unreadable: (re)write it
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_size != size:
            return False
        if hasattr(os, "geteuid") and info.st_uid != os.geteuid():
            return False
        with os.fdopen(fd, "rb", closefd=False) as fh:
            data = fh.read(size + 1)
    except OSError:
        return False
    finally:
        os.close(fd)
    return hashlib.sha256(data).hexdigest() == digest


def cache_entry(source: str, module_name: str, cache_dir: Path | None = None) -> Path:
    """The verified cache file of ``source``, written (or rewritten when it does not match)."""
    data = source.encode("utf-8")
    digest = hashlib.sha256(data).hexdigest()
    folder = prepare_cache_dir(cache_dir)
    path = folder / f"{module_name}_{digest[:16]}.py"
    if not _entry_matches(path, digest, len(data)):
        try:
            atomic_write_text(path, source, private=True)
        except OSError as exc:
            raise CacheError(
                f"{_describe_dir(folder)}: cannot write {path.name} ({exc.strerror})"
            ) from None
    return path


class _VerifiedSource(importlib.abc.SourceLoader):
    """Serves the source held in memory; no bytecode is read or written (``.pyc``)."""

    def __init__(self, source: str, filename: str) -> None:
        self._source = source
        self._filename = filename

    def get_filename(self, fullname: str) -> str:  # noqa: ARG002
        return self._filename

    def get_data(self, path: str) -> bytes:  # noqa: ARG002
        return self._source.encode("utf-8")

    def get_source(self, fullname: str) -> str:  # noqa: ARG002
        return self._source

    def source_to_code(self, data, path, *, _optimize=-1):  # noqa: ARG002
        try:
            return compile(data, path, "exec", dont_inherit=True)
        except (SyntaxError, ValueError) as exc:
            raise RuntimeError(
                f"internal error: the generated module {path} does not compile ({exc}); "
                "please report it"
            ) from None


def _exec_module(source: str, module_name: str, filename: str) -> ModuleType:
    loader = _VerifiedSource(source, filename)
    spec = importlib.util.spec_from_loader(module_name, loader, origin=filename)
    module = importlib.util.module_from_spec(spec)
    module.__file__ = filename
    sys.modules[module_name] = module
    try:
        loader.exec_module(module)
    except BaseException:
        sys.modules.pop(module_name, None)
        raise
    return module


def import_module_from_source(
    source: str, module_name: str, cache_dir: Path | None = None
) -> ModuleType:
    """Compile ``source``, keep a verified copy in the cache, and import it as a module.

    The module is named after the source's hash, so the same source is imported once per
    process.
    """
    digest = hashlib.sha256(source.encode("utf-8")).hexdigest()[:16]
    qualified = f"symgrad_generated_{module_name}_{digest}"
    if qualified in sys.modules:
        return sys.modules[qualified]
    path = cache_entry(source, module_name, cache_dir)
    return _exec_module(source, qualified, str(path))


def import_path(path: str | os.PathLike, module_name: str | None = None) -> ModuleType:
    """Import a generated module from a file path (compiled from its text, no ``.pyc``)."""
    path = Path(path)
    module_name = module_name or f"symgrad_generated_{path.stem}"
    if module_name in sys.modules:
        return sys.modules[module_name]
    return _exec_module(path.read_text(encoding="utf-8"), module_name, str(path))


#: the trainers :func:`load_trainer` builds
BACKENDS = ("numpy", "numba", "torch")


def load_trainer(
    spec: Spec | str | os.PathLike,
    seed: int | None = None,
    dtype=None,
    budget: float | None = None,
    backend: str = "numpy",
    notice=None,
):
    """Generate (or reuse, keyed by hash) the trainer for ``spec`` and return an instance.

    Deriving and printing run within one time budget (``budget`` seconds, else
    ``$SYMGRAD_TIME_BUDGET``, else 60 s) from any thread; see :mod:`symgrad.runtime.bounded`.
    ``backend="numba"`` builds the trainer whose ``fit`` runs each epoch's batch loop in one
    compiled function (:mod:`symgrad.codegen.numba_backend`; compiled on the first ``fit``,
    then cached on disk beside the module). Where Numba is missing or the spec needs what it
    does not lay out, the NumPy trainer is returned and ``notice`` (a function of one line of
    text; default: printed to stderr) is told why. ``backend="torch"`` builds the PyTorch
    trainer (:mod:`symgrad.codegen.torch_backend`); a spec it does not lay out raises SpecError.

    Raises:
        LimitError: the model would need more memory than ``$SYMGRAD_MAX_MEMORY`` allows, or
            deriving and printing it ran past the budget (:class:`~symgrad.errors.BudgetError`).
        CacheError: the module cache is not usable.
        ValueError: ``backend`` is not one of :data:`BACKENDS`.
    """
    from .bounded import _run, module_source

    if backend not in BACKENDS:
        raise ValueError(f"backend must be numpy, numba or torch, not {backend!r}")
    if not isinstance(spec, Spec):
        spec = load_spec(spec)
    check_model_memory(spec, dtype)
    prepare_cache_dir()  # before the derivation: a cache that cannot be used fails at once
    if backend == "torch":  # PyTorch tensors (symgrad.codegen.torch_backend); SpecError: refused
        from ..codegen.torch_backend import check

        check(spec)
        if importlib.util.find_spec("torch") is None:
            raise ImportError("backend='torch' needs PyTorch: pip install 'symgrad[torch]'")
        producer = "symgrad.codegen.torch_backend:torch_source"
        source = _run("module", spec, budget=budget, producer=producer)
        module = import_module_from_source(source, f"{spec.name}_torch")
    elif backend == "numba":
        producer = "symgrad.codegen.numba_backend:numba_module"
        source = _run("module", spec, budget=budget, producer=producer)
        said = source.rstrip().rsplit("\n", 1)[-1]
        if said.startswith(_NOTICE):
            (notice or _print_notice)(said[len(_NOTICE) :])
        module = import_module_from_source(source, f"{spec.name}_numba")
    else:
        module = import_module_from_source(module_source(spec, budget=budget), spec.name)
    return getattr(module, spec.class_name)(seed=seed, dtype=dtype)


#: how a module of the numba backend that fell back to NumPy ends (then the reason)
_NOTICE = "# numba backend: "


def _print_notice(line: str) -> None:
    print(f"notice: {line}", file=sys.stderr)
