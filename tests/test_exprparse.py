"""Tests for symgrad.exprparse: the whitelist parser for custom activations and losses."""

from __future__ import annotations

import ast
import builtins
import time
from pathlib import Path

import pytest
import sympy as sp

import symgrad.calculus.exprparse as exprparse
from symgrad.calculus.budget import BudgetExceeded
from symgrad.calculus.exprparse import (
    ALLOWED_FUNCTIONS,
    MAX_DEPTH,
    MAX_EXPONENT,
    MAX_LENGTH,
    MAX_NODES,
    parse_expression,
)
from symgrad.errors import ExpressionError, SymgradError

z = sp.Symbol("z", real=True)
a = sp.Symbol("a", real=True)
y = sp.Symbol("y", real=True)
alpha = sp.Symbol("alpha", positive=True)

ACT = {"z": z}
LOSS = {"a": a, "y": y}
WHERE = "activations.evil"
PWNED = Path("/tmp/PWNED_symgrad")
HANG_BOUND = 1.0  # seconds; a generous guard against hangs, not a benchmark


def parse(text, variables=None, **kwargs):
    """``parse_expression`` with the activation variables by default."""
    return parse_expression(text, ACT if variables is None else variables, **kwargs)


def same(result: sp.Expr, expected: sp.Expr) -> bool:
    """Structurally equal, or at least provably equal."""
    return result == expected or sp.simplify(result - expected) == 0


# ---------------------------------------------------------------------------------------------
# valid formulas
# ---------------------------------------------------------------------------------------------

VALID = [
    ("z / (1 + exp(-z))", ACT, None, z / (1 + sp.exp(-z))),
    ("log(1 + (a - y)**2)", LOSS, None, sp.log(1 + (a - y) ** 2)),
    ("(a - y)**2 / 2", LOSS, None, (a - y) ** 2 / 2),
    ("alpha * z", ACT, {"alpha": alpha}, alpha * z),
    ("max(z, alpha * z)", ACT, {"alpha": alpha}, sp.Max(z, alpha * z)),
    ("-z**2", ACT, None, -(z**2)),
    ("exp(-z)", ACT, None, sp.exp(-z)),
    ("max(0, z)", ACT, None, sp.Max(0, z)),
    ("min(z, 1)", ACT, None, sp.Min(z, 1)),
    ("min(max(z, -1), 1)", ACT, None, sp.Min(sp.Max(z, -1), 1)),
    ("log1p(exp(z))", ACT, None, sp.log(1 + sp.exp(z))),
    ("sigmoid(z)", ACT, None, 1 / (1 + sp.exp(-z))),
    ("z * sigmoid(z)", ACT, None, z / (1 + sp.exp(-z))),
    ("softplus(z)", ACT, None, sp.log(1 + sp.exp(z))),
    ("sqrt(z**2 + 1) - 1", ACT, None, sp.sqrt(z**2 + 1) - 1),
    ("abs(a - y)", LOSS, None, sp.Abs(a - y)),
    ("1e-3 * z", ACT, None, sp.Float(1e-3) * z),
    ("0.5 * z", ACT, None, sp.Float(0.5) * z),
    ("1e-3", ACT, None, sp.Float(1e-3)),
    ("0.5", ACT, None, sp.Float(0.5)),
    ("pi", ACT, None, sp.pi),
    ("pi * z", ACT, None, sp.pi * z),
    ("E**z + e", ACT, None, sp.exp(z) + sp.E),
    ("z**(1/3)", ACT, None, z ** sp.Rational(1, 3)),
    ("2*z + 3", ACT, None, 2 * z + 3),
    ("+z - -z", ACT, None, 2 * z),
    ("tanh(z) + sinh(z) * cosh(z)", ACT, None, sp.tanh(z) + sp.sinh(z) * sp.cosh(z)),
    ("atan(z) + asinh(z) + erf(z)", ACT, None, sp.atan(z) + sp.asinh(z) + sp.erf(z)),
    ("sin(z) + cos(z) + tan(z)", ACT, None, sp.sin(z) + sp.cos(z) + sp.tan(z)),
    (
        "z * (1 + tanh(sqrt(2/pi) * (z + 0.044715 * z**3))) / 2",
        ACT,
        None,
        z * (1 + sp.tanh(sp.sqrt(2 / sp.pi) * (z + sp.Float(0.044715) * z**3))) / 2,
    ),
    ("z\n  + 1", ACT, None, z + 1),  # a YAML block scalar may wrap a formula
    ("10**100 * z", ACT, None, sp.Integer(10) ** 100 * z),
    ("z**100 + z**-100", ACT, None, z**100 + z**-100),
    ("1_000 * z", ACT, None, 1000 * z),
]


