"""Skip connections (``name``, ``from``, ``merge: concat | add``), end to end: the spec's
validation, the derivation's sums over children, and the generated trainer (loss, gradient,
hvp, Hessian, Gauss-Newton, save/load) against finite differences and PyTorch autograd.
"""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
from conftest import make, make_data, rel_err, spec_error, weight_mask
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_fd import fd_gradient, fd_hessian, randomize

from symgrad.derivation import derive
from symgrad.spec import load_spec

TOL_FD = 1e-6
TOL = 1e-10

#: a residual MLP (two add-merged blocks) and a DenseNet-style concat net
RESIDUAL = {
    "name": "res",
    "inputs": 3,
    "layers": [
        {"units": 4, "activation": "tanh", "name": "h1"},
        {"units": 4, "activation": "softplus", "name": "h2"},
        {"units": 4, "activation": "sigmoid", "name": "h3", "from": ["h1", "h2"], "merge": "add"},
        {"units": 4, "activation": "elu", "from": ["h3", "h1"], "merge": "add"},
        {"units": 2, "activation": "identity"},
    ],
    "loss": "mse",
    "regularization": {"l2": 0.2},
}
CONCAT = {
    "name": "dense_net",
    "inputs": 3,
    "layers": [
        {"units": 3, "activation": "tanh", "name": "h1"},
        {"units": 2, "activation": "sigmoid", "name": "h2", "from": ["input", "h1"]},
        {"units": 3, "activation": "softplus", "from": [0, 1, 2], "bias": False},
        {"units": 3, "activation": "softmax", "from": ["h1", 3, "input"]},
    ],
    "loss": "cross_entropy",
    "regularization": {"l2": 0.1},
}
NETS = {"residual": RESIDUAL, "concat": CONCAT}


def _problem(spec: dict, seed: int = 0, n: int = 6):
    model = make(spec, seed=1)
    randomize(model, seed=seed + 7)
    last = spec["layers"][-1]
    X, Y = make_data(
        last["activation"],
        spec["loss"],
        n=n,
        inputs=spec["inputs"],
        outputs=last["units"],
        seed=seed,
    )
    return model, X, Y


# ---------------------------------------------------------------------------------------------
# the spec
# ---------------------------------------------------------------------------------------------
BASE = {
    "name": "net",
    "inputs": 2,
    "layers": [
        {"units": 3, "activation": "tanh", "name": "h1"},
        {"units": 3, "activation": "tanh", "name": "h2"},
        {"units": 1, "activation": "sigmoid", "from": ["h2", "h1"]},
    ],
    "loss": "log_loss",
}


def _dangling() -> dict:
    spec = _with(2, **{"from": ["h2"]})
    spec["layers"][1]["from"] = ["input"]
    return spec


def _with(index: int, **changes) -> dict:
    spec = copy.deepcopy(BASE)
    spec["layers"][index].update(changes)
    return spec


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        (
            _with(2, **{"from": ["h9"]}),
            "layers[2].from[0]: unknown layer 'h9'; known: input, h1, h2",
        ),
        (_with(1, **{"from": ["h2"]}), "layers[1].from[0]: layer 2 cannot read itself"),
        (
            _with(1, **{"from": [3]}),
            "layers[1].from[0]: layer 2 cannot read a later layer (3 is "
            "layer 3); a layer reads the input or earlier layers only",
        ),
        (
            _with(2, **{"from": ["input", "h2"], "merge": "add"}),
            "layers[2].merge: add needs sources of equal widths: 'input' has 2, 'h2' has 3",
        ),
        (_with(1, name="h1"), "layers[1].name: duplicate layer name 'h1' (layers[0] has it)"),
        (
            _dangling(),
            "layers[0]: dangling: no later layer reads layer 1 ('h1'); "
            "only the output layer may be unread",
        ),
        (
            _with(0, name="input"),
            "layers[0].name: 'input' names the network's input; choose another",
        ),
        (_with(2, **{"from": []}), "layers[2].from: expected at least one layer to read"),
        (_with(2, **{"from": ["h1", 1, "h2"]}), "layers[2].from[1]: 1 is listed twice"),
        (
            _with(2, **{"from": [-1]}),
            "layers[2].from[0]: expected 0 (the input) or a layer number, got -1",
        ),
        (_with(2, merge="sum"), "layers[2].merge: expected one of 'concat' or 'add', got 'sum'"),
    ],
)
def test_validation_errors_are_one_line_and_name_the_key(spec, expected):
    e = spec_error(spec)
    assert str(e) == expected
    assert "\n" not in str(e)


