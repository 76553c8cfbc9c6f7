"""Every displayed equation checked by numbers (issue 9): every example, hypothesis-generated
specs (activation x loss x depth x regulariser x optimiser), and the ``symgrad verify`` command.

The default run draws a share of the random specs; ``-m slow`` draws the full set (>= 200).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from symgrad import derive, load_spec, optimizers
from symgrad.cli import main
from symgrad.derivation.laplace import SECTION as LAPLACE
from symgrad.runtime.verify import TOLERANCE, verify

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = sorted(ROOT.glob("examples/*.yaml"))
XOR = str(ROOT / "examples" / "xor.yaml")

ACTIVATIONS = ["identity", "sigmoid", "tanh", "relu", "leaky_relu", "softplus", "elu", "swish"]
LOSSES = ["mse", "log_loss", "cross_entropy", "cauchy"]
CUSTOM_ACTIVATIONS = {"swish": "z / (1 + exp(-z))"}
CUSTOM_LOSSES = {"cauchy": "log(1 + (a - y)**2)"}
REGULARISERS = {"none": {}, "l2": {"l2": 0.3}, "l1": {"l1": 0.2}, "both": {"l2": 0.3, "l1": 0.2}}


#: The two 784-input examples take 5-20 s each to verify: in full with ``-m slow``; by default,
#: a stand-in with the same layers, activations, loss, optimiser, initialisation and dtype on
#: narrower widths (the derivation's equations do not depend on the widths).
BIG = {"fashion_mlp", "mnist_textbook", "fashion_residual"}


def _example(path: Path) -> None:
    report = verify(load_spec(path))
    assert report.ok, report.table()
    assert report.max_error <= TOLERANCE["float64"]
    assert len(report.rows) >= len(derive(load_spec(path)).equations)


@pytest.mark.parametrize("path", [p for p in EXAMPLES if p.stem not in BIG], ids=lambda p: p.stem)
def test_every_example_verifies(path):
    _example(path)


@pytest.mark.slow
@pytest.mark.parametrize("path", [p for p in EXAMPLES if p.stem in BIG], ids=lambda p: p.stem)
def test_every_big_example_verifies(path):
    _example(path)


def stand_in(path: Path) -> dict:
    """The spec of ``path`` on 12 inputs and hidden layers of at most 6 units."""
    spec = yaml.safe_load(path.read_text())
    spec["name"] += "_small"
    spec["inputs"] = 12
    *hidden, out = spec["layers"]
    spec["layers"] = [{**layer, "units": min(layer["units"], 6)} for layer in hidden] + [out]
    return spec


@pytest.mark.parametrize("path", [p for p in EXAMPLES if p.stem in BIG], ids=lambda p: p.stem)
def test_a_stand_in_of_every_big_example_verifies(path):
    spec = load_spec(stand_in(path))
    full = derive(load_spec(path))
    # the same equations, on narrower layers (but the dense Laplace section, printed up to
    # laplace.MAX_PARAMS parameters)
    small = [e.key for e in derive(spec).equations if e.section != LAPLACE]
    assert small == full.keys
    report = verify(spec)
    assert report.ok, report.table()
    assert report.max_error <= TOLERANCE["float64"]


@st.composite
def specs(draw) -> dict:
    """A small spec: every activation, loss, depth 0-2, regulariser and optimiser can occur."""
    loss = draw(st.sampled_from(LOSSES))
    hidden = [
        {"units": draw(st.integers(1, 3)), "activation": draw(st.sampled_from(ACTIVATIONS))}
        for _ in range(draw(st.integers(0, 2)))
    ]
    if loss == "log_loss":
        out = {"units": draw(st.integers(1, 2)), "activation": "sigmoid"}
    elif loss == "cross_entropy":
        out = {"units": draw(st.integers(2, 3)), "activation": "softmax"}
    else:
        out = {"units": draw(st.integers(1, 2)), "activation": draw(st.sampled_from(ACTIVATIONS))}
    layers = [*hidden, out]
    opt = draw(st.sampled_from(optimizers.names()))
    optimizer = {"name": opt, "learning_rate": 0.05}
    if opt not in ("gd", "newton"):
        optimizer["batch_size"] = draw(st.integers(1, 4))
    if opt == "newton":
        optimizer["damping"] = draw(st.sampled_from([1e-4, 0.3]))
    if opt in ("momentum", "nesterov"):  # a coefficient other than Newton's damping
        optimizer["momentum"] = draw(st.sampled_from([0.5, 0.9]))
    used = {layer["activation"] for layer in layers}
    spec = {
        "name": "random_spec",
        "inputs": draw(st.integers(1, 3)),
        "layers": layers,
        "loss": loss,
        "regularization": REGULARISERS[draw(st.sampled_from(sorted(REGULARISERS)))],
        "optimizer": optimizer,
        "init": {"scheme": "xavier", "seed": draw(st.integers(0, 5))},
    }
    if "swish" in used:
        spec["activations"] = CUSTOM_ACTIVATIONS
    if loss == "cauchy":
        spec["losses"] = CUSTOM_LOSSES
    return spec


#: (rows, max error) of every random spec verified, by test: summarised at the module's end
_SEEN: dict[str, list[tuple[int, float]]] = {}


@pytest.fixture(scope="module", autouse=True)
def _summary(request):
    """Print how many random specs, rows and the largest error each random test saw."""
    yield
    plugins = request.config.pluginmanager
    reporter, capture = plugins.get_plugin("terminalreporter"), plugins.get_plugin("capturemanager")
    if reporter is None or capture is None:
        return
    with capture.global_and_fixture_disabled():  # teardown output is captured otherwise
        for name, seen in _SEEN.items():
            rows = sum(r for r, _ in seen)
            worst = max(e for _, e in seen)
            reporter.write("\n")
            reporter.write_line(
                f"{name}: {len(seen)} random specs, {rows} rows, max rel error {worst:.1e}"
            )


def _check(spec: dict, seed: int, test: str) -> None:
    report = verify(load_spec(spec), seed=seed)
    assert report.ok, f"{spec}\n{report.table()}"
    assert report.max_error <= TOLERANCE["float64"]
    _SEEN.setdefault(test, []).append((len(report.rows), report.max_error))


_SETTINGS = {
    "deadline": None,
    "derandomize": True,
    "database": None,
    "phases": [Phase.generate],  # a failure prints its spec; no shrinking
    "suppress_health_check": [HealthCheck.too_slow],
}


# When a random spec fails, Hypothesis's report imports a module that warns (DeprecationWarning
# from mypy_extensions) and pytest would turn the report into an INTERNALERROR.
_REPORTABLE = pytest.mark.filterwarnings("ignore::DeprecationWarning")


@_REPORTABLE
@settings(max_examples=20, **_SETTINGS)
@given(spec=specs(), seed=st.integers(0, 3))
def test_random_specs_verify(spec, seed):
    _check(spec, seed, "test_random_specs_verify")


@pytest.mark.slow
@_REPORTABLE
@settings(max_examples=220, **_SETTINGS)
@given(spec=specs(), seed=st.integers(0, 1000))
def test_random_specs_verify_many(spec, seed):
    _check(spec, seed, "test_random_specs_verify_many")


def test_the_command_prints_the_table_and_exits_0_or_1(capsys):
    code = main(["verify", XOR])
    out, err = capsys.readouterr()
    report = verify(load_spec(XOR))
    assert code == (0 if report.ok else 1)
    assert out.splitlines()[0] == "verify xor: seed 0, 5 samples (N = m = 5), float64 trainer"
    assert out.splitlines()[1].split() == [
        "equation",
        "form",
        "max",
        "rel",
        "err",
        "compared",
        "against",
        "values",
        "result",
    ]
    assert ("FAILED" in err) == (not report.ok)


def test_the_command_exits_1_and_names_a_wrong_equation(capsys, monkeypatch):
    import dataclasses

    import symgrad.runtime.verify as V

    def broken(spec):
        d = derive(spec)
        eq = d.equation("forward.1")
        d.equations[d.equations.index(eq)] = dataclasses.replace(eq, rhs=2 * eq.rhs)
        return d

    monkeypatch.setattr(V, "derive", broken)
    assert main(["verify", str(ROOT / "examples" / "linear_regression.yaml")]) == 1
    out, err = capsys.readouterr()
    line = [x for x in out.splitlines() if x.startswith("forward.1 ")][0]
    assert line.split()[1:3] == ["index", "1.0e+00"] and line.endswith("FAIL")
    assert "forward.1" in err.splitlines()[-1] and err.startswith("FAILED: ")
