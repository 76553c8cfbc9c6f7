"""Gradients, Hessians and Gauss-Newton matrices against PyTorch autograd (float64).

Run with ``python -m pytest -m oracle tests/test_oracle_torch.py`` (needs ``torch==2.13.0``).
The network is written again in PyTorch from the spec alone; only the flat parameter order
(per layer: W_l row-major, then b_l) is shared with the generated trainer.
"""

from __future__ import annotations

import functools
import json

import numpy as np
import pytest

import symgrad

torch = pytest.importorskip(
    "torch", reason="the PyTorch oracle needs torch (pip install torch==2.13.0)"
)
torch_func = pytest.importorskip("torch.func", reason="needs torch.func (torch >= 2.0)")

pytestmark = pytest.mark.oracle

TOL = 1e-10
DEFAULT_ALPHA = {"leaky_relu": 0.01, "elu": 1.0}

# (hidden layers as (units, activation[, alpha]), output activation, loss, outputs, l2, l1)
CASES = [
    ((), "identity", "mse", 2, 0.0, 0.0),
    ((), "sigmoid", "log_loss", 1, 0.3, 0.0),
    ((), "softmax", "cross_entropy", 3, 0.0, 0.2),
    ((), "tanh", "mse", 2, 0.1, 0.0),
    (((4, "sigmoid"),), "identity", "mse", 1, 0.2, 0.0),
    (((5, "tanh"),), "sigmoid", "log_loss", 2, 0.0, 0.0),
    (((3, "relu"),), "softmax", "cross_entropy", 4, 0.4, 0.0),
    (((4, "softplus"),), "sigmoid", "mse", 1, 0.0, 0.1),
    (((4, "leaky_relu"), (3, "elu")), "identity", "mse", 2, 0.0, 0.0),
    (((3, "elu", 0.7), (4, "softplus")), "softmax", "cross_entropy", 3, 0.2, 0.0),
    (((4, "identity"), (2, "tanh")), "sigmoid", "log_loss", 1, 0.0, 0.0),
    (((5, "relu"), (3, "sigmoid")), "tanh", "mse", 2, 0.3, 0.3),
    (((3, "leaky_relu", 0.2), (3, "relu")), "sigmoid", "log_loss", 3, 0.1, 0.0),
    (((2, "softplus"), (4, "tanh")), "identity", "mse", 3, 0.0, 0.0),
]


def _case_id(case) -> str:
    hidden, out, loss, outputs, l2, l1 = case
    acts = "-".join(h[1] for h in hidden) or "linear"
    return f"{acts}-{out}+{loss}-{outputs}out" + ("-l2" if l2 else "") + ("-l1" if l1 else "")


def _spec(case) -> dict:
    hidden, out, loss, outputs, l2, l1 = case
    layers = [
        {"units": h[0], "activation": h[1], **({"alpha": h[2]} if len(h) > 2 else {})}
        for h in hidden
    ]
    layers.append({"units": outputs, "activation": out})
    return {
        "name": "oracle",
        "inputs": 3,
        "layers": layers,
        "loss": loss,
        "regularization": {"l2": l2, "l1": l1},
    }


@functools.cache
def _trainer_class(spec_json: str):
    return type(symgrad.load_trainer(symgrad.load_spec(json.loads(spec_json))))


def _torch_activation(name: str, z, alpha: float | None):
    F = torch.nn.functional
    if name == "identity":
        return z
    if name == "sigmoid":
        return torch.sigmoid(z)
    if name == "tanh":
        return torch.tanh(z)
    if name == "relu":
        return torch.relu(z)
    if name == "leaky_relu":
        return F.leaky_relu(z, negative_slope=DEFAULT_ALPHA[name] if alpha is None else alpha)
    if name == "softplus":
        return F.softplus(z)
    if name == "elu":
        return F.elu(z, alpha=DEFAULT_ALPHA[name] if alpha is None else alpha)
    raise AssertionError(name)