def test_defaults_and_canonical_form():
    spec = load_spec(BASE)
    assert spec.sources == [(0,), (1,), (2, 1)]
    assert spec.fan_ins == [2, 3, 6]
    assert spec.is_graph
    assert spec.n_params == 2 * 3 + 3 + 3 * 3 + 3 + 6 + 1
    # the new keys are dropped from the canonical dump at their defaults
    chain = load_spec(
        {
            **BASE,
            "layers": [
                dict(BASE["layers"][0], name=None),
                BASE["layers"][1] | {"name": None},
                {"units": 1, "activation": "sigmoid"},
            ],
        }
    )
    assert not chain.is_graph
    for layer in chain.canonical()["layers"]:
        assert not {"name", "from", "merge"} & set(layer)
    assert load_spec(BASE).canonical()["layers"][2]["from"] == ["h2", "h1"]
    # names, indices and an explicit default read the same
    indices = _with(2, **{"from": [2, 1]})
    assert load_spec(indices).sources == spec.sources


# ---------------------------------------------------------------------------------------------
# the derivation
# ---------------------------------------------------------------------------------------------
def test_derivation_sums_over_children():
    d = derive(load_spec(RESIDUAL))
    eq = d.equation("backprop.sum.1")  # h1 feeds h2, h3 (add) and layer 4 (add)
    assert len(eq.matrix[1].args) == 3
    assert len(eq.rhs.args) == 3
    d2 = derive(load_spec(CONCAT))
    rhs = d2.equation("backprop.sum.1").matrix[1]
    assert {str(t) for t in rhs.args} == {"Delta_2*W_2_1", "Delta_3*W_3_1", "Delta_4*W_4_1"}
    assert str(d2.equation("input.4").matrix[1]) == "Matrix([[A_1, A_3, X]])"


def test_chain_derivation_has_no_graph_equations():
    d = derive(load_spec(make_chain()))
    assert not d.graph
    assert not any(k.startswith(("input.", "rop.input.")) for k in d.keys)


def make_chain() -> dict:
    spec = copy.deepcopy(RESIDUAL)
    for layer in spec["layers"]:
        layer.pop("from", None)
        layer.pop("merge", None)
    return spec


# ---------------------------------------------------------------------------------------------
# the trainer against finite differences
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("net", NETS)
def test_gradient_hessian_hvp_against_finite_differences(net):
    model, X, Y = _problem(NETS[net])
    assert rel_err(model.gradient_flat(X, Y), fd_gradient(model, X, Y)) < TOL_FD
    H = model.hessian(X, Y)
    assert rel_err(H, fd_hessian(model, X, Y)) < TOL_FD
    assert np.allclose(H, H.T, atol=1e-12)
    v = np.random.default_rng(3).standard_normal(H.shape[0])
    assert rel_err(model.hvp(X, Y, v), H @ v) < 1e-12


@pytest.mark.parametrize("net", NETS)
def test_save_load_and_flat_order(net, tmp_path):
    model, X, Y = _problem(NETS[net])
    theta = model.get_flat()
    # get_flat: per layer W_l row-major, then b_l (where present), in layer order
    offset = 0
    for name, view in model.params().items():
        assert np.array_equal(theta[offset : offset + view.size], view.ravel()), name
        offset += view.size
    assert offset == theta.size
    path = tmp_path / "m.npz"
    model.save(path)
    other = make(NETS[net], seed=5)
    assert not np.array_equal(other.get_flat(), theta)
    other.load(path)
    assert np.array_equal(other.get_flat(), theta)
    assert other.loss(X, Y) == model.loss(X, Y)


# ---------------------------------------------------------------------------------------------
# random graphs (hypothesis) against finite differences
# ---------------------------------------------------------------------------------------------
PAIRS = [
    ("identity", "mse"),
    ("sigmoid", "log_loss"),
    ("softmax", "cross_entropy"),
    ("tanh", "mse"),
]
HIDDEN = ["tanh", "sigmoid", "softplus", "elu", "identity"]


