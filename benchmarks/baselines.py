"""The contestants that symgrad's generated trainers are compared with.

Every contestant does the same work (see ``benchmarks/README.md``): one epoch of plain mini-batch
SGD over the samples in the order given, with

* parameters ``[(W_1, b_1), ..., (W_L, b_L)]``, ``W_l`` of shape ``(n_l, n_{l-1})`` (out, in),
  ``b_l`` of shape ``(n_l,)``;
* the forward pass on a batch ``X`` of shape ``(m, n_0)``: ``Z_l = A_{l-1} @ W_l.T + b_l``,
  ``A_l = f_l(Z_l)``;
* the cost averaged over the ``m`` samples of the batch (a last partial batch uses its own m):
  ``mse`` = ``1/(2m) sum ||y - a||^2``, ``cross_entropy`` (softmax output) =
  ``-1/m sum y ln a``, ``log_loss`` (sigmoid output) = ``-1/m sum [y ln a + (1-y) ln(1-a)]``;
* the update ``W <- W - eta dC/dW`` after each mini-batch.

A contestant is a :class:`Contestant`: ``setup`` converts the shared NumPy parameters and data to
its own types (not timed), ``epoch`` runs one epoch (timed, and returns only once the work is
done), ``to_numpy`` gives the parameters after the epoch back as NumPy arrays.

The optional peers (PyTorch, JAX, HIPS autograd, scikit-learn) are imported lazily: importing
this module needs NumPy only.

The second half of the module holds the Hessian contestants (logistic regression and a small
tanh network), each returning the full Hessian of the cost over the flattened parameters in the
order ``W_1`` (row-major), ``b_1``, ``W_2``, ``b_2``, ...
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

Params = list[tuple[np.ndarray, np.ndarray]]

#: Activations every contestant knows; ``softmax`` is allowed on the output layer only.
ACTIVATIONS = ("sigmoid", "tanh", "relu", "identity", "softmax")
#: Losses every contestant knows (see the module docstring for their exact definitions).
LOSSES = ("mse", "cross_entropy", "log_loss")


class UnavailableError(Exception):
    """A contestant cannot run a configuration (missing package, unsupported network...)."""


@dataclass(frozen=True)
class Net:
    """The work of one benchmark: the network, its loss and the SGD settings.

    Attributes:
        sizes: layer widths ``(n_0, ..., n_L)``.
        activations: one activation per layer ``1..L`` (``len(sizes) - 1`` names).
        loss: ``"mse"``, ``"cross_entropy"`` (needs a softmax output) or ``"log_loss"``
            (needs a sigmoid output).
        dtype: ``"float64"`` or ``"float32"``.
        batch_size: the mini-batch size ``m``.
        eta: the learning rate.
    """

    sizes: tuple[int, ...]
    activations: tuple[str, ...]
    loss: str
    dtype: str = "float64"
    batch_size: int = 10
    eta: float = 0.1

    def __post_init__(self) -> None:
        validate_net(self.sizes, self.activations, self.loss)
        if self.dtype not in ("float64", "float32"):
            raise ValueError(f"dtype must be float64 or float32, got {self.dtype!r}")
        if self.batch_size < 1:
            raise ValueError("batch_size must be at least 1")

    @property
    def np_dtype(self) -> np.dtype:
        """The NumPy dtype of the parameters and data."""
        return np.dtype(self.dtype)

    @property
    def n_params(self) -> int:
        """The number of weights and biases."""
        s = self.sizes
        return sum(s[i] * s[i + 1] + s[i + 1] for i in range(len(s) - 1))


def validate_net(sizes, activations, loss) -> None:
    """Raise ``ValueError`` unless the network is one every contestant can train."""
    if len(sizes) < 2 or any(int(n) < 1 for n in sizes):
        raise ValueError(f"sizes must list at least two positive widths, got {sizes!r}")
    if len(activations) != len(sizes) - 1:
        raise ValueError(f"need {len(sizes) - 1} activations, got {len(activations)}")
    for i, act in enumerate(activations):
        if act not in ACTIVATIONS:
            raise ValueError(f"unknown activation {act!r}; known: {', '.join(ACTIVATIONS)}")
        if act == "softmax" and i != len(activations) - 1:
            raise ValueError("softmax is allowed on the output layer only")
    if loss not in LOSSES:
        raise ValueError(f"unknown loss {loss!r}; known: {', '.join(LOSSES)}")
    out = activations[-1]
    if (loss == "cross_entropy") != (out == "softmax"):
        raise ValueError("cross_entropy goes with a softmax output layer, and only with it")
    if loss == "log_loss" and out != "sigmoid":
        raise ValueError("log_loss needs a sigmoid output layer")


def copy_params(params: Params, dtype=None) -> Params:
    """A deep copy of ``params`` (C-contiguous), optionally cast to ``dtype``."""
    dt = None if dtype is None else np.dtype(dtype)
    return [
        (np.array(W, dtype=dt or W.dtype, order="C"), np.array(b, dtype=dt or b.dtype, order="C"))
        for W, b in params
    ]


def flatten_params(params: Params) -> np.ndarray:
    """The parameters as one vector in the order W_1 (row-major), b_1, W_2, b_2, ..."""
    return np.concatenate([np.concatenate([W.ravel(), b.ravel()]) for W, b in params])


def unflatten_params(theta, sizes) -> list[tuple[Any, Any]]:
    """Split a flat vector (any array type that slices and reshapes) into ``[(W, b), ...]``."""
    out = []
    k = 0
    for n_in, n_out in zip(sizes[:-1], sizes[1:]):
        W = theta[k : k + n_out * n_in].reshape(n_out, n_in)
        k += n_out * n_in
        b = theta[k : k + n_out]
        k += n_out
        out.append((W, b))
    return out


def max_abs_diff(a: Params, b: Params) -> float:
    """The largest absolute difference between two parameter lists (as float64)."""
    worst = 0.0
    for (Wa, ba), (Wb, bb) in zip(a, b):
        for x, y in ((Wa, Wb), (ba, bb)):
            d = np.max(np.abs(np.asarray(x, np.float64) - np.asarray(y, np.float64)))
            worst = max(worst, float(d))
    return worst


def _batches(n: int, m: int):
    """``(start, stop)`` of each mini-batch, in order; the last may be partial."""
    return [(s, min(s + m, n)) for s in range(0, n, m)]


# ---------------------------------------------------------------------------------------------
# The hand-written vectorised NumPy trainer


class HandNumpyTrainer:
    """The strongest plain-NumPy SGD trainer we can honestly write.

    * one GEMM per product, through ``np.dot`` with preallocated ``out=`` buffers (transposes
      are views, so BLAS gets the transpose flags and nothing is copied);
    * every elementwise step in place; ``f'(z)`` in output form (sigmoid ``a(1-a)``, tanh
      ``1-a^2``, relu ``a > 0``), so only the activations are kept;
    * the fused output delta ``a - y`` for softmax + cross-entropy and sigmoid + log-loss;
    * ``eta/m`` folded into the output delta once, so the weight gradients come out of the
      GEMMs already scaled and the update is one in-place subtraction;
    * the input-side backward GEMM of the first layer (``delta_1 @ W_1``) is skipped: nothing
      needs it.

    Args:
        sizes: layer widths ``(n_0, ..., n_L)``.
        activations: one activation per layer.
        loss: ``"mse"``, ``"cross_entropy"`` or ``"log_loss"``.
        dtype: the dtype of the parameters and data (float64 or float32).
    """

    def __init__(self, sizes, activations, loss, dtype=np.float64) -> None:
        validate_net(sizes, activations, loss)
        self.sizes = tuple(int(n) for n in sizes)
        self.activations = tuple(activations)
        self.loss = loss
        self.dtype = np.dtype(dtype)
        self._buffers: dict[int, dict[str, list[np.ndarray]]] = {}
        out = self.activations[-1]
        #: The output delta is a - y (fused), or (a - y) * f'(a) for mse.
        self._fused = loss in ("cross_entropy", "log_loss") or out == "identity"

    def _buffers_for(self, m: int) -> dict[str, list[np.ndarray]]:
        """Preallocated work arrays for a batch of ``m`` samples (kept per batch size)."""
        buf = self._buffers.get(m)
        if buf is None:
            dt, s = self.dtype, self.sizes
            widths = s[1:]
            buf = {
                "A": [np.empty((m, n), dt) for n in widths],
                "D": [np.empty((m, n), dt) for n in widths],
                "T": [np.empty((m, n), dt) for n in widths],
                "mask": [np.empty((m, n), bool) for n in widths],
                "gW": [np.empty((s[i + 1], s[i]), dt) for i in range(len(widths))],
                "gb": [np.empty(n, dt) for n in widths],
                "row": [np.empty((m, 1), dt)],
            }
            self._buffers[m] = buf
        return buf

    def _activate(self, act: str, a: np.ndarray, row: np.ndarray) -> None:
        """``a <- f(a)`` in place (``a`` holds ``z`` on entry)."""
        if act == "sigmoid":
            np.negative(a, out=a)
            np.exp(a, out=a)
            np.add(a, 1.0, out=a)
            np.reciprocal(a, out=a)
        elif act == "tanh":
            np.tanh(a, out=a)
        elif act == "relu":
            np.maximum(a, 0.0, out=a)
        elif act == "softmax":
            np.max(a, axis=1, keepdims=True, out=row)
            np.subtract(a, row, out=a)
            np.exp(a, out=a)
            np.sum(a, axis=1, keepdims=True, out=row)
            np.divide(a, row, out=a)
        # identity: nothing to do

    def _times_fprime(self, act: str, d, a, t, mask) -> None:
        """``d <- d * f'(z)`` in place, with ``f'`` in output form of ``a = f(z)``."""
        if act == "sigmoid":
            np.subtract(1.0, a, out=t)
            np.multiply(t, a, out=t)
            np.multiply(d, t, out=d)
        elif act == "tanh":
            np.multiply(a, a, out=t)
            np.subtract(1.0, t, out=t)
            np.multiply(d, t, out=d)
        elif act == "relu":
            np.greater(a, 0.0, out=mask)
            np.multiply(d, mask, out=d)
        elif act != "identity":  # softmax never reaches here (fused with cross-entropy)
            raise ValueError(f"no derivative for {act!r}")

    def train_batch(self, params: Params, xb: np.ndarray, yb: np.ndarray, eta: float) -> None:
        """One SGD step on the batch ``xb`` (m, n_0), ``yb`` (m, n_L); updates in place."""
        m = xb.shape[0]
        buf = self._buffers_for(m)
        A, D, T, mask, gW, gb = buf["A"], buf["D"], buf["T"], buf["mask"], buf["gW"], buf["gb"]
        row = buf["row"][0]
        acts = self.activations
        L = len(params)
        # Forward: Z_l = A_{l-1} W_l^T + b_l, A_l = f_l(Z_l)  (Z_l is overwritten by A_l).
        prev = xb
        for l in range(L):
            W, b = params[l]
            a = A[l]
            np.dot(prev, W.T, out=a)
            np.add(a, b, out=a)
            self._activate(acts[l], a, row)
            prev = a
        # Output delta, scaled by eta/m: the GEMMs below then give eta * dC/dW directly.
        d = D[L - 1]
        np.subtract(A[L - 1], yb, out=d)
        if not self._fused:
            self._times_fprime(acts[L - 1], d, A[L - 1], T[L - 1], mask[L - 1])
        np.multiply(d, self.dtype.type(eta / m), out=d)
        # Backward: gradient GEMM, delta for the layer below (before W changes), update.
        for l in range(L - 1, -1, -1):
            W, b = params[l]
            a_prev = A[l - 1] if l > 0 else xb
            np.dot(d.T, a_prev, out=gW[l])
            if l > 0:
                d_prev = D[l - 1]
                np.dot(d, W, out=d_prev)
                self._times_fprime(acts[l - 1], d_prev, A[l - 1], T[l - 1], mask[l - 1])
            np.subtract(W, gW[l], out=W)
            np.sum(d, axis=0, out=gb[l])
            np.subtract(b, gb[l], out=b)
            if l > 0:
                d = d_prev

    def train_epoch(
        self, params: Params, X: np.ndarray, Y: np.ndarray, batch_size: int, eta: float
    ) -> Params:
        """One epoch of mini-batch SGD over ``X`` (n, n_0), ``Y`` (n, n_L) in order.

        ``params`` are updated in place (and returned). ``X`` and ``Y`` should already have the
        trainer's dtype and be C-contiguous, or every batch is converted.
        """
        X = np.ascontiguousarray(X, dtype=self.dtype)
        Y = np.ascontiguousarray(Y, dtype=self.dtype)
        with np.errstate(over="ignore"):  # exp(-z) -> inf gives sigmoid 0, as it should
            for s, e in _batches(X.shape[0], batch_size):
                self.train_batch(params, X[s:e], Y[s:e], eta)
        return params


# ---------------------------------------------------------------------------------------------
# The textbook per-sample loop (Nielsen's network.py, generalised to the activations above)


def _tb_act(act: str, z: np.ndarray) -> np.ndarray:
    """The activation of a column vector ``z`` (n, 1), textbook style (new arrays)."""
    if act == "sigmoid":
        return 1.0 / (1.0 + np.exp(-z))
    if act == "tanh":
        return np.tanh(z)
    if act == "relu":
        return np.maximum(z, 0.0)
    if act == "softmax":
        e = np.exp(z - np.max(z))
        return e / np.sum(e)
    return z


def _tb_prime(act: str, z: np.ndarray) -> np.ndarray:
    """``f'(z)`` from ``z``, as the textbook writes ``sigmoid_prime(z)``."""
    if act == "sigmoid":
        s = _tb_act("sigmoid", z)
        return s * (1 - s)
    if act == "tanh":
        return 1.0 - np.tanh(z) ** 2
    if act == "relu":
        return (z > 0).astype(z.dtype)
    return np.ones_like(z)