@pytest.mark.parametrize(
    ("text", "variables", "parameters", "expected"), VALID, ids=[case[0] for case in VALID]
)
def test_valid_formulas(text, variables, parameters, expected):
    result = parse_expression(text, variables, where="activations.f", parameters=parameters)
    assert isinstance(result, sp.Expr)
    assert same(result, expected), (result, expected)


def test_swish_and_cauchy_are_exactly_the_sympy_expressions():
    assert parse("z / (1 + exp(-z))") == z / (1 + sp.exp(-z))
    assert parse("log(1 + (a - y)**2)", LOSS) == sp.log(1 + (a - y) ** 2)


def test_number_types():
    assert isinstance(parse("3"), sp.Integer)
    assert isinstance(parse("0.5"), sp.Float)
    assert parse("1/3") == sp.Rational(1, 3)  # integer division stays exact
    assert parse("999999999999999999999999999999") == sp.Integer(10**30 - 1)  # 30 digits


@pytest.mark.parametrize("name", sorted(ALLOWED_FUNCTIONS))
def test_every_allowed_function(name):
    args = (z, sp.Integer(1)) if name in ("max", "min") else (z,)
    text = f"{name}(z, 1)" if len(args) == 2 else f"{name}(z)"
    assert same(parse(text), ALLOWED_FUNCTIONS[name](*args))


def test_parameters_numbers_and_symbols():
    assert parse("alpha * z", parameters={"alpha": 0.25}) == sp.Float(0.25) * z
    assert parse("alpha * z", parameters={"alpha": 3}) == 3 * z
    assert parse("alpha * z", parameters={"alpha": sp.Rational(1, 100)}) == z / 100
    # a variable wins over a parameter of the same name
    assert parse("z", parameters={"z": 2}) == z


@pytest.mark.parametrize("value", ["0.1", None, float("nan"), True])
def test_bad_parameter_values(value):
    with pytest.raises(ExpressionError, match="parameter 'alpha' must be a"):
        parse("alpha * z", parameters={"alpha": value})


def test_nested_transcendental_constants_become_floats():
    result = parse("z * exp(sin(1))")
    assert result.free_symbols == {z}
    assert abs(float(result.subs(z, 1)) - 2.319776824715853) < 1e-12
    # (1 + 1e-30)**(1e30) is about e; exactly, SymPy would try to expand the huge power
    started = time.perf_counter()
    value = parse("exp(10**30 * log(1 + 10**-30))")
    assert time.perf_counter() - started < HANG_BOUND
    assert isinstance(value, sp.Float) and abs(float(value) - float(sp.E)) < 1e-9


# ---------------------------------------------------------------------------------------------
# limits, at and just beyond the boundary
# ---------------------------------------------------------------------------------------------


def test_length_limit():
    assert parse("z" + " " * (MAX_LENGTH - 1)) == z
    with pytest.raises(ExpressionError, match=f"is {MAX_LENGTH + 1} characters long"):
        parse("z" + " " * MAX_LENGTH)


