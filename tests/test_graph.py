"""Node graphs (``graph:``, seed 002's style): numbered nodes and edges, compiled into layers.

The compiled trainer is checked against the graph itself: an independent node-by-node NumPy
evaluation of ``X_j = sum_i W_ij Y_i + b_j``, ``Y_j = F_j(X_j)`` over the edges (weights read
from the trainer by the documented layout), its loss and finite differences of it; the
parameters are one per edge and per bias, none for an absent edge. Validation errors name the
graph's key. The node-by-node derivation of a graph with skips and split groups passes
``symgrad verify``.
"""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
from conftest import make, spec_error
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_fd import randomize

from symgrad.cli import main
from symgrad.derivation import derive
from symgrad.derivation.nodes import Nodes, trace_nodes
from symgrad.runtime.bounded import derivation_text
from symgrad.spec import load_spec

SEED002 = "examples/seed002_nodes.yaml"

#: two inputs, a node (5) that reads only node 3 of the tanh pair (so the pair splits), skip
#: edges from 3 and 4 to the outputs, outputs listed out of number order, a node without bias
SKIPS = {
    "name": "skips",
    "graph": {
        "inputs": [1, 2],
        "nodes": {
            3: "tanh",
            4: "tanh",
            5: {"activation": "sigmoid", "bias": False},
            6: "identity",
            7: "identity",
        },
        "outputs": [7, 6],
        "edges": [
            [1, 3],
            [2, 3],
            [1, 4],
            [2, 4],
            [3, 5],
            [4, 6],
            [5, 6],
            [3, 6],
            [4, 7],
            [5, 7],
            [3, 7],
        ],
    },
    "loss": "mse",
    "regularization": {"l2": 0.3},
}

ACTS = {
    "identity": lambda x: x,
    "tanh": np.tanh,
    "sigmoid": lambda x: 1 / (1 + np.exp(-x)),
    "relu": lambda x: np.maximum(x, 0.0),
    "softplus": lambda x: np.logaddexp(0.0, x),
}


def graph_loss(spec_dict: dict, model, X: np.ndarray, Y: np.ndarray) -> float:
    """The mse cost of the graph evaluated node by node from its edges (no layers), with the
    trainer's weights read through the documented layout (W_l[u, c], c the reading column)."""
    spec = load_spec(spec_dict)
    g = Nodes(derive(spec))
    graph = spec.graph
    params = model.params()
    facts = graph.facts()
    out = {}
    for s, x in enumerate(X):
        Yv = {j: x[k] for k, j in enumerate(graph.inputs)}
        todo = sorted(facts)
        while todo:
            for j in todo:
                parents = [i for i, k in graph.edges if k == j]
                if all(i in Yv for i in parents):
                    l = g.layer_of(j)
                    u = g.layers[l].index(j)
                    Xj = sum(params[f"W_{l}"][u, g.column(i, j)] * Yv[i] for i in parents)
                    if facts[j].bias:
                        Xj += params[f"b_{l}"][u]
                    Yv[j] = ACTS[facts[j].activation](Xj)
                    todo.remove(j)
                    break
        out[s] = sum((Yv[k] - Y[s, n]) ** 2 / 2 for n, k in enumerate(graph.outputs))
    data = float(np.mean(list(out.values())))
    l2 = spec.regularization.l2
    weights = sum(float((v**2).sum()) for name, v in params.items() if name.startswith("W_"))
    return data + l2 / (2 * len(X)) * weights


def fd_gradient(f, theta: np.ndarray, h: float = 1e-6) -> np.ndarray:
    """Central differences of ``f`` at ``theta``."""
    out = np.empty_like(theta)
    for i in range(theta.size):
        step = np.zeros_like(theta)
        step[i] = h
        out[i] = (f(theta + step) - f(theta - step)) / (2 * h)
    return out


