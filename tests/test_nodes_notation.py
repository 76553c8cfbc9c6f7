"""Seed 002's notation: ``derive --notation seed002`` traces the network node by node.

The article's network (input node 1, hidden nodes 2, 3 and 4, 5 with ReLU, output node 6 with a
sigmoid, no biases, E = (Y_6 - T_6)^2 / 2) is written out by hand here, as the article writes
it, and differentiated by ``sympy.diff``; the printed chain of node equations, resolved from the
output back, must give the same dE/dW_ij at random points. ``verify --notation seed002`` checks
every node equation against the unrolled network, the trainer and the reference deltas.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import sympy as sp

from symgrad import load_spec
from symgrad.cli import main
from symgrad.derivation import derive
from symgrad.derivation.nodes import BACKWARD, FORWARD, E, NodeNotationError, trace_nodes
from symgrad.printers.render import render

SEED002 = "examples/seed002_nodes.yaml"


def sym(name: str) -> sp.Symbol:
    """The node symbol the article writes ``name`` (``W_46``, ``Y_5``: nodes below 10)."""
    stem, digits = name.split("_")
    return sp.Symbol(f"node_{stem}_{'_'.join(digits)}", real=True)


S = {name: sym(name) for name in "W_12 W_13 W_24 W_25 W_34 W_35 W_46 W_56".split()}


def _article_error():
    """E of the article's network through its six nodes, written by hand."""
    x, T = sym("x_1"), sym("T_6")
    relu = lambda v: sp.Piecewise((v, v > 0), (0, True))  # noqa: E731
    Y1 = x
    Y2, Y3 = relu(S["W_12"] * Y1), relu(S["W_13"] * Y1)
    Y4 = relu(S["W_24"] * Y2 + S["W_34"] * Y3)
    Y5 = relu(S["W_25"] * Y2 + S["W_35"] * Y3)
    Y6 = 1 / (1 + sp.exp(-(S["W_46"] * Y4 + S["W_56"] * Y5)))
    return (Y6 - T) ** 2 / 2, x, T


@pytest.fixture(scope="module")
def traced():
    return trace_nodes(derive(load_spec(SEED002)))


def test_the_article_trace_node_by_node(traced):
    keys = traced.keys
    node_keys = [k for k in keys if k.startswith("node.")]
    assert keys[: len(node_keys)] == node_keys  # first, then the general rule
    eq = traced.equation
    d = lambda f, v: sp.Derivative(f, sym(v), evaluate=False)  # noqa: E731
    # seed 002's traced equations: dE/dY_4 = W_46 dE/dX_6, dE/dW_56 = Y_5 dE/dX_6, and the sum
    # over both downstream nodes for node 2
    assert eq("node.dY.4").rhs == S["W_46"] * d(E, "X_6")
    assert eq("node.dW.5.6").rhs == sym("Y_5") * d(E, "X_6")
    assert eq("node.dY.2").rhs == S["W_24"] * d(E, "X_4") + S["W_25"] * d(E, "X_5")
    assert eq("node.X.4").rhs == S["W_24"] * sym("Y_2") + S["W_34"] * sym("Y_3")
    Y6 = sym("Y_6")
    assert sp.simplify(eq("node.dX.6").rhs - d(E, "Y_6") * Y6 * (1 - Y6)) == 0
    # one equation per edge, no bias equation (the article's network has none)
    assert sum(k.startswith("node.dW.") for k in keys) == 8
    assert not any(k.startswith("node.db.") for k in keys)
    assert {e.section for e in traced.equations if e.key.startswith("node.")} == {
        FORWARD,
        BACKWARD,
    }


def _resolve(traced, target: sp.Symbol) -> sp.Expr:
    """dE/d(target) from the printed node equations only, substituted back to the inputs."""
    by_lhs = {e.lhs: e.rhs for e in traced.equations if e.key.startswith("node.")}
    expr = sp.Derivative(E, target, evaluate=False)
    for _ in range(20):  # replace each dE/dV by its printed right side until none is left
        found = [a for a in sp.sympify(expr).atoms(sp.Derivative) if a in by_lhs]
        if not found:
            break
        expr = sp.sympify(expr).xreplace({a: by_lhs[a] for a in found})
    # node values from the printed forward equations, outputs before inputs
    forward = [e for e in traced.equations if e.section == FORWARD and e.lhs != E]
    for e in reversed(forward):
        expr = expr.xreplace({e.lhs: e.rhs})
    for _ in range(10):
        new = expr.xreplace({e.lhs: e.rhs for e in forward})
        if new == expr:
            break
        expr = new
    return expr


def test_printed_chain_equals_sympy_diff_of_the_article_network(traced):
    error, x, T = _article_error()
    rng = np.random.default_rng(0)
    args = [*S.values(), x, T]
    points = rng.normal(size=(6, len(args)))
    points[:, -1] = rng.random(6)
    points[:, 2:6] = np.abs(points[:, 2:6])  # W_24 .. W_35 > 0: more live paths
    points[:, -2] = np.abs(points[:, -2]) + 0.5  # x > 0
    for name, w in S.items():
        printed = _resolve(traced, w)
        assert not printed.atoms(sp.Derivative), name
        assert printed.free_symbols <= set(args), name
        truth = sp.diff(error, w)
        for point in points:
            at = {a: sp.Float(v, 17) for a, v in zip(args, point)}
            ours, theirs = float(printed.xreplace(at)), float(truth.xreplace(at))
            assert ours == pytest.approx(theirs, rel=1e-12, abs=1e-15), name


