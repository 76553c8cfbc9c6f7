"""The Dask driver: full-batch gd, Newton, Newton-CG, L-BFGS and trust-region Newton-CG with the
data spread over workers.

Each iteration maps the generated trainer's own NumPy functions over the partitions of the data
(``loss``, ``gradient_flat``, ``hessian`` or ``gauss_newton``, ``hvp``), evaluated with the
penalty off and multiplied by the partition's size so that they are data sums; adds the partial
sums in a fixed tree on the workers (the same order whichever worker computes a part, so a
retried task gives the same bits); and updates the parameters on the client. With N the number
of samples of all partitions together and R the penalty without its 1/N,

    C(theta) = (1/N) * (sum_k S_k(theta) + R(theta)),  R = lambda_2/2 sum w^2 + lambda_1 sum |w|

(weights only), which is what the trainer's ``loss`` returns on the whole set. L-BFGS and
trust-region Newton-CG are SciPy's (``minimize`` with ``L-BFGS-B`` and ``trust-ncg``) running
on the client: each value and gradient it asks for is one round of sums, each Hessian-vector
product another. The generated
module travels to the workers as source with its sha256; a worker checks the hash before it
imports the source, from memory, and keeps one trainer per thread.

Mini-batch methods (sgd, momentum, adam, ...) stay on one machine: a step per batch would need an
all-reduce per step, and a Dask round costs milliseconds, far more than a small batch's step.

Requires ``pip install 'symgrad[cluster]'`` (dask[distributed]) on the client. The worker side
(``cluster_worker``) travels by value, so a worker needs NumPy and Dask but not symgrad.

Longer than 400 lines on purpose: the iteration, the tree reduction, checkpoints and the CLI
entry share the client-side state of one run.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import inspect
import math
import sys
import threading
import time
import types
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np

from ..errors import SymgradError
from . import cluster_worker

__all__ = [
    "METHODS",
    "ClusterDivergenceError",
    "ClusterFit",
    "connect",
    "fit",
    "local_cluster",
    "method_for",
    "ship_module",
    "train_command",
]

#: The methods the driver runs: one full-batch step per iteration.
METHODS = ("gd", "newton", "newton_cg", "lbfgs", "trust_ncg")
#: Methods whose iterations SciPy's ``minimize`` runs on the client, with the cluster's sums.
SCIPY_METHODS = {"lbfgs": "L-BFGS-B", "trust_ncg": "trust-ncg"}
#: Optimisers of the spec that take mini-batch steps: refused with ``--cluster``.
MINI_BATCH = ("sgd", "momentum", "nesterov", "adagrad", "rmsprop", "adam")
#: The partial sums are added in groups of this many per level of the reduction tree.
SPLIT_EVERY = 4


class ClusterDivergenceError(FloatingPointError):
    """The cost or gradient became NaN or inf; the parameters were left at the last good ones."""


class Shipped(NamedTuple):
    """What a worker needs to rebuild the trainer: its module's source and the source's hash."""

    module_name: str
    class_name: str
    source: str
    sha256: str
    dtype: str


class Sums(NamedTuple):
    """Data sums over some samples: their count, sum of C_x, its gradient, and a matrix or H v."""

    n: int
    loss: float | None
    gradient: np.ndarray | None
    curvature: np.ndarray | None


def _by_value(fn):
    """``fn`` from ``cluster_worker``, sent to the workers by value: they need NumPy, not symgrad.

    Dask pickles a task's function by name when plain pickle can find it, so the function is
    copied (plain pickle then refuses it, and Dask falls back to cloudpickle) and its module is
    registered with cloudpickle, which then sends what it calls by value as well.
    """
    import cloudpickle

    if cluster_worker.__name__ not in cloudpickle.list_registry_pickle_by_value():
        cloudpickle.register_pickle_by_value(cluster_worker)
    copy = types.FunctionType(fn.__code__, fn.__globals__, fn.__name__, fn.__defaults__)
    copy.__qualname__ = fn.__qualname__
    copy.__doc__ = fn.__doc__
    return copy


# ---------------------------------------------------------------------------------------------
# client side
# ---------------------------------------------------------------------------------------------


def ship_module(model) -> Shipped:
    """The source and sha256 of ``model``'s generated module, ready to send to the workers."""
    module = sys.modules[type(model).__module__]
    source = module.__spec__.loader.get_source(module.__name__)
    digest = hashlib.sha256(source.encode("utf-8")).hexdigest()
    name = getattr(model, "name", type(model).__name__)
    return Shipped(name, type(model).__name__, source, digest, str(np.dtype(model.dtype)))


