"""The optimisers that use curvature: L-BFGS (``lbfgs``), trust-region Newton-CG (``trust_ncg``)
and Newton's handling of an indefinite Hessian (issue 16).

References are independent of the generated code where they can be: SciPy's L-BFGS-B and
trust-ncg on the trainer's cost (``scipy_objective``: fun, jac, hessp), the strong Wolfe
conditions recomputed from ``loss``/``gradient_flat`` of a second instance, eigenvalues by
``numpy.linalg.eigvalsh``.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import sympy as sp
from conftest import make

import symgrad
from symgrad.codegen.generate import generate_with_citations
from symgrad.derivation import lbfgs as dl
from symgrad.derivation import newton as dn
from symgrad.derivation import trust as dt
from symgrad.printers.render import render
from symgrad.runtime.curvature import scipy_objective
from symgrad.runtime.verify import verify

ROOT = Path(__file__).resolve().parents[1]

_rng = np.random.default_rng(0)
LOG_X = _rng.standard_normal((120, 4))
LOG_Y = LOG_X @ np.array([1.0, -2.0, 0.5, 0.0]) + 0.7 * _rng.standard_normal(120) > 0
LOG_Y = LOG_Y.astype(float)[:, None]
MLP_X = _rng.standard_normal((40, 3))
MLP_Y = np.eye(3)[(MLP_X[:, 0] + MLP_X[:, 1] ** 2 > 0.8).astype(int) + (MLP_X[:, 2] > 0.5)]


def logistic(optimizer: str, **opt) -> dict:
    return {
        "name": f"logreg_{optimizer}",
        "inputs": 4,
        "layers": [{"units": 1, "activation": "sigmoid"}],
        "loss": "log_loss",
        "regularization": {"l2": 0.5},
        "optimizer": {"name": optimizer, **opt},
        "init": {"seed": 3},
    }


def mlp(optimizer: str, **opt) -> dict:
    return {
        "name": f"mlp_{optimizer}",
        "inputs": 3,
        "layers": [{"units": 4, "activation": "tanh"}, {"units": 3, "activation": "softmax"}],
        "loss": "cross_entropy",
        "regularization": {"l2": 0.5},
        "optimizer": {"name": optimizer, **opt},
        "init": {"seed": 1},
    }


PROBLEMS = {"logistic": (logistic, LOG_X, LOG_Y), "mlp": (mlp, MLP_X, MLP_Y)}
SCIPY = {"lbfgs": "L-BFGS-B", "trust_ncg": "trust-ncg"}


def _scipy(spec: dict, X, Y, method: str):
    ref = make(spec)
    obj = scipy_objective(ref, X, Y)
    if method == "L-BFGS-B":
        res = obj.minimize(method, options={"ftol": 1e-16, "gtol": 1e-11, "maxiter": 5000})
    else:
        res = obj.minimize(method, options={"gtol": 1e-11, "maxiter": 500})
    return res, ref


# ---------------------------------------------------------------------------------------------
# the spec: new fields keep the canonical form of specs that do not set them
# ---------------------------------------------------------------------------------------------

NEW_FIELDS = ("history", "c1", "c2", "radius", "max_radius", "accept")


def test_new_fields_are_dumped_only_away_from_their_defaults():
    spec = symgrad.load_spec(ROOT / "examples" / "logistic_regression.yaml")
    dumped = spec.canonical()["optimizer"]
    assert not set(NEW_FIELDS) & set(dumped)
    assert list(dumped) == [
        "name",
        "learning_rate",
        "batch_size",
        "epochs",
        "momentum",
        "beta1",
        "beta2",
        "eps",
        "rho",
        "damping",
    ]
    changed = symgrad.load_spec(logistic("lbfgs", history=4, radius=2.0))
    assert changed.canonical()["optimizer"]["history"] == 4
    assert changed.canonical()["optimizer"]["radius"] == 2.0
    assert "c1" not in changed.canonical()["optimizer"]
    assert changed.digest() != symgrad.load_spec(logistic("lbfgs")).digest()


@pytest.mark.parametrize(
    ("opt", "message"),
    [
        ({"c1": 0.9, "c2": 0.5}, "optimizer.c2: the Wolfe constants need c1 < c2"),
        ({"radius": 5.0, "max_radius": 2.0}, "optimizer.max_radius: must be at least radius"),
        ({"history": 0}, "optimizer.history"),
        ({"accept": 0.3}, "optimizer.accept"),
    ],
)
def test_bad_settings_are_refused(opt, message):
    with pytest.raises(symgrad.SpecError) as info:
        symgrad.load_spec(logistic("lbfgs", **opt))
    assert str(info.value).startswith(message)
    assert "\n" not in str(info.value)


# ---------------------------------------------------------------------------------------------
# convergence: the optimum SciPy reaches from the same start
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("problem", ["logistic", "mlp"])
@pytest.mark.parametrize("name", ["lbfgs", "trust_ncg"])
def test_converges_to_scipys_optimum(name, problem):
    build, X, Y = PROBLEMS[problem]
    spec = build(name, epochs=200)
    model = make(spec)
    history = model.fit(X, Y, shuffle=False)
    res, ref = _scipy(spec, X, Y, SCIPY[name])
    # SciPy's trust-ncg may stop with "a bad approximation" once rounding limits it: at its optimum
    assert res.success or np.linalg.norm(res.jac) < 1e-8, res.message
    loss = model.loss(X, Y)
    # the same optimum: cost to 1e-10 (relative), parameters to 1e-5, a vanishing gradient
    assert abs(loss - res.fun) <= 1e-10 * abs(res.fun)
    np.testing.assert_allclose(model.get_flat(), res.x, rtol=0, atol=1e-5)
    assert np.linalg.norm(model.gradient_flat(X, Y)) < 1e-7
    assert history["loss"][0] > res.fun + 0.05  # it started away from it


@pytest.mark.parametrize("problem", ["logistic", "mlp"])
def test_lbfgs_steps_meet_the_strong_wolfe_conditions(problem):
    """Each full-batch step s = theta_{k+1} - theta_k = alpha p meets, on the cost and gradient
    of a second instance: C(theta + s) <= C(theta) + c1 g^T s and
    |g(theta + s)^T s| <= c2 |g^T s| (the conditions on alpha p divided by alpha > 0)."""
    build, X, Y = PROBLEMS[problem]
    c1, c2 = 1e-4, 0.5
    spec = build("lbfgs", c2=c2, history=3)
    model, ref = make(spec), make(spec)
    steps = 0
    for _ in range(25):
        theta = model.get_flat()
        model.fit(X, Y, epochs=1, shuffle=False)
        s = model.get_flat() - theta
        if not s.any():
            break
        ref.set_flat(theta)
        c0, g0 = ref.loss(X, Y), ref.gradient_flat(X, Y)
        if np.linalg.norm(g0) < 1e-7:  # converged: rounding decides the tests from here
            break
        ref.set_flat(theta + s)
        c, g = ref.loss(X, Y), ref.gradient_flat(X, Y)
        assert g0 @ s < 0  # a descent direction
        assert c <= c0 + c1 * (g0 @ s) + 1e-15 * abs(c0)
        assert abs(g @ s) <= c2 * abs(g0 @ s) * (1 + 1e-9)
        steps += 1
    assert steps >= 10
    assert all(entry[4] for entry in model.line_search_log[:steps])  # and said so


@pytest.mark.parametrize(("scale", "longer"), [(0.2, True), (3.0, False)])
def test_lbfgs_line_search_leaves_the_unit_step_when_it_must(scale, longer):
    """The first direction is -g: on a linear model whose Hessian is scale^2 I (inputs of scale
    ``scale``) the unit step is too short for small scales (the search extrapolates) and too
    long for large ones (it bisects); either way the step found meets the conditions."""
    rng = np.random.default_rng(4)
    X = scale * np.linalg.qr(rng.standard_normal((40, 2)))[0] * np.sqrt(40)
    Y = X @ np.array([[3.0], [-2.0]])
    spec = {
        "name": "tiny_lbfgs",
        "inputs": 2,
        "layers": [{"units": 1, "activation": "identity", "bias": False}],
        "loss": "mse",
        "optimizer": {"name": "lbfgs", "epochs": 1},
    }
    model = make(spec)
    model.fit(X, Y, shuffle=False)
    step, phi_0, dphi_0, phi_a, wolfe = model.line_search_log[0]
    assert wolfe
    assert (step > 1.0) if longer else (step < 1.0)
    assert phi_a <= phi_0 + 1e-4 * step * dphi_0


@pytest.mark.parametrize("problem", ["logistic", "mlp"])
def test_trust_ncg_never_raises_the_cost(problem):
    """Full batch: the cost after each iteration is at most the cost before (a step is taken
    only when the ratio of actual to predicted reduction exceeds accept > 0)."""
    build, X, Y = PROBLEMS[problem]
    spec = build("trust_ncg", radius=4.0, accept=0.1)
    model = make(spec)
    costs = [model.loss(X, Y)]
    for _ in range(30):
        model.fit(X, Y, epochs=1, shuffle=False)
        costs.append(model.loss(X, Y))
    assert all(b <= a for a, b in zip(costs, costs[1:], strict=False))
    log = model.trust_region_log
    assert len(log) == 30
    for rho, taken, _radius, before, trial in log:
        assert taken == (rho > 0.1)
        if taken:
            assert trial < before
    assert costs[-1] < 0.8 * costs[0]


def test_trust_ncg_radius_follows_the_printed_rule():
    """From a tiny radius the steps hit the boundary and the model is good: the radius doubles up
    to max_radius; a huge step is rejected and shrinks it by 4."""
    X, Y = LOG_X, LOG_Y
    model = make(logistic("trust_ncg", radius=0.01, max_radius=0.04))
    model.fit(X, Y, epochs=4, shuffle=False)
    radii = [entry[2] for entry in model.trust_region_log]
    assert radii == [0.02, 0.04, 0.04, 0.04]
    assert float(model._opt_state["radius"][0]) == 0.04
    rule = dt.radius_rule()
    values = {dt.Delta: 1.0, dt.Delta_max: 8.0}
    assert float(rule.subs({**values, dt.rho_k: 0.1, dt.boundary: True})) == 0.25
    assert float(rule.subs({**values, dt.rho_k: 0.9, dt.boundary: True})) == 2.0
    assert float(rule.subs({**values, dt.rho_k: 0.9, dt.boundary: False})) == 1.0


def test_lbfgs_keeps_its_history_across_mini_batches():
    """Mini-batches: one iteration per batch, each pair from two gradients of the same batch;
    the pairs are kept across batches (not reset), so a later batch's step is not along -g."""
    spec = logistic("lbfgs", batch_size=30, history=20)
    model = make(spec)
    model.fit(LOG_X, LOG_Y, epochs=1, shuffle=False)
    assert model._lbfgs_pairs[3]["t"] == 4  # 4 batches, 4 pairs kept
    theta = model.get_flat()
    ref = make(spec)
    ref.set_flat(theta)
    model.fit(LOG_X, LOG_Y, epochs=1, shuffle=False, batch_size=120)  # one more batch, all rows
    s = model.get_flat() - theta
    g_all = ref.gradient_flat(LOG_X, LOG_Y)
    cosine = -(g_all @ s) / np.linalg.norm(g_all) / np.linalg.norm(s)
    assert 0 < cosine < 0.999  # descends, but not along -g: the history shaped it
    assert model._lbfgs_pairs[3]["t"] == 5


