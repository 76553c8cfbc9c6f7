"""The training pass's matrix products come from the equations' matrix forms (issue 9).

``symgrad/codegen/products.py`` lowers forward.l, input.l, the data terms of grad.W.l and
grad.b.l and the terms of backprop.sum.s to BLAS calls with ``out=``. These tests change an
equation of the Derivation and check that the generated pass follows it (or that generation
refuses a form it cannot compute), so a product typed into a template would fail them.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import sympy as sp
from conftest import make_spec

import symgrad
from symgrad.codegen.generate import render
from symgrad.codegen.products import SCALE, LoweringError, Products
from symgrad.derivation import notation as nt


def _derived(hidden=((4, "tanh"), (3, "sigmoid"))):
    spec = symgrad.load_spec(make_spec(hidden, "identity", "mse", inputs=3, outputs=2))
    return symgrad.derive(spec)


def _mutate(d, key: str, rhs) -> None:
    """Replace the matrix form's right side of equation ``key``."""
    eq = d.equation(key)
    new = dataclasses.replace(eq, matrix=(eq.matrix[0], rhs))
    d.equations[d.equations.index(eq)] = new
    d._by_key[eq.key] = new


def _trainer(d):
    source, _ = render(d, "net.yaml")
    namespace: dict = {}
    exec(compile(source, "mutated.py", "exec"), namespace)  # noqa: S102 - our own generated code
    trainer = next(v for v in namespace.values() if isinstance(v, type) and hasattr(v, "hvp"))
    return trainer, source


def _data(d, n=7, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, d.spec.sizes[0])), rng.standard_normal((n, d.spec.sizes[-1]))


def test_the_pass_prints_each_product_from_its_equation():
    d = _derived()
    source, _ = render(d, "net.yaml")
    # layer 1: z_1 = x W_1^T, then + b_1 broadcast; layers 2, 3: [a | 1] [W | b]^T in one product
    assert "np.matmul(x, W_1.T, a_1)\n            np.add(a_1, b_1, a_1)" in source
    assert "(a_1_1, Wb_2.T," in source
    # the gradients' data terms (times m scale) and the backprop terms (times scale)
    assert "np.dot(delta_1.T, x, gW_1)" in source
    assert "np.add.reduce(delta_1, 0, None, gb_1)" in source
    assert "np.dot(delta_3.T, a_2_1, gWb_3)" in source
    assert "np.dot(delta_3, W_3, delta_2)" in source
    # each under a comment citing the equation's number and its matrix form
    assert f"# ({d.eq('backprop.sum.2')}) scale*dC_dA_2 = delta_3*W_3" in source


def test_a_dropped_bias_in_forward_1_drops_it_from_the_code():
    """forward.1 without its 1 b_1 term: the pass no longer adds b_1, and the trainer's loss
    moves (a template that typed the product would have kept it)."""
    d = _derived()
    X, Y = _data(d)
    Net, _ = _trainer(d)
    before = Net(seed=1).loss(X, Y)
    lhs, rhs = d.equation("forward.1").matrix
    _mutate(d, "forward.1", nt.A(0) * nt.W(1).T)
    Mutated, source = _trainer(d)
    assert "np.add(a_1, b_1, a_1)" not in source
    net = Mutated(seed=1)
    net.b_1[...] = 1.0
    ref = Net(seed=1)
    ref.b_1[...] = 1.0
    assert net.loss(X, Y) != pytest.approx(ref.loss(X, Y))
    assert Net(seed=1).loss(X, Y) == before


def test_a_forward_without_bias_cannot_fold_into_the_stored_rows():
    d = _derived()
    _mutate(d, "forward.2", nt.A(1) * nt.W(2).T)
    with pytest.raises(LoweringError, match=r"forward\.2"):
        render(d, "net.yaml")