@st.composite
def graphs(draw, hidden=HIDDEN) -> dict:
    depth = draw(st.integers(2, 4))
    inputs = draw(st.integers(1, 3))
    widths = [inputs]
    layers = []
    read = set()
    for l in range(1, depth + 1):
        last = l == depth
        out, loss = draw(st.sampled_from(PAIRS)) if last else (draw(st.sampled_from(hidden)), None)
        units = draw(st.integers(2, 3)) if last else draw(st.integers(1, 3))
        # the layer below always (no dangling layer), plus a random subset of earlier ones
        extra = draw(st.lists(st.integers(0, l - 2), unique=True, max_size=2)) if l > 1 else []
        sources = [l - 1, *[s for s in extra if s != l - 1]]
        merge = "concat"
        if len(sources) > 1 and draw(st.booleans()):
            same = [s for s in sources if widths[s] == widths[l - 1]]
            if len(same) > 1:
                sources, merge = same, "add"
        layer = {"units": units, "activation": out, "from": sources, "merge": merge}
        if not draw(st.booleans()):
            layer["bias"] = False
        layers.append(layer)
        read.update(sources)
        widths.append(units)
    spec = {"name": "g", "inputs": inputs, "layers": layers, "loss": loss}
    spec["regularization"] = {"l2": draw(st.sampled_from([0.0, 0.3]))}
    return spec


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(spec=graphs(), seed=st.integers(0, 3))
def test_random_graphs_against_finite_differences(spec, seed):
    model, X, Y = _problem(spec, seed=seed, n=5)
    assert rel_err(model.gradient_flat(X, Y), fd_gradient(model, X, Y)) < TOL_FD
    H = model.hessian(X, Y)
    assert rel_err(H, fd_hessian(model, X, Y)) < TOL_FD
    v = np.random.default_rng(seed).standard_normal(H.shape[0])
    assert rel_err(model.hvp(X, Y, v), H @ v) < 1e-11


# ---------------------------------------------------------------------------------------------
# the PyTorch oracle
# ---------------------------------------------------------------------------------------------
def _torch_net(spec: dict, X, Y):
    """The spec written again in PyTorch: C(theta), and z_L(theta)."""
    import torch

    s = load_spec(spec)
    sources, fan_ins = s.sources, s.fan_ins
    F = torch.nn.functional
    act = {
        "identity": lambda z: z,
        "tanh": torch.tanh,
        "sigmoid": torch.sigmoid,
        "softplus": F.softplus,
        "elu": F.elu,
        "relu": torch.relu,
        "leaky_relu": lambda z: F.leaky_relu(z, 0.01),
    }
    n = X.shape[0]

    def forward(theta):
        outs, params, offset = [X], [], 0
        for l, layer in enumerate(s.layers, 1):
            W = theta[offset : offset + layer.units * fan_ins[l - 1]].reshape(layer.units, -1)
            offset += W.numel()
            params.append(W)
            parts = [outs[k] for k in sources[l - 1]]
            u = sum(parts) if layer.merge == "add" else torch.cat(parts, dim=1)
            z = u @ W.T
            if layer.bias:
                z = z + theta[offset : offset + layer.units]
                offset += layer.units
            outs.append(z if l == len(s.layers) else act[layer.activation](z))
        return outs[-1], params

    def cost(theta):
        z, params = forward(theta)
        out = s.layers[-1].activation
        if s.loss == "mse":
            per = 0.5 * (act[out](z) - Y) ** 2
        elif s.loss == "log_loss":
            per = F.binary_cross_entropy_with_logits(z, Y, reduction="none")
        else:
            per = -Y * torch.log_softmax(z, dim=1)
        total = per.sum()
        for W in params:
            total = total + 0.5 * s.regularization.l2 * (W**2).sum()
        return total / n

    return cost, lambda theta: forward(theta)[0]


@pytest.mark.oracle
@pytest.mark.parametrize("net", NETS)
def test_against_torch(net):
    _agrees_with_torch(NETS[net], *_problem(NETS[net], seed=2), seed=0)


