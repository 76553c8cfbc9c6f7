"""Python source laid out the way ``ruff format`` lays it out, for the code printers.

Printed expressions are re-emitted from their syntax tree (spaces around binary operators,
``x**2`` hugged only between simple operands, minimal parentheses), and an assignment too long for
the line is wrapped in parentheses and split before its top-level operators, so generated modules
pass ``ruff format --check`` without running ruff.
"""

from __future__ import annotations

import ast
import io
import tokenize

__all__ = ["format_code", "layout", "wrap_statement"]


_PRECEDENCE = {
    ast.Add: 11,
    ast.Sub: 11,
    ast.Mult: 12,
    ast.Div: 12,
    ast.FloorDiv: 12,
    ast.Mod: 12,
    ast.MatMult: 12,
    ast.Pow: 14,
}
_OPS = {
    ast.Add: "+",
    ast.Sub: "-",
    ast.Mult: "*",
    ast.Div: "/",
    ast.FloorDiv: "//",
    ast.Mod: "%",
    ast.MatMult: "@",
    ast.Pow: "**",
}
_CMP = {ast.Gt: ">", ast.GtE: ">=", ast.Lt: "<", ast.LtE: "<=", ast.Eq: "==", ast.NotEq: "!="}
_UNARY_PREC = 13  # -x binds tighter than * and looser than **


def _precedence(node: ast.AST) -> int:
    if isinstance(node, ast.BinOp):
        return _PRECEDENCE[type(node.op)]
    if isinstance(node, ast.UnaryOp):
        return _UNARY_PREC
    if isinstance(node, ast.Compare):
        return 6
    if isinstance(node, ast.BoolOp):
        return 4
    if isinstance(node, ast.IfExp):
        return 1
    return 20


def _simple_power_operand(node: ast.AST) -> bool:
    """ruff (like black) hugs ``**`` when both sides are names, numbers or attribute chains."""
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        return _simple_power_operand(node.operand)
    if isinstance(node, ast.Attribute):
        return _simple_power_operand(node.value)
    if isinstance(node, ast.Constant):
        return isinstance(node.value, (int, float)) and not isinstance(node.value, bool)
    return isinstance(node, ast.Name)


def _unparse(node: ast.AST) -> str:
    if isinstance(node, ast.Expression):
        return _unparse(node.body)
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Constant):
        if isinstance(node.value, str):
            return '"%s"' % node.value if '"' not in node.value else repr(node.value)
        return repr(node.value)
    if isinstance(node, ast.Attribute):
        return f"{_wrap(node.value, 20)}.{node.attr}"
    if isinstance(node, ast.Call):
        args = [_unparse(a) for a in node.args]
        args += [f"{k.arg}={_unparse(k.value)}" for k in node.keywords]
        return f"{_wrap(node.func, 20)}({', '.join(args)})"
    if isinstance(node, ast.Tuple):
        inner = ", ".join(_unparse(e) for e in node.elts)
        return f"({inner},)" if len(node.elts) == 1 else f"({inner})"
    if isinstance(node, ast.List):
        return "[" + ", ".join(_unparse(e) for e in node.elts) + "]"
    if isinstance(node, ast.Subscript):
        index = node.slice
        if isinstance(index, ast.Tuple) and len(index.elts) > 1:  # a[:, 1:3], not a[(:, 1:3)]
            return f"{_wrap(node.value, 20)}[{', '.join(_unparse(e) for e in index.elts)}]"
        return f"{_wrap(node.value, 20)}[{_unparse(index)}]"
    if isinstance(node, ast.Slice):
        lo = _unparse(node.lower) if node.lower else ""
        hi = _unparse(node.upper) if node.upper else ""
        return f"{lo}:{hi}"
    if isinstance(node, ast.UnaryOp):
        op = {ast.USub: "-", ast.UAdd: "+", ast.Not: "not ", ast.Invert: "~"}[type(node.op)]
        operand = node.operand
        if isinstance(operand, ast.BinOp) and isinstance(operand.op, ast.Pow):
            return f"{op}({_unparse(operand)})"  # ruff writes -(a**2)
        return op + _wrap(operand, _UNARY_PREC)
    if isinstance(node, ast.BinOp):
        prec = _PRECEDENCE[type(node.op)]
        if isinstance(node.op, ast.Pow):  # right-associative
            left, right = _wrap(node.left, prec + 1), _wrap(node.right, prec)
            if isinstance(node.right, ast.UnaryOp):
                right = _unparse(node.right)  # x**-t needs no parentheses
            if isinstance(node.left, ast.UnaryOp):
                left = f"({_unparse(node.left)})"
            if _simple_power_operand(node.left) and _simple_power_operand(node.right):
                return f"{left}**{right}"
            return f"{left} ** {right}"
        left, right = _wrap(node.left, prec), _wrap(node.right, prec + 1)
        return f"{left} {_OPS[type(node.op)]} {right}"
    if isinstance(node, ast.Compare):
        parts = [_wrap(node.left, 7)]
        for op, comp in zip(node.ops, node.comparators):
            parts.append(f"{_CMP[type(op)]} {_wrap(comp, 7)}")
        return " ".join(parts)
    if isinstance(node, ast.BoolOp):
        op = " and " if isinstance(node.op, ast.And) else " or "
        return op.join(_wrap(v, 5) for v in node.values)
    if isinstance(node, ast.IfExp):
        return f"{_wrap(node.body, 2)} if {_wrap(node.test, 2)} else {_wrap(node.orelse, 1)}"
    raise NotImplementedError(f"cannot lay out {ast.dump(node)}")


