"""The layers of the broker, checked from its source: no package but the composition root
reaches up into ``broker.api``, and no two packages import each other, directly or around
a loop. Imports are read with ``ast``, so the ones inside functions and under
``TYPE_CHECKING`` count too: a look-up at run time is still a dependency."""

from __future__ import annotations

import ast
from collections.abc import Iterator, Mapping
from pathlib import Path

BROKER = Path(__file__).resolve().parents[2] / "broker"

# The composition root builds the app from every feature; it alone may know the HTTP API.
COMPOSITION_ROOT = frozenset({"broker.app", "broker.api"})


def _module_name(path: Path, root: Path) -> str:
    parts = path.relative_to(root.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imported(path: Path, module: str) -> Iterator[str]:
    """Every ``broker`` module (or name in one) that ``path`` imports, anywhere in it."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            yield target
            # ``from broker import sessions`` imports the package broker.sessions.
            yield from (f"{target}.{alias.name}" for alias in node.names)


def import_graph(root: Path = BROKER) -> dict[str, set[str]]:
    """Module name → the broker modules and names it imports (migrations left out: alembic
    loads them by path, nothing imports them)."""
    graph: dict[str, set[str]] = {}
    for path in sorted(root.rglob("*.py")):
        if "migrations" in path.relative_to(root).parts:
            continue
        module = _module_name(path, root)
        graph[module] = {
            name
            for name in _imported(path, module)
            if name == "broker" or name.startswith("broker.")
        }
    return graph


def unit_of(name: str) -> str:
    """The package-level unit a module belongs to: ``broker.sessions.hub`` → ``broker.sessions``,
    a top-level module such as ``broker.services`` is its own unit."""
    return ".".join(name.split(".")[:2])


def package_graph(graph: Mapping[str, set[str]]) -> dict[str, dict[str, list[str]]]:
    """Unit → unit it imports → the module-level imports that make the edge (for messages)."""
    units = {unit_of(module) for module in graph}
    edges: dict[str, dict[str, list[str]]] = {}
    for module, names in graph.items():
        for name in names:
            source, target = unit_of(module), unit_of(name)
            if source != target and target in units:
                edges.setdefault(source, {}).setdefault(target, []).append(f"{module} → {name}")
    return edges


def cycles(edges: Mapping[str, Mapping[str, list[str]]]) -> list[list[str]]:
    """The strongly connected groups of more than one unit (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(unit: str) -> None:
        index[unit] = low[unit] = len(index)
        stack.append(unit)
        on_stack.add(unit)
        for other in edges.get(unit, {}):
            if other not in index:
                visit(other)
                low[unit] = min(low[unit], low[other])
            elif other in on_stack:
                low[unit] = min(low[unit], index[other])
        if low[unit] == index[unit]:
            group: list[str] = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == unit:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for unit in sorted(edges):
        if unit not in index:
            visit(unit)
    return found


def api_imports(graph: Mapping[str, set[str]]) -> list[str]:
    """Imports of ``broker.api`` from modules outside the composition root."""
    return sorted(
        f"{module} → {name}"
        for module, names in graph.items()
        if unit_of(module) not in COMPOSITION_ROOT
        for name in names
        if unit_of(name) == "broker.api"
    )


def test_only_the_composition_root_imports_the_api() -> None:
    """No module under broker/ but broker.app and broker.api itself imports broker.api."""
    found = api_imports(import_graph())
    assert not found, "move the shared name down instead:\n" + "\n".join(found)


def test_no_import_cycle_between_packages() -> None:
    """No chain of imports leads from a broker package back to itself."""
    edges = package_graph(import_graph())
    report = []
    for group in cycles(edges):
        report.append("one import cycle among " + ", ".join(group) + ":")
        for source in group:
            for target, why in sorted(edges.get(source, {}).items()):
                if target in group:
                    report.append(
                        f"    {why[0]}" + (f" (+{len(why) - 1} more)" if len(why) > 1 else "")
                    )
    assert not report, "packages that import each other:\n" + "\n".join(report)


def _tree(root: Path, files: Mapping[str, str]) -> Path:
    for name, text in files.items():
        path = root / "broker" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return root / "broker"


def test_an_api_import_inside_a_function_is_found(tmp_path: Path) -> None:
    """A look-up of broker.api at run time, inside a function, counts like a top import."""
    root = _tree(
        tmp_path,
        {
            "__init__.py": "",
            "api/__init__.py": "",
            "api/routing.py": "SERVICES = 1\n",
            "app.py": "from broker.api.routing import SERVICES\n",
            "tickets/__init__.py": "",
            "tickets/feature.py": "def setup():\n    from broker.api import routing\n",
        },
    )
    assert api_imports(import_graph(root)) == [
        "broker.tickets.feature → broker.api",
        "broker.tickets.feature → broker.api.routing",
    ]


def test_a_cycle_through_three_packages_and_a_relative_import_is_found(tmp_path: Path) -> None:
    """sessions → tickets → web → sessions is one cycle, whichever import form makes it."""
    root = _tree(
        tmp_path,
        {
            "__init__.py": "",
            "sessions/__init__.py": "from .runtime import SESSIONS\n",
            "sessions/runtime.py": "from broker.tickets import outbox\nSESSIONS = 1\n",
            "tickets/__init__.py": "",
            "tickets/outbox.py": "from typing import TYPE_CHECKING\n"
            "if TYPE_CHECKING:\n    import broker.web.terminals\n",
            "web/__init__.py": "",
            "web/terminals.py": "from ..sessions import SESSIONS\n",
            "rules.py": "",
        },
    )
    assert cycles(package_graph(import_graph(root))) == [
        ["broker.sessions", "broker.tickets", "broker.web"]
    ]
