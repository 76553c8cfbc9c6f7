"""Issue 10: adding an activation, a loss or an optimiser is one place (its definition).

Built-in activations and losses are each one ``define_*`` call in ``symgrad/calculus/core.py``;
an optimiser is one module in ``symgrad/optimizers/`` that calls ``register``. Every call lands
in ``symgrad/spec/registry.py``, which the spec validates against (the spec cannot import the
calculus or the optimisers). The toys below are registered from the test alone, then removed.
"""

from __future__ import annotations

import ast
import copy
import re
from pathlib import Path

import numpy as np
import pytest
import sympy as sp
from conftest import spec_error

import symgrad
from symgrad import calculus, load_spec, optimizers
from symgrad.calculus import core
from symgrad.codegen import generate_source
from symgrad.printers.text import render_text
from symgrad.runtime.fdcheck import check
from symgrad.runtime.loader import import_module_from_source
from symgrad.spec import BUILTIN_ACTIVATIONS, BUILTIN_LOSSES, registry

ROOT = Path(symgrad.__file__).resolve().parent

BASE = {
    "name": "toy",
    "inputs": 2,
    "layers": [{"units": 3, "activation": "tanh"}, {"units": 2, "activation": "identity"}],
    "loss": "mse",
}


def spec(**changes) -> dict:
    d = copy.deepcopy(BASE)
    d.update(changes)
    return d


err = spec_error


@pytest.fixture
def scratch():
    """The registry as it is; whatever the test registers is gone afterwards."""
    before = (BUILTIN_ACTIVATIONS[:], BUILTIN_LOSSES[:], optimizers.names())
    with registry.restored():
        yield
    assert (BUILTIN_ACTIVATIONS[:], BUILTIN_LOSSES[:], optimizers.names()) == before


def trains_like_finite_differences(spec_dict: dict, seed: int = 0):
    """Generate the trainer of ``spec_dict``, compare its gradient and Hessian with central
    differences at a random point, and take a few training steps; returns the model."""
    s = load_spec(spec_dict)
    source = generate_source(s)
    model = getattr(import_module_from_source(source, s.name), s.class_name)(seed=seed)
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((6, s.inputs))
    Y = rng.standard_normal((6, s.outputs))
    model.set_flat(rng.standard_normal(model.get_flat().size) * 0.5)
    results = check(model, X, Y)
    assert all(r.passed(1e-6, 1e-5) for r in results), results
    before = model.loss(X, Y)
    model.fit(X, Y, epochs=5, shuffle=False)
    assert np.isfinite(model.loss(X, Y)) and model.loss(X, Y) < before
    return model, source


# ---------------------------------------------------------------------------------------
# A toy activation: one call


def test_a_new_activation_is_one_call(scratch):
    """``2 tanh(z / 2)``-like toy with a parameter: ``alpha tanh(z)`` (default 1.5)."""
    z, alpha = calculus.z, calculus.alpha
    core.define_activation("toy_scaled_tanh", alpha * sp.tanh(z), alpha_default=1.5)

    assert "toy_scaled_tanh" in BUILTIN_ACTIVATIONS  # the live view sees it
    layers = [
        {"units": 3, "activation": "toy_scaled_tanh", "alpha": 0.5},
        {"units": 3, "activation": "toy_scaled_tanh"},
        {"units": 2, "activation": "identity"},
    ]
    s = load_spec(spec(layers=layers))
    assert s.layers[0].activation == "toy_scaled_tanh"
    # the facts come from the registration: it takes alpha, and the message says so
    e = err(spec(layers=[{"units": 3, "activation": "tanh", "alpha": 0.5}, layers[-1]]))
    assert e.message == "alpha applies to leaky_relu, elu and toy_scaled_tanh only, not 'tanh'"
    # the calculus: f' from SymPy, with the layer's alpha (and the default when absent)
    act = calculus.activation_calculus("toy_scaled_tanh", alpha_value=0.5)
    assert sp.simplify(act.df - sp.Rational(1, 2) * (1 - sp.tanh(z) ** 2)) == 0
    act = calculus.activation_calculus("toy_scaled_tanh")
    assert sp.simplify(act.f - sp.Rational(3, 2) * sp.tanh(z)) == 0
    assert act.has_output_form  # a = alpha tanh(z) was solved for z
    text = render_text(symgrad.derive(s))
    assert "toy_scaled_tanh" in text
    _, source = trains_like_finite_differences(spec(layers=layers))
    assert "toy_scaled_tanh" in source