def torch_cost(case, X, Y):
    """C(theta) = 1/n sum_i sum_units loss + l2/(2n) sum W^2 + l1/n sum |W|, in PyTorch."""
    hidden, out, loss, outputs, l2, l1 = case
    sizes = [X.shape[1]] + [h[0] for h in hidden] + [outputs]
    acts = [(h[1], h[2] if len(h) > 2 else None) for h in hidden]
    n = X.shape[0]

    def split(theta):
        params, offset = [], 0
        for fan_in, units in zip(sizes[:-1], sizes[1:]):
            W = theta[offset : offset + units * fan_in].reshape(units, fan_in)
            offset += units * fan_in
            b = theta[offset : offset + units]
            offset += units
            params.append((W, b))
        return params

    def logits(theta):
        params = split(theta)
        a = X
        for (W, b), (name, alpha) in zip(params[:-1], acts):
            a = _torch_activation(name, a @ W.T + b, alpha)
        W, b = params[-1]
        return a @ W.T + b, params

    def output(z):
        if out == "softmax":
            return torch.softmax(z, dim=1)
        return _torch_activation(out, z, None)

    def cost(theta):
        z, params = logits(theta)
        if loss == "mse":
            per_unit = 0.5 * (output(z) - Y) ** 2
        elif loss == "log_loss":  # -(y log a + (1 - y) log(1 - a)) with a = sigmoid(z)
            per_unit = torch.nn.functional.binary_cross_entropy_with_logits(z, Y, reduction="none")
        else:  # -sum_k y_k log softmax(z)_k
            per_unit = -Y * torch.log_softmax(z, dim=1)
        total = per_unit.sum()
        for W, _ in params:
            total = total + 0.5 * l2 * (W**2).sum() + l1 * W.abs().sum()
        return total / n

    return cost, logits, output


def make_problem(case, seed: int, n: int = 7):
    hidden, out, loss, outputs, l2, l1 = case
    spec = _spec(case)
    model = _trainer_class(json.dumps(spec, sort_keys=True))(seed=seed)
    rng = np.random.default_rng(seed)
    theta = 0.8 * rng.standard_normal(model.theta.size)
    if l1:  # keep |w| away from its kink
        theta = np.sign(theta) * (0.1 + np.abs(theta))
    model.set_flat(theta)
    X = rng.standard_normal((n, 3))
    if loss == "cross_entropy":
        Y = rng.dirichlet(np.ones(outputs), size=n)
    elif out in ("sigmoid",):
        Y = rng.uniform(0.0, 1.0, size=(n, outputs))
    elif out == "tanh":
        Y = rng.uniform(-1.0, 1.0, size=(n, outputs))
    else:
        Y = rng.standard_normal((n, outputs))
    return model, theta, X, Y


def rel_err(actual, expected) -> float:
    actual = np.asarray(actual, dtype=np.float64)
    expected = np.asarray(expected, dtype=np.float64)
    return float(np.linalg.norm(actual - expected) / max(np.linalg.norm(expected), 1e-300))


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("case", CASES, ids=[_case_id(c) for c in CASES])
def test_gradient_and_hessian_match_torch(case, seed):
    model, theta, X, Y = make_problem(case, seed)
    cost, _, _ = torch_cost(case, torch.from_numpy(X), torch.from_numpy(Y))
    t = torch.from_numpy(theta.copy()).requires_grad_(True)
    value = cost(t)
    (g_torch,) = torch.autograd.grad(value, t)
    H_torch = torch.autograd.functional.hessian(cost, torch.from_numpy(theta.copy()))
    assert model.loss(X, Y) == pytest.approx(value.item(), rel=1e-12)
    assert rel_err(model.gradient_flat(X, Y), g_torch.numpy()) < TOL
    H = model.hessian(X, Y)
    assert rel_err(H, H_torch.numpy()) < TOL
    v = np.random.default_rng(seed + 100).standard_normal(theta.size)
    assert rel_err(model.hvp(X, Y, v), H_torch.numpy() @ v) < TOL


