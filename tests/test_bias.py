"""``bias: false`` on a layer, end to end: the spec, the derivation, the generated trainer (no
bias parameters: gradient, Hessian, hvp, Gauss-Newton, save/load), ``symgrad verify`` and seed
002's node network written exactly (no bias anywhere), checked against sympy.diff of the
article's equations unrolled by hand.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import sympy as sp
from conftest import make, make_data, make_spec, rel_err, weight_mask
from test_fd import fd_gradient, fd_hessian, fd_jacobian_forward, randomize

from symgrad.errors import SpecError
from symgrad.runtime.verify import verify
from symgrad.spec import load_spec

ROOT = Path(__file__).resolve().parents[1]
SEED002_NODES = ROOT / "examples" / "seed002_nodes.yaml"
TOL = 1e-6


def spec_with(hidden, out, loss, bias, *, outputs=2, l2=0.0, inputs=3, name="nobias") -> dict:
    """``make_spec`` with ``bias`` (one bool per layer, the output layer last)."""
    spec = make_spec(hidden, out, loss, inputs=inputs, outputs=outputs, l2=l2, name=name)
    assert len(bias) == len(spec["layers"])
    for layer, has in zip(spec["layers"], bias, strict=True):
        if not has:
            layer["bias"] = False
    return spec


# (hidden, output, loss, bias per layer, outputs, l2): mixed biases, softmax, one hidden layer
# (the trainer's two-layer block Hessian), no hidden layer (its closed form)
CASES = {
    "mixed-3-layers": (((4, "tanh"), (3, "sigmoid")), "identity", "mse", (True, False, True), 2, 0),
    "mixed-3-layers-b": (
        ((3, "softplus"), (4, "elu")),
        "sigmoid",
        "mse",
        (False, True, False),
        1,
        0.2,
    ),
    "softmax-ce": (((4, "tanh"),), "softmax", "cross_entropy", (False, False), 3, 0.1),
    "block-no-hidden-bias": (((4, "softplus"),), "sigmoid", "log_loss", (False, True), 2, 0),
    "block-no-output-bias": (((3, "tanh"),), "identity", "mse", (True, False), 2, 0.3),
    "block-none": (((3, "sigmoid"),), "tanh", "mse", (False, False), 1, 0),
    "closed-one-output": ((), "sigmoid", "log_loss", (False,), 1, 0.2),
    "closed-two-outputs": ((), "identity", "mse", (False,), 2, 0),
    "closed-softmax": ((), "softmax", "cross_entropy", (False,), 3, 0.1),
}


def _model(case: str):
    hidden, out, loss, bias, outputs, l2 = CASES[case]
    spec = spec_with(hidden, out, loss, bias, outputs=outputs, l2=l2)
    model = make(spec, seed=1)
    randomize(model, seed=7)
    X, Y = make_data(out, loss, n=7, inputs=3, outputs=outputs, seed=3)
    return spec, model, X, Y


# ---------------------------------------------------------------------------------------------
# the spec
# ---------------------------------------------------------------------------------------------


def _layers(*extra) -> dict:
    spec = make_spec(((2, "relu"),), "sigmoid", "mse", inputs=1, outputs=1)
    for layer, more in zip(spec["layers"], extra, strict=False):
        layer.update(more)
    return spec


def test_the_spec_takes_bias_false_and_defaults_to_true():
    spec = load_spec(_layers({"bias": False}))
    assert [layer.bias for layer in spec.layers] == [False, True]
    assert load_spec(_layers({"bias": True})).layers[0].bias


def test_the_spec_reads_yaml_true_and_false(tmp_path):
    path = tmp_path / "net.yaml"
    path.write_text(
        "name: net\ninputs: 1\nloss: mse\nlayers:\n"
        "  - {units: 2, activation: relu, bias: false}\n"
        "  - {units: 1, activation: sigmoid, bias: true}\n"
    )
    assert [layer.bias for layer in load_spec(path).layers] == [False, True]


@pytest.mark.parametrize("value", [1, 0, "no", "false", None, 1.0])
def test_a_bias_that_is_not_a_boolean_is_refused_in_one_line(value):
    with pytest.raises(SpecError) as err:
        load_spec(_layers({}, {"bias": value}))
    text = str(err.value)
    assert "layers[1].bias" in text
    assert "\n" not in text


def test_other_fields_still_refuse_booleans():
    with pytest.raises(SpecError, match=r"layers\[0\]\.units"):
        load_spec(_layers({"units": True}))


def test_bias_defines_the_model_and_is_absent_from_the_canonical_form_when_true():
    with_bias = load_spec(_layers())
    explicit = load_spec(_layers({"bias": True}))
    without = load_spec(_layers({"bias": False}))
    assert "bias" not in json.dumps(with_bias.canonical())
    assert with_bias.digest() == explicit.digest()
    assert with_bias.model_digest() == explicit.model_digest()
    assert without.canonical()["layers"][0]["bias"] is False
    assert without.digest() != with_bias.digest()
    assert without.model_digest() != with_bias.model_digest()


@pytest.mark.parametrize("case", sorted(CASES))
def test_parameter_counts_and_the_flat_order(case):
    hidden, out, loss, bias, outputs, _ = CASES[case]
    spec, model, X, Y = _model(case)
    sizes = [3] + [h[0] for h in hidden] + [outputs]
    expected = sum(
        f * u + (u if has else 0) for f, u, has in zip(sizes[:-1], sizes[1:], bias, strict=True)
    )
    assert load_spec(spec).n_params == expected
    assert model.theta.size == expected
    names = [f"W_{l}" + (f" b_{l}" if has else "") for l, has in enumerate(bias, 1)]
    assert list(model.params()) == " ".join(names).split()
    # get_flat / set_flat: W_l (row-major), then b_l only where present
    model.set_flat(np.arange(expected, dtype=float))
    flat = np.concatenate([v.ravel() for v in model.params().values()])
    assert np.array_equal(flat, np.arange(expected))
    assert np.array_equal(model.get_flat(), np.arange(expected))
    grads = [k for k in model.gradients(X, Y) if k.startswith("dC_db")]
    assert grads == [f"dC_db_{l}" for l, has in enumerate(bias, 1) if has]


def test_the_seed002_node_network_has_one_parameter_per_edge():
    spec = load_spec(SEED002_NODES)
    assert spec.sizes == [1, 2, 2, 1]
    assert not any(layer.bias for layer in spec.layers)
    assert spec.n_params == 2 + 4 + 2


# ---------------------------------------------------------------------------------------------
# derivatives by finite differences
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", sorted(CASES))
def test_gradient_hessian_hvp_and_gauss_newton_by_finite_differences(case):
    spec, model, X, Y = _model(case)
    _, out, loss, _, _, l2 = CASES[case]
    assert rel_err(model.gradient_flat(X, Y), fd_gradient(model, X, Y)) < TOL
    H = model.hessian(X, Y)
    assert rel_err(H, fd_hessian(model, X, Y)) < TOL
    v = np.random.default_rng(5).standard_normal(model.theta.size)
    assert rel_err(model.hvp(X, Y, v), H @ v) < 1e-10
    # the R-operator sweep of every column equals the branch hessian() takes
    n = (X.shape[0],) if l2 else ()
    assert rel_err(model._full(X, Y, False, *n), H) < 1e-10
    # Gauss-Newton: J_a^T S_a J_a / m from finite-difference Jacobians of the output a, with
    # S_a = l''(a) for mse, and for the matching pairs (J_z^T S J_z, J_a = S J_z) the
    # pseudo-inverse of S = da/dz: 1 / (a (1 - a)) for sigmoid, (diag a - a a^T)^+ for softmax
    G = model.gauss_newton(X, Y)
    J = fd_jacobian_forward(model, X)
    a = model.forward(X)
    if loss == "mse":
        S = np.stack([np.eye(a.shape[1]) for _ in a])
    elif out == "softmax":
        S = np.stack([np.linalg.pinv(np.diag(r) - np.outer(r, r)) for r in a])
    else:
        S = np.stack([np.diag(1.0 / (r * (1 - r))) for r in a])
    G_ref = np.einsum("xkp,xkq,xqr->pr", J, S, J) / X.shape[0]
    G_ref += l2 / X.shape[0] * np.diag(weight_mask(model).astype(float))
    assert rel_err(G, G_ref) < 1e-6
    assert rel_err(G, G.T) < 1e-12


# ---------------------------------------------------------------------------------------------
# verify, save/load, oracle
# ---------------------------------------------------------------------------------------------


def test_verify_passes_on_the_seed002_node_network():
    report = verify(load_spec(SEED002_NODES))
    assert report.ok, report
    keys = {row.key for row in report.rows}
    assert "grad.W.1" in keys and not any(k.startswith(("grad.b.", "rop.grad.b.")) for k in keys)


@pytest.mark.parametrize("case", ["mixed-3-layers", "block-no-hidden-bias", "closed-softmax"])
def test_verify_passes_on_mixed_biases(case):
    hidden, out, loss, bias, outputs, l2 = CASES[case]
    report = verify(load_spec(spec_with(hidden, out, loss, bias, outputs=outputs, l2=l2)))
    assert report.ok, report


def test_save_and_load_round_trip(tmp_path):
    spec, model, X, Y = _model("mixed-3-layers")
    model.fit(X, Y, epochs=2)  # with an optimiser state to save
    path = tmp_path / "model.npz"
    model.save(path)
    other = make(spec, seed=99)
    assert not np.array_equal(other.get_flat(), model.get_flat())
    other.load(path)
    assert np.array_equal(other.get_flat(), model.get_flat())
    assert np.array_equal(other.forward(X), model.forward(X))
    assert list(other.params()) == ["W_1", "b_1", "W_2", "W_3", "b_3"]
    # a model of the same widths with biases is another model: its file is refused
    biased = make(make_spec(((4, "tanh"), (3, "sigmoid")), "identity", "mse", name="nobias"))
    with pytest.raises(ValueError):
        biased.load(path)


# ---------------------------------------------------------------------------------------------
# seed 002 by hand: E through the six nodes, differentiated by SymPy
# ---------------------------------------------------------------------------------------------


def test_sympy_diff_of_the_six_nodes_equals_the_trainers_gradient():
    """X_j = sum_i W_ij Y_i over the parents i of node j, Y_j = F(X_j) (F1 = ReLU on nodes 2-5,
    F2 = sigmoid on node 6), Y_1 = x, E = (Y_6 - y)^2 / 2: the article's equations."""
    W = {
        (i, j): sp.Symbol(f"W_{i}{j}", real=True)
        for i, j in [(1, 2), (1, 3), (2, 4), (3, 4), (2, 5), (3, 5), (4, 6), (5, 6)]
    }
    x, y = sp.symbols("x y", real=True)

    def relu(t):
        return sp.Piecewise((t, t > 0), (0, True))

    Y1 = x
    Y2, Y3 = relu(W[1, 2] * Y1), relu(W[1, 3] * Y1)
    Y4, Y5 = relu(W[2, 4] * Y2 + W[3, 4] * Y3), relu(W[2, 5] * Y2 + W[3, 5] * Y3)
    Y6 = 1 / (1 + sp.exp(-(W[4, 6] * Y4 + W[5, 6] * Y5)))
    E = (Y6 - y) ** 2 / 2

    spec = load_spec(SEED002_NODES)
    model = make(json.loads(json.dumps(spec.canonical())), seed=0)
    rng = np.random.default_rng(11)
    for _ in range(3):
        theta = rng.uniform(0.3, 1.5, size=8) * rng.choice([-1, 1], size=8)
        theta[:2] = np.abs(theta[:2])  # node 2 and 3 active for x > 0
        model.set_flat(theta)
        p = model.params()
        # the trainer's W_l[j, i] is the article's W from unit i of layer l-1 to unit j of l
        values = {
            W[1, 2]: p["W_1"][0, 0],
            W[1, 3]: p["W_1"][1, 0],
            W[2, 4]: p["W_2"][0, 0],
            W[3, 4]: p["W_2"][0, 1],
            W[2, 5]: p["W_2"][1, 0],
            W[3, 5]: p["W_2"][1, 1],
            W[4, 6]: p["W_3"][0, 0],
            W[5, 6]: p["W_3"][0, 1],
        }
        xv, yv = rng.uniform(0.5, 2.0), rng.uniform(0.1, 0.9)
        values.update({x: xv, y: yv})
        order = [W[1, 2], W[1, 3], W[2, 4], W[3, 4], W[2, 5], W[3, 5], W[4, 6], W[5, 6]]
        expected = np.array([float(sp.diff(E, w).subs(values)) for w in order])
        got = model.gradient_flat(np.array([[xv]]), np.array([[yv]]))
        assert np.abs(got - expected).max() <= 1e-12 * max(1.0, np.abs(expected).max())
        assert abs(float(E.subs(values)) - model.loss(np.array([[xv]]), np.array([[yv]]))) < 1e-14


