"""A cluster partition's sums come from one forward pass (``_sums`` of the generated module):
bit for bit what ``loss``, ``gradient_flat`` and ``hessian`` give, times n."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import make_spec

import symgrad
from symgrad.runtime import cluster_worker

CASES = {
    "logistic_regression": "examples/logistic_regression.yaml",
    "softmax_iris": "examples/softmax_iris.yaml",
    "diabetes_linear": "examples/diabetes_linear.yaml",
    "xor": "examples/xor.yaml",
    "custom_swish": "examples/custom_swish.yaml",
    "l1_l2_mlp": make_spec(((3, "tanh"),), "sigmoid", "log_loss", l2=0.1, l1=0.01, outputs=1),
    "l1_l2_softmax": make_spec((), "softmax", "cross_entropy", outputs=3, l2=0.3, l1=0.01),
}


@pytest.mark.parametrize("spec", list(CASES.values()), ids=list(CASES))
def test_the_fused_sums_equal_the_three_calls(spec):
    net = symgrad.load_trainer(spec)
    rng = np.random.default_rng(0)
    net.set_flat(rng.standard_normal(net.get_flat().size) * 0.5)
    n = 57
    X = rng.standard_normal((n, net.W_1.shape[1]))
    K = net.forward(X).shape[1]
    Y = np.eye(K)[rng.integers(0, K, n)] if K > 1 else (rng.random((n, 1)) > 0.5) * 1.0
    loss, grad, H = net._sums(X, Y, hessian=True)
    assert loss == net.loss(X, Y) * n
    assert np.array_equal(grad, net.gradient_flat(X, Y) * n)
    assert np.array_equal(H, net.hessian(X, Y) * n)
    assert net._sums(X, Y)[2] is None


def test_the_worker_uses_the_fused_sums(monkeypatch):
    net = symgrad.load_trainer(CASES["logistic_regression"])
    calls = []
    monkeypatch.setattr(cluster_worker, "worker_model", lambda shipped: net)
    monkeypatch.setattr(type(net), "loss", lambda *a: calls.append("loss"))
    rng = np.random.default_rng(1)
    X, Y = rng.standard_normal((20, 30)), (rng.random((20, 1)) > 0.5) * 1.0
    n, loss, grad, H = cluster_worker.partition_sums(None, net.get_flat(), X, Y, "hessian")
    assert not calls and n == 20 and H.shape == (31, 31)