def test_bracket_depth_limit():
    assert parse("(" * MAX_DEPTH + "z" + ")" * MAX_DEPTH) == z
    deep = "exp(" * MAX_DEPTH + "z" + ")" * MAX_DEPTH
    assert parse(deep).free_symbols == {z}
    with pytest.raises(ExpressionError, match=f"nested more than {MAX_DEPTH} levels deep"):
        parse("exp(" * (MAX_DEPTH + 1) + "z" + ")" * (MAX_DEPTH + 1))


def test_operation_depth_limit():
    assert parse("-" * MAX_DEPTH + "z") == z
    with pytest.raises(ExpressionError, match=f"nested {MAX_DEPTH + 1} operations deep"):
        parse("-" * (MAX_DEPTH + 1) + "z")


def test_long_sums_count_as_one_level():
    assert parse(" + ".join(["z"] * 200)) == 200 * z
    assert parse(" * ".join(["z"] * 100) + " / z") == z**99


def test_node_limit():
    terms = (MAX_NODES + 1) // 2  # n terms are 2n - 1 nodes
    assert parse("+".join(["z"] * terms)) == terms * z
    with pytest.raises(ExpressionError, match=f"at most {MAX_NODES} are allowed"):
        parse("+".join(["z"] * (terms + 1)))


def test_exponent_limit():
    assert parse(f"z**{MAX_EXPONENT}") == z**MAX_EXPONENT
    assert parse(f"z**-{MAX_EXPONENT}") == z**-MAX_EXPONENT
    for text in (f"z**{MAX_EXPONENT + 1}", f"z**{MAX_EXPONENT}.5", f"z**-{MAX_EXPONENT + 1}"):
        with pytest.raises(ExpressionError, match="constant exponents may be at most 100"):
            parse(text)


def test_magnitude_limits():
    assert parse("1e100") == sp.Float(1e100)
    assert parse("10**100") == sp.Integer(10) ** 100
    with pytest.raises(ExpressionError, match="numbers may be at most 1e\\+100"):
        parse("1.1e100")
    with pytest.raises(ExpressionError, match="has 31 digits; at most 30 are allowed"):
        parse("1" + "0" * 30)


def test_piecewise_call_limit():
    assert parse("abs(" * 6 + "z" + ")" * 6) == sp.Abs(z)
    with pytest.raises(ExpressionError, match="calls max, min and abs 7 times; at most 6"):
        parse("abs(" * 7 + "z" + ")" * 7)


# ---------------------------------------------------------------------------------------------
# the hostile corpus
# ---------------------------------------------------------------------------------------------

