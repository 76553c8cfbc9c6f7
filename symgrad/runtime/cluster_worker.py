"""What runs on a Dask worker: the hash-checked import of a generated module and the partition sums.

Self-contained on purpose (the standard library and NumPy only, no symgrad imports): the driver
registers this module with cloudpickle to travel by value, so a worker needs NumPy and Dask, not
symgrad, and never imports SymPy. State that must outlive one task (imported modules, one
trainer per thread) lives in a module object in ``sys.modules``, because functions sent by value
do not share their module's globals between tasks.

A partition's sums are a plain tuple ``(n, loss, gradient, curvature)``: the trainer's own
``loss``, ``gradient_flat`` and ``hessian``/``gauss_newton``/``hvp`` on the partition with the
penalty switched off (``l2 = l1 = 0``), each times the partition's n; unused entries are None.
"""

from __future__ import annotations

import hashlib
import importlib.abc
import importlib.util
import sys
import threading
import types

_STATE = "symgrad_cluster_worker_state"


def _state() -> types.ModuleType:
    """This process's worker state: imported modules by hash, a lock, per-thread trainers."""
    state = sys.modules.get(_STATE)
    if state is None:
        fresh = types.ModuleType(_STATE)
        fresh.modules = {}
        fresh.lock = threading.Lock()
        fresh.local = threading.local()
        state = sys.modules.setdefault(_STATE, fresh)  # atomic: one wins
    return state


class _VerifiedSource(importlib.abc.SourceLoader):
    """Loads a module from a string already checked against its hash (no file involved)."""

    def __init__(self, source: str, filename: str) -> None:
        self._source = source
        self._filename = filename

    def get_filename(self, fullname: str) -> str:  # noqa: ARG002
        return self._filename

    def get_data(self, path: str) -> bytes:  # noqa: ARG002
        return self._source.encode("utf-8")


def import_verified(module_name: str, source: str, sha256: str) -> types.ModuleType:
    """The generated module ``source``, imported once per process, only if its sha256 matches.

    Raises ImportError, naming both hashes, when the source is not the one that was hashed.
    """
    digest = hashlib.sha256(source.encode("utf-8")).hexdigest()
    if digest != sha256:
        raise ImportError(
            f"the generated module {module_name!r} received by this worker has sha256 "
            f"{digest[:16]}..., not the {sha256[:16]}... it was sent with; not importing it"
        )
    state = _state()
    with state.lock:
        module = state.modules.get(digest)
        if module is None:
            name = f"symgrad_cluster_{module_name}_{digest[:16]}"
            loader = _VerifiedSource(source, f"<symgrad {module_name} {digest}>")
            module = importlib.util.module_from_spec(importlib.util.spec_from_loader(name, loader))
            sys.modules[name] = module
            try:
                loader.exec_module(module)
            except BaseException:
                del sys.modules[name]
                raise
            state.modules[digest] = module
    return module


def worker_model(shipped: tuple):
    """This thread's trainer for ``shipped`` = (module name, class, source, sha256, dtype).

    The penalty is switched off: the driver adds it once, on the client.
    """
    module_name, class_name, source, sha256, dtype = shipped
    module = import_verified(module_name, source, sha256)
    local = _state().local
    models = getattr(local, "models", None)
    if models is None:
        models = local.models = {}
    model = models.get(sha256)
    if model is None:
        model = models[sha256] = getattr(module, class_name)(dtype=dtype)
    model.l2 = 0.0
    model.l1 = 0.0
    return model


def hold(value):
    """A task whose result is ``value``: it lives in the graph, so a lost copy is recomputed."""
    return value


def partition_sums(shipped: tuple, theta, X, Y, what: str, v=None) -> tuple:
    """``(n, loss, gradient, curvature)`` of one partition at ``theta``.

    ``what``: ``"gradient"`` (loss and gradient), ``"hessian"`` or ``"gauss_newton"`` (those and
    the matrix), ``"hvp"`` (only H v, for the direction ``v``).
    """
    model = worker_model(shipped)
    model.set_flat(theta)
    n = X.shape[0]
    if what == "hvp":
        return (n, None, None, model.hvp(X, Y, v) * n)
    if what in ("gradient", "hessian") and hasattr(model, "_sums"):
        # one forward pass for the loss, the gradient and (closed form) the Hessian
        loss, grad, curvature = model._sums(X, Y, hessian=what == "hessian")
        return (n, loss, grad, curvature)
    loss = model.loss(X, Y) * n
    grad = model.gradient_flat(X, Y) * n
    curvature = None
    if what == "hessian":
        curvature = model.hessian(X, Y) * n
    elif what == "gauss_newton":
        curvature = model.gauss_newton(X, Y) * n
    return (n, loss, grad, curvature)


def add_sums(*parts: tuple) -> tuple:
    """Add partial sums left to right (a fixed order: the result does not depend on timing)."""
    n, loss, grad, curvature = parts[0]
    for pn, ploss, pgrad, pcurv in parts[1:]:
        n += pn
        loss = None if loss is None else loss + ploss
        grad = None if grad is None else grad + pgrad
        curvature = None if curvature is None else curvature + pcurv
    return (n, loss, grad, curvature)