def test_activation_facts_are_checked(scratch):
    """An output-only activation needing a loss and 3 units: the spec's rules come from the
    registration, with the same messages as softmax's."""
    core.define_activation(
        "toy_head", calculus.z, output_only=True, min_units=3, needs_loss=("mse",)
    )
    head = {"units": 3, "activation": "toy_head"}
    load_spec(spec(layers=[{"units": 2, "activation": "tanh"}, head]))
    e = err(spec(layers=[head, {"units": 1, "activation": "identity"}]))
    assert str(e) == "layers[0].activation: toy_head is allowed on the output layer only"
    e = err(spec(layers=[{"units": 2, "activation": "toy_head"}]))
    assert str(e) == "layers[0].units: toy_head needs at least 3 units"
    e = err(spec(layers=[head], losses={"l1": "abs(a - y)"}, loss="l1"))
    assert str(e) == "loss: a toy_head output layer needs loss mse"


def test_a_name_is_defined_once(scratch):
    with pytest.raises(registry.RegistryError, match="registered already"):
        core.define_activation("tanh", calculus.z)
    with pytest.raises(registry.RegistryError, match="registered already"):
        core.define_loss("mse", calculus.a, title="again")
    with pytest.raises(ValueError, match="alpha_default"):
        core.define_activation("toy_no_default", calculus.alpha * calculus.z)
    with pytest.raises(registry.RegistryError, match="parameter"):
        registry.register_activation("toy_beta", parameter="beta")
    assert "toy_no_default" not in BUILTIN_ACTIVATIONS


# ---------------------------------------------------------------------------------------
# A toy loss: one call


def test_a_new_loss_is_one_call(scratch):
    """log-cosh: l = log(cosh(a - y)), smooth and convex; derived, printed and trained."""
    a, y = calculus.a, calculus.y
    core.define_loss("toy_log_cosh", sp.log(sp.cosh(a - y)), title="log-cosh loss")

    assert "toy_log_cosh" in BUILTIN_LOSSES
    s = load_spec(spec(loss="toy_log_cosh"))
    assert not s.is_classifier
    assert calculus.LOSS_TITLES["toy_log_cosh"] == "log-cosh loss"
    lc = calculus.loss_calculus("toy_log_cosh", calculus.activation_calculus("identity"))
    assert sp.simplify(lc.delta - sp.tanh(a - y)) == 0
    text = render_text(symgrad.derive(s))
    assert "log-cosh loss" in text  # the prose names it by its title
    # a custom loss may not take a built-in name, the toy's included
    e = err(spec(losses={"toy_log_cosh": "a"}))
    assert str(e) == "losses: 'toy_log_cosh' is a built-in name; choose another"
    trains_like_finite_differences(spec(loss="toy_log_cosh"))


def test_loss_facts_are_checked(scratch):
    """A loss that needs a sigmoid output (custom outputs allowed) and makes a classifier."""
    a, y = calculus.a, calculus.y
    core.define_loss(
        "toy_brier",
        (a - y) ** 2,
        title="Brier score",
        outputs=("sigmoid",),
        custom_outputs=True,
        output_error="needs probabilities: a sigmoid output layer, not {activation!r}",
        classifier=True,
    )
    out = {"units": 1, "activation": "sigmoid"}
    assert load_spec(spec(layers=[out], loss="toy_brier")).is_classifier
    e = err(spec(loss="toy_brier"))
    assert str(e) == ("loss: toy_brier needs probabilities: a sigmoid output layer, not 'identity'")
    custom = {"units": 1, "activation": "prob"}
    load_spec(spec(layers=[custom], loss="toy_brier", activations={"prob": "sigmoid(z)"}))


# ---------------------------------------------------------------------------------------
# A toy optimiser: one module's register call (see also tests/test_optimizers.py)


def test_an_optimizer_name_is_accepted_once_registered(scratch):
    e = err(spec(optimizer={"name": "toy_halving"}))
    assert e.path == "optimizer.name"
    assert e.message.startswith("expected one of 'adagrad', 'adam', 'gd', ")
    assert e.message.endswith(" or 'trust_ncg', got 'toy_halving'")
    from symgrad.optimizers.base import Optimizer, Update, eta, g, theta

    optimizers.register(
        Optimizer("toy_halving", "halved steps", (Update(theta, theta - eta * g / 2),))
    )
    assert load_spec(spec(optimizer={"name": "toy_halving"})).optimizer.name == "toy_halving"
    assert "'toy_halving'" in err(spec(optimizer={"name": "bfgs"})).message


# ---------------------------------------------------------------------------------------
# The registry itself


