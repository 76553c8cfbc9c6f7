"""A safe parser for the expression strings users write in a spec.

Custom activations and losses are written in the YAML as formulas, for example
``activations: {swish: "z / (1 + exp(-z))"}`` or ``losses: {cauchy: "log(1 + (a - y)**2)"}``.
:func:`parse_expression` turns such a string into a SymPy expression without ever executing it:

1. the raw text is checked first: its length, control characters, and how deeply its brackets
   nest (deep nesting can exhaust CPython's own parser, so this happens before ``ast.parse``);
2. ``ast.parse(text, mode="eval")`` builds a syntax tree, which is only *read*; its size and
   nesting depth are bounded;
3. the tree is walked against an explicit whitelist (numbers, declared names, ``+ - * / **``,
   unary ``-``/``+`` and calls of :data:`ALLOWED_FUNCTIONS`) and the SymPy expression is built
   node by node. Before SymPy is asked to combine anything, the parser predicts in floating point
   what a constant subexpression will be, and refuses huge powers (``9**9**9``,
   ``exp(10**30*log(z))``) before SymPy could start computing them.

Nothing is passed to ``eval``, ``exec``, ``compile`` or ``sympify``/``parse_expr``. Every
rejection raises :class:`~symgrad.errors.ExpressionError` with one line saying what was wrong
and what is allowed, prefixed with the YAML path (``activations.swish: ...``) when one is given.

Longer than 400 lines on purpose: the whitelist, its limits and the walk that enforces them
must be read together to audit that nothing is ever executed.
"""

from __future__ import annotations

import ast
import math
import warnings
from collections.abc import Callable, Mapping
from typing import NoReturn

import sympy as sp

from ..errors import ExpressionError
from .budget import BudgetExceeded, time_budget

#: Longest accepted expression string, in characters.
MAX_LENGTH = 1000
#: Deepest accepted nesting: of brackets in the text, and of operations in the syntax tree (a
#: chain such as ``a + b - c + d`` counts as one level, like a single sum).
MAX_DEPTH = 50
#: Most syntax-tree expression nodes (numbers, names, operations, calls) in one expression.
MAX_NODES = 500
#: Largest absolute value of a constant exponent (``z**100`` is fine, ``z**101`` is not).
MAX_EXPONENT = 100
#: Largest absolute value of any constant, literal or computed (``1e100`` is fine).
MAX_MAGNITUDE = 1e100
#: Most digits in an integer literal.
MAX_INT_DIGITS = 30
#: Most calls of the non-smooth functions ``max``, ``min`` and ``abs`` in one expression (the
#: time SymPy spends on nested ``Max``/``Min``/``Abs`` grows exponentially with their number).
MAX_PIECEWISE_CALLS = 6
#: Wall-clock seconds SymPy may spend building one expression (enforced in the main thread only;
#: the structural limits above keep every accepted expression far below it).
BUILD_SECONDS = 2.0

# Exact numbers inside the expression may not grow beyond this many bits (a cheap safety net:
# one SymPy operation on bounded inputs stays cheap, and any overgrown result is refused at once).
_MAX_NUMBER_BITS = 1024
# Digits for evaluating constants numerically: more than a 1024-bit number has (about 309).
_EVALF_DIGITS = 330


def _log1p(x: sp.Expr) -> sp.Expr:
    """``log1p(x) = log(1 + x)``."""
    return sp.log(1 + x)


def _sigmoid(x: sp.Expr) -> sp.Expr:
    """``sigmoid(x) = 1 / (1 + exp(-x))``."""
    return 1 / (1 + sp.exp(-x))


def _softplus(x: sp.Expr) -> sp.Expr:
    """``softplus(x) = log(1 + exp(x))``."""
    return sp.log(1 + sp.exp(x))


