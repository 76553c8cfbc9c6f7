"""generated/ is the golden copy: regenerated here byte for byte, lint-clean, and every equation
number it cites names the equation the code there implements.

Refresh after an intended change with::

    for s in examples/*.yaml; do symgrad generate $s -o generated/$(basename $s .yaml).py; done
"""

from __future__ import annotations

import ast
import io
import re
import shutil
import subprocess
import tokenize
from pathlib import Path

import pytest
from conftest import make_spec

import symgrad
from symgrad.codegen.generate import generate_source, render

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))
REFRESH = (
    "for s in examples/*.yaml; do symgrad generate $s -o generated/$(basename $s .yaml).py; done"
)


@pytest.mark.parametrize("spec", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_generated_is_what_the_examples_generate(spec, tmp_path):
    fresh = generate_source(spec, f"examples/{spec.name}")
    (tmp_path / f"{spec.stem}.py").write_text(fresh)
    committed = (ROOT / "generated" / f"{spec.stem}.py").read_text()
    assert fresh == committed, f"generated/{spec.stem}.py is stale; refresh with: {REFRESH}"
    assert generate_source(spec, f"examples/{spec.name}") == fresh  # byte-stable


def _ruff(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["ruff", *args, "--config", str(ROOT / "pyproject.toml"), str(ROOT / "generated")],
        capture_output=True,
        text=True,
        check=False,
    )


@pytest.mark.skipif(shutil.which("ruff") is None, reason="ruff is not installed")
def test_generated_passes_ruff_check_and_format():
    check = _ruff("check")
    assert check.returncode == 0, check.stdout + check.stderr
    fmt = _ruff("format", "--check", "--diff")
    assert fmt.returncode == 0, fmt.stdout + fmt.stderr


# ---------------------------------------------------------------------------------------------
# equation citations
# ---------------------------------------------------------------------------------------------

#: the sections an equation cited inside each method may come from
SECTIONS = {
    "_pass": {"Forward pass", "Output delta", "Backpropagation", "Gradients"},
    "_forward": {"Forward pass"},
    "_loss_sum": {"Cost"},
    "_penalty": {"Cost"},
    "loss": {"Cost"},
    "_gradient": {"Regulariser"},
    "_sums": {"Cost", "Regulariser"},
    "gradient_flat": {"Cost"},
    "hvp": {"Cost"},
    "hessian": {"Cost"},
    # the sweep recomputes the output delta and backpropagates it (the delta V terms read it)
    "_rop": {
        "Hessian-vector products (R-operator)",
        "Second order",
        "Output delta",
        "Backpropagation",
    },
    "_reg_hess": {"Regulariser"},
    "_regulariser": {"Regulariser"},
    "_prox": {"Update"},
    "_hessian": {"Second order"},
    "gauss_newton": {"Second order"},
    "newton_direction": {"Newton's method", "Update"},
    "_newton_solve": {"Newton's method", "Update"},
    "_newton_cg": {"Newton's method", "Update"},
    "_make_runner": {"Update", "Regulariser", "Newton's method"},
}
#: keys whose equation a method may cite, beyond its sections: what the comment names
KEY_OF = {
    "_loss_sum": ("cost.stable", "cost.sample"),
    "_penalty": ("reg.value",),
    "_regulariser": ("reg.value",),
    "loss": ("cost",),
    "gradient_flat": ("cost",),
    "_sums": ("cost",),
    "hvp": ("cost",),
    "hessian": ("cost",),
    # skip connections: the sweep merges a layer's sources into its input as the forward pass does
    "_rop": tuple(f"input.{l}" for l in range(2, 65)),
}

EXTRA_SPECS = {
    "l2_l1_momentum": make_spec(
        ((3, "tanh"),), "sigmoid", "log_loss", l2=0.1, l1=0.01, optimizer={"name": "momentum"}
    ),
    "l1_newton_softmax": make_spec(
        (), "softmax", "cross_entropy", outputs=3, l1=0.1, optimizer={"name": "newton"}
    ),
    "deep_adam_l1": make_spec(
        ((3, "elu"), (2, "softplus")), "identity", "mse", l1=0.2, optimizer={"name": "adam"}
    ),
}


def _cases():
    for path in EXAMPLES:
        yield pytest.param(symgrad.load_spec(path), id=path.stem)
    for name, spec in EXTRA_SPECS.items():
        yield pytest.param(symgrad.load_spec(spec), id=name)


def _citations(source: str):
    """(line, number) for every "(N)" in a comment or docstring of ``source``."""
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type in (tokenize.COMMENT, tokenize.STRING):
            for match in re.finditer(r"\((\d+)\)", tok.string):
                yield tok.start[0], int(match.group(1))


def _enclosing_functions(source: str) -> dict[int, str]:
    """line -> the outermost method (of the trainer class) that holds it."""
    where: dict[int, str] = {}
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ClassDef):
            for item in node.body:
                if isinstance(item, ast.FunctionDef):
                    for line in range(item.lineno, item.end_lineno + 1):
                        where[line] = item.name
    return where


@pytest.mark.parametrize("spec", list(_cases()))
def test_every_cited_equation_is_the_one_implemented_there(spec):
    d = symgrad.derive(spec)
    source, context = render(d, "net.yaml")
    used = context["cite"].used
    where = _enclosing_functions(source)
    cited = list(_citations(source))
    assert len({n for _, n in cited}) >= 8  # the check is not vacuous
    for line, number in cited:
        assert number in used, f"line {line}: ({number}) was not printed from a key"
        key = used[number]
        assert d.keys[number - 1] == d.equation(key).key  # the number is the key's
        method = where.get(line)
        assert method in SECTIONS, f"line {line}: ({number}) = {key!r} outside a known method"
        section = d.equation(key).section
        allowed = SECTIONS[method]
        assert section in allowed or key in KEY_OF.get(method, ()), (
            f"line {line}: {method} cites ({number}) = {key!r} from section {section!r}"
        )


def test_a_citation_names_the_key_not_a_fixed_number():
    """The forward pass is not always (2): with a stable loss, (2) is another equation."""
    for path in ("logistic_regression", "xor"):
        spec = symgrad.load_spec(ROOT / "examples" / f"{path}.yaml")
        d = symgrad.derive(spec)
        source, _ = render(d, "net.yaml")
        forward = d.eq("forward.1")
        assert f"# ({forward}), ({d.eq('act.1.f')}) Z_1 = X*W_1.T + ones_m*b_1" in source
        assert f'"""The forward pass ({forward})' in source


@pytest.mark.parametrize("spec", list(_cases()))
def test_gradients_are_named_as_in_the_derivation(spec):
    d = symgrad.derive(spec)
    model = symgrad.load_trainer(spec)
    import numpy as np

    X = np.zeros((2, spec.inputs))
    Y = np.full((2, spec.outputs), 1.0 / spec.outputs)
    names = list(model.gradients(X, Y))
    expected = []
    for l, layer in enumerate(spec.layers, 1):  # no bias gradient where bias: false
        expected += [d.notation.GW(l).name] + ([d.notation.Gb(l).name] if layer.bias else [])
    assert names == expected
    assert names[:2] == ["dC_dW_1", "dC_db_1" if spec.layers[0].bias else "dC_dW_2"]
