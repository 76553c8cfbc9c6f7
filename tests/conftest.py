"""Shared test helpers: spec builders, generated trainers cached per spec, data, error measures.

Test modules import them directly (``from conftest import make_spec, trainer, rel_err``).
"""

from __future__ import annotations

import functools
import json
import signal

import numpy as np

import symgrad

TINY = np.finfo(np.float64).tiny


def make_spec(
    hidden: tuple = (),
    out: str = "identity",
    loss: str = "mse",
    *,
    inputs: int = 3,
    outputs: int = 2,
    l2: float = 0.0,
    l1: float = 0.0,
    dtype: str = "float64",
    activations: tuple = (),
    losses: tuple = (),
    optimizer: dict | None = None,
    name: str = "fdnet",
) -> dict:
    """A spec dict; ``hidden`` is a tuple of (units, activation) or (units, activation, alpha)."""
    layers = []
    for h in hidden:
        layer = {"units": h[0], "activation": h[1]}
        if len(h) > 2 and h[2] is not None:
            layer["alpha"] = h[2]
        layers.append(layer)
    layers.append({"units": outputs, "activation": out})
    spec = {
        "name": name,
        "inputs": inputs,
        "layers": layers,
        "loss": loss,
        "regularization": {"l2": l2, "l1": l1},
        "dtype": dtype,
    }
    if optimizer:
        spec["optimizer"] = dict(optimizer)
    if activations:
        spec["activations"] = dict(activations)
    if losses:
        spec["losses"] = dict(losses)
    return spec


@functools.cache
def _trainer_class(spec_json: str):
    return type(symgrad.load_trainer(symgrad.load_spec(json.loads(spec_json))))


def trainer_class(spec: dict):
    """The generated class for ``spec``, generated once per spec (keyed by its JSON text)."""
    return _trainer_class(json.dumps(spec, sort_keys=True))


def make(spec: dict, seed: int | None = None, dtype=None):
    """A fresh instance of the generated trainer for ``spec``."""
    return trainer_class(spec)(seed=seed, dtype=dtype)


def trainer(
    hidden: tuple = (),
    out: str = "identity",
    loss: str = "mse",
    *,
    seed: int = 0,
    instance_dtype=None,
    **options,
):
    """A fresh trainer for ``make_spec(hidden, out, loss, **options)``."""
    return make(make_spec(hidden, out, loss, **options), seed=seed, dtype=instance_dtype)


def make_targets(out: str, loss: str, n: int, outputs: int, rng) -> np.ndarray:
    """Targets in the range each output/loss pair expects (probability rows for softmax)."""
    if loss == "cross_entropy":
        return rng.dirichlet(np.ones(outputs), size=n)
    if loss == "log_loss" or out == "sigmoid":
        return rng.uniform(0.05, 0.95, size=(n, outputs))
    if out == "tanh":
        return rng.uniform(-0.9, 0.9, size=(n, outputs))
    return rng.standard_normal((n, outputs))


def make_data(out: str, loss: str, n: int = 6, inputs: int = 3, outputs: int = 2, seed: int = 0):
    """Random inputs and matching targets."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, inputs))
    return X, make_targets(out, loss, n, outputs, rng)


def spec_error(source):
    """The SpecError that loading ``source`` (a dict, YAML text or a path) raises."""
    import pytest

    from symgrad.errors import SpecError
    from symgrad.spec import load_spec

    with pytest.raises(SpecError) as info:
        load_spec(source)
    return info.value


def rel_err(actual, expected) -> float:
    """Norm-wise relative error |actual - expected| / max(|expected|, tiny)."""
    actual = np.asarray(actual, dtype=np.float64)
    expected = np.asarray(expected, dtype=np.float64)
    return float(np.linalg.norm(actual - expected) / max(np.linalg.norm(expected), TINY))


def weight_mask(model) -> np.ndarray:
    """True for the entries of theta (public order) that are weights (W_l), False for biases."""
    mask = np.zeros(model.theta.size, dtype=bool)
    offset = 0
    for name, view in model.params().items():
        if name.startswith("W_"):
            mask[offset : offset + view.size] = True
        offset += view.size
    return mask


def default_signals() -> None:
    """``preexec_fn`` for a child that a test interrupts: SIGINT and SIGTERM at their defaults.

    A child keeps the dispositions it inherits, and a shell without job control starts
    background jobs with SIGINT ignored (so ``nohup symgrad train ... &`` is not stopped by
    Ctrl-C, as it should not be). A test suite started that way must still be able to interrupt
    the CLI it runs.
    """
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


#: output layer and loss pairs, and hidden activations, of the generated chains
CHAIN_PAIRS = (
    ("identity", "mse"),
    ("sigmoid", "mse"),
    ("sigmoid", "log_loss"),
    ("softmax", "cross_entropy"),
    ("tanh", "mse"),
)
CHAIN_HIDDEN = ("identity", "sigmoid", "tanh", "relu", "leaky_relu", "softplus", "elu")


def chain_layers(draw) -> tuple[list[dict], str]:
    """A hypothesis draw of a small dense chain's layers and its loss: 0-2 hidden layers of 2-5
    units, an output/loss pair, a bias or none on each layer (``draw``: a composite's draw)."""
    from hypothesis import strategies as st

    depth = draw(st.integers(0, 2))
    out, loss = draw(st.sampled_from(CHAIN_PAIRS))
    units = [draw(st.integers(2, 5)) for _ in range(depth)]
    outputs = 3 if out == "softmax" else draw(st.integers(1, 3))
    acts = [draw(st.sampled_from(CHAIN_HIDDEN)) for _ in range(depth)] + [out]
    biases = [draw(st.booleans()) for _ in range(depth + 1)]
    layers = []
    for u, act, bias in zip([*units, outputs], acts, biases, strict=True):
        layers.append({"units": u, "activation": act, **({} if bias else {"bias": False})})
    return layers, loss
