"""The Hessian of a one-hidden-layer network is printed from the matrix forms of
``hess.blocks.11``, ``.12`` and ``.22`` (one block per pair of units over the batch, e.g.
``H11_jq = (1/m) X~^T diag(c_jq) X~ (+ delta_jq L2)``), lowered by
:mod:`symgrad.codegen.blocks`: it agrees with the R-operator's columns (``_full``), a changed
matrix form changes the generated code or is refused, the template types no formula, and the
verifier checks each matrix form per pair of units."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import numpy as np
import pytest
import sympy as sp

from symgrad.codegen import blocks
from symgrad.codegen.blocks import BlockFormError, block_hessian
from symgrad.codegen.generate import render_source
from symgrad.derivation import derive
from symgrad.derivation import notation as nt
from symgrad.derivation.second_order import S_parts
from symgrad.printers.numpy import NumPyPrinter
from symgrad.runtime.loader import import_module_from_source
from symgrad.spec import spec_from_dict

ROOT = Path(__file__).resolve().parents[1]


def _spec(hidden, out, loss, outputs, bias, l2, l1=0.0) -> dict:
    reg = {"l2": l2, **({"l1": l1} if l1 else {})}
    return {
        "name": f"blocks_{hidden}_{out}_{outputs}",
        "inputs": 3,
        "layers": [
            {"units": 4, "activation": hidden, "bias": bias[0]},
            {"units": outputs, "activation": out, "bias": bias[1]},
        ],
        "loss": loss,
        "regularization": reg,
        "init": {"seed": 3},
    }


#: softmax (S = diag(d) + u v^T, u = -v: symmetric blocks), L2; an elementwise output whose
#: loss is not matched to it (s may be < 0), no bias in layer 1, L1 + L2
SOFTMAX = _spec("tanh", "softmax", "cross_entropy", 3, (True, True), 0.1)
ELEMENTWISE = _spec("softplus", "sigmoid", "mse", 2, (False, True), 0.05, 0.01)


@pytest.fixture(scope="module")
def derived():
    return {
        "softmax": derive(spec_from_dict(SOFTMAX)),
        "elementwise": derive(spec_from_dict(ELEMENTWISE)),
    }


def _model(d, tag="", chunk=None):
    source = render_source(d, "net.yaml")
    if chunk is not None:  # several chunks of samples
        source = source.replace("chunk = max(1, 4_000_000 //", f"chunk = max(1, {chunk} //")
    module = import_module_from_source(source, f"{d.spec.name}{tag}_blocks")
    cls = next(v for v in vars(module).values() if isinstance(v, type) and hasattr(v, "fit"))
    model = cls()
    model.set_flat(np.random.default_rng(1).standard_normal(model.get_flat().size) * 0.6)
    return model


def _data(d, m=23):
    rng = np.random.default_rng(7)
    X = rng.standard_normal((m, 3))
    K = d.spec.sizes[-1]
    if d.output.vector:
        return X, np.eye(K)[rng.integers(0, K, m)]
    return X, rng.random((m, K))


def _full(model, X, Y):
    return model._full(X, Y, False, len(X))


@pytest.mark.parametrize("name", ["softmax", "elementwise", "softmax, by unit"])
def test_printed_blocks_are_the_r_operators_hessian(derived, name, monkeypatch):
    if name.endswith("by unit"):  # the products by unit, not B^T B
        monkeypatch.setattr(blocks, "RANK_MAX", 0)
    d = derived[name.split(",")[0]]
    X, Y = _data(d)
    model = _model(d, name.replace(", ", "_").replace(" ", "_"))
    H = model.hessian(X, Y)
    assert "printed from the matrix forms" in model._hessian.__doc__
    np.testing.assert_allclose(H, _full(model, X, Y), rtol=1e-11, atol=1e-13)
    # several chunks of samples (the blocks summed over chunks, mirrored and scaled once)
    chunked = _model(d, name.replace(", ", "_").replace(" ", "_") + "_chunked", chunk=300)
    chunked.set_flat(model.get_flat())
    np.testing.assert_allclose(chunked.hessian(X, Y), H, rtol=1e-13, atol=1e-15)


def test_the_blocks_are_printed_from_the_matrix_forms(derived, monkeypatch):
    bh = block_hessian(derived["softmax"], NumPyPrinter)
    assert bh.kernels[0] == "fp_1 = 1 - a_1 * a_1"  # act.1.df
    assert "su = -a_2" in bh.kernels  # hess.out.u
    h11, h12, h22 = bh.blocks
    # few output units: the Gauss-Newton terms of H11 as B^T B, S_d's with B over (x, k) and
    # the rank-one term with u = -v subtracted; the terms delta_jq (f'') on the diagonal blocks
    assert h11.rank and "G11_0 = fp_1[:, None, :] * W_2[None, :, :]" in h11.kernel_lines
    assert "G11_1 = fp_1 * (sv @ W_2)" in h11.kernel_lines
    assert "H11v -= B.T @ B  # symmetric rank update (syrk)" in h11.kernel_lines
    assert "C11 = fpp_1 * (delta_2 @ W_2)" in h11.kernel_lines
    # every pair (j, k) in one product with the rows x~ a~^T side by side, and the term
    # (..) e~_j^T on column j of the blocks of unit j
    assert h12.loop[0] == "KR = (xt[:, :, None] * at_1[:, None, :]).reshape(c, 20)"
    assert h12.loop[-2:] == [
        "P = (O12_0.reshape(c, -1).T @ xt).reshape(4, 3, 4)",
        "H12[diagonal, :, :, diagonal] += P.transpose(0, 2, 1)",
    ]
    assert bh.assemble[-1] == "H /= m"  # the factor 1/m of every block, once
    # the blocks are views of H in their order; H21 = H12^T, then each layer's biases after
    # its weights, rows and columns, in place
    assert bh.allocate[1] == "H12 = H[0:16, 16:].reshape(4, 4, 3, 5)"
    assert bh.assemble == [
        "H[16:, :16] = H[:16, 16:].T",
        "self._bias_last(H, ((0, 4, 3), (16, 3, 4)))",
        "H /= m",
    ]
    # the products by unit (many output units): one column array C_jq per chunk
    monkeypatch.setattr(blocks, "RANK_MAX", 0)
    h11, h12, h22 = block_hessian(derived["softmax"], NumPyPrinter).blocks
    assert h11.kernel_lines == [
        "C11 = fp_1[:, :, None] * fp_1[:, None, :] * "
        "np.tensordot(sd, W_2[:, :, None] * W_2[:, None, :], axes=1)",
        "C11 += fp_1[:, :, None] * fp_1[:, None, :] * (su @ W_2)[:, :, None] * "
        "(sv @ W_2)[:, None, :]",
        "C11.reshape(c, -1)[:, :: 4 + 1] += fpp_1 * (delta_2 @ W_2)",
    ]
    # u = -v: H_jq = H_qj^T decided on the form, so only q >= j is computed, then mirrored
    assert (h11.symmetric, h12.symmetric, h22.symmetric) == (True, False, True)
    # elementwise: S_kp = delta_kp s_k, the diagonal blocks of H22 only, by syrk where s >= 0
    h11, h12, h22 = block_hessian(derived["elementwise"], NumPyPrinter).blocks
    assert h11.kernel_lines[0].endswith(
        "np.tensordot(s_2, W_2[:, :, None] * W_2[:, None, :], axes=1)"
    )
    assert h12.kernel_lines[0] == "C12 = fp_1[:, :, None] * W_2.T[None, :, :] * s_2[:, None, :]"
    assert h22.kernel_lines == ["C22 = s_2"]
    assert "        B = at_1 * np.sqrt(col)" in h22.loop


def _mutated(d, key, change):
    """``d`` with the matrix form of ``key`` changed by ``change(rhs)``."""
    eq = d.equation(key)
    lhs, rhs = eq.matrix
    new = dataclasses.replace(eq, matrix=(lhs, change(rhs)))
    d.equations[d.equations.index(eq)] = new
    d._by_key[eq.key] = new
    return eq, new


@pytest.fixture
def fresh():
    """A derivation of its own (the mutation tests change it)."""
    return derive(spec_from_dict(SOFTMAX))


def _term(rhs, has):
    return next(t for t in rhs.args if has in t.atoms(sp.MatrixSymbol))


def test_a_changed_matrix_form_changes_the_generated_hessian(fresh):
    d = fresh
    X, Y = _data(d)
    before = block_hessian(d, NumPyPrinter)

    # without the hidden layer's own curvature f'': no such line, and H is no longer exact
    def drop(rhs):
        return sp.MatAdd(*(t for t in rhs.args if t != _term(rhs, nt.FPP(1))))

    _mutated(d, "hess.blocks.11", drop)
    after = block_hessian(d, NumPyPrinter)
    assert "C11 = fpp_1 * (delta_2 @ W_2)" in before.blocks[0].kernel_lines
    assert not any("fpp_1" in line for line in after.blocks[0].kernel_lines)
    model = _model(d, "no_fpp")
    assert not np.allclose(model.hessian(X, Y), _full(model, X, Y), rtol=1e-6)


def test_each_factor_of_a_matrix_form_is_printed(fresh):
    d = fresh
    key = "hess.blocks.12"
    eq = d.equation(key)
    base = block_hessian(d, NumPyPrinter).blocks[1]
    Sd, Su, Sv = S_parts(2)
    changes = {
        "S_d -> S_v": lambda rhs: rhs.xreplace({Sd: Sv}),
        "F' e_j -> F'' e_j": lambda rhs: rhs.xreplace({nt.FP(1): nt.FPP(1)}),
        "Delta_2 -> S_u": lambda rhs: rhs.xreplace({nt.Delta(2): Su}),
        "1/m -> 2/m": lambda rhs: rhs.xreplace({1 / nt.m: 2 / nt.m}),
    }
    seen = set()
    for change in changes.values():
        _mutated(d, key, lambda rhs, change=change: change(eq.matrix[1]))
        got = block_hessian(d, NumPyPrinter).blocks[1]
        text = "\n".join(got.kernel_lines + got.loop + got.finish)
        assert text != "\n".join(base.kernel_lines + base.loop + base.finish)
        seen.add(text)
    assert len(seen) == len(changes)
    assert got.finish[-1] == "H12 *= 2 / m"


def test_a_matrix_form_the_lowering_does_not_know_is_refused(fresh):
    d = fresh
    eq11, eq22 = d.equation("hess.blocks.11"), d.equation("hess.blocks.22")
    reg = next(t for t in eq11.matrix[1].args if nt.lambda_2 in t.free_symbols)
    data = _term(eq22.matrix[1], Su := S_parts(2)[1])
    et = nt.unit(1, "j", tilde=True)
    wrong = {
        # the L2 term dropped (the spec has one), or off the blocks of j = q
        "hess.blocks.11": [
            lambda rhs: sp.MatAdd(*(t for t in rhs.args if t != reg)),
            lambda rhs: rhs.xreplace({reg: reg.xreplace({sp.KroneckerDelta(nt.j, nt.q): 1})}),
        ],
        # the cross term on the column of unit k, a matrix no kernel prints
        "hess.blocks.12": [
            lambda rhs: rhs.xreplace({et: nt.unit(1, "k", tilde=True)}),
            lambda rhs: rhs.xreplace({nt.Delta(2): nt.Y(2)}),
        ],
        # the inputs X~ for A~_1, a column over output units where one over the batch belongs
        "hess.blocks.22": [
            lambda rhs: rhs.xreplace({data: data.xreplace({nt.At(1): nt.Xt()})}),
            lambda rhs: rhs.xreplace({Su * nt.unit(2, "k"): nt.W(2) * nt.unit(1, "k")}),
        ],
    }
    for key, changes in wrong.items():
        eq = d.equation(key)
        for change in changes:
            _mutated(d, key, lambda rhs, change=change, eq=eq: change(eq.matrix[1]))
            with pytest.raises(BlockFormError):
                block_hessian(d, NumPyPrinter)
        _mutated(d, key, lambda rhs, eq=eq: eq.matrix[1])
    assert block_hessian(d, NumPyPrinter) is not None


def test_the_template_types_no_block_formula():
    """The two-layer branch lays out chunks, buffers and index maps: no product, derivative,
    curvature or factor 1/m of its own."""
    tpl = (ROOT / "templates" / "numpy" / "second_order.py.jinja").read_text()
    start = tpl.index("{% elif two_layer %}")
    section = tpl[start : tpl.index('"""The exact Hessian by the R-operator', start)]
    for placed in (
        "blocks.kernels + blocks.augment",
        "b.kernel_lines + b.loop",
        "b.finish",
        "blocks.assemble",
    ):
        assert placed in section
    for line in section.splitlines():
        code = re.sub(r"\{\{.*?\}\}", "", line.strip())
        if not code or code.startswith(("{%", "#", '"""', "@staticmethod")):
            continue
        pattern = r"@|einsum|\.T\b|sqrt|fp_1|fpp|delta_2|back_1|curvature|/= ?m|\bs = |\bJ\b|\bG = "
        assert not re.search(pattern, code), line


def test_the_verifier_checks_the_matrix_forms(fresh):
    """``symgrad verify``'s matrix rows of hess.blocks.* evaluate each block per pair of units
    against the reference's Hessian and the trainer's block; a wrong matrix form fails."""
    from symgrad.runtime.verification.common import TOLERANCE
    from symgrad.runtime.verification.context import Context
    from symgrad.runtime.verification.rows import matrix_row

    d = fresh
    ctx = Context(d.spec, d, 0, 5, "float64", TOLERANCE["float64"], None)
    ctx.find_definitions(d.equations)
    for key, pairs in (("hess.blocks.11", 16), ("hess.blocks.12", 12), ("hess.blocks.22", 9)):
        row = matrix_row(ctx, d.equation(key))
        assert row.status == "ok" and f"blocks of {pairs} of the" in row.note, row
    _mutated(d, "hess.blocks.12", lambda rhs: rhs.xreplace({nt.FP(1): nt.FPP(1)}))
    ctx = Context(d.spec, d, 0, 5, "float64", TOLERANCE["float64"], None)
    ctx.find_definitions(d.equations)
    assert matrix_row(ctx, d.equation("hess.blocks.12")).status == "FAIL"
