"""Finite differences carry their own error estimate, and the verifier counts only what lies
beyond it (a wide ReLU network's gradient by differences of a cost near ln 10 is limited by the
cost's rounding: ~1e-13 absolute, 1e-10 of a gradient row of 1e-3)."""

from __future__ import annotations

import numpy as np
import pytest

from symgrad import load_spec
from symgrad.runtime.reference import FD_ROUNDING, fd
from symgrad.runtime.verification.compare import FDReference, error
from symgrad.runtime.verify import verify


def test_the_estimate_bounds_the_rounding_of_a_large_value_with_a_small_slope():
    rng = np.random.default_rng(0)
    base = np.log(10.0) + rng.normal(size=50) * 1e-3  # costs near ln 10, slopes near 1e-3
    slope = rng.normal(size=50) * 1e-3

    def fun(t):
        # the way a cost is summed: many terms of rounding
        v = np.zeros(50)
        for _ in range(10):
            v = v + (base + slope * t) / 10
        return v, ()

    d, h, err = fd(fun, with_error=True)
    assert np.max(np.abs(d - slope)) <= err
    assert err >= FD_ROUNDING * np.finfo(np.float64).eps * np.log(10.0) / h
    assert err < 1e-11  # an estimate, not a blanket: a real error of 1e-8 still shows


def test_without_the_flag_fd_returns_the_derivative_and_its_step():
    d, h = fd(lambda t: (np.array([np.sin(t)]), ()))
    assert abs(d[0] - 1.0) < 1e-12 and 0 < h <= 0.02


def test_error_counts_only_what_lies_beyond_the_estimate():
    ref = np.array([1e-3, -2e-3, 5e-4]).view(FDReference)
    ref.fd_error = 4e-13
    within = ref + np.array([3e-13, -4e-13, 0.0])
    assert error(within, ref)[0] == 0.0
    beyond = ref + np.array([0.0, 0.0, 1e-9])
    assert abs(error(beyond, ref)[0] - (1e-9 - 4e-13) / 2e-3) < 1e-15
    plain = np.asarray(ref)  # no estimate: every difference counts
    assert error(within, plain)[0] > 1e-10
    assert ref.reshape(1, -1).fd_error == 4e-13  # kept through reshapes


def test_an_entry_no_stencil_resolves_is_not_known():
    """d(-log a)/da at a = 1e-20: every stencil inside the domain (a > 0) is far too wide to
    resolve it; the estimate is NaN (not a reference), where it used to be a wrong number."""

    def at(a):
        def fun(t):
            with np.errstate(invalid="ignore", divide="ignore"):  # outside the domain: NaN
                return -np.log(np.array([a]) + t), ()

        return fun

    d, _, err = fd(at(1e-20), with_error=True)
    assert np.isnan(d[0]) and err == 0.0  # nothing known
    d, _, err = fd(at(0.5), with_error=True)
    assert abs(d[0] + 2.0) < 1e-12 and 0 < err < 1e-11
    d_plain, _ = fd(at(1e-20))  # without the flag: the old contract, a number
    assert np.isfinite(d_plain).all()


SATURATED = {
    "name": "saturated",
    "inputs": 10,
    "layers": [{"units": 40, "activation": "relu"}, {"units": 3, "activation": "sigmoid"}],
    "loss": "log_loss",
    "regularization": {"l2": 0.1},
    "init": {"scheme": "normal", "seed": 1},
}


@pytest.mark.parametrize("out", [("sigmoid", "log_loss"), ("softmax", "cross_entropy")])
def test_a_network_its_initialisation_saturates_verifies(out):
    """N(0, 1) weights on 10 inputs and 40 ReLU units put |z_2| in the tens: the printed
    forms (y/a, log(1 - a)) cannot be evaluated to 1e-10 there (33 rows failed with sigmoid,
    delta.out with softmax). The verifier scales each layer to max |z| <= 6 first."""
    spec = dict(SATURATED, layers=[SATURATED["layers"][0], {"units": 3, "activation": out[0]}])
    spec["loss"] = out[1]
    report = verify(load_spec(spec))
    assert report.ok, report.table()