def test_seed002_is_the_article_network_node_by_node():
    spec = load_spec(SEED002)
    assert spec.graph is not None
    assert spec.node_groups == ((1,), (2, 3), (4, 5), (6,))
    assert spec.sizes == [1, 2, 2, 1] and not spec.is_graph  # a plain chain: the fast path
    assert spec.n_params == 8 == len(spec.graph.edges)  # one weight per edge, no bias
    text = derivation_text(spec, "text")  # auto: a node graph is traced in its own notation
    assert "Node by node" in text and "X₄ = W₂₄⋅Y₂ + W₃₄⋅Y₃" in text
    assert "Node by node" not in derivation_text(spec, "text", notation="symgrad")


def test_the_layer_form_and_the_graph_form_are_one_model():
    layers = {
        "name": "seed002_layers",
        "inputs": 1,
        "layers": [
            {"units": 2, "activation": "relu", "bias": False},
            {"units": 2, "activation": "relu", "bias": False},
            {"units": 1, "activation": "sigmoid", "bias": False},
        ],
        "loss": "mse",
    }
    graph = load_spec(SEED002).canonical() | {"name": "seed002_layers"}
    assert load_spec(graph).model_digest() == load_spec(layers).model_digest()
    assert load_spec(load_spec(SEED002).canonical()) == load_spec(SEED002)  # dump round trip


def test_groups_split_and_skips_carry_one_parameter_per_edge():
    spec = load_spec(SKIPS)
    # 3 and 4 share activation and parents, but 5 reads 3 alone: the pair splits
    assert spec.node_groups == ((1, 2), (3,), (4,), (5,), (7, 6))
    assert spec.sources == [(0,), (0,), (1,), (1, 2, 3)]
    biases = 4  # nodes 3, 4, 6, 7 (5 has none)
    assert spec.n_params == len(SKIPS["graph"]["edges"]) + biases


def test_the_trainer_computes_the_graph():
    model = make(SKIPS, seed=0)
    randomize(model, seed=3)
    rng = np.random.default_rng(1)
    X, Y = rng.standard_normal((6, 2)), rng.standard_normal((6, 2))
    assert abs(model.loss(X, Y) - graph_loss(SKIPS, model, X, Y)) < 1e-12

    def f(theta):
        model.set_flat(theta)
        return graph_loss(SKIPS, model, X, Y)

    theta = model.get_flat().copy()
    fd = fd_gradient(f, theta)
    model.set_flat(theta)
    assert np.max(np.abs(model.gradient_flat(X, Y) - fd)) < 1e-7
    # second order through the compiled graph: the Hessian is the gradient's differences,
    # hvp its product, Gauss-Newton symmetric positive semi-definite (mse: J^T J / n)
    H = model.hessian(X, Y)

    def g(t):
        model.set_flat(t)
        return model.gradient_flat(X, Y)

    fd_h = np.stack([(g(theta + e) - g(theta - e)) / 2e-6 for e in 1e-6 * np.eye(theta.size)])
    model.set_flat(theta)
    assert np.max(np.abs(H - fd_h)) < 1e-6 and np.allclose(H, H.T, atol=1e-12)
    v = np.random.default_rng(2).standard_normal(theta.size)
    assert np.max(np.abs(model.hvp(X, Y, v) - H @ v)) < 1e-10
    G = model.gauss_newton(X, Y)
    assert np.allclose(G, G.T, atol=1e-12) and np.linalg.eigvalsh(G).min() > -1e-10


def test_verify_traces_a_graph_with_skips_node_by_node():
    from symgrad.runtime.verify import verify

    report = verify(load_spec(SKIPS), seed=1)
    assert report.ok, report.table()
    keys = {row.key for row in report.rows}
    # dE/dY_3 sums over its three children 5, 6 and 7; dE/dW_36 is a skip edge's weight
    assert {"node.dY.3", "node.dW.3.6", "node.dW.5.7", "node.db.6"} <= keys
    assert "node.db.5" not in keys
    traced = trace_nodes(derive(load_spec(SKIPS)))
    chain = traced.equation("node.dY.3").rhs
    assert len(chain.args) == 3


