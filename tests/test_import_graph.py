"""The package's modules import each other without cycles.

A cycle makes import order matter (a half-initialised module raises ``ImportError`` or
``AttributeError`` depending on which side is imported first) and means two modules
are really one idea. The graph is read from the source with :mod:`ast`, nothing is
imported. Two kinds of edges:

* **top-level**: imports executed when the module is imported (module body, class
  bodies, ``try``/``if`` blocks at module level), except those under
  ``if TYPE_CHECKING:``, which never run;
* **deferred**: imports inside functions. They run later, so they cannot break import
  order, but a deferred import that closes a cycle is still a cycle between ideas —
  usually a function-level import written only to dodge it — so it is checked too.

``from a.b import c`` is an edge to ``a.b.c`` when that is a module, else to ``a.b``.
Importing ``a.b`` also runs package ``a``'s ``__init__``; that implicit edge is left
out (every module would otherwise "import" the top-level ``yapo/__init__``).

Cycles are looked for between modules and between packages: ``evaluate.benchmark →
report.tables → evaluate.metrics`` is no module cycle, but it makes ``evaluate`` and
``report`` one tangle, so neither can be read, tested or layered alone. A package is
``yapo``'s subpackage (``yapo.evaluate``), or a subpackage that its parent's
``__init__`` does not import (``yapo.sae.training``: ``import yapo.sae`` does not load
it, so it is a layer of its own, above ``yapo.vectors``); a top-level module
(``yapo.compare``) is its own package.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import yapo

ROOT = Path(yapo.__file__).parent
PACKAGE = "yapo"


def _module_names() -> dict[str, Path]:
    names = {}
    for path in ROOT.rglob("*.py"):
        parts = (PACKAGE, *path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        names[".".join(parts)] = path
    return names


MODULES = _module_names()


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(
    body: list[ast.stmt], deferred: bool = False
) -> Iterator[tuple[ast.Import | ast.ImportFrom, bool]]:
    """Every import statement in ``body`` and whether it runs only inside a function."""
    for node in body:
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node, deferred
        elif isinstance(node, ast.If) and _is_type_checking(node):
            yield from _imports(node.orelse, deferred)
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            yield from _imports(node.body, True)
        else:
            for field in ("body", "orelse", "finalbody", "handlers", "cases"):
                block = getattr(node, field, None)
                if isinstance(block, list):
                    statements = [n for n in block if isinstance(n, ast.stmt)]
                    for child in block:
                        if isinstance(child, ast.ExceptHandler | ast.match_case):
                            statements.extend(child.body)
                    yield from _imports(statements, deferred)


def _targets(module: str, node: ast.Import | ast.ImportFrom) -> Iterator[str]:
    if isinstance(node, ast.Import):
        for alias in node.names:
            yield alias.name
        return
    base = node.module or ""
    if node.level:
        package = module if MODULES[module].name == "__init__.py" else module.rsplit(".", 1)[0]
        anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
        base = f"{anchor}.{base}" if base else anchor
    for alias in node.names:
        full = f"{base}.{alias.name}"
        yield full if full in MODULES else base


def import_graph() -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    """``(top_level, deferred)``: for each module, the package modules it imports."""
    top: dict[str, set[str]] = {m: set() for m in MODULES}
    late: dict[str, set[str]] = {m: set() for m in MODULES}
    for module, path in MODULES.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node, deferred in _imports(tree.body):
            for target in _targets(module, node):
                if target in MODULES and target != module:
                    (late if deferred else top)[module].add(target)
    return top, late


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph[node]):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
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

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def _union(a: dict[str, set[str]], b: dict[str, set[str]]) -> dict[str, set[str]]:
    return {m: a[m] | b[m] for m in a}


def _is_package(name: str) -> bool:
    return name in MODULES and MODULES[name].name == "__init__.py"


def package_of(module: str, top: dict[str, set[str]]) -> str:
    """The package ``module`` belongs to, by the rule in the module docstring."""
    parts = module.split(".")
    if len(parts) == 2:
        return module  # yapo.X: a top-level module or subpackage
    unit = ".".join(parts[:2])
    for depth in range(3, len(parts) + 1):
        candidate = ".".join(parts[:depth])
        if not _is_package(candidate):
            break
        loaded = _reach(".".join(parts[: depth - 1]), top)
        if not any(m == candidate or m.startswith(candidate + ".") for m in loaded):
            unit = candidate
    return unit


def _reach(start: str, graph: dict[str, set[str]]) -> set[str]:
    """Every module that importing ``start`` loads, following ``graph``."""
    seen, todo = {start}, [start]
    while todo:
        for target in graph[todo.pop()]:
            if target not in seen:
                seen.add(target)
                todo.append(target)
    return seen


def package_graph(graph: dict[str, set[str]], top: dict[str, set[str]]) -> dict[str, set[str]]:
    """``graph`` between packages: an edge wherever a module of one imports one of another."""
    packages: dict[str, set[str]] = {}
    for module, targets in graph.items():
        source = package_of(module, top)
        packages.setdefault(source, set())
        for target in targets:
            if package_of(target, top) != source:
                packages[source].add(package_of(target, top))
    return packages


def test_the_graph_sees_known_edges() -> None:
    """The reader itself: a plain, a relative-free ``from`` and a deferred import."""
    top, late = import_graph()
    assert "yapo.errors" in top["yapo.data.bipo"]
    assert "yapo.data.files" in top["yapo.data.bipo"]
    assert "yapo.evaluate.judge.client" in top["yapo.evaluate.judge.behaviour"]
    assert "yapo.models" in late["yapo.evaluate.judge.behaviour"]
    assert "yapo.evaluate.behaviour" not in top["yapo.report.behaviour"]  # TYPE_CHECKING
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert package_of("yapo.evaluate.judge.client", top) == "yapo.evaluate"  # loaded with it
    assert package_of("yapo.sae.training.corpus", top) == "yapo.sae.training"
    assert package_of("yapo.compare", top) == "yapo.compare"


def test_no_import_cycles_at_module_level() -> None:
    top, _ = import_graph()
    assert cycles(top) == []


def test_no_cycles_closed_by_deferred_imports() -> None:
    top, late = import_graph()
    assert cycles(_union(top, late)) == []


def test_no_import_cycles_between_packages() -> None:
    top, late = import_graph()
    assert cycles(package_graph(top, top)) == []
    assert cycles(package_graph(_union(top, late), top)) == []


def _yapo_imports(root: Path) -> Iterator[tuple[str, int, str, list[str]]]:
    """``(file, line, module, names)`` of every ``from yapo... import`` under ``root``."""
    for path in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith(PACKAGE):
                yield str(path), node.lineno, str(node.module), [a.name for a in node.names]


def test_every_internal_import_resolves() -> None:
    """Deferred imports of moved modules are invisible to mypy (``ignore_missing_imports``)
    and fail only when their function runs: import each one here instead."""
    import importlib

    repo = ROOT.parents[1]
    missing = []
    for folder in (ROOT, repo / "tests", repo / "benchmarks"):
        for path, line, module, names in _yapo_imports(folder):
            try:
                imported = importlib.import_module(module)
            except ImportError as error:
                missing.append(f"{path}:{line} {module} ({error})")
                continue
            for name in names:
                if hasattr(imported, name):
                    continue
                try:
                    importlib.import_module(f"{module}.{name}")
                except ImportError:
                    missing.append(f"{path}:{line} {module}.{name}")
    assert not missing, "imports that do not resolve:\n" + "\n".join(missing)
