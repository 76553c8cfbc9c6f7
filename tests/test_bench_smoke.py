"""Smoke test of the benchmark harness (``benchmarks/peers.py``): tiny nets, float64, seconds."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks import baselines, peers  # noqa: E402

TINY = {
    # 30 samples in batches of 4: the last batch is partial (2 samples).
    "sigmoid-mse": baselines.Net((12, 5, 3), ("sigmoid", "sigmoid"), "mse", "float64", 4, 3.0),
    "relu-softmax": baselines.Net(
        (12, 6, 5, 4), ("relu", "relu", "softmax"), "cross_entropy", "float64", 4, 0.5
    ),
}
OPTIONAL = {
    "torch eager": "torch",
    "jax jit step": "jax",
    "jax jit epoch (scan)": "jax",
    "HIPS autograd": "autograd",
    "sklearn MLP partial_fit": "sklearn",
}


def _one_epoch(name: str, net: baselines.Net) -> baselines.Params:
    """Parameters after one epoch of contestant ``name`` on the tiny data."""
    cfg = peers.Config("t", "tiny", net, n=30, n_quick=30)
    X, Y = peers.make_data(cfg, cfg.n)
    p0 = peers.init_params(net)
    contestant = peers.CONTESTANTS[name](net)
    if not contestant.same_work:
        pytest.skip(f"{name} cannot do this work: {contestant.note}")
    timing = peers.time_contestant(
        contestant.epoch, repeats=1, setup=lambda: contestant.setup(p0, X, Y)
    )
    assert timing.best > 0
    return contestant.to_numpy(timing.result)


@pytest.mark.parametrize("net_name", sorted(TINY))
def test_hand_numpy_agrees_with_textbook_loop(net_name):
    """The hand NumPy trainer and the per-sample textbook loop agree after one epoch."""
    net = TINY[net_name]
    results = {
        peers.REFERENCE: _one_epoch(peers.REFERENCE, net),
        "textbook loop": _one_epoch("textbook loop", net),
    }
    p0 = peers.init_params(net)
    assert baselines.max_abs_diff(results[peers.REFERENCE], p0) > 1e-3  # it did train
    diffs = peers.check_agreement(results)
    assert diffs["textbook loop"] <= 1e-12


@pytest.mark.slow  # imports torch, jax, sklearn (seconds); run with -m slow
@pytest.mark.parametrize("name", sorted(OPTIONAL))
@pytest.mark.parametrize("net_name", sorted(TINY))
def test_optional_peer_agrees(name, net_name):
    """Each optional peer agrees with the hand trainer (skipped when not installed)."""
    pytest.importorskip(OPTIONAL[name])
    net = TINY[net_name]
    diffs = peers.check_agreement(
        {peers.REFERENCE: _one_epoch(peers.REFERENCE, net), name: _one_epoch(name, net)}
    )
    assert diffs[name] <= 1e-12


def test_configs_are_symgrad_specs():
    """Every configuration's spec dict (given to generated_epoch) is a valid symgrad spec."""
    spec = pytest.importorskip("symgrad.spec")
    for cfg in peers.CONFIGS:
        loaded = spec.load_spec(peers.spec_dict(cfg.net))
        assert loaded.sizes == list(cfg.net.sizes)
        assert loaded.dtype == cfg.net.dtype


def test_hand_hessians_agree_with_each_other():
    """The syrk and GEMM forms of the logistic-regression Hessian agree and are symmetric."""
    rng = np.random.default_rng(0)
    X = rng.standard_normal((40, 6))
    y = (rng.random(40) < 0.5).astype(np.float64)
    theta = rng.standard_normal(7)
    H1 = baselines.logistic_hessian_syrk(theta, X, y)
    H2 = baselines.logistic_hessian_gemm(theta, X, y)
    np.testing.assert_allclose(H1, H2, rtol=0, atol=1e-13)
    np.testing.assert_allclose(H1, H1.T, rtol=0, atol=0)
