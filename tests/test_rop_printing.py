"""The R-operator sweep of the generated ``_rop`` is printed from the Derivation's matrix forms.

:class:`symgrad.printers.matrix_numpy.MatrixNumPyPrinter` prints a matrix form over the arrays of
the code (some with a leading axis of k directions); the Gauss-Newton sweep drops the terms each
equation marks (``Equation.gauss_newton``). Checked here: the printer's NumPy against SymPy's
own evaluation of the same matrix expression on explicit matrices, with and without the
Gauss-Newton marks; that every statement of the sweep in a generated module is the printer's
output of its equation, under a comment citing it; and that the templates type no R-operator
formula of their own.
"""

from __future__ import annotations

import ast
import re
import textwrap
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import sympy as sp
from conftest import make_spec

import symgrad
from symgrad.codegen.generate import render
from symgrad.codegen.regulariser import NAMES
from symgrad.codegen.rop import table
from symgrad.derivation import notation as nt
from symgrad.printers.matrix_numpy import (
    Array,
    Entrywise,
    MatrixNumPyPrinter,
    PrintError,
    text,
)

ROOT = Path(__file__).resolve().parent.parent
TEMPLATES = ROOT / "templates" / "numpy"

SPECS = {
    "xor": ROOT / "examples" / "xor.yaml",  # unmatched loss: S^G replaces S
    "mlp_digits": ROOT / "examples" / "mlp_digits.yaml",  # softmax, L2, tanh f'' and relu
    "softmax_iris": ROOT / "examples" / "softmax_iris.yaml",  # no hidden layer
    "deep_l2_mse": make_spec(
        ((3, "tanh"), (2, "softplus")), "sigmoid", "mse", outputs=2, l2=0.3, name="deepl2"
    ),
    "relu_l1": make_spec(((3, "relu"),), "identity", "mse", outputs=2, l1=0.1, name="relul1"),
}


def _derive(spec):
    return symgrad.derive(symgrad.load_spec(spec))


def _rop_keys(d) -> list[str]:
    return [eq.key for eq in d.equations if eq.key.startswith("rop.") and eq.matrix is not None]


# -- the printer -----------------------------------------------------------------------------


def test_printer_writes_each_matrix_operation_as_numpy():
    A, B = sp.MatrixSymbol("A", nt.m, 3), sp.MatrixSymbol("B", 4, 3)
    V, r = sp.MatrixSymbol("V", 4, 3), sp.MatrixSymbol("r", 1, 4)
    p = MatrixNumPyPrinter(
        {"A": Array("a_1"), "B": Array("self.W_2"), "V": Array("V_2", True), "r": Array("vb_2")},
        {"m": "m"},
    )
    assert p.matrix(A * B.T) == "a_1 @ self.W_2.T"
    assert p.matrix(A * V.T) == "a_1 @ V_2.transpose(0, 2, 1)"
    assert p.matrix(A * B.T + nt.ones_m * r) == "a_1 @ self.W_2.T + vb_2"
    assert p.matrix(sp.MatMul(1 / nt.m, nt.ones_m.T * A)) == "a_1.sum(axis=-2, keepdims=True) / m"
    # (a_1 @ W^T @ W) * a_1: the product is evaluated first, left to right
    assert p.matrix(sp.HadamardProduct(A, A * B.T * B)) == "a_1 @ self.W_2.T @ self.W_2 * a_1"
    assert (
        p.matrix(sp.HadamardProduct(A, A + A * B.T * B))
        == "(a_1 @ self.W_2.T @ self.W_2 + a_1) * a_1"
    )
    assert p.matrix(sp.MatAdd(A, -A * B.T * B)) == "a_1 - a_1 @ self.W_2.T @ self.W_2"
    assert p.matrix(sp.MatMul(2, A)) == "2 * a_1"
    with pytest.raises(PrintError, match="^no array of the code holds the matrix Q$"):
        p.matrix(sp.MatrixSymbol("Q", 2, 2))