#: a chain of 100 single nodes (different parents each): more layers than a spec may have
CHAIN_OF_100 = {
    "name": "long",
    "graph": {
        "inputs": [1],
        "nodes": {j: "tanh" for j in range(2, 102)},
        "outputs": [101],
        "edges": [[j - 1, j] for j in range(2, 102)],
    },
    "loss": "mse",
}


def _with(**changes):
    spec = copy.deepcopy(SKIPS)
    spec["graph"].update(changes)
    return spec


def _edges(*drop, add=()):
    edges = [e for e in SKIPS["graph"]["edges"] if e not in [list(d) for d in drop]]
    return edges + [list(e) for e in add]


@pytest.mark.parametrize(
    "spec, path, words",
    [
        (_with(edges=_edges(add=[(6, 3)])), "graph.edges[11]", "output node: no edge may leave"),
        (_with(edges=_edges(add=[(5, 3)])), "graph.edges", "cycle 3 -> 5 -> 3"),
        (_with(edges=_edges(add=[(3, 3)])), "graph.edges[11]", "to itself"),
        (_with(edges=_edges(add=[(1, 3)])), "graph.edges[11]", "listed twice"),
        (_with(edges=_edges(add=[(9, 3)])), "graph.edges[11]", "node 9 is neither"),
        (_with(edges=_edges(add=[(3, 1)])), "graph.edges[11]", "is an input node"),
        (_with(edges=_edges([2, 3])), "graph.nodes.3", "reads input node [1] but not [2]"),
        (_with(edges=_edges([3, 5])), "graph.nodes.5", "no incoming edge"),
        (_with(edges=_edges([3, 7]), outputs=[7, 6]), "graph.outputs", "read different nodes"),
        (_with(nodes={**SKIPS["graph"]["nodes"], 8: "relu"}), "graph.nodes.8", "no incoming"),
        (_with(outputs=[7]), "graph.nodes.6", "dangling"),
        (_with(outputs=[]), "graph.outputs", "at least one output"),
        (_with(inputs=[]), "graph.inputs", "at least one input"),
        (_with(inputs=[1, 2, 3]), "graph.nodes.3", "is an input node"),
        (_with(nodes={**SKIPS["graph"]["nodes"], 6: "tanh"}), "graph.nodes.6", "share"),
        (_with(nodes={**SKIPS["graph"]["nodes"], 4: "softmax"}), "graph.nodes.4", "output layer"),
        (_with(nodes={**SKIPS["graph"]["nodes"], 4: "wobble"}), "graph.nodes.4", "unknown"),
        (_with(nodes={**SKIPS["graph"]["nodes"], 0: "relu"}), "graph.nodes", "from 1 to 10^9"),
        (_with(edges=[[1, 2, 3]]), "graph.edges[0]", ""),
        (_with(bias="yes"), "graph.bias", ""),
        ({**SKIPS, "inputs": 2}, "inputs", "remove inputs"),
        ({**SKIPS, "graph": [1, 2]}, "graph", "expected a mapping {inputs, nodes"),
        (_with(nodes={**SKIPS["graph"]["nodes"], 4: 5}), "graph.nodes", "node 4: expected an"),
        (
            _with(nodes={**SKIPS["graph"]["nodes"], 4: {"activation": "tanh", "colour": 1}}),
            "graph.nodes",
            "node 4: colour: unknown key",
        ),
        (_with(nodes={**SKIPS["graph"]["nodes"], "four": "tanh"}), "graph.nodes", "'four'"),
        (_with(nodes={**SKIPS["graph"]["nodes"], True: "tanh"}), "graph.nodes", "got True"),
        (CHAIN_OF_100, "graph", "more than 64 layers"),
    ],
)
def test_bad_graphs_are_one_line_errors_naming_the_key(spec, path, words):
    err = spec_error(spec)
    assert err.path == path and words in err.message and "\n" not in str(err)


