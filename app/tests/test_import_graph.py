"""The package's modules import each other without cycles.

Every ``import`` statement counts, also those inside functions and under
``TYPE_CHECKING``: a cycle hidden in a lazy import is still a cycle (the two modules
cannot be understood, or moved, one without the other)."""

from __future__ import annotations

import ast
from pathlib import Path

import personaplex_server

PACKAGE = "personaplex_server"
ROOT = Path(personaplex_server.__file__).parent


def _module_name(path: Path) -> str:
    parts = [PACKAGE, *path.relative_to(ROOT).with_suffix("").parts]
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def _resolve(importer: str, is_package: bool, node: ast.ImportFrom) -> str:
    if node.level == 0:
        return node.module or ""
    base = importer.split(".")
    if not is_package:
        base.pop()  # a module's relative imports start from its package
    base = base[: len(base) - (node.level - 1)]
    return ".".join([*base, node.module] if node.module else base)


def import_graph(modules: dict[str, Path]) -> dict[str, set[str]]:
    """Module -> the package modules it imports (a ``from X import name`` counts as an
    import of ``X.name`` when that is a module, else of ``X``)."""
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        is_package = path.name == "__init__.py"
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                source = _resolve(name, is_package, node)
                for alias in node.names:
                    sub = f"{source}.{alias.name}"
                    targets.append(sub if sub in modules else source)
            graph[name].update(t for t in targets if t in modules and t != name)
    return graph


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle per strongly connected component of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component: list[str] = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return components


def test_the_package_has_no_import_cycle() -> None:
    modules = _modules()
    graph = import_graph(modules)
    # The graph is real: a few imports this test must see, one of them lazy.
    assert "personaplex_server.config" in graph["personaplex_server.cli"]
    assert "personaplex_server.engine.runtime" in graph["personaplex_server.bench_engine"]
    assert "personaplex_server.engine" in graph["personaplex_server.engine_api"]
    assert find_cycles(graph) == []


def test_the_cycle_finder_finds_lazy_and_type_checking_cycles(tmp_path: Path) -> None:
    pkg = tmp_path / PACKAGE
    (pkg / "routes").mkdir(parents=True)
    files = {
        "__init__.py": "",
        "app.py": "def create_app():\n    from .routes import chat\n",
        "routes/__init__.py": "",
        "routes/chat.py": "from ..app import create_app\n",
        "batching.py": "from .sessions import EngineWorker\n",
        "sessions.py": "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from .batching import StepBatcher\n",
        "plain.py": "import personaplex_server.app\nfrom . import batching\n",
    }
    for rel, text in files.items():
        (pkg / rel).write_text(text)
    modules = {
        ".".join([PACKAGE, *p.relative_to(pkg).with_suffix("").parts]).removesuffix(".__init__"): p
        for p in pkg.rglob("*.py")
    }
    cycles = find_cycles(import_graph(modules))
    assert sorted(cycles) == [
        ["personaplex_server.app", "personaplex_server.routes.chat"],
        ["personaplex_server.batching", "personaplex_server.sessions"],
    ]
