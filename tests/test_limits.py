"""Limits that are stated, not discovered: memory of a training run, Hessian refusal, sizes."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

import symgrad
from symgrad.runtime.limits import hessian_memory_bytes, training_memory_bytes
from symgrad.spec import MAX_LAYERS, MAX_UNITS


def _spec(optimizer="adam", batch_size=64, layers=((256, "relu"), (128, "tanh"), (10, "softmax"))):
    return symgrad.load_spec(
        {
            "name": "mid",
            "inputs": 100,
            "layers": [{"units": u, "activation": a} for u, a in layers],
            "loss": "cross_entropy",
            "optimizer": {"name": optimizer, "batch_size": batch_size, "learning_rate": 0.01},
            "init": {"scheme": "he", "seed": 0},
        }
    )


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
@pytest.mark.parametrize("shuffle", [True, False])
def test_training_memory_matches_the_formula(optimizer, shuffle):
    spec = _spec(optimizer)
    model = symgrad.load_trainer(spec)
    rng = np.random.default_rng(0)
    n = 2000
    X = rng.standard_normal((n, 100))
    Y = np.eye(10)[rng.integers(0, 10, n)]
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        base, _ = tracemalloc.get_traced_memory()
        model.fit(X, Y, epochs=2, shuffle=shuffle)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    measured = peak - base
    formula = training_memory_bytes(spec, n, shuffle=shuffle)
    print(f"{optimizer} shuffle={shuffle}: measured {measured} bytes, formula {formula} bytes")
    assert measured <= 1.2 * formula + 256 * 1024
    assert measured >= 0.6 * formula  # the formula is a bound that is also close


def test_hessian_refuses_above_the_stated_limit():
    spec = _spec("sgd", layers=((200, "tanh"), (10, "softmax")))
    model = symgrad.load_trainer(spec)
    assert spec.n_params > symgrad.spec.MAX_HESSIAN_PARAMS
    X = np.zeros((3, 100))
    Y = np.eye(10)[[0, 1, 2]]
    with pytest.raises(MemoryError, match="use hvp"):
        model.hessian(X, Y)
    with pytest.raises(MemoryError, match="use hvp"):
        model.gauss_newton(X, Y)
    assert model.hvp(X, Y, np.zeros(spec.n_params)).shape == (spec.n_params,)
    assert hessian_memory_bytes(spec) == spec.n_params**2 * 8


def test_largest_width_and_depth_are_accepted_and_one_more_is_refused():
    deep = [{"units": 2, "activation": "tanh"}] * (MAX_LAYERS - 1) + [
        {"units": 1, "activation": "identity"}
    ]
    spec = symgrad.load_spec({"name": "deep", "inputs": 2, "layers": deep, "loss": "mse"})
    assert len(spec.layers) == MAX_LAYERS
    with pytest.raises(symgrad.SpecError, match=r"layers: list should have at most 64 items"):
        symgrad.load_spec({"name": "deep", "inputs": 2, "layers": deep + deep[-1:], "loss": "mse"})
    wide = symgrad.load_spec(
        {
            "name": "wide",
            "inputs": 2,
            "loss": "mse",
            "layers": [
                {"units": MAX_UNITS, "activation": "relu"},
                {"units": 1, "activation": "identity"},
            ],
        }
    )
    source = symgrad.generate_source(wide)
    compile(source, "wide.py", "exec")
    with pytest.raises(symgrad.SpecError, match="less than or equal to 65536"):
        symgrad.load_spec(
            {
                "name": "wide",
                "inputs": 2,
                "loss": "mse",
                "layers": [{"units": MAX_UNITS + 1, "activation": "relu"}],
            }
        )
