"""The module loader: generated trainers written to a cache keyed by their hash, then imported."""

from __future__ import annotations

import hashlib
import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType

from ..codegen import generate_source
from ..spec import Spec, load_spec
from .atomic import atomic_write_text


def write_module(source: str, path: str | os.PathLike) -> Path:
    """Write a generated module atomically."""
    path = Path(path)
    atomic_write_text(path, source)
    return path


def default_cache_dir() -> Path:
    base = os.environ.get("SYMGRAD_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "symgrad"
    )
    return Path(base)


def import_module_from_source(
    source: str, module_name: str, cache_dir: Path | None = None
) -> ModuleType:
    """Write ``source`` to the cache (keyed by its hash) and import it as a module."""
    digest = hashlib.sha256(source.encode()).hexdigest()[:16]
    cache_dir = cache_dir or default_cache_dir()
    path = cache_dir / f"{module_name}_{digest}.py"
    if not path.exists():
        write_module(source, path)
    return import_path(path, f"symgrad_generated_{module_name}_{digest}")


def import_path(path: str | os.PathLike, module_name: str | None = None) -> ModuleType:
    """Import a generated module from a file path."""
    path = Path(path)
    module_name = module_name or f"symgrad_generated_{path.stem}"
    if module_name in sys.modules:
        return sys.modules[module_name]
    spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    spec.loader.exec_module(module)
    return module


def load_trainer(spec: Spec | str | os.PathLike, seed: int | None = None, dtype=None):
    """Generate (or reuse, keyed by hash) the trainer for ``spec`` and return an instance."""
    if not isinstance(spec, Spec):
        spec = load_spec(spec)
    module = import_module_from_source(generate_source(spec), spec.name)
    return getattr(module, spec.class_name)(seed=seed, dtype=dtype)