# ---------------------------------------------------------------------------------------------
# state: fit after fit, save and load, checkpoints
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["lbfgs", "trust_ncg"])
def test_fit_continues_the_state(name):
    spec = mlp(name)
    a, b = make(spec), make(spec)
    a.fit(MLP_X, MLP_Y, epochs=5, shuffle=False)
    b.fit(MLP_X, MLP_Y, epochs=3, shuffle=False)
    b.fit(MLP_X, MLP_Y, epochs=2, shuffle=False)
    np.testing.assert_array_equal(a.get_flat(), b.get_flat())


def test_trust_ncg_radius_is_saved_and_resumed(tmp_path):
    spec = mlp("trust_ncg", radius=0.05)
    a, b = make(spec), make(spec)
    a.fit(MLP_X, MLP_Y, epochs=5, shuffle=False)
    b.fit(MLP_X, MLP_Y, epochs=3, shuffle=False)
    b.save(tmp_path / "m.npz")
    c = make(spec)
    c.load(tmp_path / "m.npz")
    assert float(c._opt_state["radius"][0]) == float(b._opt_state["radius"][0]) != 0.05
    c.fit(MLP_X, MLP_Y, epochs=2, shuffle=False)
    np.testing.assert_array_equal(a.get_flat(), c.get_flat())