def _tb_backprop(x, y, weights, biases, activations, loss):
    """Nielsen's ``backprop(x, y)``: the gradient for one sample, as column vectors."""
    nabla_b = [np.zeros_like(b) for b in biases]
    nabla_w = [np.zeros_like(w) for w in weights]
    activation = x
    acts = [x]
    zs = []
    for w, b, f in zip(weights, biases, activations):
        z = np.dot(w, activation) + b
        zs.append(z)
        activation = _tb_act(f, z)
        acts.append(activation)
    if loss == "mse" and activations[-1] != "identity":
        delta = (acts[-1] - y) * _tb_prime(activations[-1], zs[-1])
    else:  # cross-entropy + softmax, log-loss + sigmoid, mse + identity: a - y
        delta = acts[-1] - y
    nabla_b[-1] = delta
    nabla_w[-1] = np.dot(delta, acts[-2].T)
    for k in range(2, len(weights) + 1):
        sp = _tb_prime(activations[-k], zs[-k])
        delta = np.dot(weights[-k + 1].T, delta) * sp
        nabla_b[-k] = delta
        nabla_w[-k] = np.dot(delta, acts[-k - 1].T)
    return nabla_b, nabla_w


def textbook_epoch(
    params: Params, X: np.ndarray, Y: np.ndarray, batch_size: int, eta: float, activations, loss
) -> Params:
    """One epoch of the classic per-sample textbook loop; updates ``params`` in place.

    For each mini-batch, every example is back-propagated on its own as a column vector and the
    nablas are summed; then ``w <- w - (eta/m) nabla_w`` (Nielsen's ``update_mini_batch``).
    """
    validate_net([X.shape[1]] + [W.shape[0] for W, _ in params], activations, loss)
    weights = [W for W, _ in params]
    biases = [b.reshape(-1, 1) for _, b in params]
    n = X.shape[0]
    with np.errstate(over="ignore"):
        for s, e in _batches(n, batch_size):
            nabla_b = [np.zeros_like(b) for b in biases]
            nabla_w = [np.zeros_like(w) for w in weights]
            for i in range(s, e):
                x = X[i].reshape(-1, 1)
                y = Y[i].reshape(-1, 1)
                dnb, dnw = _tb_backprop(x, y, weights, biases, activations, loss)
                nabla_b = [nb + d for nb, d in zip(nabla_b, dnb)]
                nabla_w = [nw + d for nw, d in zip(nabla_w, dnw)]
            scale = eta / (e - s)
            weights = [w - scale * nw for w, nw in zip(weights, nabla_w)]
            biases = [b - scale * nb for b, nb in zip(biases, nabla_b)]
    for (W, b), w_new, b_new in zip(params, weights, biases):
        W[...] = w_new
        b[...] = b_new.ravel()
    return params