def test_a_bad_graph_exits_2_with_one_line(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "name: bad\ngraph: {inputs: [1], nodes: {2: relu, 3: relu, 4: sigmoid}, outputs: [4],\n"
        "  edges: [[1, 2], [2, 3], [3, 2], [3, 4]]}\nloss: mse\n"
    )
    assert main(["derive", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "graph.edges: cycle 2 -> 3 -> 2" in err


@st.composite
def graphs(draw):
    """A random DAG by levels: every node reads all inputs or none, the outputs share their
    parents; random skips across levels, random activations and biases."""
    n_in = draw(st.integers(1, 2))
    inputs = list(range(1, n_in + 1))
    levels = [inputs]
    nodes, edges, k = {}, [], n_in + 1
    for _ in range(draw(st.integers(1, 3))):
        level = []
        for _ in range(draw(st.integers(1, 3))):
            earlier = [j for lev in levels[1:] for j in lev]
            parents = inputs if (not earlier or draw(st.booleans())) else []
            extra = draw(st.lists(st.sampled_from(earlier), unique=True)) if earlier else []
            parents = parents + extra
            if not parents:
                parents = [draw(st.sampled_from(earlier))]
            act = draw(st.sampled_from(["tanh", "sigmoid", "softplus", "identity"]))
            nodes[k] = act if draw(st.booleans()) else {"activation": act, "bias": False}
            edges += [[i, k] for i in parents]
            level.append(k)
            k += 1
        levels.append(level)
    hidden = [j for lev in levels[1:] for j in lev]
    read = {i for i, _ in edges}
    unread = [j for j in hidden if j not in read]
    outputs = list(range(k, k + draw(st.integers(1, 2))))
    out_parents = sorted(set(unread) | set(draw(st.lists(st.sampled_from(hidden), unique=True))))
    for o in outputs:
        nodes[o] = "identity"
        edges += [[i, o] for i in out_parents or hidden[-1:]]
    order = draw(st.permutations(range(len(edges))))
    edges = [edges[i] for i in order]
    graph = {"inputs": inputs, "nodes": nodes, "outputs": outputs, "edges": edges}
    return {"name": "random_graph", "graph": graph, "loss": "mse", "regularization": {"l2": 0.1}}


def _compiles_to_the_graph(spec: dict, seed: int) -> None:
    loaded = load_spec(spec)
    facts = loaded.graph.facts()
    assert loaded.n_params == len(spec["graph"]["edges"]) + sum(f.bias for f in facts.values())
    for l, src in enumerate(loaded.sources, 1):
        assert all(s < l for s in src)  # every layer reads earlier ones
    model = make(spec, seed=0)
    randomize(model, seed=seed)
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((4, len(spec["graph"]["inputs"])))
    Y = rng.standard_normal((4, len(spec["graph"]["outputs"])))
    assert abs(model.loss(X, Y) - graph_loss(spec, model, X, Y)) < 1e-12
    theta = model.get_flat().copy()

    def f(t):
        model.set_flat(t)
        return graph_loss(spec, model, X, Y)

    fd = fd_gradient(f, theta)
    model.set_flat(theta)
    assert np.max(np.abs(model.gradient_flat(X, Y) - fd)) < 1e-6


@settings(max_examples=2, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(graphs(), st.integers(0, 100))
def test_random_graphs_compile_to_the_graph(spec, seed):
    _compiles_to_the_graph(spec, seed)


@pytest.mark.slow
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(graphs(), st.integers(0, 100))
def test_random_graphs_compile_to_the_graph_many(spec, seed):
    _compiles_to_the_graph(spec, seed)


@pytest.mark.parametrize("source", ["skips", "examples/residual_mlp.yaml"])
def test_the_worked_example_of_a_graph_follows_its_edges(source):
    """The page's worked numbers for graphs: each hidden layer's backprop sum over the layers
    reading it, times f'(z), is the trainer's delta of that layer (its bias gradient on sample
    1, or the reference's where the layer has no bias)."""
    from symgrad.runtime.worked import param_labels, worked_example

    spec = load_spec(SKIPS if source == "skips" else source)
    w = worked_example(spec)
    assert len(param_labels(spec)) == spec.n_params
    for l, layer in enumerate(spec.layers[:-1], 1):
        z, a = (v.array for v in w.step(f"forward, layer {l}").values[:2])
        back = w.step(f"backprop sum, layer {l}").values[0].array
        delta = w.step(f"backprop, layer {l}").values[0].array
        slope = {"tanh": 1 - a**2, "relu": (z > 0) * 1.0, "sigmoid": a * (1 - a)}
        np.testing.assert_allclose(delta, back * slope[layer.activation], rtol=1e-10, atol=1e-15)


def test_the_page_of_a_node_graph_traces_it_with_numbers():
    from symgrad.runtime.page import derivation_page

    page = derivation_page(load_spec(SKIPS))
    assert "Node by node" in page and "backprop sum, layer 3" in page


def test_a_node_graph_trainer_saves_trains_and_loads(tmp_path):
    model = make(SKIPS, seed=0)
    rng = np.random.default_rng(5)
    X, Y = rng.standard_normal((20, 2)), rng.standard_normal((20, 2))
    before = model.loss(X, Y)
    model.fit(X, Y, epochs=20, batch_size=5)
    assert model.loss(X, Y) < before
    path = tmp_path / "skips.npz"
    model.save(path)
    again = make(SKIPS, seed=1)
    again.load(path)
    np.testing.assert_array_equal(again.get_flat(), model.get_flat())
    np.testing.assert_array_equal(again.predict(X), model.predict(X))


def test_the_drawing_numbers_the_graph_s_nodes_and_curves_its_skips():
    from symgrad.printers.svg import network_svg

    svg = network_svg(load_spec(SKIPS))
    for j in range(1, 8):
        assert f">{j}</text></g>" in svg  # every node drawn under its own number
    # one line or curve per edge, each named by its W_ij; the skips (1 -> 3 is not one) curve
    assert svg.count('class="sg-edge"') == len(SKIPS["graph"]["edges"])
    assert "W₃₇ = w⁽⁴⁾₁₁: node 3 to node 7</title></path>" in svg
    assert "W₁₃ = w⁽¹⁾₁₁: node 1 to node 3</title></line>" in svg


def test_the_trace_is_numbered_apart_so_the_code_s_citations_hold():
    """The node-by-node equations are N1, N2, ...; the general rule keeps the numbers the
    generated module cites, whichever notation ``derive`` prints."""
    spec = load_spec(SEED002)
    plain, traced = derive(spec), trace_nodes(derive(spec))
    assert all(plain.eq(key) == traced.eq(key) for key in plain.keys)
    assert traced.eq("node.Y.1") == "N1" and traced.eq("node.E") == "N12"
    assert r"\tag{N1}" in derivation_text(spec, "latex")
    module = Path("generated/seed002_nodes.py").read_text(encoding="utf-8")
    assert f"# ({plain.eq('forward.1')}), ({plain.eq('act.1.f')}) Z_1 = X*W_1.T" in module


def test_the_notations_are_one_list():
    from symgrad.derivation import nodes
    from symgrad.runtime import bounded

    assert bounded.NOTATIONS == nodes.NOTATIONS


def test_the_stated_graph_limits():
    from symgrad.spec.graph import MAX_GRAPH_EDGES, MAX_GRAPH_NODES

    many = {j: "tanh" for j in range(2, MAX_GRAPH_NODES + 2)}
    err = spec_error(
        {
            "name": "many",
            "graph": {"inputs": [1], "nodes": many, "outputs": [2], "edges": [[1, 2]]},
            "loss": "mse",
        }
    )
    assert err.path == "graph" and f"at most {MAX_GRAPH_NODES} nodes" in err.message
    edges = [[1, 2]] * (MAX_GRAPH_EDGES + 1)
    err = spec_error(
        {
            "name": "dense",
            "graph": {"inputs": [1], "nodes": {2: "tanh"}, "outputs": [2], "edges": edges},
            "loss": "mse",
        }
    )
    assert err.path == "graph.edges" and f"at most {MAX_GRAPH_EDGES} edges" in err.message