def test_lbfgs_history_restarts_on_load(tmp_path):
    """The pairs are not saved: a loaded trainer goes on from p = -g, exactly as a fresh one at
    the same parameters; continuing in memory (with the pairs) steps differently."""
    spec = mlp("lbfgs")
    a = make(spec)
    a.fit(MLP_X, MLP_Y, epochs=3, shuffle=False)
    a.save(tmp_path / "m.npz")
    b = make(spec)
    b.load(tmp_path / "m.npz")
    fresh = make(spec)
    fresh.set_flat(a.get_flat())
    b.fit(MLP_X, MLP_Y, epochs=1, shuffle=False)
    fresh.fit(MLP_X, MLP_Y, epochs=1, shuffle=False)
    a.fit(MLP_X, MLP_Y, epochs=1, shuffle=False)
    np.testing.assert_array_equal(b.get_flat(), fresh.get_flat())
    assert not np.allclose(a.get_flat(), b.get_flat())


@pytest.mark.parametrize("name", ["lbfgs", "trust_ncg"])
def test_save_and_load_round_trip(name, tmp_path):
    """The file round-trips the parameters and the epoch count, and training goes on from it."""
    spec = logistic(name)
    a = make(spec)
    a.fit(LOG_X, LOG_Y, epochs=2, shuffle=False)
    a.save(tmp_path / "ck.npz")
    b = make(spec)
    b.load(tmp_path / "ck.npz")
    np.testing.assert_array_equal(a.get_flat(), b.get_flat())
    assert b.epochs_done == 2
    b.fit(LOG_X, LOG_Y, epochs=1, shuffle=False)
    assert b.loss(LOG_X, LOG_Y) <= a.loss(LOG_X, LOG_Y)