# torch.func warns about its own internal use of torch.jit.script (torch 2.13)
@pytest.mark.filterwarnings("ignore:.*torch.jit.script.*:DeprecationWarning")
@pytest.mark.parametrize("case", CASES, ids=[_case_id(c) for c in CASES])
def test_torch_func_hessian_agrees(case):
    """The same check through torch.func (forward-over-reverse), a second autodiff path."""
    model, theta, X, Y = make_problem(case, seed=5)
    cost, _, _ = torch_cost(case, torch.from_numpy(X), torch.from_numpy(Y))
    H_func = torch_func.hessian(cost)(torch.from_numpy(theta.copy()))
    g_func = torch_func.grad(cost)(torch.from_numpy(theta.copy()))
    assert rel_err(model.gradient_flat(X, Y), g_func.numpy()) < TOL
    assert rel_err(model.hessian(X, Y), H_func.numpy()) < TOL


@pytest.mark.parametrize("case", CASES, ids=[_case_id(c) for c in CASES])
def test_gauss_newton_matches_torch(case):
    """G = 1/n sum_i J_i^T S_i J_i + l2/n on the weights, with J = d z_L / d theta from torch.

    S = d^2 loss / dz^2 for the matching pairs (identity+mse, sigmoid+log_loss, softmax+CE),
    else l''(a) f'(z)^2 = f'(z)^2 for mse.
    """
    hidden, out, loss, outputs, l2, l1 = case
    model, theta, X, Y = make_problem(case, seed=9)
    _, logits, output = torch_cost(case, torch.from_numpy(X), torch.from_numpy(Y))
    t = torch.from_numpy(theta.copy())
    Z = logits(t)[0]
    J = torch.autograd.functional.jacobian(lambda th: logits(th)[0], t).numpy()  # (n, K, P)
    A = output(Z).numpy()
    n, K = A.shape
    if out == "softmax":
        S = np.einsum("ik,km->ikm", A, np.eye(K)) - np.einsum("ik,im->ikm", A, A)
    else:
        fprime = torch.autograd.functional.jacobian(
            lambda z: output(z).sum(dim=0), Z
        ).numpy()  # (K, n, K): d a_k / d z for the elementwise activation
        fp = np.einsum("kik->ik", fprime)
        s = fp if loss == "log_loss" else fp**2
        S = np.einsum("ik,km->ikm", s, np.eye(K))
    G = np.einsum("ikp,ikm,imq->pq", J, S, J) / n
    mask = np.zeros(theta.size, dtype=bool)
    offset = 0
    for view_name, view in model.params().items():
        if view_name.startswith("W_"):
            mask[offset : offset + view.size] = True
        offset += view.size
    G[mask, mask] += l2 / n
    G_model = model.gauss_newton(X, Y)
    assert rel_err(G_model, G) < TOL
    assert np.linalg.eigvalsh((G_model + G_model.T) / 2).min() >= -1e-10


@functools.cache
def _numba_trainer_class(spec_json: str):
    return type(symgrad.load_trainer(symgrad.load_spec(json.loads(spec_json)), backend="numba"))


@pytest.mark.parametrize("case", [c for c in CASES if not c[5]], ids=_case_id)
def test_numba_backends_step_is_torchs_gradient_step(case):
    """The compiled epoch (``backend="numba"``) with gd on the whole set takes the step
    theta - eta grad C of torch's autograd: the step applied inside the weight products without
    a penalty, in the loop over the parameters with L2 (L1's proximal step is no gradient step:
    those cases are left out)."""
    pytest.importorskip("numba", reason="numba is not installed (pip install symgrad[numba])")
    spec = {**_spec(case), "optimizer": {"name": "gd", "learning_rate": 0.1}}
    cls = _numba_trainer_class(json.dumps(spec, sort_keys=True))
    module = __import__("sys").modules[cls.__module__]
    assert cls._make_runner is module._compiled_make_runner
    _, theta, X, Y = make_problem(case, seed=3)
    model = cls(seed=3)
    model.set_flat(theta)
    cost, _, _ = torch_cost(case, torch.from_numpy(X), torch.from_numpy(Y))
    t = torch.from_numpy(theta.copy()).requires_grad_(True)
    (g_torch,) = torch.autograd.grad(cost(t), t)
    model.fit(X, Y, epochs=1, shuffle=False, track=False)
    step = theta - model.get_flat()
    assert rel_err(step, 0.1 * g_torch.numpy()) < TOL