class Regulariser:
    """The regulariser of ``model``'s generated module: its value, gradient and Hessian diagonal
    over N samples (``_regulariser``) and the L1 proximal step (``_prox``), printed there from
    the Derivation's ``reg.*`` equations, evaluated in float64 on a copy of the model at the
    parameters given; all zero where the spec has no regulariser (the module has neither)."""

    def __init__(self, model, N: int) -> None:
        self.probe = type(model)(dtype="float64")
        self.probe.l2, self.probe.l1 = float(model.l2), float(model.l1)
        self.l1, self.N = float(model.l1), N
        self.P = int(np.asarray(model.get_flat()).size)

    def __call__(self, theta: np.ndarray, l1: float) -> tuple[float, np.ndarray, np.ndarray]:
        """Value, gradient and Hessian diagonal at ``theta`` with lambda_1 = ``l1`` (0: the
        smooth part)."""
        if not hasattr(self.probe, "_regulariser"):
            return 0.0, np.zeros(self.P), np.zeros(self.P)
        self.probe.set_flat(theta)
        value, grad, hess = self.probe._regulariser(self.N, l1)
        return float(value), np.asarray(grad, np.float64), np.asarray(hess, np.float64)

    def prox(self, theta: np.ndarray, step: float) -> np.ndarray:
        """The L1 soft threshold of the weights of ``theta`` by ``step * lambda_1 / N``."""
        if self.l1 == 0:
            return theta
        return self.probe._prox(theta, step, self.N, self.l1)


@dataclass
class ClusterFit:
    """What :func:`fit` did: the trained model (updated in place) and one entry per iteration.

    ``history``: ``loss`` (the cost C before each update), ``grad_norm`` (max |dC/dtheta| there)
    and ``seconds`` (wall time of the iteration); ``iterations`` is the number of updates made;
    ``converged`` is true when ``tol`` stopped the run.
    """

    model: Any
    history: dict = field(default_factory=dict)
    iterations: int = 0
    converged: bool = False
    samples: int = 0
    partitions: int = 0
    seconds: float = 0.0


class _Driver:
    """Evaluates the data sums over all partitions: one Dask graph per round."""

    def __init__(self, client, shipped: Shipped, X, Y, persist: bool) -> None:
        self.client = client
        self.hold = _by_value(cluster_worker.hold)
        self.partition_sums = _by_value(cluster_worker.partition_sums)
        self.add_sums = _by_value(cluster_worker.add_sums)
        self.shipped = shipped
        if persist:
            X, Y = client.persist([X, Y])
        self.X, self.Y = X, Y
        pairs = zip(X.to_delayed().ravel().tolist(), Y.to_delayed().ravel().tolist())
        self.blocks = [pair for pair, rows in zip(pairs, X.chunks[0]) if rows > 0]
        if not self.blocks:
            raise ValueError("X and Y have no samples")
        self.tag = uuid.uuid4().hex[:12]
        self.rounds = 0

    def sums(self, theta: np.ndarray, what: str, v: np.ndarray | None = None) -> Sums:
        from dask import delayed

        self.rounds += 1
        tag = f"{self.tag}-r{self.rounds}"
        ship = delayed(self.hold, pure=False)(
            tuple(self.shipped), dask_key_name=f"symgrad-module-{tag}"
        )
        th = delayed(self.hold, pure=False)(theta.copy(), dask_key_name=f"symgrad-theta-{tag}")
        vec = None
        if v is not None:
            vec = delayed(self.hold, pure=False)(v.copy(), dask_key_name=f"symgrad-v-{tag}")
        parts = [
            delayed(self.partition_sums, pure=False)(
                ship, th, x, y, what, vec, dask_key_name=f"symgrad-part-{tag}-{i}"
            )
            for i, (x, y) in enumerate(self.blocks)
        ]
        level = 0
        while len(parts) > 1:
            parts = [
                delayed(self.add_sums, pure=False)(
                    *parts[i : i + SPLIT_EVERY], dask_key_name=f"symgrad-sum-{tag}-{level}-{i}"
                )
                for i in range(0, len(parts), SPLIT_EVERY)
            ]
            level += 1
        return Sums(*self.client.compute(parts[0]).result())


