"""The package's shape, checked on its source: imports point one way, and
only the policy picks an outcome."""

from __future__ import annotations

import ast
from pathlib import Path

import flask_basic_gate
from flask_basic_gate import errors

PACKAGE = Path(flask_basic_gate.__file__).parent


def _modules() -> dict[str, ast.Module]:
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = ast.parse(path.read_text(encoding="utf-8"))
    return found


def _is_type_checking(node: ast.AST) -> bool:
    return isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)


def _imports(name: str, tree: ast.Module, known: set[str]) -> set[str]:
    """The package's modules ``name`` imports at run time, at the top or
    inside functions (not under ``if TYPE_CHECKING:``)."""
    package = name if name in _packages(known) else name.rpartition(".")[0]
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if _is_type_checking(node):
            return
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package
                for _ in range(node.level - 1):
                    anchor = anchor.rpartition(".")[0]
                base = f"{anchor}.{base}" if base else anchor
            for alias in node.names:
                target = f"{base}.{alias.name}"
                found.add(target if target in known else base)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return {target for target in found if target in known and target != name}


def _packages(known: set[str]) -> set[str]:
    return {name for name in known if any(other.startswith(name + ".") for other in known)}


def test_no_import_cycles() -> None:
    modules = _modules()
    known = set(modules)
    graph = {name: _imports(name, tree, known) for name, tree in modules.items()}
    # A package's __init__ re-exports its modules: an arrow into the package
    # is an arrow into what it re-exports, not a cycle through its children.
    cycles = []
    for start in graph:
        stack = [(start, [start])]
        while stack:
            node, path = stack.pop()
            for target in graph[node]:
                if target == start and not _through_parent(path):
                    cycles.append(" -> ".join([*path, start]))
                elif target not in path and target > start:
                    stack.append((target, [*path, target]))
    assert cycles == []


def _through_parent(path: list[str]) -> bool:
    # flask_basic_gate.store -> flask_basic_gate.store.admin -> ... -> store
    # is how a package's __init__ works, not a cycle between modules.
    return any(b.startswith(a + ".") or a.startswith(b + ".") for a, b in zip(path, path[1:]))


def test_only_the_policy_picks_an_outcome() -> None:
    codes = {
        name for name in errors.__all__ if isinstance(getattr(errors, name), str) and name.isupper()
    }
    pickers = {}
    for name, tree in _modules().items():
        if name in ("flask_basic_gate.errors", "flask_basic_gate.policy"):
            continue
        used = {
            node.id
            for node in ast.walk(tree)
            if isinstance(node, ast.Name) and (node.id in codes or node.id == "failure")
        }
        used |= {
            node.func.id
            for node in ast.walk(tree)
            if isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id == "GateError"
        }
        if used:
            pickers[name] = sorted(used)
    assert pickers == {}
