"""Identifier injection attempts must be refused; accepted specs generate harmless code."""

from __future__ import annotations

import ast
import contextlib
import io
from pathlib import Path

import pytest
import yaml

from symgrad import generate_source, load_spec
from symgrad.cli import main

ROOT = Path(__file__).resolve().parents[1]
BASE = {
    "name": "net",
    "inputs": 2,
    "layers": [{"units": 2, "activation": "tanh"}, {"units": 1, "activation": "sigmoid"}],
    "loss": "log_loss",
}
HOSTILE_NAMES = [
    'x"""; import os #',
    "a\nimport os",
    "a\rb",
    "__import__",
    "eval",
    "exec",
    "open",
    "compile",
    "globals",
    "x y",
    "x'y",
    'x"y',
    "x\\y",
    "x;y",
    "x.y",
    "x(y)",
    "x#y",
    "ѕelf",  # Cyrillic dze
    "аdam",  # Cyrillic a
    "ｘ",  # fullwidth
    "x\u200b",
    "x\u00a0",
    "_private",
    "__class__",
    "1abc",
    "",
    " ",
    "a" * 65,
    "a" * 10_000,
    "import",
    "lambda",
    "None",
    "True",
    "np",
    "numpy",
    "print",
    "type",
    "match",
    "_",
]


def run(spec_doc, tmp_path: Path) -> tuple[int, str]:
    p = tmp_path / "spec.yaml"
    p.write_text(yaml.safe_dump(spec_doc, allow_unicode=True), encoding="utf-8")
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        rc = main(["generate", str(p), "-o", str(tmp_path / "out.py")])
    return rc, err.getvalue()


def assert_refused(doc, tmp_path):
    rc, err = run(doc, tmp_path)
    assert rc == 2, (rc, err)
    assert len(err.splitlines()) == 1 and err.startswith("symgrad: error:"), err
    assert not (tmp_path / "out.py").exists()


@pytest.mark.parametrize("name", HOSTILE_NAMES)
def test_model_name_refused(name, tmp_path):
    assert_refused({**BASE, "name": name}, tmp_path)


@pytest.mark.parametrize("name", HOSTILE_NAMES)
def test_custom_activation_name_refused(name, tmp_path):
    layers = [{"units": 2, "activation": name}, {"units": 1, "activation": "sigmoid"}]
    assert_refused({**BASE, "layers": layers, "activations": {name: "z"}}, tmp_path)


@pytest.mark.parametrize("name", HOSTILE_NAMES)
def test_custom_loss_name_refused(name, tmp_path):
    layers = [{"units": 1, "activation": "identity"}]
    assert_refused(
        {**BASE, "layers": layers, "loss": name, "losses": {name: "(a - y)**2"}}, tmp_path
    )


#: NumPy plus these standard-library modules (persistence: an .npz written safely, read without
#: pickle); nothing else may be imported by a generated module.
ALLOWED_IMPORTS = {
    "__future__",
    "math",
    "os",
    "numpy",
    "json",
    "re",
    "stat",
    "tempfile",
    "zipfile",
    "zlib",
}
FORBIDDEN_CALLS = {"eval", "exec", "open", "__import__", "compile", "getattr", "globals"}
#: the only open() calls: (method, first argument as written, mode)
ALLOWED_OPENS = {
    ("_read_archive", "path", "'rb'"),
    ("_file_mode", "'/proc/self/status'", None),
}
OS_CALLS = {
    "fspath",
    "replace",
    "unlink",
    "fsync",
    "fdopen",
    "fchmod",
    "fstat",
    "stat",
    "umask",
    "path",
}


def audit(source: str) -> None:
    tree = ast.parse(source)
    opens = {}
    for f in ast.walk(tree):
        if not isinstance(f, ast.FunctionDef):
            continue
        for n in ast.walk(f):
            if isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id == "open":
                mode = ast.unparse(n.args[1]) if len(n.args) > 1 else None
                opens[id(n)] = (f.name, ast.unparse(n.args[0]), mode)
    assert set(opens.values()) <= ALLOWED_OPENS, opens
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            assert {a.name.split(".")[0] for a in node.names} <= ALLOWED_IMPORTS, ast.dump(node)
        elif isinstance(node, ast.ImportFrom):
            assert node.module in ALLOWED_IMPORTS, ast.dump(node)
        elif isinstance(node, ast.Call):
            f = node.func
            name = f.id if isinstance(f, ast.Name) else getattr(f, "attr", None)
            # archive.open(info) reads one member of the zip file opened by _read_archive
            member = ast.unparse(node) == "archive.open(info)"
            assert name not in FORBIDDEN_CALLS or id(node) in opens or member, ast.unparse(node)
            if isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name):
                assert f.value.id != "os" or f.attr in OS_CALLS, ast.unparse(node)
    # the only os.path use: os.path.split in save()
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Attribute):
            if isinstance(node.value.value, ast.Name) and node.value.value.id == "os":
                assert node.value.attr == "path" and node.attr == "split", ast.unparse(node)


@pytest.mark.parametrize(
    "example",
    [
        "xor",
        "softmax_iris",
        "mlp_digits",
        "logistic_regression",
        "linear_regression_newton",
        "fashion_mlp",
    ],
)
def test_examples_generate_clean_code(example):
    audit(generate_source(load_spec(ROOT / "examples" / f"{example}.yaml")))


@pytest.mark.parametrize("name", ["os", "math", "self", "eval_", "Import", "x" * 64, "exec_it"])
def test_odd_but_accepted_names(name):
    audit(generate_source(load_spec({**BASE, "name": name})))


def test_description_cannot_escape_docstring():
    doc = {**BASE, "description": '""" + __import__("os").system("echo pwned") + """'}
    audit(generate_source(load_spec(doc)))


def test_custom_expressions_are_not_code(tmp_path):
    for expr in [
        '__import__("os").system("echo x")',
        "z.__class__",
        "eval('z')",
        "open('f')",
        "lambda: z",
        "[z for z in ()]",
    ]:
        layers = [{"units": 2, "activation": "evil"}, {"units": 1, "activation": "sigmoid"}]
        rc, err = run({**BASE, "layers": layers, "activations": {"evil": expr}}, tmp_path)
        assert rc == 2, (expr, rc, err)