def test_an_entrywise_kernel_is_printed_in_place():
    a = sp.Symbol("a", real=True)
    F, R = sp.MatrixSymbol("F", nt.m, 2), sp.MatrixSymbol("R", nt.m, 2)
    p = MatrixNumPyPrinter({"F": Entrywise(1 - a**2, {"a": "a_1"}), "R": Array("Rz_1", True)})
    assert p.matrix(sp.HadamardProduct(F, R)) == "Rz_1 * (1 - a_1 * a_1)"


def test_the_gauss_newton_terms_are_added_under_a_flag():
    d = _derive(SPECS["xor"])
    eq = d.equation("rop.backward.1")
    p = MatrixNumPyPrinter(table(d), {**NAMES, "m": "m"})
    lines = p.assign("Rdelta_1", eq.matrix[1], eq.gauss_newton, lambda k: f"Rback_{k}")
    assert lines[0] == "Rback_0 = Rdelta_2 @ self.W_2"
    assert lines[1:3] == ["if not gauss_newton:", "    Rback_0 += delta_2 @ V_2"]
    assert lines[3] == "Rdelta_1 = Rback_0 * fp_1"
    assert lines[4] == "if not gauss_newton:" and lines[5].startswith("    Rdelta_1 += ")
    assert len(lines) == 6


# -- the printer against SymPy, on every R-operator equation ---------------------------------

K, M, N_SAMPLES, L2 = 2, 3, 7, 0.25


class _Values:
    """Random arrays for the code's names, and the same values as explicit SymPy matrices."""

    def __init__(self, d, rng):
        self.d, self.rng = d, rng
        self.table = table(d)
        self.sizes = {**d.widths, nt.m: M}
        self.ns: dict = {"np": np, "m": M, "n": N_SAMPLES}
        self.self = SimpleNamespace(l2=L2, l1=0.0)
        self.ns["self"] = self.self
        for l, width in enumerate(d.spec.sizes):
            # the arrays kernels read: z_l, a_l (a_0 = X) and the targets Y
            self.ns.setdefault(f"z_{l}", rng.uniform(-1.5, 1.5, (M, width)))
            self.ns.setdefault(f"a_{l}", rng.uniform(0.1, 0.9, (M, width)))
        self.ns["Y"] = rng.uniform(0.1, 0.9, (M, d.spec.sizes[-1]))

    def value(self, sym: sp.MatrixSymbol) -> np.ndarray:
        """The array of the code that holds ``sym`` (made on first use)."""
        entry = self.table[sym.name]
        rows, cols = (int(sp.sympify(s).subs(self.sizes)) for s in sym.shape)
        if isinstance(entry, Entrywise):
            f = sp.lambdify(sorted(entry.expr.free_symbols, key=str), entry.expr, "numpy")
            args = [
                self.ns[entry.names.get(s.name, s.name)]
                for s in sorted(entry.expr.free_symbols, key=str)
            ]
            return np.broadcast_to(np.asarray(f(*args), dtype=float), (rows, cols))
        code = entry.code
        if code.startswith("self."):
            name = code[len("self.") :]
            if not hasattr(self.self, name):
                setattr(self.self, name, self.rng.standard_normal((rows, cols)))
            return getattr(self.self, name)
        if code not in self.ns:
            shape = (K, rows, cols) if entry.batched else (rows, cols)
            self.ns[code] = self.rng.standard_normal(shape)
        return self.ns[code]

    def reference(self, expr: sp.Basic, direction: int) -> np.ndarray:
        """SymPy's value of ``expr`` for one direction, every matrix explicit."""
        sized = expr.subs(self.sizes)
        explicit = {}
        for sym in sized.atoms(sp.MatrixSymbol):
            if sym.name == nt.ones_m.name:
                explicit[sym] = sp.ones(*sym.shape)
                continue
            original = next(s for s in expr.atoms(sp.MatrixSymbol) if s.name == sym.name)
            v = self.value(original)
            entry = self.table[sym.name]
            if isinstance(entry, Array) and entry.batched:
                v = v[direction]
            explicit[sym] = sp.ImmutableMatrix(np.asarray(v, dtype=float))
        scalars = {nt.lambda_2: L2, nt.N: N_SAMPLES}
        out = sized.xreplace(explicit).subs(scalars).doit()
        return np.array(sp.Matrix(out).evalf(), dtype=float)