# ---------------------------------------------------------------------------------------------
# Newton's method where H is indefinite
# ---------------------------------------------------------------------------------------------

INDEFINITE = {
    "name": "mlp_newton_indefinite",
    "inputs": 2,
    "layers": [{"units": 3, "activation": "tanh"}, {"units": 3, "activation": "softmax"}],
    "loss": "cross_entropy",
    "optimizer": {"name": "newton", "damping": 0.0, "learning_rate": 1.0},
    "init": {"seed": 2},
}


def test_newton_descends_where_the_hessian_is_indefinite():
    rng = np.random.default_rng(1)
    X = rng.standard_normal((12, 2))
    Y = np.eye(3)[rng.integers(0, 3, 12)]
    model = make(INDEFINITE)
    H = model.hessian(X, Y)
    g = model.gradient_flat(X, Y)
    assert np.linalg.eigvalsh(H).min() < -1e-3  # indefinite
    p = model.newton_direction(X, Y, damping=0.0)
    assert p @ g > 0  # theta - eta p descends
    # the damping that was used is the printed rule's: the first 10 max(mu, 1e-8 s) step that
    # makes H + mu I positive definite, and p solves that system
    scale = np.abs(np.diag(H)).max()
    mu = 0.0
    while np.linalg.eigvalsh(H + mu * np.eye(len(g))).min() <= 0:
        mu = 10 * max(mu, 1e-8 * scale)
    np.testing.assert_allclose((H + mu * np.eye(len(g))) @ p, g, rtol=1e-9, atol=1e-12)
    theta = model.get_flat()
    c0 = model.loss(X, Y)
    for eta in (1.0, 0.1, 0.01):
        model.set_flat(theta - eta * p)
        assert model.loss(X, Y) < c0
    assert mu > 0  # the damping was raised