def _as_dask(X, Y, n_inputs: int, n_outputs: int, dtype: np.dtype, partitions: int):
    """X (n, inputs) and Y (n, outputs) as dask arrays with one column chunk, rows aligned."""
    import dask.array as da

    if not isinstance(X, da.Array):
        X = np.asarray(X)
        X = da.from_array(X, chunks=(max(1, -(-X.shape[0] // partitions)), -1))
    if not isinstance(Y, da.Array):
        Y = da.from_array(np.asarray(Y), chunks=(X.chunks[0],) + ((-1,) * (np.ndim(Y) - 1)))
    if X.ndim != 2 or X.shape[1] != n_inputs:
        raise ValueError(f"X must have shape (samples, {n_inputs}), got {X.shape}")
    if Y.ndim == 1 and n_outputs == 1:
        Y = Y[:, None]
    if Y.ndim != 2 or Y.shape != (X.shape[0], n_outputs):
        raise ValueError(f"Y must have shape ({X.shape[0]}, {n_outputs}), got {Y.shape}")
    if any(math.isnan(c) for c in X.chunks[0] + Y.chunks[0]):
        raise ValueError("X and Y need known chunk sizes: call .compute_chunk_sizes() first")
    X = X.rechunk({1: -1}).astype(dtype, copy=False)
    Y = Y.rechunk((X.chunks[0], -1)).astype(dtype, copy=False)
    return X, Y


def _default_damping(model) -> float:
    """The spec's damping: the default of the trainer's public ``newton_direction``."""
    try:
        value = inspect.signature(model.newton_direction).parameters["damping"].default
    except (AttributeError, KeyError, TypeError, ValueError):
        return 0.0
    return 0.0 if value is inspect.Parameter.empty else float(value)


def newton_steps(model) -> type:
    """A generated trainer class with Newton's solves (``_newton_solve``: the exact step with
    the shift that makes H + shift I positive definite; ``_newton_cg``: conjugate gradients on
    Hessian-vector products), printed from the ``newton*`` equations: ``model``'s own class
    when its optimiser is Newton's, else the class generated for its spec with optimizer
    ``newton`` (the solves are static: they read only H or the products and the gradient)."""
    if hasattr(type(model), "_newton_solve"):
        return type(model)
    from .curvature.network import spec_of
    from .loader import load_trainer

    spec = spec_of(model)
    newton = spec.optimizer.model_copy(update={"name": "newton"})
    return type(load_trainer(spec.model_copy(update={"optimizer": newton})))


def fit(
    model,
    X,
    Y,
    *,
    method: str = "newton",
    client=None,
    iterations: int | None = None,
    learning_rate: float | None = None,
    damping: float | None = None,
    curvature: str = "hessian",
    tol: float | None = None,
    cg_maxiter: int | None = None,
    cg_rtol: float = 1e-10,
    persist: bool = True,
    partitions: int = 8,
    callback: Callable[[int, dict], Any] | None = None,
    history_size: int = 10,
) -> ClusterFit:
    """Train ``model`` full-batch on data partitioned across a Dask cluster.

    Args:
        model: a trainer (``symgrad.load_trainer(spec)``; updated in place), a Spec or a path to
            a YAML spec.
        X: inputs (samples, inputs), a ``dask.array`` (its row chunks are the partitions) or a
            NumPy array (split into ``partitions`` row blocks).
        Y: targets (samples, outputs), or (samples,) for one output; chunked like X.
        method: ``"gd"`` (theta -= eta * grad C, with a proximal step for lambda_1), ``"newton"``
            (solve (H + damping I) p = grad C with the summed P x P matrix, the damping raised
            until H + damping I is positive definite; theta -= eta * p) or ``"newton_cg"`` (the
            same system by conjugate gradients, one round of Hessian-vector products per CG
            step, stopping at a direction of negative curvature; the matrix is never formed):
            both are the generated trainer's Newton solves (:func:`newton_steps`), printed from
            the Derivation's ``newton*`` equations; ``"lbfgs"`` (SciPy's L-BFGS-B,
            no bounds) or ``"trust_ncg"`` (SciPy's trust-region Newton-CG on Hessian-vector
            products): SciPy iterates on the client, the cluster computes every value, gradient
            and Hessian-vector product it asks for; ``learning_rate`` and ``damping`` are not
            used (the line search and the trust radius choose the step).
        client: a ``distributed.Client`` (default: the current one).
        iterations: updates to make (default: the trainer's ``epochs``).
        learning_rate: eta (default: the trainer's ``learning_rate``).
        damping: added to the Hessian's diagonal (default: the spec's ``optimizer.damping``).
        curvature: ``"hessian"`` (exact) or ``"gauss_newton"`` for ``method="newton"``.
        tol: stop, without updating, once max |grad C| <= tol (default: run every iteration).
        cg_maxiter, cg_rtol: CG stops after min(P, 250) steps (or ``cg_maxiter``) or once
            ||r|| < cg_rtol ||grad C||, as the single-machine trainer's ``newton_direction``.
        persist: keep the partitions in the workers' memory between iterations (default); with
            False each round reads them from the source again (data larger than the cluster's
            memory).
        partitions: row blocks for NumPy inputs.
        callback: ``callback(epoch, history)`` after each update; returning False stops.
        history_size: the pairs (s, y) L-BFGS keeps (SciPy's ``maxcor``).

    Returns:
        A :class:`ClusterFit`. ``model.epochs_done`` counts the updates, as ``fit`` does.
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}; got {method!r}")
    if curvature not in ("hessian", "gauss_newton"):
        raise ValueError(f"curvature must be 'hessian' or 'gauss_newton'; got {curvature!r}")
    if not hasattr(model, "gradient_flat"):
        from .loader import load_trainer

        model = load_trainer(model)
    if client is None:
        from distributed import default_client

        try:
            client = default_client()
        except ValueError:
            raise ValueError(
                "no Dask client: pass client= or create a distributed.Client"
            ) from None
    l1 = float(model.l1)
    if l1 > 0 and method != "gd":
        raise ValueError(
            f"{method} needs a twice-differentiable cost, and lambda_1 > 0 is not: use method='gd' "
            "(a proximal step for the L1 term)"
        )
    n_inputs, n_outputs = int(model.n_inputs), int(model.n_outputs)
    dtype = np.dtype(model.dtype)
    X, Y = _as_dask(X, Y, n_inputs, n_outputs, dtype, partitions)
    iterations = int(model.epochs if iterations is None else iterations)
    eta = float(model.learning_rate if learning_rate is None else learning_rate)
    damping = _default_damping(model) if damping is None else float(damping)
    driver = _Driver(client, ship_module(model), X, Y, persist)
    N = int(X.shape[0])
    reg = Regulariser(model, N)
    history: dict[str, list] = {"loss": [], "grad_norm": [], "seconds": []}
    result = ClusterFit(model, history, samples=N, partitions=len(driver.blocks))
    started = time.perf_counter()
    what = {"newton": curvature}.get(method, "gradient")
    maxiter = min(reg.P, 250) if cg_maxiter is None else int(cg_maxiter)

    steps = newton_steps(model) if method in ("newton", "newton_cg") else None

    def hvp(theta: np.ndarray, d: np.ndarray) -> np.ndarray:
        """H d over the partitions, the regulariser's term added (the damping is the solve's)."""
        s = driver.sums(theta, "hvp", d)
        return s.curvature / N + reg(theta, 0.0)[2] * d

    if method in SCIPY_METHODS:
        _fit_scipy(driver, result, method, iterations, tol, reg, N, callback, history_size)
        result.seconds = time.perf_counter() - started
        return result

    for _ in range(iterations):
        t0 = time.perf_counter()
        theta = model.get_flat()
        s = driver.sums(theta, what)
        penalty, reg_grad, reg_hess = reg(theta, 0.0)
        grad = s.gradient / N + reg_grad  # the L1 term is the proximal step's
        grad_norm = float(np.abs(grad).max())
        if l1 > 0:  # the cost and max |dC/dtheta| with the L1 term (sign(0) = 0)
            penalty, with_l1, _ = reg(theta, l1)
            grad_norm = float(np.abs(s.gradient / N + with_l1).max())
        cost = s.loss / N + penalty
        if not (math.isfinite(cost) and np.isfinite(grad).all()):
            raise ClusterDivergenceError(
                f"iteration {model.epochs_done + 1}: the cost became {cost} (or the gradient "
                "NaN/inf); the parameters were left at the last good ones"
            )
        if tol is not None and grad_norm <= tol:
            result.converged = True
            break
        if method == "gd":
            new = reg.prox(theta - eta * grad, eta)
        elif method == "newton":
            H = s.curvature / N
            H[np.diag_indices_from(H)] += reg_hess
            new = theta - eta * steps._newton_solve(H, grad, damping)
        else:
            apply = functools.partial(hvp, theta)
            new = theta - eta * steps._newton_cg(apply, grad, damping, maxiter, cg_rtol)
        if not np.isfinite(new).all():
            raise ClusterDivergenceError(
                f"iteration {model.epochs_done + 1}: a parameter became NaN or inf; the "
                "parameters were left at the last good ones"
            )
        model.set_flat(new)
        model.epochs_done += 1
        result.iterations += 1
        history["loss"].append(cost)
        history["grad_norm"].append(grad_norm)
        history["seconds"].append(time.perf_counter() - t0)
        if callback is not None and callback(model.epochs_done, history) is False:
            break
    result.seconds = time.perf_counter() - started
    return result


def _fit_scipy(driver, result, method, iterations, tol, reg, N, callback, history_size) -> None:
    """``scipy.optimize.minimize`` on the client over the cluster's sums (no L1 term).

    ``tol`` is SciPy's ``gtol``: L-BFGS-B stops once max |grad C| <= tol, trust-ncg once
    ||grad C||_2 < tol; without it every iteration runs (``ftol`` is 0 for L-BFGS-B). The
    history records, per iteration, the cost and max |grad C| at the point it reached.
    """
    from scipy.optimize import minimize

    model = result.model
    history = result.history
    seen: dict[bytes, tuple[float, np.ndarray]] = {}
    clock = [time.perf_counter()]

    def value_and_gradient(x: np.ndarray) -> tuple[float, np.ndarray]:
        key = x.tobytes()
        if key not in seen:
            s = driver.sums(x, "gradient")
            penalty, reg_grad, _ = reg(x, 0.0)
            cost = s.loss / N + penalty
            grad = s.gradient / N + reg_grad
            if not (math.isfinite(cost) and np.isfinite(grad).all()):
                raise ClusterDivergenceError(
                    f"iteration {model.epochs_done + 1}: the cost became {cost} (or the gradient "
                    "NaN/inf); the parameters were left at the last good ones"
                )
            seen.clear()  # SciPy asks again only for the point it evaluated last
            seen[key] = (cost, grad)
        cost, grad = seen[key]
        return cost, grad.copy()

    def hessp(x: np.ndarray, p: np.ndarray) -> np.ndarray:
        s = driver.sums(x, "hvp", np.asarray(p, dtype=x.dtype))
        return s.curvature / N + reg(x, 0.0)[2] * p

    def on_iteration(intermediate_result) -> None:
        x = np.asarray(intermediate_result.x, dtype=np.float64)
        cost, grad = value_and_gradient(x)
        model.set_flat(x)
        model.epochs_done += 1
        result.iterations += 1
        history["loss"].append(cost)
        history["grad_norm"].append(float(np.abs(grad).max()))
        now = time.perf_counter()
        history["seconds"].append(now - clock[0])
        clock[0] = now
        if callback is not None and callback(model.epochs_done, history) is False:
            raise StopIteration

    gtol = 0.0 if tol is None else float(tol)
    if method == "lbfgs":
        options = {"maxiter": iterations, "gtol": gtol, "ftol": 0.0, "maxcor": int(history_size)}
        extra = {}
    else:
        options = {"maxiter": iterations, "gtol": gtol}
        extra = {"hessp": hessp}
    if iterations <= 0:
        return
    out = minimize(
        value_and_gradient,
        np.asarray(model.get_flat(), dtype=np.float64),
        jac=True,
        method=SCIPY_METHODS[method],
        callback=on_iteration,
        options=options,
        **extra,
    )
    if result.iterations == 0 or not np.array_equal(out.x, model.get_flat()):
        model.set_flat(out.x)  # SciPy's result when it ended without a last callback
    result.converged = tol is not None and bool(out.success) and out.status != 99


# ---------------------------------------------------------------------------------------------
# connecting, and the ``symgrad train --cluster`` command
# ---------------------------------------------------------------------------------------------


def local_cluster(n_workers: int = 2, **kwargs):
    """A ``LocalCluster`` of ``n_workers`` single-threaded worker processes, no dashboard.

    Its HTTP endpoints take a free port, so several can run at once.
    """
    from distributed import LocalCluster

    options = {
        "n_workers": n_workers,
        "threads_per_worker": 1,
        "processes": True,
        "dashboard_address": None,
        "scheduler_kwargs": {"dashboard": False, "dashboard_address": ":0"},
    }
    return LocalCluster(**{**options, **kwargs})


@contextlib.contextmanager
def connect(address: str = "local", n_workers: int = 2, timeout: float = 30.0):
    """``with connect("local") as client:`` a LocalCluster here, or a scheduler's address.

    ``"local"`` starts ``n_workers`` worker processes of one thread each on this machine (no
    dashboard); ``tcp://HOST:8786`` (any ``scheme://``) connects to a running scheduler.
    """
    try:
        from distributed import Client
    except ImportError:
        raise SymgradError("--cluster needs Dask: pip install 'symgrad[cluster]'") from None
    if address == "local":
        with local_cluster(n_workers) as cluster, Client(cluster) as client:
            yield client
        return
    if "://" not in address:
        raise SymgradError(
            f"--cluster {address}: expected 'local' or a scheduler address like tcp://HOST:8786"
        )
    try:
        client = Client(address, timeout=timeout)
    except (OSError, TimeoutError) as exc:
        raise SymgradError(f"--cluster {address}: cannot reach the scheduler ({exc})") from None
    with client:
        yield client


_FULL_BATCH = "gd, newton, lbfgs, trust_ncg"


def method_for(spec, batch_size: int | None = None) -> str:
    """The driver's method for ``spec``'s optimiser; mini-batch optimisers are refused."""
    from ..spec import NEWTON_EXACT_MAX

    opt = spec.optimizer
    why = "see the README, 'Training on a cluster'"
    if opt.name in MINI_BATCH:
        raise SymgradError(
            f"--cluster trains full-batch only ({_FULL_BATCH}); optimizer {opt.name!r} takes "
            f"mini-batch steps, which stay on one machine (drop --cluster; {why})"
        )
    size = batch_size or opt.batch_size
    if size is not None:
        raise SymgradError(
            f"--cluster trains full-batch only ({_FULL_BATCH}); a batch size ({size}) means "
            f"mini-batch steps, which stay on one machine (drop --cluster or the batch size; {why})"
        )
    if opt.name == "newton":
        return "newton" if spec.n_params <= NEWTON_EXACT_MAX else "newton_cg"
    if opt.name in SCIPY_METHODS:
        return opt.name
    return "gd"


def train_command(
    spec,
    data: str,
    *,
    cluster: str,
    epochs: int | None,
    batch_size: int | None,
    out,
    checkpoint,
    resume: bool,
    val: str | None = None,
    target: list[str] | None = None,
    limit: int | None = None,
    classes: list[str] | None = None,
    standardize: bool | None = None,
    plot=None,
    plot_fn: Callable[[dict, Any], None] | None = None,
    n_workers: int = 2,
) -> None:
    """``symgrad train SPEC --data SOURCE --cluster ADDRESS``; user errors raise SymgradError.

    Epochs are full-batch iterations; after each one the model is saved to the checkpoint
    (atomically), so ``--resume`` continues where an interrupted run stopped.
    """
    import signal
    from pathlib import Path

    import click

    from ..data.shards import open_chunked
    from .loader import load_trainer

    method = method_for(spec, batch_size)
    preprocess = getattr(spec, "preprocess", None)
    if standardize or (standardize is None and getattr(preprocess, "standardize", False)):
        raise SymgradError(
            "--cluster does not standardise inputs (yet): standardise the data once beforehand, "
            "or pass --no-standardize"
        )
    dtype = np.dtype(spec.dtype)
    data_set = open_chunked(
        data,
        n_inputs=spec.inputs,
        n_outputs=spec.outputs,
        dtype=dtype,
        limit=limit,
        targets=target,
        classes=classes if spec.is_classifier else None,
    )
    extras = {}
    if spec.is_classifier and data_set.classes is not None:
        classes = [str(c) for c in data_set.classes]
        extras["classes"] = np.array(classes)
    val_set = None
    if val:
        from ..data import load_data

        val_set = load_data(
            val,
            n_inputs=spec.inputs,
            n_outputs=spec.outputs,
            targets=target,
            dtype=dtype,
            classes=classes if spec.is_classifier else None,
        )
    model = load_trainer(spec)
    takes_extras = "extras" in inspect.signature(model.save).parameters

    def save(path) -> None:
        try:
            if takes_extras:
                model.save(path, extras=extras)
            else:
                model.save(path)
        except (ValueError, OSError) as exc:
            raise SymgradError(f"cannot write {path}: {exc}") from None

    out = Path(out)
    ckpt = Path(checkpoint) if checkpoint else Path(f"{out}.ckpt.npz")
    if resume:
        if not ckpt.exists():
            raise SymgradError(f"--resume: no checkpoint at {ckpt}")
        try:
            model.load(ckpt)
        except (ValueError, OSError) as exc:
            raise SymgradError(str(exc).splitlines()[0]) from None
    total = epochs or spec.optimizer.epochs
    model.epochs = total  # recorded in the saved files' training settings
    remaining = total - model.epochs_done
    if remaining <= 0:
        save(out)
        click.echo(
            f"already trained for {model.epochs_done} epochs (checkpoint {ckpt}); "
            f"model saved to {out}"
        )
        return
    started = time.perf_counter()
    val_losses: list[float] = []

    def callback(epoch, history):
        save(ckpt)  # atomic: a temporary file renamed into place
        info = f"loss {history['loss'][-1]:.5g}"
        if val_set is not None:
            val_losses.append(model.loss(val_set.X, val_set.Y))
            history["val_loss"] = val_losses
            info += f" val_loss {val_losses[-1]:.5g}"
        click.echo(f"epoch {epoch}/{total} {info} ({time.perf_counter() - started:.1f}s)")

    def on_sigterm(signum, frame):  # noqa: ARG001
        raise KeyboardInterrupt

    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, on_sigterm) if main_thread else None
    try:
        with connect(cluster, n_workers=n_workers) as client:
            workers = len(client.scheduler_info().get("workers", {}))
            click.echo(
                f"{method} on {data_set.samples} samples in {data_set.partitions} partitions "
                f"({data_set.kind}), {workers} workers at {client.scheduler.address}"
            )
            result = fit(
                model,
                data_set.X,
                data_set.Y,
                method=method,
                client=client,
                iterations=remaining,
                callback=callback,
                history_size=getattr(spec.optimizer, "history", 10),
            )
    except KeyboardInterrupt:
        click.echo(
            f"interrupted after {model.epochs_done} epochs; the checkpoint {ckpt} is intact: "
            "continue with --resume",
            err=True,
        )
        raise click.exceptions.Exit(130) from None
    except ClusterDivergenceError as exc:
        click.echo(f"symgrad: error: {exc}. Checkpoint: {ckpt}", err=True)
        raise click.exceptions.Exit(1) from None
    finally:
        if main_thread:
            signal.signal(signal.SIGTERM, previous)
    save(out)
    click.echo(
        f"trained {result.iterations} epochs on the cluster in "
        f"{time.perf_counter() - started:.2f}s; model saved to {out}"
    )
    if plot is not None and plot_fn is not None:
        plot_fn(result.history, plot)
        click.echo(f"wrote {plot}")