def test_views_are_live_and_compare_as_tuples(scratch):
    assert BUILTIN_ACTIVATIONS == (
        "identity",
        "sigmoid",
        "tanh",
        "relu",
        "leaky_relu",
        "softplus",
        "elu",
        "softmax",
    )
    assert BUILTIN_LOSSES == ("mse", "log_loss", "cross_entropy")
    assert list(BUILTIN_LOSSES) == ["mse", "log_loss", "cross_entropy"]
    core.define_loss("toy_zero", 0 * calculus.a, title="nothing")
    assert BUILTIN_LOSSES[-1] == "toy_zero" and len(BUILTIN_LOSSES) == 4


def test_an_empty_registry_is_an_internal_error_not_a_refusal(scratch):
    """Validating before the definers ran is a clear error, never 'unknown activation'."""
    registry._ACTIVATIONS.clear()
    with pytest.raises(registry.RegistryError, match="no activation is registered"):
        load_spec(BASE)
    registry._OPTIMIZERS.clear()
    with pytest.raises(registry.RegistryError, match="no optimizer is registered"):
        load_spec(spec(optimizer={"name": "gd"}))


def test_the_registry_is_full_after_import_symgrad_spec():
    """``import symgrad.spec`` alone (a fresh interpreter) fills the registry: the package's
    ``__init__`` runs first and imports the calculus and the optimisers."""
    import subprocess
    import sys

    code = (
        "from symgrad.spec import registry, load_spec\n"
        "print(len(registry.activations()), len(registry.losses()), len(registry.optimizers()))\n"
        "load_spec({'name': 'n', 'inputs': 1, 'layers': [{'units': 1, 'activation': 'relu'}],"
        " 'loss': 'mse', 'optimizer': {'name': 'adam'}})\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    counts = [int(n) for n in out.stdout.split()]
    assert counts == [len(BUILTIN_ACTIVATIONS), len(BUILTIN_LOSSES), len(optimizers.names())]
    assert min(counts) > 0


# ---------------------------------------------------------------------------------------
# The single place to edit, per kind


def _string_constants(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef))
        and node.body
        and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
    }
    return {
        node.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str)
        if id(node) not in docstrings
    }


def _calls(path: Path, function: str) -> list[str]:
    """The first (string) argument of every call of ``function`` in ``path``."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return [
        node.args[0].value
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and getattr(node.func, "id", None) == function
        and node.args
        and isinstance(node.args[0], ast.Constant)
    ]


def test_the_spec_names_no_builtin():
    """The spec package holds no built-in activation, loss or optimiser name in its code, so
    it is not a place to edit; the only optimiser it names is its default, ``gd``."""
    names = set(BUILTIN_ACTIVATIONS) | set(BUILTIN_LOSSES) | set(optimizers.names())
    for path in sorted((ROOT / "spec").glob("*.py")):
        found = _string_constants(path) & names
        assert found <= {"gd"}, f"{path.name} names {sorted(found)}"
        if found:
            assert path.name == "model.py"
            assert re.search(r'^    name: str = "gd"$', path.read_text(), re.M)


def test_each_builtin_is_defined_in_one_place():
    """Activation: one ``define_activation`` call in calculus/core.py. Loss: one
    ``define_loss`` call there. Optimiser: one module of symgrad/optimizers/ whose
    ``Optimizer(name=...)`` it registers."""
    core_py = ROOT / "calculus" / "core.py"
    assert sorted(_calls(core_py, "define_activation")) == sorted(BUILTIN_ACTIVATIONS)
    assert sorted(_calls(core_py, "define_loss")) == sorted(BUILTIN_LOSSES)
    for name in BUILTIN_ACTIVATIONS:
        assert isinstance(registry.activation(name).definition, core.ActivationDefinition)
    for name in BUILTIN_LOSSES:
        assert isinstance(registry.loss(name).definition, core.LossDefinition)
    where = {}
    for path in sorted((ROOT / "optimizers").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.keyword) and node.arg == "name":
                if isinstance(node.value, ast.Constant):
                    where.setdefault(node.value.value, []).append(path.stem)
    assert {n: where.get(n) for n in optimizers.names()} == {n: [n] for n in optimizers.names()}


def test_the_readme_names_the_single_place():
    readme = (ROOT.parent / "README.md").read_text(encoding="utf-8")
    how = readme[readme.index("How to add (one place each") :]
    how = how[: how.index("\n\n")]
    assert "`define_activation(" in how and "`define_loss(" in how
    assert "BUILTIN_ACTIVATIONS" not in how and "spec/model.py" not in how
