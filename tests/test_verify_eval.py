"""The verifier's evaluator and finite differences, on expressions with known values."""

from __future__ import annotations

import numpy as np
import pytest
import sympy as sp
from sympy.matrices.expressions.hadamard import HadamardPower, HadamardProduct

from symgrad.derivation import notation as nt
from symgrad.runtime.evaluate import (
    Bindings,
    IndexEvaluator,
    MatrixEvaluator,
    NotEvaluable,
    free_indices,
    grid,
    index_ranges,
)
from symgrad.runtime.reference import fd

RNG = np.random.default_rng(0)
W2 = RNG.standard_normal((3, 4))
A1 = RNG.standard_normal((5, 4))
Z2 = A1 @ W2.T


class _B(Bindings):
    """Five samples: a_1 (5, 4) per sample, w_2 (3, 4), and their matrix forms."""

    m = 5
    sizes = {nt.n(1): 4, nt.n(2): 3, nt.m: 5, nt.N: 5}
    sample = nt.sample

    def indexed(self, name):
        return {"a_1": (A1, True), "w_2": (W2, False), "z_2": (Z2, True)}.get(name)

    def matrix(self, name):
        return {"A_1": A1, "W_2": W2, "Z_2": Z2}.get(name)

    def scalar(self, name):
        return {"lambda_2": 0.5}.get(name)


def _index(expr):
    b = _B()
    free = free_indices([expr], b.sizes)
    ranges = index_ranges([expr], free, b)
    return free, IndexEvaluator(b, free, grid(free, ranges, 10**6, RNG)).evaluate(expr)


def test_a_sum_over_a_concrete_range_with_one_based_indices():
    j, i = nt.j, nt.i
    free, got = _index(sp.Sum(nt.w(2)[j, i] * nt.a(1)[i], (i, 1, nt.n(1))))
    assert free == [j]
    np.testing.assert_allclose(got, Z2, rtol=1e-15)


def test_a_sum_over_the_samples_and_a_kronecker_delta():
    j, k = nt.j, nt.k
    expr = sp.Sum(nt.a(1)[j], (nt.sample, 1, nt.N)) * sp.KroneckerDelta(j, k)
    free, got = _index(expr)
    assert free == [j, k]
    want = np.where(np.eye(4, dtype=bool), A1.sum(axis=0)[:, None], 0.0).ravel()
    np.testing.assert_allclose(got[0], want, rtol=1e-15)


def test_an_index_outside_its_range_is_not_evaluable():
    b = _B()
    ev = IndexEvaluator(b, [], np.zeros((1, 0), dtype=np.int64))
    with pytest.raises(NotEvaluable, match=r"a_1\[5\]: index 1 outside 1..4"):
        ev.evaluate(nt.a(1)[5])


def test_an_unknown_symbol_is_not_evaluable():
    b = _B()
    ev = IndexEvaluator(b, [], np.zeros((1, 0), dtype=np.int64))
    with pytest.raises(NotEvaluable, match="no value for the symbol zeta"):
        ev.evaluate(sp.Symbol("zeta") + 1)


def test_matrix_forms_match_numpy():
    mev = MatrixEvaluator(_B())
    expr = HadamardProduct(nt.A(1) * nt.W(2).T, nt.Z(2)) + nt.lambda_2 * HadamardPower(nt.Z(2), 2)
    np.testing.assert_allclose(mev.evaluate(expr), (A1 @ W2.T) * Z2 + 0.5 * Z2**2, rtol=1e-14)
    ones = sp.OneMatrix(nt.m, 1)
    np.testing.assert_allclose(mev.evaluate(ones.T * nt.A(1)), A1.sum(axis=0)[None, :])


def test_a_matrix_of_the_wrong_shape_is_not_evaluable():
    class Wrong(_B):
        def matrix(self, name):
            return W2.T if name == "W_2" else super().matrix(name)

    with pytest.raises(NotEvaluable, match=r"W_2 evaluated to shape \(4, 3\), its shape is"):
        MatrixEvaluator(Wrong()).evaluate(nt.W(2))


def test_fd_is_accurate_to_1e_12_on_a_smooth_function():
    x0 = np.array([0.3, -1.7, 4.0])
    d, _ = fd(lambda t: (np.tanh(x0 + t) + np.log1p(np.exp(x0 + t)), ()))
    want = 1 - np.tanh(x0) ** 2 + 1 / (1 + np.exp(-x0))
    np.testing.assert_allclose(d, want, rtol=1e-12)


def test_fd_never_straddles_a_kink_or_leaves_the_domain():
    # |x| at x = 0.001: a stencil of 0.02 would cross 0; log(1 - x) at x = 0.999 would leave
    # its domain. The step shrinks until neither happens.
    d, h = fd(lambda t: (np.abs(0.001 + t), (np.sign(0.001 + t),)))
    assert d == pytest.approx(1.0, abs=1e-12) and h < 0.001 / 4
    with np.errstate(invalid="ignore"):  # the first stencil reaches log of a negative number
        d, h = fd(lambda t: (np.log(1 - (0.999 + t)), ()))
    assert d == pytest.approx(-1 / 0.001, rel=1e-9)