# ---------------------------------------------------------------------------------------------
# the PyTorch oracle
# ---------------------------------------------------------------------------------------------


@pytest.mark.oracle
@pytest.mark.parametrize("case", ["mixed-3-layers-b", "softmax-ce"])
def test_gradient_hessian_and_hvp_match_torch(case):
    """The network written again with torch.nn.Linear (bias=False where the spec says so);
    only the public order (per layer W_l row-major, then b_l where present) is shared."""
    torch = pytest.importorskip("torch", reason="the oracle needs torch")
    hidden, out, loss, bias, outputs, l2 = CASES[case]
    spec, model, X, Y = _model(case)
    sizes = [3] + [h[0] for h in hidden] + [outputs]
    acts = [h[1] for h in hidden]
    F = torch.nn.functional
    act = {"tanh": torch.tanh, "sigmoid": torch.sigmoid, "softplus": F.softplus, "elu": F.elu}
    Xt, Yt = torch.from_numpy(X), torch.from_numpy(Y)
    n = X.shape[0]
    linears = [
        torch.nn.Linear(f, u, bias=has, dtype=torch.float64)
        for f, u, has in zip(sizes[:-1], sizes[1:], bias, strict=True)
    ]
    shapes = [(p.shape, p.numel()) for lin in linears for p in lin.parameters()]

    def cost(theta):
        params, off = [], 0
        for shape, size in shapes:
            params.append(theta[off : off + size].reshape(shape))
            off += size
        it = iter(params)
        a = Xt
        for k, lin in enumerate(linears):
            W = next(it)
            z = a @ W.T + (next(it) if lin.bias is not None else 0.0)
            a = act[acts[k]](z) if k < len(acts) else z
        if out == "softmax":
            per = -Yt * torch.log_softmax(a, dim=1)
        else:
            per = 0.5 * (torch.sigmoid(a) - Yt) ** 2
        weights = [params[i] for i, (shape, _) in enumerate(shapes) if len(shape) == 2]
        return (per.sum() + 0.5 * l2 * sum((W**2).sum() for W in weights)) / n

    assert sum(size for _, size in shapes) == model.theta.size
    theta = torch.from_numpy(model.get_flat().copy())
    H_torch = torch.autograd.functional.hessian(cost, theta).numpy()
    t = theta.clone().requires_grad_(True)
    value = cost(t)
    (g_torch,) = torch.autograd.grad(value, t)
    assert model.loss(X, Y) == pytest.approx(value.item(), rel=1e-12)
    assert rel_err(model.gradient_flat(X, Y), g_torch.numpy()) < 1e-10
    assert rel_err(model.hessian(X, Y), H_torch) < 1e-10
    v = np.random.default_rng(2).standard_normal(model.theta.size)
    assert rel_err(model.hvp(X, Y, v), H_torch @ v) < 1e-10


