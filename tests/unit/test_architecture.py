"""The layering rules of issue 13, checked on the source: no import cycles among Sandlot's
modules (function-level and TYPE_CHECKING imports count), and no module reads another
module's underscore names."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2] / "sandlot"
GENERATED = "gen"


def _modules() -> dict[str, Path]:
    mods = {}
    for path in ROOT.rglob("*.py"):
        rel = path.relative_to(ROOT.parent)
        if GENERATED in rel.parts:
            continue
        parts = list(rel.with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        mods[".".join(parts)] = path
    return mods


MODULES = _modules()
TREES = {name: ast.parse(path.read_text(), str(path)) for name, path in MODULES.items()}


def _resolve(name: str) -> str | None:
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def _imports(module: str) -> Iterator[tuple[str, ast.ImportFrom | ast.Import]]:
    """Every Sandlot module ``module`` imports (anywhere in its body)."""
    is_pkg = MODULES[module].name == "__init__.py"
    for node in ast.walk(TREES[module]):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = module.split(".") if is_pkg else module.split(".")[:-1]
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            targets = [f"{base}.{alias.name}" for alias in node.names] + [base]
        else:
            continue
        for target in targets:
            if target.split(".")[0] == "sandlot":
                resolved = _resolve(target)
                if resolved and resolved != module and not module.startswith(resolved + "."):
                    yield resolved, node


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0
    for start in edges:
        if start in index:
            continue
        work = [(start, iter(sorted(edges[start])))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(edges[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def test_no_import_cycles() -> None:
    edges = {module: {target for target, _ in _imports(module)} for module in MODULES}
    assert _cycles(edges) == []


def test_cycle_finder_finds_a_cycle() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def _private_names_by_module() -> dict[str, set[str]]:
    """Underscore names each module defines: functions, classes, module globals, ``self._x``."""
    defined: dict[str, set[str]] = {}
    for module, tree in TREES.items():
        names = defined.setdefault(module, set())
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                names.add(node.name)
            elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                names.add(node.id)
            elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
                names.add(node.attr)
        defined[module] = {n for n in names if n.startswith("_") and not n.startswith("__")}
    return defined


def test_no_module_reads_another_modules_underscore_names() -> None:
    defined = _private_names_by_module()
    offences = []
    for module, tree in TREES.items():
        own = defined[module]
        elsewhere = set().union(*(names for other, names in defined.items() if other != module)) - own
        for target, node in _imports(module):   # from sandlot.x import _private
            if isinstance(node, ast.ImportFrom):
                offences += [f"{module} imports {target}.{a.name}" for a in node.names
                             if a.name.startswith("_") and not a.name.startswith("__")]
        for node in ast.walk(tree):   # obj._private, where another module defines _private
            if (isinstance(node, ast.Attribute) and node.attr in elsewhere
                    and not (isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"))):
                offences.append(f"{module}:{node.lineno} reads .{node.attr}")
    assert offences == []