def _run(lines: list[str], target: str, ns: dict, gauss_newton: bool) -> np.ndarray:
    scope = {**ns, "gauss_newton": gauss_newton}
    exec("\n".join(lines), scope)  # noqa: S102 - the printer's own statements, in a test
    return np.asarray(scope[target], dtype=float)


@pytest.mark.parametrize("name", ["xor", "mlp_digits", "deep_l2_mse", "relu_l1"])
def test_every_printed_sweep_equation_is_its_matrix_form(name):
    """Each R-operator equation printed as NumPy and run, against SymPy on explicit matrices:
    the exact sweep (the whole matrix form) and the Gauss-Newton sweep (without its marks)."""
    d = _derive(SPECS[name])
    vals = _Values(d, np.random.default_rng(0))
    checked = marked = 0
    for key in _rop_keys(d):
        eq = d.equation(key)
        lhs, rhs = eq.matrix
        for sym in rhs.atoms(sp.MatrixSymbol):
            if sym.name != nt.ones_m.name:
                vals.value(sym)
        p = MatrixNumPyPrinter(table(d), {**NAMES, "m": "m"})
        target = vals.table[lhs.name].code
        lines = p.assign(target, rhs, eq.gauss_newton)
        for gn, expected_expr in ((False, rhs), (True, eq.gauss_newton_matrix)):
            shape = (K, *(int(s) for s in lhs.subs(vals.sizes).shape))
            got = np.broadcast_to(_run(lines, target, vals.ns, gn), shape)
            for k in range(K):
                want = vals.reference(expected_expr, k)
                np.testing.assert_allclose(
                    got[k], want, rtol=1e-12, atol=1e-12, err_msg=f"{key} gn={gn}"
                )
        checked += 1
        marked += bool(eq.gauss_newton)
    assert checked >= 4 and (marked >= 1 or d.depth == 1)


def test_the_gauss_newton_marks_are_terms_of_the_matrix_forms():
    for name in ("xor", "mlp_digits", "deep_l2_mse"):
        d = _derive(SPECS[name])
        for key in _rop_keys(d):
            eq = d.equation(key)
            for part, replacement in eq.gauss_newton:
                assert eq.matrix[1].has(part), (key, part)
                assert isinstance(replacement, (sp.ZeroMatrix, sp.MatrixSymbol)), (key, part)
        # what Gauss-Newton leaves of R{delta}: f' times the backpropagated R{delta} only
        for layer in range(1, d.depth):
            gn = d.equation(f"rop.backward.{layer}").gauss_newton_matrix
            assert not gn.has(nt.V(layer + 1)) and not gn.has(nt.FPP(layer)), (name, gn)
        for layer in range(2, d.depth + 1):
            gn = d.equation(f"rop.grad.W.{layer}").gauss_newton_matrix
            assert not gn.has(nt.RA(layer - 1)), (name, gn)
    d = _derive(SPECS["xor"])  # mse on a sigmoid: the loss's curvature only
    assert d.equation("rop.out").gauss_newton_matrix.has(sp.MatrixSymbol("SG_2", nt.m, nt.n(2)))
    d = _derive(SPECS["mlp_digits"])  # softmax with cross-entropy: S is the Gauss-Newton S
    assert d.equation("rop.out").gauss_newton == ()


# -- the generated module --------------------------------------------------------------------


def _method(source: str, name: str) -> ast.FunctionDef:
    tree = ast.parse(source)
    return next(f for f in ast.walk(tree) if isinstance(f, ast.FunctionDef) and f.name == name)


def _statements(code: str) -> list[str]:
    return [ast.dump(s) for s in ast.parse(textwrap.dedent(code)).body]