FUNCS = "allowed: exp, log, log1p, sqrt, abs, sin, cos, tan, sinh, cosh, tanh, atan, asinh, erf"
LENGTH = "characters long; at most 1000 are allowed"
HOSTILE = [
    # code execution and introspection
    (
        "__import__('os').system('touch /tmp/PWNED_symgrad')",
        ["attribute access is not allowed (\"__import__('os').system\")"],
    ),
    ("__import__('os')", ["the name '__import__' is not allowed (names starting with '__'"]),
    ("().__class__.__bases__[0].__subclasses__()", ["attribute access is not allowed"]),
    ("z.__class__", ["attribute access is not allowed ('z.__class__')", "allowed: numbers"]),
    ("z.real", ["attribute access is not allowed ('z.real')"]),
    ("__builtins__", ["the name '__builtins__' is not allowed", "allowed here: z and the"]),
    ("open('f')", ["unknown function 'open'; " + FUNCS]),
    ("eval('1')", ["unknown function 'eval'; " + FUNCS]),
    ("exec('import os')", ["unknown function 'exec'"]),
    ("getattr(z, 'x')", ["unknown function 'getattr'"]),
    ("print(z)", ["unknown function 'print'"]),
    ("foo(z)", ["unknown function 'foo'; " + FUNCS]),
    ("lambda: 1", ["a lambda is not allowed ('lambda: 1')"]),
    ("[x for x in (1,2)]", ["a comprehension is not allowed ('[x for x in (1,2)]')"]),
    ("(x for x in (1,2))", ["a generator expression is not allowed"]),
    ('f"{z}"', ["an f-string is not allowed"]),
    ("'abc'", ["a string is not allowed", "allowed: numbers, the names z"]),
    ("'\\d'", ["a string is not allowed"]),  # an invalid escape: no warning may escape
    ("b'x'", ["a bytes literal is not allowed"]),
    ("z; import os", ["not a valid formula", "write Python arithmetic"]),
    ("import os", ["not a valid formula"]),
    ("z\nimport os", ["not a valid formula"]),
    ("z\x00", ["control character ('\\x00') at position 1"]),
    ("z\x1b[2J", ["control character ('\\x1b')"]),
    # names
    ("q + z", ["unknown name 'q'; allowed here: z and the constants pi, E, e"]),
    ("exp", ["the function 'exp' must be called with an argument, e.g. exp(z)"]),
    ("z(1)", ["'z' is not a function ('z(1)')"]),
    ("f()()", ["only functions named directly can be called ('f()()')"]),
    ("I * z", ["unknown name 'I'"]),
    ("q" * 900, ["unknown name '" + "q" * 37 + "...'; allowed here: z"]),
    ("f" * 900 + "(z)", ["unknown function '" + "f" * 37 + "...'; allowed: exp"]),
    ("oo", ["unknown name 'oo'"]),
    # constructs
    ("z if z else 1", ["a conditional expression (x if c else y) is not allowed"]),
    ("z > 0", ["a comparison is not allowed ('z > 0')"]),
    ("z and 1", ["a boolean operator (and/or) is not allowed"]),
    ("not z", ["the boolean operator 'not' is not allowed"]),
    ("(z := 1)", ["an assignment expression (:=) is not allowed"]),
    ("z[0]", ["indexing or slicing is not allowed ('z[0]')"]),
    ("(z, z)", ["a tuple is not allowed"]),
    ("[z]", ["a list is not allowed"]),
    ("{z}", ["a set is not allowed"]),
    ("{z: 1}", ["a dictionary is not allowed"]),
    ("*z", ["not a valid formula"]),
    # operators
    ("z ^ 2", ["the operator '^' is not allowed ('z ^ 2'); use ** for powers, e.g. z**2"]),
    ("z // 2", ["the operator '//' is not allowed", "allowed operators: + - * / **"]),
    ("z % 2", ["the operator '%' is not allowed"]),
    ("z @ z", ["the operator '@' is not allowed"]),
    ("~z", ["the operator '~' is not allowed"]),
    # calls
    ("exp(z, z)", ["exp() takes 1 argument, got 2; e.g. exp(z)"]),
    ("max(z)", ["max() takes 2 arguments, got 1; e.g. max(z, 0)"]),
    ("exp(x=z)", ["keyword arguments are not allowed ('x=z'); pass arguments by position"]),
    ("exp(*[z])", ["starred arguments are not allowed ('*[z]')"]),
    ("exp(**{'x': z})", ["'**' unpacking is not allowed"]),
    # literals
    ("1j", ["the complex number '1j' is not allowed; formulas must be real"]),
    ("True", ["True is not allowed; only numbers may appear as literals"]),
    ("None", ["None is not allowed; only numbers"]),
    ("...", ["Ellipsis is not allowed"]),
    ("1" + "0" * 400, ["has 401 digits; at most 30 are allowed"]),
    ("1e400", ["the number '1e400' is too large; numbers may be at most 1e+100"]),
    ("1e-400", ["the number '1e-400' is too small (it rounds to 0)"]),
    # huge or infinite values
    ("9**9**9", ["the exponent in '9**9**9' is 3.87e+08; constant exponents may be at most 100"]),
    ("10**1000", ["the exponent in '10**1000' is 1e+03"]),
    ("(10**30)**4", ["'(10**30)**4' is about 1e+120; constants may be at most 1e+100"]),
    ("10**100 * 10", ["is about 1e+101; constants may be at most 1e+100 in absolute value"]),
    ("exp(1000)", ["'exp(1000)' overflows"]),
    ("exp(10**30 * log(2*z))", ["the exponent in 'exp(10**30 * log(2*z))' is 1e+30"]),
    ("exp(z + 10**30 * log(1 + 10**-30))", ["the exponent in", "is 1e+30"]),
    ("E**(1000 * log(z))", ["is 1e+03; constant exponents may be at most 100"]),
    ("sigmoid(-1000 * log(z))", ["is 1e+03; constant exponents"]),
    ("9**(z - z + 10**30)", ["the exponent in '9**(z - z + 10**30)' is 1e+30"]),
    ("(10**30 * z)**100", ["produces a number with", "bits; numbers may have at most 1024"]),
    ("z**100 * z", ["produces a power with exponent 101"]),
    ("1/0", ["division by zero in '1/0'; the formula must be finite"]),
    ("z / (z - z)", ["division by zero"]),
    ("0**-1", ["has no finite real value"]),
    ("log(0)", ["'log(0)' has no finite real value"]),
    ("sqrt(-1)", ["'sqrt(-1)' has no finite real value"]),
    ("(-8)**(1/3)", ["has no finite real value"]),
    ("tan(pi/2)", ["'tan(pi/2)' is not finite"]),
    # sizes
    ("", ["the expression is empty; write a formula in z and the constants pi, E, e"]),
    ("   \n\t ", ["the expression is empty"]),
    ("(" * 1000 + "z" + ")" * 1000, ["is 2001 " + LENGTH]),
    ("(" * 60 + "z" + ")" * 60, ["brackets are nested more than 50 levels deep"]),
    ("z" * 100_000, ["is 100000 " + LENGTH]),
    ("exp(" * 60 + "z" + ")" * 60, ["brackets are nested more than 50 levels deep"]),
    ("-" * 300 + "z", ["nested 300 operations deep; at most 50 levels are allowed"]),
    ("z**" * 60 + "z", ["nested 60 operations deep"]),
    ("+".join(["z"] * 2000), ["is 3999 " + LENGTH]),
    ("+".join(["z"] * 300), ["has 599 parts (numbers, names, operations); at most 500"]),
    ("min(max(" * 4 + "z" + ", -1), 1)" * 4, ["calls max, min and abs 8 times; at most 6"]),
]