@pytest.mark.parametrize(
    ("key", "rhs"),
    [
        # the data term of the gradient with 2/m instead of 1/m
        ("grad.W.1", sp.MatMul(2 / nt.m, nt.Delta(1).T * nt.A(0))),
        # a backprop term scaled by 2
        ("backprop.sum.1", sp.MatMul(2, nt.Delta(2) * nt.W(2))),
    ],
    ids=["gradient-coefficient", "backprop-coefficient"],
)
def test_a_coefficient_the_pass_does_not_carry_is_refused(key, rhs):
    d = _derived()
    _mutate(d, key, rhs)
    with pytest.raises(LoweringError, match="coefficient 2"):
        Products(d, {"Delta_1": "delta_1", "Delta_2": "delta_2"}).scaled(
            d.equation(key).matrix[1], (nt.m if key.startswith("grad") else 1) * SCALE
        )
    with pytest.raises(LoweringError):
        render(d, "net.yaml")


def test_a_changed_backprop_term_changes_the_code():
    """backprop.sum.2 read through W_3 transposed twice is still W_3 (SymPy simplifies it);
    through another layer's weights it is printed as written, so the code follows the
    equation, not a template."""
    d = _derived()
    prod = Products(d, {"Delta_3": "delta_3", "W_3": "W_3", "W_2": "W_2"})
    assert prod.into("delta_2", prod.backprop(3, 2)) == "np.dot(delta_3, W_3, delta_2)"
    shape = nt.W(3).shape
    other = sp.MatrixSymbol("W_2", *shape)  # the wrong weights, same shape (a mutation)
    _mutate(d, "backprop.sum.2", nt.Delta(3) * other)
    assert prod.into("delta_2", prod.backprop(3, 2)) == "np.dot(delta_3, W_2, delta_2)"


def test_a_skip_connection_merge_is_printed_from_input_l():
    spec = {
        "name": "skipnet",
        "inputs": 3,
        "layers": [
            {"units": 4, "activation": "tanh", "name": "h1"},
            {"units": 4, "activation": "tanh", "name": "h2"},
            {"units": 4, "activation": "tanh", "name": "h3", "from": ["h1", "h2"], "merge": "add"},
            {"units": 2, "activation": "identity", "from": ["h3", "h1"]},
        ],
        "loss": "mse",
    }
    d = symgrad.derive(symgrad.load_spec(spec))
    source, _ = render(d, "net.yaml")
    assert "np.add(a_1, a_2, u_3)" in source
    assert "u_4[:, 0:4] = a_3" in source and "u_4[:, 4:8] = a_1" in source
    # the add merge's two sources share one backward product, copied as the equations say
    assert "np.add(delta_1, delta_2, delta_1)" in source


def _macro(text: str, name: str) -> str:
    start = text.index(f"{{% macro {name}(")
    return text[start : text.index("{% endmacro %}", start)]


def test_the_templates_type_no_training_pass_product():
    """The dense layer's forward and backward macros (NumPy) and the torch module's forward and
    backprop place printed statements: no matrix product, transpose, sum over the batch or
    merge of their own."""
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent / "templates"
    dense = (root / "numpy" / "layers" / "dense.jinja").read_text()
    torch_ = (root / "torch" / "module.py.jinja").read_text()
    parts = [_macro(dense, "forward"), _macro(dense, "backward")]
    parts.append(torch_[torch_.index("def _forward(") : torch_.index("def forward(")])
    parts.append(torch_[torch_.index("def _backprop(") : torch_.index("def _gradient(")])
    for line in "\n".join(parts).splitlines():
        code = re.sub(r"\{\{.*?\}\}|\{#.*?#\}", "", line).strip()
        if not code or code.startswith(("{%", "#", '"""')):
            continue
        products = r"@|\bdot\(|matmul|\.T\b|\.sum\(|reduce|\.cat\(|concatenate"
        assert not re.search(products, code), line
        assert not re.search(r"np\.add\(|np\.copyto\(|u_\S+ =", code), line


def test_a_delta_recurrence_other_than_f_prime_times_the_sum_is_refused():
    """The pass multiplies the backprop sum by f' (backprop.l = FP_l o dC/dA_l); an equation
    that says otherwise (here: without f') cannot be printed by that code."""
    d = _derived()
    _mutate(d, "backprop.1", nt.Delta(2) * nt.W(2))
    with pytest.raises(LoweringError, match=r"backprop\.1"):
        render(d, "net.yaml")