#: The functions an expression may call, by the name used in the text. Each maps to the SymPy
#: function (or a small composite of SymPy functions) that builds it:
#:
#: * one argument: ``exp``, ``log`` (natural log), ``log1p`` (``log(1 + x)``), ``sqrt``,
#:   ``abs`` (``Abs``), ``sin``, ``cos``, ``tan``, ``sinh``, ``cosh``, ``tanh``, ``atan``,
#:   ``asinh``, ``erf``, ``sigmoid`` (``1/(1 + exp(-x))``), ``softplus`` (``log(1 + exp(x))``);
#: * two arguments: ``max`` (``Max``) and ``min`` (``Min``).
ALLOWED_FUNCTIONS: dict[str, Callable[..., sp.Expr]] = {
    "exp": sp.exp,
    "log": sp.log,
    "log1p": _log1p,
    "sqrt": sp.sqrt,
    "abs": sp.Abs,
    "sin": sp.sin,
    "cos": sp.cos,
    "tan": sp.tan,
    "sinh": sp.sinh,
    "cosh": sp.cosh,
    "tanh": sp.tanh,
    "atan": sp.atan,
    "asinh": sp.asinh,
    "erf": sp.erf,
    "max": sp.Max,
    "min": sp.Min,
    "sigmoid": _sigmoid,
    "softplus": _softplus,
}

#: Number of positional arguments each allowed function takes.
ARITY: dict[str, int] = {name: 2 if name in ("max", "min") else 1 for name in ALLOWED_FUNCTIONS}

#: Named constants usable in every expression.
CONSTANTS: dict[str, sp.Expr] = {"pi": sp.pi, "E": sp.E, "e": sp.E}

_PIECEWISE = frozenset({"max", "min", "abs"})

# Floating-point stand-ins, used to predict constant subexpressions before SymPy builds them.
_FLOAT_FUNCTIONS: dict[str, Callable[..., float]] = {
    "exp": math.exp,
    "log": math.log,
    "abs": abs,
    "sin": math.sin,
    "cos": math.cos,
    "tan": math.tan,
    "sinh": math.sinh,
    "cosh": math.cosh,
    "tanh": math.tanh,
    "atan": math.atan,
    "asinh": math.asinh,
    "erf": math.erf,
    "max": max,
    "min": min,
}
_FLOAT_BY_CLASS: dict[type, Callable[..., float]] = {
    sp.exp: math.exp,
    sp.log: math.log,
    sp.Abs: abs,
    sp.sin: math.sin,
    sp.cos: math.cos,
    sp.tan: math.tan,
    sp.sinh: math.sinh,
    sp.cosh: math.cosh,
    sp.tanh: math.tanh,
    sp.atan: math.atan,
    sp.asinh: math.asinh,
    sp.erf: math.erf,
    sp.Max: max,
    sp.Min: min,
}

_OPERATORS: dict[type, str] = {
    ast.Add: "+",
    ast.Sub: "-",
    ast.Mult: "*",
    ast.Div: "/",
    ast.Pow: "**",
    ast.FloorDiv: "//",
    ast.Mod: "%",
    ast.MatMult: "@",
    ast.LShift: "<<",
    ast.RShift: ">>",
    ast.BitOr: "|",
    ast.BitAnd: "&",
    ast.BitXor: "^",
}
_ALLOWED_OPERATORS = (ast.Add, ast.Sub, ast.Mult, ast.Div, ast.Pow)
_CHAINS = ((ast.Add, ast.Sub), (ast.Mult, ast.Div))

# Constructs that are never allowed, with the words used to name them in messages.
_CONSTRUCTS: dict[type, str] = {
    ast.Attribute: "attribute access",
    ast.Subscript: "indexing or slicing",
    ast.Slice: "slicing",
    ast.Lambda: "a lambda",
    ast.ListComp: "a comprehension",
    ast.SetComp: "a comprehension",
    ast.DictComp: "a comprehension",
    ast.GeneratorExp: "a generator expression",
    ast.JoinedStr: "an f-string",
    ast.FormattedValue: "an f-string",
    ast.Compare: "a comparison",
    ast.BoolOp: "a boolean operator (and/or)",
    ast.IfExp: "a conditional expression (x if c else y)",
    ast.NamedExpr: "an assignment expression (:=)",
    ast.Starred: "a starred expression (*x)",
    ast.List: "a list",
    ast.Tuple: "a tuple",
    ast.Set: "a set",
    ast.Dict: "a dictionary",
    ast.Await: "await",
    ast.Yield: "yield",
    ast.YieldFrom: "yield",
}