@pytest.mark.parametrize(("text", "hints"), HOSTILE, ids=[repr(c[0])[:40] for c in HOSTILE])
def test_hostile_input_is_rejected_quickly(text, hints):
    started = time.perf_counter()
    with pytest.raises(ExpressionError) as info:
        parse_expression(text, ACT, where=WHERE)
    elapsed = time.perf_counter() - started
    message = str(info.value)
    assert message.startswith(f"{WHERE}: "), message
    assert "\n" not in message and len(message) < 400, message
    for hint in hints:
        assert hint in message, (hint, message)
    assert elapsed < HANG_BOUND, (text[:60], elapsed)


def test_hostile_corpus_is_large_enough():
    assert len(HOSTILE) >= 30


def test_hostile_input_has_no_side_effects(monkeypatch):
    PWNED.unlink(missing_ok=True)
    calls = []

    def forbidden(name):
        def spy(*args, **kwargs):
            calls.append(name)
            raise AssertionError(f"{name} called")

        return spy

    real_compile = builtins.compile

    def parse_only_compile(source, filename, mode, flags=0, *args, **kwargs):
        # ast.parse is compile(..., PyCF_ONLY_AST): building a tree, never code (a lazy
        # import compiling a module file is not the parser's doing)
        if not flags & ast.PyCF_ONLY_AST and not str(filename).endswith(".py"):
            calls.append("compile")
        return real_compile(source, filename, mode, flags, *args, **kwargs)

    monkeypatch.setattr(builtins, "eval", forbidden("eval"))
    monkeypatch.setattr(builtins, "exec", forbidden("exec"))
    monkeypatch.setattr(builtins, "compile", parse_only_compile)
    monkeypatch.setattr(sp, "sympify", forbidden("sympify"))
    monkeypatch.setattr(sp, "parse_expr", forbidden("parse_expr"), raising=False)
    for text, _ in HOSTILE:
        with pytest.raises(ExpressionError):
            parse(text)
    for text, variables, parameters, _ in VALID:
        parse_expression(text, variables, parameters=parameters)
    monkeypatch.undo()
    assert calls == []
    assert not PWNED.exists()


