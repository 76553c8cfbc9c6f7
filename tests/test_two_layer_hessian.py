"""The block Hessian of a one-hidden-layer network (``_hessian`` under ``two_layer``) against the
generic path printed from the Derivation: ``_full``, the R-operator sweeps over the identity,
every statement printed from an equation's matrix form (see tests/test_rop_printing.py).

The block form is kept because it is several times faster (products over the batch per block
of the Hessian, printed from the matrix forms of hess.blocks.*, see
tests/test_printed_block_hessian.py, instead of P R-operator sweeps); these tests hold it to the
printed path on the cases its lowering branches on: softmax or elementwise output, a loss
matched to its output or not, f'' = 0 or not, a layer without bias, the L2 term.
"""

from __future__ import annotations

import inspect

import numpy as np
import pytest

import symgrad
from symgrad.codegen.generate import render

CASES = {
    "softmax-l2": ("tanh", "softmax", "cross_entropy", 3, (True, True), 0.1),
    "sigmoid-mse": ("sigmoid", "sigmoid", "mse", 2, (True, True), 0.0),  # not matched
    "relu-no-bias-1": ("relu", "identity", "mse", 2, (False, True), 0.05),  # f'' = 0
    "softplus-no-bias-2": ("softplus", "sigmoid", "log_loss", 1, (True, False), 0.0),
    "softmax-no-bias": ("tanh", "softmax", "cross_entropy", 3, (False, False), 0.0),
}


def _spec(hidden, out, loss, outputs, bias, l2):
    return symgrad.load_spec(
        {
            "name": "twolayer",
            "inputs": 3,
            "layers": [
                {"units": 4, "activation": hidden, "bias": bias[0]},
                {"units": outputs, "activation": out, "bias": bias[1]},
            ],
            "loss": loss,
            "regularization": {"l2": l2},
        }
    )


def _data(out, loss, outputs, n=11, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, 3))
    if out == "softmax":
        Y = np.eye(outputs)[rng.integers(0, outputs, n)]
    elif loss == "log_loss":
        Y = (rng.random((n, outputs)) > 0.5).astype(float)
    else:
        Y = rng.random((n, outputs))
    return X, Y


@pytest.mark.parametrize("case", list(CASES))
def test_block_hessian_is_the_printed_r_operator_hessian(case):
    hidden, out, loss, outputs, bias, l2 = CASES[case]
    spec = _spec(hidden, out, loss, outputs, bias, l2)
    t = symgrad.load_trainer(spec)
    t.set_flat(np.random.default_rng(1).standard_normal(t.get_flat().size) * 0.7)
    assert "block form" in inspect.getdoc(t._hessian)  # the two-layer path
    X, Y = _data(out, loss, outputs)
    H = t.hessian(X, Y)
    n = len(inspect.signature(t._full).parameters) == 4  # the regulariser's n
    printed = t._full(X, Y, False, *((X.shape[0],) if n else ()))
    np.testing.assert_allclose(H, printed, rtol=1e-11, atol=1e-12)
    np.testing.assert_allclose(H, H.T, rtol=0, atol=1e-14 * np.abs(H).max())


def test_two_layer_is_a_chain_of_two_layers_only():
    specs = {
        "xor": (True, "xor"),
        "seed002": (False, "three layers"),
        "softmax_iris": (False, "no hidden layer: the closed form"),
    }
    for name, (expected, why) in specs.items():
        d = symgrad.derive(symgrad.load_spec(f"examples/{name}.yaml"))
        assert render(d, f"{name}.yaml")[1]["two_layer"] is expected, why


@pytest.mark.parametrize("bias", [(True, True), (True, False), (False, True)])
def test_above_640_parameters_the_order_is_restored_in_place(bias):
    """The blocks are views of H in their own order ([weights, bias] per unit); ``_bias_last``
    gathers small Hessians and moves the rows and bands of columns of larger ones in place
    (here P > 640): both give the printed path's H in the public order."""
    spec = symgrad.load_spec(
        {
            "name": "wide",
            "inputs": 30,
            "layers": [
                {"units": 25, "activation": "tanh", "bias": bias[0]},
                {"units": 2, "activation": "sigmoid", "bias": bias[1]},
            ],
            "loss": "log_loss",
            "regularization": {"l2": 0.1},
        }
    )
    t = symgrad.load_trainer(spec)
    assert t.get_flat().size > 640
    t.set_flat(np.random.default_rng(2).standard_normal(t.get_flat().size) * 0.3)
    rng = np.random.default_rng(3)
    X, Y = rng.standard_normal((9, 30)), (rng.random((9, 2)) > 0.5) * 1.0
    printed = t._full(X, Y, False, X.shape[0])
    np.testing.assert_allclose(t.hessian(X, Y), printed, rtol=1e-11, atol=1e-12)