def parse_expression(
    text: str,
    variables: Mapping[str, sp.Symbol],
    *,
    where: str = "",
    parameters: Mapping[str, sp.Expr | float] | None = None,
) -> sp.Expr:
    """Parse a user formula into a finite SymPy expression, allowing only a small whitelist.

    Args:
        text: the formula, in Python arithmetic syntax (``"z / (1 + exp(-z))"``).
        variables: the names the formula may use and their symbols (``{"z": z}``).
        where: the YAML path of the formula (``"activations.swish"``); it starts every message.
        parameters: further names the formula may use, mapped to numbers or SymPy expressions
            (``{"alpha": alpha}``). A variable of the same name takes precedence.

    Returns:
        The SymPy expression. Integers become ``sympy.Integer``, decimals ``sympy.Float``; the
        constants ``pi``, ``E`` and ``e`` are SymPy's.

    Raises:
        ExpressionError: for anything outside the whitelist or the limits of this module
            (:data:`MAX_LENGTH`, :data:`MAX_DEPTH`, :data:`MAX_NODES`, :data:`MAX_EXPONENT`,
            :data:`MAX_MAGNITUDE`, ...), for a result that is not finite (``1/0``), and for any
            failure inside Python's parser or SymPy; never any other exception.
    """
    prefix = f"{where}: " if where else ""
    try:
        return _Parser(variables, parameters or {}, prefix).parse(text)
    except ExpressionError:
        raise
    except BudgetExceeded as exc:
        raise ExpressionError(
            f"{prefix}the expression is too expensive for SymPy to build (over "
            f"{BUILD_SECONDS:g} s); simplify it"
        ) from exc
    except RecursionError as exc:
        raise ExpressionError(
            f"{prefix}the expression is nested too deeply; at most {MAX_DEPTH} levels are allowed"
        ) from exc
    except MemoryError as exc:
        raise ExpressionError(f"{prefix}the expression is too large to build") from exc
    except (
        ArithmeticError,
        AttributeError,
        LookupError,
        SyntaxError,
        TypeError,
        ValueError,
    ) as exc:
        detail = _clean(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
        raise ExpressionError(
            f"{prefix}the expression could not be built ({detail}); write a formula with "
            "numbers, names, + - * / ** and the allowed functions"
        ) from exc


# ---------------------------------------------------------------------------------------
# Helpers


def _clean(text: str, limit: int = 60) -> str:
    """``text`` made printable and short, for a one-line message."""
    text = "".join(ch if ch.isprintable() else "?" for ch in text)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _float(fn: Callable[..., float], *args: float) -> float:
    """``fn(*args)`` in floating point: ``inf`` on overflow, ``nan`` where undefined or complex."""
    try:
        value = fn(*args)
    except OverflowError:
        return math.inf
    except (ValueError, ZeroDivisionError, TypeError):
        return math.nan
    if isinstance(value, complex):
        return math.nan
    return float(value)


def _ratio(p: int, q: int) -> float:
    """``p / q`` as a float, ``inf`` when it overflows."""
    try:
        return p / q
    except OverflowError:
        return math.inf if (p > 0) == (q > 0) else -math.inf
    except ZeroDivisionError:
        return math.nan


def _evaluate(expr: sp.Expr, cache: dict[sp.Basic, float]) -> float:
    """A float approximation of a constant SymPy expression (one without free symbols).

    Computed with Python floats, never by asking SymPy for an exact value: ``inf`` when huge,
    ``nan`` when undefined or complex.
    """
    if expr in cache:
        return cache[expr]
    if expr.is_Rational:
        value = _ratio(int(expr.p), int(expr.q))
    elif expr.is_Float:
        value = _float(float, expr)
    elif expr in (sp.zoo, sp.oo, -sp.oo):
        value = math.inf
    elif expr is sp.nan or expr is sp.I:
        value = math.nan
    elif isinstance(expr, sp.NumberSymbol):
        value = _float(float, expr)
    elif expr.is_Add:
        value = _float(math.fsum, [_evaluate(arg, cache) for arg in expr.args])
    elif expr.is_Mul:
        value = _float(math.prod, [_evaluate(arg, cache) for arg in expr.args])
    elif expr.is_Pow:
        value = _float(math.pow, _evaluate(expr.base, cache), _evaluate(expr.exp, cache))
    elif type(expr) in _FLOAT_BY_CLASS:
        value = _float(_FLOAT_BY_CLASS[type(expr)], *[_evaluate(a, cache) for a in expr.args])
    else:  # something SymPy made on its own from already checked parts: let SymPy approximate
        try:
            approx = complex(expr.evalf(15))
        except (ArithmeticError, TypeError, ValueError):
            approx = complex(math.nan)
        value = approx.real if approx.imag == 0 else math.nan
    cache[expr] = value
    return value


def _check_text(text: str, prefix: str) -> str:
    """Check the raw text before Python's parser sees it; return it with whitespace normalized."""
    if not isinstance(text, str):
        raise ExpressionError(f"{prefix}the expression must be a string, not {type(text).__name__}")
    if len(text) > MAX_LENGTH:
        raise ExpressionError(
            f"{prefix}the expression is {len(text)} characters long; at most {MAX_LENGTH} are "
            "allowed"
        )
    depth = 0
    for position, ch in enumerate(text):
        if ch in "([{":
            depth += 1
            if depth > MAX_DEPTH:
                raise ExpressionError(
                    f"{prefix}brackets are nested more than {MAX_DEPTH} levels deep; at most "
                    f"{MAX_DEPTH} are allowed"
                )
        elif ch in ")]}":
            depth -= 1
        elif not ch.isprintable() and ch not in " \t\r\n":
            raise ExpressionError(
                f"{prefix}the expression contains a control character ({ch!a}) at position "
                f"{position}; only printable text is allowed"
            )
    # One line: a YAML block scalar may wrap a formula, which Python would not accept.
    return " ".join(text.split())


def _same_chain(node: ast.AST, child: ast.AST) -> bool:
    """True when ``child`` continues the ``+ -`` or ``* /`` chain of its parent ``node``."""
    if not (isinstance(node, ast.BinOp) and isinstance(child, ast.BinOp)):
        return False
    return any(isinstance(node.op, ops) and isinstance(child.op, ops) for ops in _CHAINS)


def _tree_size(tree: ast.Expression) -> tuple[int, int, int]:
    """Count the expression nodes of ``tree``, measure its operation depth, and count its calls
    of ``max``, ``min`` and ``abs``.

    A left-leaning chain of ``+``/``-`` (or of ``*``/``/``) counts as one level, so a long sum
    is as deep as a short one. Iterative, so a deep tree cannot exhaust the Python stack.
    """
    nodes = 0
    deepest = 0
    piecewise = 0
    stack: list[tuple[ast.AST, int]] = [(tree.body, 0)]
    while stack:
        node, level = stack.pop()
        if isinstance(node, ast.expr):
            nodes += 1
            deepest = max(deepest, level)
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in _PIECEWISE
        ):
            piecewise += 1
        for child in ast.iter_child_nodes(node):
            if not isinstance(child, ast.expr):
                stack.append((child, level))
            elif child is getattr(node, "left", None) and _same_chain(node, child):
                stack.append((child, level))
            else:
                stack.append((child, level + 1))
    return nodes, deepest, piecewise