def _node_rows(d, seed):
    """The verification rows of the node equations only (the rest is verified elsewhere)."""
    from symgrad.runtime.verification.common import TOLERANCE
    from symgrad.runtime.verification.context import Context
    from symgrad.runtime.verification.nodes import node_rows

    ctx = Context(d.spec, d, seed, 5, "float64", TOLERANCE["float64"])
    return [r for eq in d.equations if eq.key.startswith("node.") for r in node_rows(ctx, eq)]


def test_verify_checks_every_node_equation(traced):
    rows = _node_rows(traced, seed=1)
    assert len({r.key for r in rows}) == sum(k.startswith("node.") for k in traced.keys)
    assert all(r.status == "ok" for r in rows), [r for r in rows if r.status != "ok"]
    by_key = {r.key: r for r in rows}
    assert "trainer gradient" in by_key["node.dW.1.2"].against
    assert "reference deltas" in by_key["node.dY.2"].against
    assert "trainer loss" in by_key["node.E"].against


def test_verify_routes_node_equations_to_their_rows(traced):
    from symgrad.runtime.verification.rows import rows_of

    class Ctx:  # rows_of must not take a node equation for an index-form row
        def memo(self, key, make):
            raise AssertionError("reached node_rows")

    with pytest.raises(AssertionError, match="reached node_rows"):
        rows_of(Ctx(), traced.equation("node.dY.2"))


def test_verify_fails_a_wrong_node_equation():
    d = trace_nodes(derive(load_spec(SEED002)))
    i = d.keys.index("node.dY.2")
    eq = d.equations[i]
    # the slip a reader could make: one downstream node instead of both
    d.equations[i] = dataclasses.replace(eq, rhs=eq.rhs.args[0])
    failed = {r.key for r in _node_rows(d, seed=1) if r.status == "FAIL"}
    assert failed == {"node.dY.2"}


def test_biases_and_a_second_network():
    spec = load_spec(
        {
            "name": "nodes_bias",
            "inputs": 2,
            "layers": [
                {"units": 3, "activation": "tanh"},
                {"units": 2, "activation": "softplus", "bias": False},
                {"units": 1, "activation": "sigmoid"},
            ],
            "loss": "log_loss",
            "regularization": {"l2": 0.3},
        }
    )
    d = trace_nodes(derive(spec))
    assert "node.db.3" in d and "node.db.8" in d and "node.db.6" not in d
    rows = _node_rows(d, seed=2)
    assert rows and all(r.status == "ok" for r in rows), [r for r in rows if r.status != "ok"]


def test_printed_forms(traced):
    # a 46-layer network registers the display of its weight matrices W_1 ... W_46 (W^{(46)});
    # the node symbols keep theirs
    deep = {
        "name": "deep46",
        "inputs": 1,
        "layers": [{"units": 1, "activation": "tanh"}] * 46,
        "loss": "mse",
    }
    derive(load_spec(deep))
    latex = render(traced, "latex")
    assert r"\frac{\partial E}{\partial W_{46}}" in latex
    assert "Node by node (seed 002's notation): backpropagation" in latex
    text = render(traced, "text")
    assert "Node 2 feeds nodes 4, 5" in text
    plain = render(derive(load_spec(SEED002)), "text")
    assert "Node by node" not in plain


def test_cli_notation(capsys):
    assert main(["derive", SEED002, "--notation", "seed002", "-f", "markdown"]) == 0
    assert "W_{46}" in capsys.readouterr().out
    assert main(["derive", "examples/mlp_digits.yaml", "--notation", "seed002"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "at most 32 nodes, this network has" in err
    assert main(["derive", "examples/softmax_iris.yaml", "--notation", "seed002"]) == 2
    assert "element-wise activations only" in capsys.readouterr().err
    assert main(["derive", SEED002, "--notation", "seed003"]) == 2
    assert capsys.readouterr().err == (
        "symgrad: error: --notation must be one of auto, symgrad, seed002, not 'seed003'\n"
    )


def test_refusals_are_one_line_errors():
    with pytest.raises(NodeNotationError, match="at most 32 nodes"):
        trace_nodes(derive(load_spec("examples/mlp_digits.yaml")))
    skip = {
        "name": "nodes_skip",
        "inputs": 1,
        "layers": [
            {"units": 2, "activation": "relu", "name": "h"},
            {"units": 2, "activation": "relu"},
            {"units": 2, "activation": "sigmoid", "from": ["h", 2], "merge": "add"},
        ],
        "loss": "mse",
    }
    with pytest.raises(NodeNotationError, match="merge: add sums nodes"):
        trace_nodes(derive(load_spec(skip)))