# ---------------------------------------------------------------------------------------------
# Contestants: a common interface around every trainer


class Contestant:
    """One way of running an epoch; subclasses set ``name`` and may clear ``same_work``.

    Attributes:
        name: the row label in the results.
        same_work: False when the contestant cannot do exactly the configured work (another
            loss, say); it is then timed for reference but left out of the agreement check.
        note: why, or anything else the reader should know.
    """

    name = "?"
    same_work = True
    note = ""

    def __init__(self, net: Net) -> None:
        self.net = net

    def setup(self, params: Params, X: np.ndarray, Y: np.ndarray) -> Any:
        """Convert copies of the shared parameters and the data to this contestant's types."""
        return copy_params(params, self.net.dtype), X, Y

    def epoch(self, state: Any) -> Any:
        """Run one epoch on ``state`` (timed); return the state holding the new parameters."""
        raise NotImplementedError

    def to_numpy(self, state: Any) -> Params:
        """The parameters held by ``state`` as NumPy arrays."""
        return state[0]


class HandNumpyContestant(Contestant):
    """:class:`HandNumpyTrainer`, the reference of every comparison."""

    name = "hand NumPy"

    def __init__(self, net: Net) -> None:
        super().__init__(net)
        self.trainer = HandNumpyTrainer(net.sizes, net.activations, net.loss, net.np_dtype)

    def epoch(self, state):
        params, X, Y = state
        self.trainer.train_epoch(params, X, Y, self.net.batch_size, self.net.eta)
        return state