# ---------------------------------------------------------------------------------------------
# the other consumers of the parameter layout
# ---------------------------------------------------------------------------------------------


def test_the_curvature_tools_refuse_a_layer_without_bias_in_one_line():
    from symgrad.runtime.curvature import Network

    spec, model, _, _ = _model("mixed-3-layers")
    with pytest.raises(ValueError) as err:
        Network(model, spec)
    assert "layer 2" in str(err.value) and "bias: false" in str(err.value)
    assert "\n" not in str(err.value)


def test_the_numba_backend_compiles_a_network_without_bias():
    pytest.importorskip("numba")
    from symgrad.codegen.numba_backend import numba_source

    source, notice = numba_source(load_spec(SEED002_NODES))
    assert notice is None  # tests/test_backend_numba.py trains it against the NumPy trainer
    assert "N_PARAMS = 8" in source and "def _epoch_py(" in source


def test_the_sklearn_estimator_fits_a_network_without_bias():
    pytest.importorskip("sklearn")
    from symgrad.sklearn import SymgradRegressor

    spec = spec_with(((3, "tanh"),), "identity", "mse", (False, False), outputs=1, inputs=2)
    X = np.random.default_rng(0).standard_normal((20, 2))
    y = X @ np.array([0.5, -1.0])
    est = SymgradRegressor(spec=spec, epochs=5).fit(X, y)
    assert est.predict(X).shape == (20,)


@pytest.mark.parametrize("path", [SEED002_NODES, None])
def test_the_worked_example_shows_the_deltas_of_layers_without_bias(path):
    from symgrad.runtime.page import derivation_page
    from symgrad.runtime.worked import worked_example

    hidden, out, loss, bias, outputs, _ = CASES["mixed-3-layers-b"]
    spec = load_spec(path or spec_with(hidden, out, loss, bias, outputs=outputs))
    ex = worked_example(spec)
    by_key = {step.keys[0]: step for step in ex.steps}
    L = len(spec.layers)
    for l in range(1, L + 1):
        delta = by_key["delta.out" if l == L else f"backprop.{l}"].values[0].array
        grad = by_key[f"grad.W.{l}"]
        a_prev = ex.X[0] if l == 1 else by_key[f"forward.{l - 1}"].values[1].array
        # the weight gradient of sample 1 is delta_l a_{l-1}^T; a bias gradient only with b_l
        assert np.allclose(grad.values[0].array, np.outer(delta, a_prev), rtol=1e-12, atol=1e-14)
        assert len(grad.values) == (3 if spec.layers[l - 1].bias else 2)
    assert "seed002_nodes" in derivation_page(load_spec(SEED002_NODES))
