"""A whitelist parser for user expressions (custom activations and losses).

The text is parsed by :func:`ast.parse` (which evaluates nothing) after cheap size and nesting
checks, and the tree is walked with an explicit whitelist that builds the SymPy expression
itself: no ``eval``, ``exec``, ``sympify`` or ``parse_expr`` ever sees the raw string.
"""

from __future__ import annotations

import ast
import math
from collections.abc import Mapping

import sympy as sp

from .errors import ExpressionError

MAX_LENGTH = 1000
MAX_DEPTH = 50
MAX_NODES = 500
MAX_EXPONENT = 100
MAX_INT_DIGITS = 30
MAX_MAGNITUDE = 1e100


def _sigmoid(x):
    return 1 / (1 + sp.exp(-x))


def _softplus(x):
    return sp.log(1 + sp.exp(x))


def _log1p(x):
    return sp.log(1 + x)


#: name -> (SymPy builder, number of arguments)
ALLOWED_FUNCTIONS: dict[str, tuple] = {
    "exp": (sp.exp, 1),
    "log": (sp.log, 1),
    "log1p": (_log1p, 1),
    "sqrt": (sp.sqrt, 1),
    "abs": (sp.Abs, 1),
    "sin": (sp.sin, 1),
    "cos": (sp.cos, 1),
    "tan": (sp.tan, 1),
    "sinh": (sp.sinh, 1),
    "cosh": (sp.cosh, 1),
    "tanh": (sp.tanh, 1),
    "atan": (sp.atan, 1),
    "asinh": (sp.asinh, 1),
    "erf": (sp.erf, 1),
    "max": (sp.Max, 2),
    "min": (sp.Min, 2),
    "sigmoid": (_sigmoid, 1),
    "softplus": (_softplus, 1),
}
CONSTANTS = {"pi": sp.pi, "E": sp.E, "e": sp.E}

_BINOPS = {
    ast.Add: lambda x, y: x + y,
    ast.Sub: lambda x, y: x - y,
    ast.Mult: lambda x, y: x * y,
    ast.Div: lambda x, y: x / y,
}

_NAMES = {
    ast.Attribute: "attribute access",
    ast.Subscript: "subscripts",
    ast.Lambda: "lambdas",
    ast.ListComp: "comprehensions",
    ast.SetComp: "comprehensions",
    ast.DictComp: "comprehensions",
    ast.GeneratorExp: "comprehensions",
    ast.JoinedStr: "f-strings",
    ast.Compare: "comparisons",
    ast.BoolOp: "boolean operators",
    ast.IfExp: "conditional expressions",
    ast.NamedExpr: "assignments",
    ast.Starred: "starred arguments",
    ast.List: "lists",
    ast.Tuple: "tuples",
    ast.Dict: "dicts",
    ast.Set: "sets",
    ast.Await: "await",
    ast.Yield: "yield",
}