def test_source_never_names_eval_exec_or_sympify():
    tree = ast.parse(Path(exprparse.__file__).read_text(encoding="utf-8"))
    banned = {"eval", "exec", "compile", "sympify", "parse_expr", "__import__", "lambdify"}
    used = {node.id for node in ast.walk(tree) if isinstance(node, ast.Name)}
    used |= {node.attr for node in ast.walk(tree) if isinstance(node, ast.Attribute)}
    assert not used & banned


# ---------------------------------------------------------------------------------------------
# messages and error conversion
# ---------------------------------------------------------------------------------------------


def test_messages_without_where_have_no_prefix():
    with pytest.raises(ExpressionError) as info:
        parse("q")
    assert str(info.value) == "unknown name 'q'; allowed here: z and the constants pi, E, e"


def test_unknown_name_lists_parameters_and_loss_variables():
    with pytest.raises(ExpressionError) as info:
        parse("q + z", where="activations.f", parameters={"alpha": alpha})
    assert str(info.value) == (
        "activations.f: unknown name 'q'; allowed here: z, alpha and the constants pi, E, e"
    )
    with pytest.raises(ExpressionError, match="^losses.l: unknown name 'z'; allowed here: a, y"):
        parse_expression("(a - z)**2", LOSS, where="losses.l")


def test_expression_error_is_a_symgrad_error():
    assert issubclass(ExpressionError, SymgradError)


@pytest.mark.parametrize("text", [3, None, b"z", ["z"]])
def test_non_strings_are_rejected(text):
    with pytest.raises(ExpressionError, match="must be a string"):
        parse_expression(text, ACT, where=WHERE)


@pytest.mark.parametrize(
    ("error", "hint"),
    [
        (ValueError("boom"), "could not be built (boom)"),
        (TypeError("bad type"), "could not be built (bad type)"),
        (OverflowError("too big"), "could not be built (too big)"),
        (RecursionError("deep"), "nested too deeply"),
        (MemoryError(), "too large to build"),
        (BudgetExceeded("slow"), "too expensive for SymPy to build"),
    ],
)
def test_internal_failures_become_expression_errors(monkeypatch, error, hint):
    def failing(*args):
        raise error

    monkeypatch.setitem(ALLOWED_FUNCTIONS, "erf", failing)
    with pytest.raises(ExpressionError) as info:
        parse_expression("erf(z)", ACT, where=WHERE)
    assert str(info.value).startswith(f"{WHERE}: ")
    assert hint in str(info.value)


def test_slow_sympy_work_is_cut_off(monkeypatch):
    def slow(*args):
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            pass
        return sp.erf(*args)

    monkeypatch.setattr(exprparse, "BUILD_SECONDS", 0.05)
    monkeypatch.setitem(ALLOWED_FUNCTIONS, "erf", slow)
    started = time.perf_counter()
    with pytest.raises(ExpressionError, match="too expensive for SymPy to build"):
        parse("erf(z)")
    assert time.perf_counter() - started < HANG_BOUND