def _wrap(node: ast.AST, prec: int) -> str:
    text = _unparse(node)
    return f"({text})" if _precedence(node) < prec else text


def format_code(code: str) -> str:
    """One Python expression laid out as ``ruff format`` lays it out (no redundant parentheses)."""
    return _unparse(ast.parse(code.strip(), mode="eval"))


def _chain(node: ast.AST, prec: int) -> list[tuple[str, ast.AST]]:
    """The operands of a chain of binary operators of precedence ``prec`` with their operators
    (the first operand's operator is ``""``): ``a * b / c`` -> ``[("", a), ("*", b), ("/", c)]``."""
    if isinstance(node, ast.BinOp) and _PRECEDENCE[type(node.op)] == prec:
        if not isinstance(node.op, ast.Pow):
            right = node.right
            return _chain(node.left, prec) + [(_OPS[type(node.op)], right)]
    return [("", node)]


def wrap_statement(line: str, width: int = 100) -> str:
    """``target = expr`` (or ``target op= expr``) too long for ``width`` laid out as ruff does.

    A value with operators goes in parentheses on its own line, split before each top-level
    operator if it still does not fit; a call keeps its parentheses and puts its arguments on
    their own line, or one per line (with a trailing comma) if they do not fit together.
    """
    if len(line) <= width:
        return line
    indent = line[: len(line) - len(line.lstrip())]
    try:
        tree = ast.parse(line.strip())
    except SyntaxError:
        return line
    stmt = tree.body[0] if len(tree.body) == 1 else None
    if not isinstance(stmt, (ast.Assign, ast.AugAssign)):
        return line
    if isinstance(stmt, ast.Assign):
        if len(stmt.targets) != 1:
            return line
        head = f"{_unparse(stmt.targets[0])} ="
    else:
        head = f"{_unparse(stmt.target)} {_OPS[type(stmt.op)]}="
    inner = indent + " " * 4
    value = stmt.value
    if isinstance(value, ast.Call) and not value.keywords:
        args = [_unparse(arg) for arg in value.args]
        if len(inner) + len(", ".join(args)) <= width:
            body = [inner + ", ".join(args)]
        else:
            body = [f"{inner}{arg}," for arg in args]
        return "\n".join([f"{indent}{head} {_wrap(value.func, 20)}(", *body, f"{indent})"])
    if not isinstance(value, ast.BinOp):
        return line
    text = _unparse(value)
    if len(inner) + len(text) <= width:
        body = [inner + text]
    else:
        prec = _precedence(value)
        body = []
        for op, operand in _chain(value, prec):
            part = _wrap(operand, prec + (1 if op else 0))
            body.append(f"{inner}{op} {part}" if op else inner + part)
    return "\n".join([f"{indent}{head} (", *body, f"{indent})"])


def layout(source: str, width: int = 100) -> str:
    """``source`` with every over-long assignment of an expression wrapped by
    :func:`wrap_statement` (lines inside strings are never touched)."""
    in_string: set[int] = set()
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.STRING and tok.end[0] > tok.start[0]:
            in_string.update(range(tok.start[0], tok.end[0] + 1))
    lines = source.split("\n")
    for i, line in enumerate(lines):
        if len(line) > width and i + 1 not in in_string:
            lines[i] = wrap_statement(line, width)
    return "\n".join(lines)