# ---------------------------------------------------------------------------------------
# The parser


class _Parser:
    """Builds one SymPy expression from a whitelisted syntax tree (see the module docstring)."""

    def __init__(
        self,
        variables: Mapping[str, sp.Symbol],
        parameters: Mapping[str, sp.Expr | float],
        prefix: str,
    ) -> None:
        self.prefix = prefix
        self.text = ""
        self.names: dict[str, sp.Expr] = {}
        for kind, mapping in (("variable", variables), ("parameter", parameters)):
            for name, value in mapping.items():
                if name not in self.names:
                    self.names[name] = self._declared(kind, name, value)
        self.cache: dict[sp.Basic, float] = {}
        self.checked: set[sp.Basic] = set()

    # -- entry ---------------------------------------------------------------------------
    def parse(self, text: str) -> sp.Expr:
        """Check ``text``, parse it and build the expression."""
        self.text = _check_text(text, self.prefix)
        if not self.text:
            self.fail(f"the expression is empty; write a formula in {self.allowed_names()}")
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # e.g. invalid escapes inside (rejected) strings
                tree = ast.parse(self.text, mode="eval")
        except SyntaxError as exc:
            where = f" at character {exc.offset}" if exc.offset else ""
            self.fail(
                f"not a valid formula ({_clean(exc.msg or 'invalid syntax')}{where}); write "
                "Python arithmetic such as 'z / (1 + exp(-z))'"
            )
        except ValueError as exc:  # null bytes, on Pythons that report them this way
            self.fail(f"not a valid formula ({_clean(str(exc))}); write Python arithmetic")
        nodes, depth, piecewise = _tree_size(tree)
        if nodes > MAX_NODES:
            self.fail(
                f"the expression has {nodes} parts (numbers, names, operations); at most "
                f"{MAX_NODES} are allowed"
            )
        if depth > MAX_DEPTH:
            self.fail(
                f"the expression is nested {depth} operations deep; at most {MAX_DEPTH} levels "
                "are allowed"
            )
        if piecewise > MAX_PIECEWISE_CALLS:
            self.fail(
                f"the expression calls max, min and abs {piecewise} times; at most "
                f"{MAX_PIECEWISE_CALLS} such calls are allowed in one formula"
            )
        with time_budget(BUILD_SECONDS):
            expr = self.build(tree.body)
        if not isinstance(expr, sp.Expr):
            self.fail("the formula does not describe a number; write arithmetic on numbers")
        return expr

    # -- messages ------------------------------------------------------------------------
    def fail(self, message: str) -> NoReturn:
        """Raise the ExpressionError for ``message``."""
        raise ExpressionError(self.prefix + message)

    def snippet(self, node: ast.AST) -> str:
        """The source text of ``node``, quoted and shortened for a message."""
        try:
            source = ast.get_source_segment(self.text, node)
        except (TypeError, ValueError, IndexError):
            source = None
        return repr(_clean(source or type(node).__name__, 50))

    def allowed_names(self) -> str:
        """``'z, alpha and the constants pi, E, e'``."""
        declared = ", ".join(self.names)
        constants = ", ".join(CONSTANTS)
        return f"{declared} and the constants {constants}" if declared else constants

    def allowed_summary(self) -> str:
        """One clause saying everything an expression may contain."""
        return (
            f"allowed: numbers, the names {self.allowed_names()}, the operators + - * / ** and "
            f"the functions {', '.join(ALLOWED_FUNCTIONS)}"
        )

    def _declared(self, kind: str, name: str, value: object) -> sp.Expr:
        """A declared variable or parameter as a SymPy expression."""
        if isinstance(value, bool) or not isinstance(value, (int, float, sp.Expr)):
            self.fail(f"{kind} {name!r} must be a number or a SymPy expression")
        if isinstance(value, sp.Expr):
            return value
        if isinstance(value, float) and not math.isfinite(value):
            self.fail(f"{kind} {name!r} must be a finite number, not {value}")
        return sp.Integer(value) if isinstance(value, int) else sp.Float(value)

    # -- values --------------------------------------------------------------------------
    def value(self, expr: sp.Expr) -> float | None:
        """The float value of ``expr`` when it is a constant, else None."""
        if expr in self.cache:
            return self.cache[expr]
        if expr.free_symbols:
            return None
        return _evaluate(expr, self.cache)

    def check_constant(self, value: float, node: ast.AST) -> None:
        """Refuse a constant that is not a finite real number within :data:`MAX_MAGNITUDE`."""
        if math.isnan(value):
            self.fail(
                f"{self.snippet(node)} has no finite real value (e.g. the log or square root of a "
                "negative number); constants must be finite real numbers"
            )
        if math.isinf(value) or abs(value) > MAX_MAGNITUDE:
            size = "overflows" if math.isinf(value) else f"is about {value:.3g}"
            self.fail(
                f"{self.snippet(node)} {size}; constants may be at most {MAX_MAGNITUDE:g} in "
                "absolute value"
            )

    def check_exponent(self, exponent: float | None, node: ast.AST) -> None:
        """Refuse a constant exponent outside ``[-MAX_EXPONENT, MAX_EXPONENT]``."""
        if exponent is not None and not abs(exponent) <= MAX_EXPONENT:
            shown = f"{exponent:.3g}" if math.isfinite(exponent) else "not finite"
            self.fail(
                f"the exponent in {self.snippet(node)} is {shown}; constant exponents may be at "
                f"most {MAX_EXPONENT} in absolute value"
            )

    def checked_result(self, expr: sp.Expr, node: ast.AST) -> sp.Expr:
        """Verify what SymPy built for ``node``: finite, bounded numbers, bounded exponents."""
        stack = [expr]
        while stack:
            sub = stack.pop()
            if sub in self.checked:
                continue
            if sub in (sp.zoo, sp.nan, sp.oo, -sp.oo):
                self.fail(
                    f"{self.snippet(node)} is not finite (division by zero or an infinite "
                    "value); the formula must be finite"
                )
            if sub.is_Rational:
                bits = max(int(sub.p).bit_length(), int(sub.q).bit_length())
                if bits > _MAX_NUMBER_BITS:
                    self.fail(
                        f"{self.snippet(node)} produces a number with {bits} bits; numbers may "
                        f"have at most {_MAX_NUMBER_BITS}"
                    )
            if sub.is_Pow:
                exponent = self.value(sub.exp)
                if exponent is not None and not abs(exponent) <= MAX_EXPONENT:
                    self.fail(
                        f"{self.snippet(node)} produces a power with exponent {exponent:.3g}; "
                        f"constant exponents may be at most {MAX_EXPONENT} in absolute value"
                    )
            stack.extend(sub.args)
            self.checked.add(sub)
        value = self.value(expr)
        if value is not None:
            self.check_constant(value, node)
        return expr

    # -- the walk ------------------------------------------------------------------------
    def build(self, node: ast.AST) -> sp.Expr:
        """The SymPy expression for ``node``, or an ExpressionError naming what is not allowed."""
        if isinstance(node, ast.Constant):
            return self.constant(node)
        if isinstance(node, ast.Name):
            return self.name(node)
        if isinstance(node, ast.BinOp):
            return self.binop_chain(node)
        if isinstance(node, ast.UnaryOp):
            return self.unary(node)
        if isinstance(node, ast.Call):
            return self.call(node)
        what = _CONSTRUCTS.get(type(node), f"the construct {type(node).__name__}")
        self.fail(f"{what} is not allowed ({self.snippet(node)}); {self.allowed_summary()}")

    def constant(self, node: ast.Constant) -> sp.Expr:
        """An int or float literal; every other literal is refused."""
        value = node.value
        if isinstance(value, bool) or value is None or value is Ellipsis:
            self.fail(f"{value!r} is not allowed; only numbers may appear as literals")
        if isinstance(value, int):
            if abs(value) >= 10**MAX_INT_DIGITS:
                digits = math.floor(math.log10(abs(value))) + 1
                self.fail(
                    f"the integer {self.snippet(node)} has {digits} digits; at most "
                    f"{MAX_INT_DIGITS} are allowed"
                )
            return sp.Integer(value)
        if isinstance(value, float):
            if not math.isfinite(value) or abs(value) > MAX_MAGNITUDE:
                self.fail(
                    f"the number {self.snippet(node)} is too large; numbers may be at most "
                    f"{MAX_MAGNITUDE:g} in absolute value"
                )
            if value == 0.0:
                source = ast.get_source_segment(self.text, node) or ""
                if any(ch in "123456789" for ch in source.lower().split("e")[0]):
                    self.fail(
                        f"the number {self.snippet(node)} is too small (it rounds to 0); write 0 "
                        "or a number of at least 1e-300"
                    )
            return sp.Float(value)
        if isinstance(value, complex):
            self.fail(
                f"the complex number {self.snippet(node)} is not allowed; formulas must be real"
            )
        if isinstance(value, str):
            self.fail(f"a string is not allowed ({self.snippet(node)}); {self.allowed_summary()}")
        if isinstance(value, bytes):
            self.fail(f"a bytes literal is not allowed ({self.snippet(node)}); only numbers are")
        self.fail(f"the literal {self.snippet(node)} is not allowed; only numbers are")

    def name(self, node: ast.Name) -> sp.Expr:
        """A declared variable or parameter, or one of :data:`CONSTANTS`."""
        name = node.id
        shown = repr(_clean(name, 40))
        if name.startswith("__"):
            self.fail(
                f"the name {shown} is not allowed (names starting with '__' never are); "
                f"allowed here: {self.allowed_names()}"
            )
        if name in self.names:
            return self.names[name]
        if name in CONSTANTS:
            return CONSTANTS[name]
        if name in ALLOWED_FUNCTIONS:
            self.fail(f"the function {name!r} must be called with an argument, e.g. {name}(z)")
        self.fail(f"unknown name {shown}; allowed here: {self.allowed_names()}")

    def binop_chain(self, node: ast.BinOp) -> sp.Expr:
        """A binary operation; a left-leaning ``+ -`` or ``* /`` chain is built in a loop."""
        chain = [node]
        while _same_chain(chain[-1], chain[-1].left):
            chain.append(chain[-1].left)
        for link in chain:  # refuse a bad operator before building anything
            if not isinstance(link.op, _ALLOWED_OPERATORS):
                symbol = _OPERATORS.get(type(link.op), type(link.op).__name__)
                hint = "; use ** for powers, e.g. z**2" if isinstance(link.op, ast.BitXor) else ""
                self.fail(
                    f"the operator {symbol!r} is not allowed ({self.snippet(link)}){hint}; "
                    "allowed operators: + - * / ** and unary -"
                )
        result = self.build(chain[-1].left)
        for link in reversed(chain):
            result = self.binary(link.op, result, self.build(link.right), link)
        return result

    def unary(self, node: ast.UnaryOp) -> sp.Expr:
        """Unary minus and plus."""
        if isinstance(node.op, ast.UAdd):
            return self.build(node.operand)
        if isinstance(node.op, ast.USub):
            return self.binary(ast.Mult(), sp.Integer(-1), self.build(node.operand), node)
        if isinstance(node.op, ast.Not):
            self.fail(
                f"the boolean operator 'not' is not allowed ({self.snippet(node)}); "
                f"{self.allowed_summary()}"
            )
        self.fail(
            f"the operator '~' is not allowed ({self.snippet(node)}); allowed operators: "
            "+ - * / ** and unary -"
        )

    def binary(self, op: ast.operator, a: sp.Expr, b: sp.Expr, node: ast.AST) -> sp.Expr:
        """``a op b``, checked before and after SymPy builds it."""
        va, vb = self.value(a), self.value(b)
        if isinstance(op, ast.Pow):
            if a == sp.E:  # SymPy makes E**x into exp(x), with exp's simplifications
                return self.function("exp", [b], node)
            self.check_exponent(vb, node)
        if isinstance(op, ast.Div) and vb is not None and b.is_zero:
            self.fail(f"division by zero in {self.snippet(node)}; the formula must be finite")
        if va is not None and vb is not None:
            predict = {
                ast.Add: lambda: va + vb,
                ast.Sub: lambda: va - vb,
                ast.Mult: lambda: va * vb,
                ast.Div: lambda: va / vb,
                ast.Pow: lambda: math.pow(va, vb),
            }[type(op)]
            self.check_constant(_float(predict), node)
        if isinstance(op, ast.Add):
            result = a + b
        elif isinstance(op, ast.Sub):
            result = a - b
        elif isinstance(op, ast.Mult):
            result = a * b
        elif isinstance(op, ast.Div):
            result = a / b
        else:
            result = a**b
        return self.checked_result(result, node)

    def call(self, node: ast.Call) -> sp.Expr:
        """A call of an allowed function by name, with positional arguments only."""
        functions = ", ".join(ALLOWED_FUNCTIONS)
        func = node.func
        if isinstance(func, ast.Attribute):
            self.fail(
                f"attribute access is not allowed ({self.snippet(func)}); call functions by "
                f"name; {self.allowed_summary()}"
            )
        if not isinstance(func, ast.Name):
            self.fail(
                f"only functions named directly can be called ({self.snippet(node)}); allowed "
                f"functions: {functions}"
            )
        name = func.id
        shown = repr(_clean(name, 40))
        if name.startswith("__"):
            self.fail(
                f"the name {shown} is not allowed (names starting with '__' never are); allowed "
                f"functions: {functions}"
            )
        if name not in ALLOWED_FUNCTIONS:
            if name in self.names or name in CONSTANTS:
                self.fail(
                    f"{name!r} is not a function ({self.snippet(node)}); allowed functions: "
                    f"{functions}"
                )
            self.fail(f"unknown function {shown}; allowed: {functions}")
        example = f"{name}(z, 0)" if ARITY[name] == 2 else f"{name}(z)"
        if node.keywords:
            keyword = node.keywords[0]
            what = "keyword arguments are" if keyword.arg else "'**' unpacking is"
            self.fail(
                f"{what} not allowed ({self.snippet(keyword)}); pass arguments by position, "
                f"e.g. {example}"
            )
        for arg in node.args:
            if isinstance(arg, ast.Starred):
                self.fail(
                    f"starred arguments are not allowed ({self.snippet(arg)}); pass arguments by "
                    f"position, e.g. {example}"
                )
        if len(node.args) != ARITY[name]:
            wanted = "1 argument" if ARITY[name] == 1 else f"{ARITY[name]} arguments"
            self.fail(f"{name}() takes {wanted}, got {len(node.args)}; e.g. {example}")
        args = [self.build(arg) for arg in node.args]
        return self.function(name, args, node)

    def function(self, name: str, args: list[sp.Expr], node: ast.AST) -> sp.Expr:
        """``name(*args)``; composites are built from checked primitive steps."""
        one = sp.Integer(1)
        if name == "log1p":
            return self.function("log", [self.binary(ast.Add(), one, args[0], node)], node)
        if name == "sigmoid":
            minus = self.binary(ast.Mult(), sp.Integer(-1), args[0], node)
            denominator = self.binary(ast.Add(), one, self.function("exp", [minus], node), node)
            return self.binary(ast.Div(), one, denominator, node)
        if name == "softplus":
            shifted = self.binary(ast.Add(), one, self.function("exp", args, node), node)
            return self.function("log", [shifted], node)
        if name == "sqrt":
            return self.binary(ast.Pow(), args[0], sp.Rational(1, 2), node)
        # A constant argument that itself applies a function (``sin(1)`` in ``exp(sin(1))``)
        # becomes a Float: SymPy's exact reasoning about nested transcendental constants can
        # take seconds, and a formula's constants need no more than double precision.
        args = [self.numeric(arg) for arg in args]
        if name == "exp":
            self.check_exp_of_log(args[0], node)
        values = [self.value(arg) for arg in args]
        if all(v is not None for v in values):
            self.check_constant(_float(_FLOAT_FUNCTIONS[name], *values), node)
        return self.checked_result(ALLOWED_FUNCTIONS[name](*args), node)

    def numeric(self, arg: sp.Expr) -> sp.Expr:
        """``arg`` as a Float when it is a constant that contains a function application.

        The value comes from SymPy's numerical evaluation at a working precision that covers
        every exact number the parser allows (so ``log(1 + 10**-30)`` keeps its digits), rounded
        to 15 digits; the float prediction is the fallback.
        """
        value = self.value(arg)
        if value is None or arg.is_Number or not arg.atoms(sp.Function):
            return arg
        approx = arg.evalf(_EVALF_DIGITS)
        return sp.Float(approx, 15) if approx.is_Float else sp.Float(value)

    def check_exp_of_log(self, arg: sp.Expr, node: ast.AST) -> None:
        """SymPy turns ``exp(c*log(x))`` (also a term of a sum) into ``x**c``: bound ``c`` first.

        Conservative: any term with a log in one of its factors counts, and ``c`` is the
        product of that term's other constant factors.
        """
        for term in sp.Add.make_args(arg):
            factors = sp.Mul.make_args(term)
            if not any(f.has(sp.log) for f in factors):
                continue
            plain = [f for f in factors if f.is_comparable and not f.has(sp.log)]
            self.check_exponent(self.value(sp.Mul(*plain)), node)