class TextbookContestant(Contestant):
    """:func:`textbook_epoch`, the slow per-sample baseline."""

    name = "textbook loop"

    def epoch(self, state):
        params, X, Y = state
        net = self.net
        textbook_epoch(params, X, Y, net.batch_size, net.eta, net.activations, net.loss)
        return state


# --- PyTorch (eager, autograd) ---------------------------------------------------------------


#: Threads every contestant may use (None: all cores). Set it with :func:`set_threads`.
THREADS: int | None = None


def set_threads(n: int | None) -> None:
    """Limit every library to ``n`` threads (None: all cores); call before importing the peers.

    NumPy's BLAS (and scikit-learn's) through threadpoolctl, PyTorch through
    ``torch.set_num_threads``, XLA through ``XLA_FLAGS`` (read when JAX starts).
    """
    global THREADS
    THREADS = n
    if n is None:
        return
    os.environ["OMP_NUM_THREADS"] = str(n)
    if n == 1:
        flags = os.environ.get("XLA_FLAGS", "")
        os.environ["XLA_FLAGS"] = (
            f"{flags} --xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1".strip()
        )
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - depends on the machine
        warnings.warn("threadpoolctl is not installed: BLAS threads are not limited", stacklevel=2)
        return
    threadpool_limits(n)


def _import_torch():
    try:
        import torch
    except ImportError as exc:  # pragma: no cover - depends on the machine
        raise UnavailableError(f"torch is not installed ({exc})") from None
    torch.set_num_threads(THREADS or os.cpu_count() or 1)
    return torch


class TorchEagerContestant(Contestant):
    """PyTorch eager mode: ``F.linear`` layers, the idiomatic loss, ``autograd.grad``, sub_.

    The loss is written the way a PyTorch user writes it: ``F.cross_entropy`` on the logits with
    probability targets (mean over the batch), ``binary_cross_entropy_with_logits`` summed and
    divided by m, and ``F.mse_loss(reduction="sum") / (2m)``.
    """

    name = "torch eager"

    def __init__(self, net: Net) -> None:
        super().__init__(net)
        self.torch = _import_torch()
        threads = self.torch.get_num_threads()
        self.note = f"{threads} thread{'s' if threads > 1 else ''}"

    def setup(self, params, X, Y):
        torch = self.torch
        dt = self.net.np_dtype
        tparams = [
            torch.tensor(np.array(a, dtype=dt), requires_grad=True)
            for W, b in params
            for a in (W, b)
        ]
        tx = torch.from_numpy(np.ascontiguousarray(X, dtype=dt))
        ty = torch.from_numpy(np.ascontiguousarray(Y, dtype=dt))
        return tparams, tx, ty

    def _loss(self, flat, xb, yb):
        torch = self.torch
        F = torch.nn.functional
        acts, m = self.net.activations, xb.shape[0]
        a = xb
        L = len(acts)
        for layer in range(L):
            z = F.linear(a, flat[2 * layer], flat[2 * layer + 1])
            if layer < L - 1:
                a = _torch_act(torch, acts[layer], z)
        if self.net.loss == "cross_entropy":
            return F.cross_entropy(z, yb)
        if self.net.loss == "log_loss":
            return F.binary_cross_entropy_with_logits(z, yb, reduction="sum") / m
        return F.mse_loss(_torch_act(torch, acts[-1], z), yb, reduction="sum") / (2 * m)

    def epoch(self, state):
        torch = self.torch
        flat, X, Y = state
        eta = self.net.eta
        for s, e in _batches(X.shape[0], self.net.batch_size):
            loss = self._loss(flat, X[s:e], Y[s:e])
            grads = torch.autograd.grad(loss, flat)
            with torch.no_grad():
                for p, g in zip(flat, grads):
                    p.sub_(g, alpha=eta)
        return state

    def to_numpy(self, state):
        flat = [p.detach().numpy().copy() for p in state[0]]
        return [(flat[i], flat[i + 1]) for i in range(0, len(flat), 2)]


def _torch_act(torch, act: str, z):
    if act == "sigmoid":
        return torch.sigmoid(z)
    if act == "tanh":
        return torch.tanh(z)
    if act == "relu":
        return torch.relu(z)
    if act == "softmax":
        return torch.softmax(z, dim=1)
    return z


# --- JAX -------------------------------------------------------------------------------------


def _import_jax():
    """Import JAX with 64-bit enabled (float32 arrays stay float32: Python scalars are weak)."""
    try:
        import jax
    except ImportError as exc:  # pragma: no cover - depends on the machine
        raise UnavailableError(f"jax is not installed ({exc})") from None
    jax.config.update("jax_enable_x64", True)
    return jax