def _agrees_with_torch(spec: dict, model, X, Y, seed: int) -> None:
    """Loss, gradient, Hessian, hvp (a random v) and Gauss-Newton against PyTorch autograd."""
    torch = pytest.importorskip("torch")
    theta = model.get_flat()
    cost, logits = _torch_net(spec, torch.from_numpy(X), torch.from_numpy(Y))
    t = torch.from_numpy(theta.copy()).requires_grad_(True)
    value = cost(t)
    (g,) = torch.autograd.grad(value, t)
    H = torch.autograd.functional.hessian(cost, torch.from_numpy(theta.copy())).numpy()
    assert model.loss(X, Y) == pytest.approx(value.item(), rel=1e-12)
    assert rel_err(model.gradient_flat(X, Y), g.numpy()) < TOL
    assert rel_err(model.hessian(X, Y), H) < TOL
    v = np.random.default_rng(seed).standard_normal(theta.size)
    assert rel_err(model.hvp(X, Y, v), H @ v) < TOL
    assert rel_err(model.gauss_newton(X, Y), _torch_gauss_newton(spec, model, X, logits)) < TOL


def _torch_gauss_newton(spec: dict, model, X, logits) -> np.ndarray:
    """G = 1/n sum_x J^T S J + l2/n on the weights, J = dz_L/dtheta from torch; S the
    output curvature (matched pairs), or l''(a) f'(z)^2 for tanh with mse."""
    import torch

    theta = model.get_flat()
    J = torch.autograd.functional.jacobian(logits, torch.from_numpy(theta.copy())).numpy()
    z = logits(torch.from_numpy(theta)).detach().numpy()
    n, K = z.shape
    out, loss = spec["layers"][-1]["activation"], spec["loss"]
    if out == "softmax":  # with cross-entropy: S = diag(p) - p p^T
        p = np.exp(z - z.max(axis=1, keepdims=True))
        p /= p.sum(axis=1, keepdims=True)
        S = np.stack([np.diag(r) - np.outer(r, r) for r in p])
    else:
        if out == "identity":  # with mse
            s = np.ones_like(z)
        elif out == "sigmoid":  # with log_loss
            a = 1 / (1 + np.exp(-z))
            s = a * (1 - a)
        else:  # tanh with mse: l'' = 1, f'(z) = 1 - a^2
            assert (out, loss) == ("tanh", "mse")
            s = (1 - np.tanh(z) ** 2) ** 2
        S = np.stack([np.diag(r) for r in s])
    G = np.einsum("xkp,xkq,xqr->pr", J, S, J) / n
    l2 = spec.get("regularization", {}).get("l2", 0.0)
    G[np.diag_indices_from(G)] += l2 / n * weight_mask(model)
    return G


@pytest.mark.oracle
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(spec=graphs(hidden=HIDDEN + ["relu", "leaky_relu"]), seed=st.integers(0, 3))
def test_random_graphs_against_torch(spec, seed):
    """Loss, gradient, Hessian, hvp and Gauss-Newton of random graphs against PyTorch."""
    _agrees_with_torch(spec, *_problem(spec, seed=seed, n=5), seed=seed)


# ---------------------------------------------------------------------------------------------
# symgrad verify, the printed derivation, plain chains, the other consumers
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("net", NETS)
def test_verify_passes_on_skip_connections(net):
    from symgrad.runtime.verify import verify

    report = verify(load_spec(NETS[net]))
    assert report.ok, report
    keys = {row.key for row in report.rows}
    assert {"backprop.sum.1", "rop.backward.1", "rop.grad.W.4"} <= keys


def test_printed_derivation_shows_the_sum_over_children():
    from symgrad.printers.render import render

    d = derive(load_spec(RESIDUAL))
    text = render(d, "text")
    assert "Layer 1 is read by layers 2, 3, 4" in text
    latex = render(d, "latex")
    # dC/dA_1 = Delta_2 W_2 + Delta_3 W_3 + Delta_4 W_4 (both add-merged children: all of W)
    line = next(
        x for x in latex.splitlines() if x.startswith(r"\frac{\partial C_x}{\partial A^{(1)}}")
    )
    for c in (2, 3, 4):
        assert rf"\Delta^{{({c})}} W^{{({c})}}" in line
    concat = render(derive(load_spec(CONCAT)), "latex")
    assert r"W^{(4)}_{[1]}" in concat  # the block of W_4 that reads layer 1