class _Builder:
    def __init__(self, text: str, variables: Mapping, parameters: Mapping, where: str):
        self.text = text
        self.symbols = dict(variables)
        self.parameters = {k: sp.sympify(v) for k, v in parameters.items()}
        self.where = where
        self.allowed_names = sorted(self.symbols) + sorted(self.parameters)

    def fail(self, message: str) -> ExpressionError:
        prefix = f"{self.where}: " if self.where else ""
        return ExpressionError(f"{prefix}{message} in {self.text[:60]!r}")

    def build(self, node: ast.AST, depth: int = 0) -> sp.Expr:
        if depth > MAX_DEPTH:
            raise self.fail(f"expression nested more than {MAX_DEPTH} levels deep")
        if isinstance(node, ast.Constant):
            return self.number(node.value)
        if isinstance(node, ast.Name):
            return self.name(node.id)
        if isinstance(node, ast.UnaryOp):
            operand = self.build(node.operand, depth + 1)
            if isinstance(node.op, ast.USub):
                return -operand
            if isinstance(node.op, ast.UAdd):
                return operand
            raise self.fail("only unary + and - are allowed")
        if isinstance(node, ast.BinOp):
            if isinstance(node.op, ast.Pow):
                return self.power(node, depth)
            if isinstance(node.op, ast.BitXor):
                raise self.fail("'^' is not a power here; write x**2")
            op = _BINOPS.get(type(node.op))
            if op is None:
                raise self.fail("only + - * / ** are allowed")
            return op(self.build(node.left, depth + 1), self.build(node.right, depth + 1))
        if isinstance(node, ast.Call):
            return self.call(node, depth)
        what = _NAMES.get(type(node), type(node).__name__)
        raise self.fail(f"{what}: not allowed; use numbers, names, + - * / ** and functions")

    def number(self, value) -> sp.Expr:
        if isinstance(value, bool) or value is None:
            raise self.fail(f"{value!r} is not a number")
        if isinstance(value, int):
            if len(str(abs(value))) > MAX_INT_DIGITS:
                raise self.fail(f"integer literals are limited to {MAX_INT_DIGITS} digits")
            return sp.Integer(value)
        if isinstance(value, float):
            if not math.isfinite(value) or abs(value) > MAX_MAGNITUDE:
                raise self.fail(f"numbers must be finite and at most {MAX_MAGNITUDE:g} in size")
            return sp.Float(value)
        raise self.fail(f"{type(value).__name__} literals are not allowed; only numbers")

    def name(self, ident: str) -> sp.Expr:
        if ident.startswith("__"):
            raise self.fail(f"name {ident!r} is not allowed")
        if ident in self.symbols:
            return self.symbols[ident]
        if ident in self.parameters:
            return self.parameters[ident]
        if ident in CONSTANTS:
            return CONSTANTS[ident]
        if ident in ALLOWED_FUNCTIONS:
            raise self.fail(f"function {ident!r} must be called, e.g. {ident}(...)")
        allowed = ", ".join(self.allowed_names + sorted(CONSTANTS))
        raise self.fail(f"unknown name {ident!r}; allowed here: {allowed}")

    def power(self, node: ast.BinOp, depth: int) -> sp.Expr:
        base = self.build(node.left, depth + 1)
        exponent = self.build(node.right, depth + 1)
        if exponent.is_Number:
            if abs(float(exponent)) > MAX_EXPONENT:
                raise self.fail(f"constant exponents are limited to {MAX_EXPONENT} in size")
            if base.is_Number and base != 0:
                # refuse results that would be astronomically large before SymPy computes them
                size = abs(float(exponent)) * math.log10(max(abs(float(base)), 1e-300))
                if abs(size) > 100:
                    raise self.fail("the power of two numbers is too large")
        elif exponent.free_symbols == set() and base.is_Number:
            raise self.fail("the exponent of a number must be a plain number")
        return sp.Pow(base, exponent)

    def call(self, node: ast.Call, depth: int) -> sp.Expr:
        if not isinstance(node.func, ast.Name):
            raise self.fail("only named functions may be called, e.g. exp(z)")
        fname = node.func.id
        if fname not in ALLOWED_FUNCTIONS:
            allowed = ", ".join(ALLOWED_FUNCTIONS)
            raise self.fail(f"unknown function {fname!r}; allowed: {allowed}")
        if node.keywords:
            raise self.fail(f"{fname}() takes no keyword arguments")
        builder, arity = ALLOWED_FUNCTIONS[fname]
        if len(node.args) != arity:
            raise self.fail(f"{fname}() takes {arity} argument{'s' if arity > 1 else ''}")
        args = [self.build(arg, depth + 1) for arg in node.args]
        return builder(*args)


def _max_nesting(text: str) -> int:
    depth = best = 0
    for ch in text:
        if ch in "([{":
            depth += 1
            best = max(best, depth)
        elif ch in ")]}":
            depth -= 1
    return best


def parse_expression(
    text: str,
    variables: Mapping[str, sp.Symbol],
    *,
    where: str = "",
    parameters: Mapping[str, sp.Expr | float] | None = None,
) -> sp.Expr:
    """Parse ``text`` into a SymPy expression over ``variables`` (and ``parameters``).

    Raises:
        ExpressionError: one line naming ``where`` and what is not allowed.
    """
    prefix = f"{where}: " if where else ""
    if not isinstance(text, str):
        raise ExpressionError(f"{prefix}expected an expression string, got {type(text).__name__}")
    if not text.strip():
        raise ExpressionError(f"{prefix}the expression is empty")
    if len(text) > MAX_LENGTH:
        raise ExpressionError(f"{prefix}the expression is longer than {MAX_LENGTH} characters")
    if _max_nesting(text) > MAX_DEPTH:
        raise ExpressionError(f"{prefix}expression nested more than {MAX_DEPTH} levels deep")
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError as exc:
        raise ExpressionError(f"{prefix}not a valid expression ({exc.msg}) in {text[:60]!r}") from None
    except (ValueError, RecursionError, MemoryError):
        raise ExpressionError(f"{prefix}not a valid expression in {text[:60]!r}") from None
    if sum(1 for _ in ast.walk(tree)) > MAX_NODES:
        raise ExpressionError(f"{prefix}the expression has more than {MAX_NODES} parts")
    builder = _Builder(text, variables, parameters or {}, where)
    try:
        expr = builder.build(tree.body)
    except ExpressionError:
        raise
    except (ValueError, TypeError, OverflowError, ZeroDivisionError, RecursionError, MemoryError):
        raise builder.fail("the expression could not be built") from None
    if expr.has(sp.zoo, sp.oo, -sp.oo, sp.nan) or not isinstance(expr, sp.Expr):
        raise builder.fail("the expression is not finite (division by zero?)")
    return expr
