"""The package's imports run one way, from the CLI down to the calculus, with no cycle."""

from __future__ import annotations

import ast
from pathlib import Path

import symgrad

ROOT = Path(symgrad.__file__).resolve().parent

#: Each stage may import only stages of a lower rank (or its own package).
RANK = {
    "_version": 0,
    "errors": 0,
    "_paths": 0,
    "spec": 1,
    "calculus": 2,
    "optimizers": 3,
    "derivation": 4,
    "printers": 5,
    "codegen": 6,
    "runtime": 7,
    "data": 7,
    "sklearn": 8,
    "cli": 9,
    "__init__": 10,
}
#: the data loaders and the runtime sit side by side (atomic writes, sharded sources); the cycle
#: test still forbids a cycle between their modules
SIBLINGS = {"data", "runtime"}


def _module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1] or ["__init__"]
    return ".".join(parts)


def _executed(tree: ast.AST):
    """Every node except those under ``if TYPE_CHECKING:`` (type hints, never imported)."""
    stack = [tree]
    while stack:
        node = stack.pop()
        yield node
        if isinstance(node, ast.If) and getattr(node.test, "id", None) == "TYPE_CHECKING":
            stack.extend(node.orelse)
            continue
        stack.extend(ast.iter_child_nodes(node))


def _imports(path: Path) -> set[str]:
    """The symgrad modules ``path`` imports, at module level or inside functions."""
    name = _module_name(path)
    modules = {_module_name(p) for p in ROOT.rglob("*.py")}
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    found = set()
    for node in _executed(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            elif node.module and node.module.startswith("symgrad"):
                target = node.module[len("symgrad.") :] if node.module != "symgrad" else ""
            else:
                continue
            for alias in node.names:
                # ``from . import notation`` imports the module, not the package's __init__
                sub = f"{target}.{alias.name}" if target else alias.name
                found.add(sub if sub in modules else target)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("symgrad."):
                    found.add(alias.name[len("symgrad.") :])
    return {t for t in found if t in modules and t != name}


def _graph() -> dict[str, set[str]]:
    return {_module_name(p): _imports(p) for p in ROOT.rglob("*.py")}


def _stage(module: str) -> str:
    return module.split(".")[0]


def test_imports_respect_the_pipeline_order():
    wrong = []
    for module, targets in _graph().items():
        for target in targets:
            here, there = _stage(module), _stage(target)
            if here != there and RANK[there] >= RANK[here] and {here, there} != SIBLINGS:
                wrong.append(f"{module} -> {target}")
    assert not wrong, "imports against the pipeline: " + ", ".join(sorted(wrong))


def test_no_import_cycle():
    graph = _graph()
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                cycle = stack[stack.index(nxt) :] + [nxt]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)


def test_the_ir_imports_no_printer():
    for module, targets in _graph().items():
        if _stage(module) == "derivation":
            assert not {t for t in targets if _stage(t) == "printers"}, module