def test_newton_cg_falls_back_to_the_gradient_at_negative_curvature():
    """Above NEWTON_EXACT_MAX parameters (conjugate gradients): when the first direction already
    has non-positive curvature the direction is g (steepest descent), not 0."""
    spec = {
        "name": "wide_newton",
        "inputs": 60,
        "layers": [{"units": 34, "activation": "tanh"}, {"units": 1, "activation": "identity"}],
        "loss": "mse",
        "optimizer": {"name": "newton", "damping": 0.0},
    }
    model = make(spec)
    assert model.get_flat().size > 2000
    rng = np.random.default_rng(2)
    X, Y = rng.standard_normal((10, 60)), rng.standard_normal((10, 1))
    g = model.gradient_flat(X, Y)
    model._rop = lambda X, Y, V, gn: -V  # H = -I: every direction has negative curvature
    p = model.newton_direction(X, Y)
    np.testing.assert_array_equal(p, g)


# ---------------------------------------------------------------------------------------------
# the derivation, the verifier, the generated code
# ---------------------------------------------------------------------------------------------

LBFGS_KEYS = [
    "lbfgs.q0",
    "lbfgs.rho",
    "lbfgs.a",
    "lbfgs.q",
    "lbfgs.gamma",
    "lbfgs.r0",
    "lbfgs.b",
    "lbfgs.r",
    "lbfgs.p",
    "lbfgs.slope",
    "lbfgs.slope.a",
    "lbfgs",
    "lbfgs.s",
    "lbfgs.y",
]
TRUST_KEYS = [
    "trust.model",
    "trust.cg.rho",
    "trust.cg.alpha",
    "trust.cg",
    "trust.cg.r",
    "trust.cg.beta",
    "trust.cg.d",
    "trust.cg.tau",
    "trust.cg.boundary",
    "trust.rho",
    "trust",
    "trust.radius",
]


def test_the_derivation_prints_the_update_equations():
    d = symgrad.derive(symgrad.load_spec(logistic("lbfgs")))
    assert [k for k in d.keys if k.startswith("lbfgs")] == LBFGS_KEYS
    s, y = dl.s_i, dl.y_i
    assert d.equation("lbfgs.rho").rhs == sp.Inverse(sp.MatMul(y.T, s))
    assert d.equation("lbfgs.gamma").rhs == sp.MatMul(
        sp.MatMul(s.T, y), sp.Inverse(sp.MatMul(y.T, y))
    )
    assert d.equation("lbfgs.y").rhs == sp.MatAdd(dl.g_next, -symgrad.derivation.notation.g_v)
    armijo, curvature = d.equation("lbfgs").kernel
    assert armijo == sp.Le(dl.phi_a, dl.phi_0 + dl.c_1 * dl.alpha_k * dl.dphi_0)
    assert curvature == sp.Le(sp.Abs(dl.dphi_a), dl.c_2 * sp.Abs(dl.dphi_0))
    tex = render(d, "latex")
    assert r"\rho_i" in tex and r"\gamma_k" in tex and "strong Wolfe" in tex
    text = render(d, "text")
    assert "φ(αₖ) ≤ φ(0) + αₖ⋅c₁⋅" in text

    d = symgrad.derive(symgrad.load_spec(logistic("trust_ncg")))
    assert [k for k in d.keys if k.startswith("trust")] == TRUST_KEYS
    assert d.equation("trust.radius").rhs == dt.radius_rule()
    assert d.equation("trust").kernel == sp.Gt(dt.rho_k, dt.eta_a)
    tex = render(d, "latex")
    assert r"\Delta" in tex and "Steihaug" in tex

    d = symgrad.derive(symgrad.load_spec(INDEFINITE))
    assert d.equation("newton.shift").rhs == 10 * sp.Max(
        dn.SHIFT, sp.Mul(sp.Float("1e-8"), dn.SHIFT_SCALE, evaluate=False)
    )
    assert "has none (H + mu I is not positive definite" in render(d, "text")