@pytest.mark.parametrize("name", list(SPECS))
def test_each_sweep_statement_is_printed_from_its_equation(name):
    """Every statement of ``_rop`` that computes an R-quantity, a row of H v or a
    backpropagated delta is the printer's output of the equation its comment cites."""
    d = _derive(SPECS[name])
    source, ctx = render(d, f"{name}.yaml")
    rop = _method(source, "_rop")
    body = [ast.dump(s) for s in rop.body]
    lines = source.split("\n")
    # the statements the printer writes for each equation, as the code generator asks for them
    known = {}
    p = MatrixNumPyPrinter(table(d), {**NAMES, "m": "m"})
    printed: list[list[str]] = []
    keys = [*_rop_keys(d), *(k for k in d.keys if k.startswith(("backprop.sum.", "backprop.")))]
    assigned = {
        t.id
        for s in ast.walk(rop)
        if isinstance(s, ast.Assign)
        for t in s.targets
        if isinstance(t, ast.Name)
    }
    for key in d.keys:
        if not key.startswith("backprop.sum."):
            continue
        lhs, rhs = d.equation(key).matrix
        if p.table[lhs.name].code in assigned:
            known[rhs] = lhs
    for key in keys:
        eq = d.equation(key)
        lhs, rhs = eq.matrix
        target = p.table[lhs.name].code
        if target not in assigned:
            continue
        own = {k: v for k, v in known.items() if v != lhs}
        marks = tuple((a.xreplace(own), b) for a, b in eq.gauss_newton)
        layer = key.rsplit(".", 1)[-1]
        out = p.assign(
            target,
            rhs.xreplace(own),
            marks,
            lambda k, l=layer: f"Rback_{l}" + (f"_{k}" if k else ""),
        )
        stmts = _statements("\n".join(out))
        n = len(stmts)
        at = [i for i in range(len(body) - n + 1) if body[i : i + n] == stmts]
        assert len(at) == 1, (key, out)
        # under a comment that cites the equation and writes it as the Derivation does
        comment = f"# ({d.eq(key)}) {text(lhs)} = {text(rhs)}"
        line = rop.body[at[0]].lineno
        assert lines[line - 2].strip() == comment, (key, lines[line - 2])
        printed.append(out)
    # nothing else in _rop multiplies matrices, transposes or sums over the batch
    covered = set()
    for out in printed:
        for s in ast.parse("\n".join(out)).body:
            covered.add(ast.dump(s))
    for s in rop.body[1:]:  # after the docstring
        code = ast.unparse(s)
        if (
            re.search(r"@|matmul|transpose|\.sum\(|gauss_newton", code)
            and ast.dump(s) not in covered
        ):
            raise AssertionError(f"not printed from an equation: {code}")
    assert len(printed) >= 3 * d.depth


def _rop_template_text() -> str:
    """The template text of ``_rop`` and of the dense layer's R-operator macros, without Jinja
    comments and docstrings."""
    second = (TEMPLATES / "second_order.py.jinja").read_text()
    dense = (TEMPLATES / "layers" / "dense.jinja").read_text()
    parts = [second[second.index("def _rop") : second.index("def hvp")]]
    for macro in ("rop_forward", "rop_backward"):
        start = dense.index(f"{{% macro {macro}(")
        parts.append(dense[start : dense.index("{% endmacro %}", start)])
    text_ = "\n".join(parts)
    text_ = re.sub(r"\{#.*?#\}", "", text_, flags=re.S)
    return re.sub(r'""".*?"""', "", text_, flags=re.S)


def test_the_templates_type_no_r_operator_formula():
    """The templates place the printed statements: they write no matrix product, transpose,
    sum over the batch, Gauss-Newton branch or R-quantity of their own."""
    tpl = _rop_template_text()
    assert "{{ line }}" in tpl  # the printed statements are placed here
    for line in tpl.splitlines():
        code = line.strip()
        if not code or code.startswith("{%"):
            continue
        assert not re.search(r"@|matmul|transpose|\.sum\(|np\.sum|gauss_newton:|\+=", code), code
        assert not re.match(r"(Rz|Ra|Rback|HvW|Hvb|back)_", code), code
        if code.startswith(("Rdelta_", "delta_")):  # only the output's, from its kernels
            assert re.fullmatch(r"(R?delta)_\{\{ out\.L \}\} = \{\{ out\.\w+ \}\}", code), code