def _jax_act(jax, act: str, z):
    jnp = jax.numpy
    if act == "sigmoid":
        return jax.nn.sigmoid(z)
    if act == "tanh":
        return jnp.tanh(z)
    if act == "relu":
        return jax.nn.relu(z)
    if act == "softmax":
        return jax.nn.softmax(z, axis=1)
    return z


def _jax_loss_fn(jax, net: Net):
    """``loss(params, xb, yb)`` with params a list of ``(W, b)``, written as a JAX user would."""
    jnp = jax.numpy
    acts, loss = net.activations, net.loss

    def loss_fn(params, xb, yb):
        m = xb.shape[0]
        a = xb
        for layer, (W, b) in enumerate(params):
            z = a @ W.T + b
            if layer < len(params) - 1:
                a = _jax_act(jax, acts[layer], z)
        if loss == "cross_entropy":
            return -jnp.sum(yb * jax.nn.log_softmax(z, axis=1)) / m
        if loss == "log_loss":  # -[y ln s(z) + (1-y) ln(1-s(z))] = softplus(z) - y z
            return jnp.sum(jax.nn.softplus(z) - yb * z) / m
        return 0.5 * jnp.sum((_jax_act(jax, acts[-1], z) - yb) ** 2) / m

    return loss_fn


def _jax_step_body(jax, net: Net):
    """The un-jitted SGD step ``(params, xb, yb) -> new params``."""
    grad = jax.grad(_jax_loss_fn(jax, net))
    eta = net.eta

    def step(params, xb, yb):
        g = grad(params, xb, yb)
        return jax.tree_util.tree_map(lambda p, gp: p - eta * gp, params, g)

    return step


class JaxStepContestant(Contestant):
    """JAX with a jitted SGD step; the Python loop feeds it NumPy batch views.

    The parameters are donated (``donate_argnums=0``) so XLA may update them in place. The
    warm-up epoch compiles the step for the full and the partial batch shape.
    """

    name = "jax jit step"

    def __init__(self, net: Net) -> None:
        super().__init__(net)
        self.jax = _import_jax()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self.step = self.jax.jit(_jax_step_body(self.jax, net), donate_argnums=0)

    def setup(self, params, X, Y):
        jnp = self.jax.numpy
        dt = self.net.np_dtype
        jparams = [(jnp.asarray(W, dtype=dt), jnp.asarray(b, dtype=dt)) for W, b in params]
        X = np.ascontiguousarray(X, dtype=dt)
        Y = np.ascontiguousarray(Y, dtype=dt)
        return jparams, X, Y

    def epoch(self, state):
        params, X, Y = state
        step = self.step
        for s, e in _batches(X.shape[0], self.net.batch_size):
            params = step(params, X[s:e], Y[s:e])
        self.jax.block_until_ready(params)
        return params, X, Y

    def to_numpy(self, state):
        return [(np.asarray(W).copy(), np.asarray(b).copy()) for W, b in state[0]]


class JaxScanContestant(JaxStepContestant):
    """JAX with the whole epoch jitted: ``lax.scan`` of the step over the equal-sized batches.

    The data are reshaped to ``(n_batches, m, ...)`` device arrays in ``setup`` (not timed);
    a last partial batch goes through the jitted step.
    """

    name = "jax jit epoch (scan)"

    def __init__(self, net: Net) -> None:
        super().__init__(net)
        jax = self.jax
        body = _jax_step_body(jax, net)

        def scan_epoch(params, xs, ys):
            def one(p, xy):
                return body(p, xy[0], xy[1]), None

            params, _ = jax.lax.scan(one, params, (xs, ys))
            return params

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self.scan_epoch = jax.jit(scan_epoch, donate_argnums=0)

    def setup(self, params, X, Y):
        jnp = self.jax.numpy
        jparams, X, Y = super().setup(params, X, Y)
        m = self.net.batch_size
        nb = X.shape[0] // m
        full = nb * m
        xs = jnp.asarray(X[:full].reshape(nb, m, X.shape[1]))
        ys = jnp.asarray(Y[:full].reshape(nb, m, Y.shape[1]))
        tail = (X[full:], Y[full:]) if full < X.shape[0] else None
        return jparams, xs, ys, tail

    def epoch(self, state):
        params, xs, ys, tail = state
        if xs.shape[0]:
            params = self.scan_epoch(params, xs, ys)
        if tail is not None:
            params = self.step(params, *tail)
        self.jax.block_until_ready(params)
        return params, xs, ys, tail


# --- HIPS autograd ---------------------------------------------------------------------------


class AutogradContestant(Contestant):
    """HIPS autograd: ``autograd.grad`` of the loss on NumPy arrays, then in-place updates."""

    name = "HIPS autograd"

    def __init__(self, net: Net) -> None:
        super().__init__(net)
        try:
            import autograd
            import autograd.numpy as anp
            from autograd.scipy.special import logsumexp
        except ImportError as exc:  # pragma: no cover - depends on the machine
            raise UnavailableError(f"autograd is not installed ({exc})") from None
        acts, loss = net.activations, net.loss

        def act_fn(act, z):
            if act == "sigmoid":
                return 1.0 / (1.0 + anp.exp(-z))
            if act == "tanh":
                return anp.tanh(z)
            if act == "relu":
                return anp.maximum(z, 0.0)
            return z

        def loss_fn(params, xb, yb):
            m = xb.shape[0]
            a = xb
            for layer, (W, b) in enumerate(params):
                z = anp.dot(a, W.T) + b
                if layer < len(params) - 1:
                    a = act_fn(acts[layer], z)
            if loss == "cross_entropy":
                return -anp.sum(yb * (z - logsumexp(z, axis=1, keepdims=True))) / m
            if loss == "log_loss":
                return anp.sum(anp.logaddexp(0.0, z) - yb * z) / m
            return 0.5 * anp.sum((act_fn(acts[-1], z) - yb) ** 2) / m

        self.grad = autograd.grad(loss_fn)

    def epoch(self, state):
        params, X, Y = state
        eta = self.net.eta
        with np.errstate(over="ignore"):
            for s, e in _batches(X.shape[0], self.net.batch_size):
                grads = self.grad(params, X[s:e], Y[s:e])
                for (W, b), (gW, gb) in zip(params, grads):
                    W -= eta * gW
                    b -= eta * gb
        return state