@pytest.mark.parametrize("build", [logistic, mlp], ids=["logistic", "mlp"])
@pytest.mark.parametrize("name", ["lbfgs", "trust_ncg", "newton"])
def test_verify_checks_the_steps(name, build):
    spec = build(name, **({"damping": 0.0} if name == "newton" else {}))
    report = verify(symgrad.load_spec(spec))
    assert report.ok, report.table()
    prefix = {"lbfgs": "lbfgs", "trust_ncg": "trust", "newton": "newton"}[name]
    checked = {r.key for r in report.rows if r.key.startswith(prefix) and r.status == "ok"}
    main = {"lbfgs": "lbfgs", "trust_ncg": "trust", "newton": "newton.shift"}[name]
    assert main in checked
    if name == "lbfgs":
        assert {"lbfgs.q", "lbfgs.r"} <= checked
    if name == "trust_ncg":
        assert {"trust.radius", "trust.cg"} <= checked


def test_verify_catches_a_wrong_two_loop_recursion(monkeypatch):
    """The printed first loop with the wrong sign of its update fails the lbfgs.q row."""
    import dataclasses

    import symgrad.runtime.verify as V

    real = V.derive

    def broken(spec):
        d = real(spec)
        eq = d.equation("lbfgs.q")
        bad = dataclasses.replace(eq, rhs=sp.MatAdd(dl.q_v, dl.a_i * dl.y_i))
        d.equations[d.equations.index(eq)] = bad
        d._by_key["lbfgs.q"] = bad
        return d

    monkeypatch.setattr(V, "derive", broken)
    report = verify(symgrad.load_spec(mlp("lbfgs")))
    failed = {r.key for r in report.rows if r.status == "FAIL"}
    assert "lbfgs.q" in failed


@pytest.mark.parametrize("l1", [0.0, 0.3])
@pytest.mark.parametrize("name", ["lbfgs", "trust_ncg"])
def test_the_generated_module_compiles_and_is_ruff_clean(name, l1, tmp_path):
    spec = mlp(name)
    spec["regularization"] = {"l2": 0.5, "l1": l1}
    source, cited = generate_with_citations(symgrad.load_spec(spec))
    compile(source, f"{name}.py", "exec")
    prefix = "lbfgs" if name == "lbfgs" else "trust"
    assert any(key.startswith(prefix) for _, key in cited)
    path = tmp_path / f"{name}.py"
    path.write_text(source)
    if shutil.which("ruff") is None:
        pytest.skip("ruff is not installed")
    config = str(ROOT / "pyproject.toml")
    check = subprocess.run(
        ["ruff", "check", "--config", config, "--extend-ignore", "E501", str(path)],
        capture_output=True,
        text=True,
    )
    assert check.returncode == 0, check.stdout
    fmt = subprocess.run(
        ["ruff", "format", "--config", config, "--check", "--diff", str(path)],
        capture_output=True,
        text=True,
    )
    assert fmt.returncode == 0, fmt.stdout + fmt.stderr
    # with L1 the step still trains: the cost (with the L1 term) goes down
    model = make(spec)
    before = model.loss(MLP_X, MLP_Y)
    model.fit(MLP_X, MLP_Y, epochs=10, shuffle=False)
    assert model.loss(MLP_X, MLP_Y) < before