def test_a_plain_chain_generates_the_same_module():
    """The new keys at their defaults leave a chain's canonical spec, and so its module, as they
    were (tests/test_codegen_golden.py compares the examples' modules with generated/)."""
    import yaml

    from symgrad.codegen.generate import generate_source

    root = Path(__file__).resolve().parents[1]
    raw = yaml.safe_load((root / "examples" / "mlp_digits.yaml").read_text())
    plain = generate_source(load_spec(raw), "examples/mlp_digits.yaml")
    explicit = copy.deepcopy(raw)
    for layer in explicit["layers"]:
        layer["merge"] = "concat"
    assert load_spec(explicit).canonical() == load_spec(raw).canonical()
    assert generate_source(load_spec(explicit), "examples/mlp_digits.yaml") == plain
    assert "u_" not in plain and "skip connections" not in plain.lower()
    # names alone (no from/merge) keep the chain: the same code, the spec header aside
    named = copy.deepcopy(raw)
    for k, layer in enumerate(named["layers"]):
        layer["name"] = f"h{k}"
    spec = load_spec(named)
    assert not spec.is_graph
    body = generate_source(spec, "examples/mlp_digits.yaml")

    def code(source: str) -> list[str]:  # the class, its digests aside (names are identity)
        return [x for x in source.split("class MlpDigits")[1].splitlines() if "SHA256" not in x]

    assert code(body) == code(plain)


def test_the_residual_example_trains():
    from pathlib import Path

    import symgrad

    root = Path(__file__).resolve().parents[1]
    spec = load_spec(root / "examples" / "residual_mlp.yaml")
    assert spec.is_graph
    model = symgrad.load_trainer(spec)
    rng = np.random.default_rng(0)
    X = rng.standard_normal((40, 64))
    Y = np.eye(10)[rng.integers(0, 10, 40)]
    before = model.loss(X, Y)
    model.fit(X, Y, epochs=5)
    assert model.loss(X, Y) < before


def test_numba_and_the_curvature_tools_refuse_skip_connections_in_one_line():
    from symgrad.codegen.numba_backend import Unsupported, _check, numba_source
    from symgrad.runtime.curvature import Network

    spec = load_spec(RESIDUAL)
    with pytest.raises(Unsupported, match="skip connections"):
        _check(spec)  # the support check, with or without numba installed
    source, notice = numba_source(spec)
    assert notice is not None and "\n" not in notice
    if "not installed" not in notice:
        assert "skip connections" in notice
    model = make(RESIDUAL, seed=0)
    with pytest.raises(ValueError) as err:
        Network(model, spec)
    assert "skip connections" in str(err.value) and "\n" not in str(err.value)


def test_float32_trainer_runs_every_method():
    spec = copy.deepcopy(CONCAT)
    model = make(spec, seed=1, dtype="float32")
    X, Y = make_data("softmax", "cross_entropy", n=5, inputs=3, outputs=3)
    g = model.gradient_flat(X, Y)
    assert g.dtype == np.float32
    ref = make(spec, seed=1)
    assert rel_err(g, ref.gradient_flat(X, Y)) < 1e-4
    H = model.hessian(X, Y)
    assert H.dtype == np.float32 and rel_err(H, ref.hessian(X, Y)) < 1e-3
    assert model.gauss_newton(X, Y).dtype == np.float32


def test_draw_shows_each_skip_connection():
    """``symgrad draw``: a skip net is drawn as layer boxes with one arc per skip connection,
    labelled by its merge (the node drawing is for chains, even for a net this small)."""
    import xml.etree.ElementTree as ET

    from symgrad.printers.svg import network_svg

    ns = "{http://www.w3.org/2000/svg}"
    for raw, count in ((RESIDUAL, 2), (CONCAT, 5)):
        spec = load_spec(raw)
        root = ET.fromstring(network_svg(spec))
        skips = [p for p in root.iter(f"{ns}path") if "sg-skip" in p.get("class", "")]
        want = [(s, l) for l, srcs in enumerate(spec.sources, 1) for s in srcs if s != l - 1]
        assert len(skips) == len(want) == count
        assert not any("sg-node" in (c.get("class") or "") for c in root.iter(f"{ns}circle"))
    tips = sorted(p.find(f"{ns}title").text for p in skips)
    assert "skip connection: layer 4 reads layer 1 (merge: concat)" in tips