# --- scikit-learn ----------------------------------------------------------------------------

_SK_ACT = {"sigmoid": "logistic", "tanh": "tanh", "relu": "relu", "identity": "identity"}


class SklearnContestant(Contestant):
    """scikit-learn's ``MLPClassifier``/``MLPRegressor``: one ``partial_fit`` call per epoch.

    Settings: ``solver="sgd"``, ``momentum=0``, ``learning_rate="constant"``,
    ``learning_rate_init=eta``, ``alpha=0`` (no L2), ``batch_size=m``, ``shuffle=False``
    (batches in order; ``gen_batches`` keeps the last partial batch, of its own size).
    Its weights are stored transposed, ``coefs_[l]`` = ``W_l.T`` of shape (in, out).

    Loss conventions, and what follows for "the same work":

    * ``MLPClassifier`` with more than two classes uses a softmax output with
      ``log_loss`` = ``-1/m sum y ln a``: exactly our ``cross_entropy``. Same work.
    * ``MLPClassifier`` with binary or multilabel (indicator) targets uses a logistic output with
      the binary log-loss ``-1/m sum [y ln a + (1-y) ln(1-a)]``: exactly our ``log_loss``.
    * ``MLPRegressor`` has an identity output; its ``squared_error`` *reports*
      ``1/2 mean`` over samples *and* outputs, but back-propagates ``delta = a - y`` with the
      gradients divided by m only, i.e. the gradient of our ``1/(2m) sum ||y - a||^2``.
      With an identity output it is the same work (only the reported loss is ``1/k`` of ours).
    * There is no quadratic cost with a sigmoid (or any non-identity) output: sklearn always
      uses the canonical output delta ``a - y``, so the textbook ``mse`` + sigmoid networks cannot
      be trained. We time ``MLPClassifier`` (logistic output, binary log-loss) on them as the
      nearest thing, marked "not the same work": the same GEMMs and one elementwise product
      less in the output delta, so its time is comparable but its parameters are not.
    * One activation for all hidden layers; a 2-class softmax output becomes a single logistic
      unit (another parameter shape): both unavailable.
    """

    name = "sklearn MLP partial_fit"

    def __init__(self, net: Net) -> None:
        super().__init__(net)
        try:
            from sklearn.neural_network import MLPClassifier, MLPRegressor
        except ImportError as exc:  # pragma: no cover - depends on the machine
            raise UnavailableError(f"scikit-learn is not installed ({exc})") from None
        hidden = set(net.activations[:-1])
        if len(hidden) > 1:
            raise UnavailableError("sklearn uses one activation for all hidden layers")
        hidden_act = _SK_ACT[hidden.pop()] if hidden else "identity"
        out, loss, k = net.activations[-1], net.loss, net.sizes[-1]
        kwargs = dict(
            hidden_layer_sizes=tuple(net.sizes[1:-1]),
            activation=hidden_act,
            solver="sgd",
            alpha=0.0,
            batch_size=net.batch_size,
            learning_rate="constant",
            learning_rate_init=net.eta,
            momentum=0.0,
            nesterovs_momentum=False,
            shuffle=False,
            early_stopping=False,
            max_iter=1,
            tol=0.0,
            random_state=0,
        )
        self.note = ""
        if out == "softmax":
            if k < 3:
                raise UnavailableError("sklearn turns a 2-class softmax into one logistic unit")
            self.model_cls, self.target = MLPClassifier, "labels"
        elif out == "sigmoid":
            self.model_cls = MLPClassifier
            self.target = "binary" if k == 1 else "indicator"
            if loss == "mse":
                self.same_work = False
                self.note = (
                    "NOT the same work: sklearn has no quadratic cost with a sigmoid output; "
                    "timed as MLPClassifier with log-loss (output delta a - y)"
                )
        elif out == "identity" and loss == "mse":
            self.model_cls, self.target = MLPRegressor, "values"
        else:
            raise UnavailableError(f"sklearn has no {out} output with {loss}")
        self.kwargs = kwargs

    def _targets(self, Y: np.ndarray) -> np.ndarray:
        if self.target == "labels":
            return np.argmax(Y, axis=1)
        if self.target == "binary":
            return (Y[:, 0] > 0.5).astype(np.int64)
        if self.target == "indicator":
            return (Y > 0.5).astype(np.int64)
        return Y[:, 0] if Y.shape[1] == 1 else Y

    def setup(self, params, X, Y):
        dt = self.net.np_dtype
        X = np.ascontiguousarray(X, dtype=dt)
        y = self._targets(np.asarray(Y))
        model = self.model_cls(**self.kwargs)
        extra = {}
        if self.model_cls.__name__ == "MLPClassifier":  # ignored for indicator targets
            extra["classes"] = np.arange(max(2, self.net.sizes[-1]))
        m = min(self.net.batch_size, X.shape[0])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model.partial_fit(X[:m], y[:m], **extra)  # allocates everything sklearn needs
        # Overwrite in place: the SGD optimiser holds references to these very arrays.
        for layer, (W, b) in enumerate(params):
            if model.coefs_[layer].shape != W.T.shape:
                raise UnavailableError(
                    f"sklearn made layer {layer} of shape {model.coefs_[layer].shape}"
                )
            model.coefs_[layer][...] = W.T
            model.intercepts_[layer][...] = b
        return model, X, y

    def epoch(self, state):
        model, X, y = state
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model.partial_fit(X, y)
        return state

    def to_numpy(self, state):
        model = state[0]
        return [(c.T.copy(), i.copy()) for c, i in zip(model.coefs_, model.intercepts_)]


# ---------------------------------------------------------------------------------------------
# Hessians over the flattened parameters


@dataclass(frozen=True)
class HessianProblem:
    """A cost whose full Hessian the contestants compute, with its data.

    ``sizes = (d, 1)``, ``("sigmoid",)``, ``"log_loss"`` is logistic regression (parameters
    ``w`` then ``b``); ``(10, 16, 1)``, ``("tanh", "identity")``, ``"mse"`` the small tanh net.
    The cost averages over the n samples, with no regulariser.
    """

    name: str
    sizes: tuple[int, ...]
    activations: tuple[str, ...]
    loss: str

    def __post_init__(self) -> None:
        validate_net(self.sizes, self.activations, self.loss)
        hidden, out = self.activations[:-1], (self.activations[-1], self.loss)
        if any(act != "tanh" for act in hidden) or out not in (
            ("identity", "mse"),
            ("sigmoid", "log_loss"),
        ):
            raise ValueError(
                "Hessian problems: tanh hidden layers; identity+mse or sigmoid+log_loss"
            )

    @property
    def n_params(self) -> int:
        """The length of the flat parameter vector."""
        s = self.sizes
        return sum(s[i] * s[i + 1] + s[i + 1] for i in range(len(s) - 1))


def _sigmoid_np(z: np.ndarray) -> np.ndarray:
    """A sigmoid that never overflows."""
    e = np.exp(-np.abs(z))
    return np.where(z >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


def logistic_hessian_syrk(theta: np.ndarray, X: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Hand Hessian of logistic regression: ``Xt^T diag(s) Xt / n`` with ``Xt = [X, 1]``.

    ``s = a(1-a)``. Rows are scaled by ``r = sqrt(s/n)`` once, ``B = r * X``; then
    ``H_ww = B^T B`` (NumPy hands ``B.T @ B`` on the same buffer to BLAS ``syrk``, the symmetric
    rank-k update, and mirrors the triangle), ``H_wb = B^T r`` and ``H_bb = r . r``.
    """
    n, d = X.shape
    a = _sigmoid_np(X @ theta[:d] + theta[d])
    r = np.sqrt(a * (1.0 - a) / n)
    B = X * r[:, None]
    H = np.empty((d + 1, d + 1))
    H[:d, :d] = B.T @ B
    H[:d, d] = B.T @ r
    H[d, :d] = H[:d, d]
    H[d, d] = r @ r
    return H


def logistic_hessian_gemm(theta: np.ndarray, X: np.ndarray, y: np.ndarray) -> np.ndarray:
    """The same Hessian with a general GEMM, ``Xt.T @ (s[:, None] * Xt) / n`` (for comparison)."""
    n, d = X.shape
    Xt = np.hstack([X, np.ones((n, 1))])
    a = _sigmoid_np(Xt @ theta)
    return Xt.T @ ((a * (1.0 - a) / n)[:, None] * Xt)


def tanh_net_hessian(theta: np.ndarray, X: np.ndarray, Y: np.ndarray, sizes) -> np.ndarray:
    """Exact Hessian of ``C = 1/(2n) sum ||W2 tanh(W1 x + b1) + b2 - y||^2``, by blocks.

    With ``h = tanh(z)``, ``g' = 1 - h^2``, ``g'' = -2 h g'``, residual ``r = a - y`` and the
    augmented input ``x~ = [x, 1]`` (so ``V = [W1 b1]``, ``U = [W2 b2]``):

    * Gauss-Newton part ``J^T J / n``, with per-sample output Jacobian rows
      ``dA_a/dW1[c,d] = W2[a,c] g'_c x_d``, ``dA_a/db1[c] = W2[a,c] g'_c``,
      ``dA_a/dW2[a',c] = [a=a'] h_c``, ``dA_a/db2[a'] = [a=a']`` (one GEMM, ``J.T @ J``);
    * residual part, V-V: ``[c=e] 1/n sum (r W2)_c g''_c x~_d x~_f`` (a block per hidden unit);
    * residual part, U-V: ``dW2[a,b] dV[b,d]: 1/n sum r_a g'_b x~_d`` (b2 has none).

    ``sizes`` is ``(n0, n1, k)``; the order of the result is W1 (row-major), b1, W2, b2.
    """
    n0, n1, k = sizes
    n = X.shape[0]
    (W1, b1), (W2, b2) = unflatten_params(theta, sizes)
    h = np.tanh(X @ W1.T + b1)  # (n, n1)
    g1 = 1.0 - h * h
    g2 = -2.0 * h * g1
    R = h @ W2.T + b2 - Y  # (n, k)
    Xa = np.hstack([X, np.ones((n, 1))])  # (n, n0 + 1)
    P = n1 * n0 + n1 + k * n1 + k
    iW1 = np.arange(n1 * n0).reshape(n1, n0)
    ib1 = n1 * n0 + np.arange(n1)
    iW2 = n1 * n0 + n1 + np.arange(k * n1).reshape(k, n1)
    ib2 = n1 * n0 + n1 + k * n1 + np.arange(k)
    iV = np.hstack([iW1, ib1[:, None]])  # (n1, n0 + 1): augmented hidden-layer indices
    # Gauss-Newton: J has a row per (sample, output).
    J = np.zeros((n, k, P))
    WG = W2[None, :, :] * g1[:, None, :]  # (n, k, n1) = W2[a,c] g'_c
    J[:, :, : n1 * n0] = (WG[:, :, :, None] * X[:, None, None, :]).reshape(n, k, n1 * n0)
    J[:, :, n1 * n0 : n1 * n0 + n1] = WG
    for a in range(k):
        J[:, a, iW2[a]] = h
        J[:, a, ib2[a]] = 1.0
    J = J.reshape(n * k, P)
    H = J.T @ J
    # Residual x second derivative of the outputs.
    q = (R @ W2) * g2  # (n, n1)
    T = ((q[:, :, None] * Xa[:, None, :]).reshape(n, -1).T @ Xa).reshape(n1, n0 + 1, n0 + 1)
    H[iV[:, :, None], iV[:, None, :]] += T
    M = ((R[:, :, None] * g1[:, None, :]).reshape(n, -1).T @ Xa).reshape(k, n1, n0 + 1)
    rows = np.broadcast_to(iW2[:, :, None], M.shape)
    cols = np.broadcast_to(iV[None, :, :], M.shape)
    H[rows, cols] += M
    H[cols, rows] += M
    return H / n


def _np_cost(theta, X, Y, problem: HessianProblem, xp) -> Any:
    """The flat-parameter cost for an array namespace ``xp`` (jax.numpy or autograd.numpy)."""
    params = unflatten_params(theta, problem.sizes)
    a = X
    for layer, (W, b) in enumerate(params):
        z = a @ W.T + b
        if layer < len(params) - 1:
            a = xp.tanh(z)
    n = X.shape[0]
    if problem.loss == "log_loss":  # sigmoid output: softplus(z) - y z
        return xp.sum(xp.logaddexp(0.0, z) - Y * z) / n
    return 0.5 * xp.sum((z - Y) ** 2) / n


def hessian_contestants(
    problem: HessianProblem, theta: np.ndarray, X: np.ndarray, Y: np.ndarray
) -> dict[str, Callable[[], np.ndarray] | str]:
    """Every Hessian contestant for ``problem``, as zero-argument callables (or a skip reason).

    JAX functions are jitted and warmed up here; each callable returns a NumPy ``(P, P)`` array
    in float64 and blocks until it is computed.
    """
    out: dict[str, Callable[[], np.ndarray] | str] = {}
    theta = np.asarray(theta, np.float64)
    X = np.asarray(X, np.float64)
    Y = np.asarray(Y, np.float64)
    if problem.loss == "log_loss" and len(problem.sizes) == 2:
        y = Y.ravel()
        out["hand NumPy (syrk B.T@B)"] = lambda: logistic_hessian_syrk(theta, X, y)
        out["hand NumPy (gemm)"] = lambda: logistic_hessian_gemm(theta, X, y)
    elif len(problem.sizes) == 3 and problem.activations == ("tanh", "identity"):
        out["hand NumPy (blocks)"] = lambda: tanh_net_hessian(theta, X, Y, problem.sizes)
    # JAX
    try:
        jax = _import_jax()
        jnp = jax.numpy

        def jcost(t, x, yy):
            return _np_cost(t, x, yy, problem, jnp)

        jt, jx, jy = jnp.asarray(theta), jnp.asarray(X), jnp.asarray(Y)
        for name, fn in (
            ("jax.hessian", jax.hessian(jcost)),
            ("jax jacrev(jacrev)", jax.jacrev(jax.jacrev(jcost))),
            ("jax jacfwd(grad)", jax.jacfwd(jax.grad(jcost))),
        ):
            jitted = jax.jit(fn)
            jitted(jt, jx, jy).block_until_ready()  # compile
            out[name] = lambda f=jitted: np.asarray(f(jt, jx, jy).block_until_ready())
    except UnavailableError as exc:
        out["jax"] = str(exc)
    # PyTorch
    try:
        torch = _import_torch()
        tt, tx, ty = (torch.from_numpy(np.array(a)) for a in (theta, X, Y))
        tf = torch.func

        def tcost(t):
            params = unflatten_params(t, problem.sizes)
            a = tx
            for layer, (W, b) in enumerate(params):
                z = a @ W.T + b
                if layer < len(params) - 1:
                    a = torch.tanh(z)
            if problem.loss == "log_loss":
                return torch.sum(torch.logaddexp(torch.zeros_like(z), z) - ty * z) / tx.shape[0]
            return 0.5 * torch.sum((z - ty) ** 2) / tx.shape[0]

        for name, fn in (
            ("torch.func.hessian", tf.hessian(tcost)),
            ("torch jacrev(jacrev)", tf.jacrev(tf.jacrev(tcost))),
            ("torch jacfwd(jacrev)", tf.jacfwd(tf.jacrev(tcost))),
        ):
            out[name] = lambda f=fn: f(tt).detach().numpy()
    except UnavailableError as exc:
        out["torch"] = str(exc)
    # HIPS autograd
    try:
        import autograd
        import autograd.numpy as anp

        ahess = autograd.hessian(lambda t: _np_cost(t, X, Y, problem, anp))
        out["autograd.hessian"] = lambda: np.asarray(ahess(theta))
    except ImportError as exc:  # pragma: no cover - depends on the machine
        out["autograd"] = f"autograd is not installed ({exc})"
    return out


def check_hessians(results: dict[str, np.ndarray], tol: float = 1e-10) -> dict[str, float]:
    """Max abs difference of every Hessian from the first hand one; raise if any exceeds tol."""
    ref_name = next(k for k in results if k.startswith("hand"))
    ref = results[ref_name]
    diffs = {}
    for name, H in results.items():
        diffs[name] = float(np.max(np.abs(H - ref)))
        asym = float(np.max(np.abs(H - H.T)))
        if not (diffs[name] <= tol and asym <= tol and math.isfinite(diffs[name])):
            raise AssertionError(
                f"Hessian {name!r} differs from {ref_name!r} by {diffs[name]:.3g} "
                f"(asymmetry {asym:.3g}); tolerance {tol:g}"
            )
    return diffs
