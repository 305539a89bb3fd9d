"""The package's layers only point down: no import cycle, counting imports inside functions.

Every module's imports are read with ``ast`` (module level, inside functions
and classes alike), so a cycle hidden behind a function-level import fails
here as much as one at the top. Imports under ``if TYPE_CHECKING:`` count too.
"""

from __future__ import annotations

import ast
from pathlib import Path

import curation

ROOT = Path(curation.__file__).resolve().parent
# Modules of the package that algorithms may use: exception types and atomic file writes,
# both leaves (they import nothing of the package).
ALGORITHM_LEAVES = {"curation.errors", "curation.atomic"}


def _modules() -> dict[str, Path]:
    out = {}
    for path in ROOT.rglob("*.py"):
        parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


MODULES = _modules()


def _resolve(name: str) -> str | None:
    """The module of the package that ``import name`` executes last (a name inside a module: that module)."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def imports_of(module: str) -> set[str]:
    """Modules of the package that ``module`` imports anywhere in its body."""
    path = MODULES[module]
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str | None] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {_resolve(alias.name) for alias in node.names if alias.name.split(".")[0] == "curation"}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([node.module] if node.module else []))
            if base.split(".")[0] != "curation":
                continue
            for alias in node.names:
                full = f"{base}.{alias.name}"
                found.add(full if full in MODULES else _resolve(base))
    return {m for m in found if m is not None and m != module}


GRAPH = {module: imports_of(module) for module in MODULES}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

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
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def _describe(component: list[str]) -> str:
    edges = [f"{a} -> {b}" for a in component for b in sorted(GRAPH[a]) if b in component]
    return "\n  ".join([f"cycle among {', '.join(component)}:", *edges])


def test_the_import_graph_is_read_including_imports_inside_functions():
    # Imports inside functions are what hid the old config -> registry -> base -> config circle.
    assert "curation.stages.registry" in GRAPH["curation.config"]
    assert "curation.stages.dedup.copy" in GRAPH["curation.stages.dedup.stage"]  # a function-level import
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycle():
    found = cycles(GRAPH)
    assert not found, "\n".join(_describe(c) for c in found)


def test_algorithms_import_only_algorithms():
    for leaf in ALGORITHM_LEAVES:
        assert GRAPH[leaf] == set(), f"{leaf} must stay a leaf to be usable from algorithms/"
    bad = {
        m: sorted(d for d in deps if not d.startswith("curation.algorithms") and d not in ALGORITHM_LEAVES)
        for m, deps in GRAPH.items()
        if m.startswith("curation.algorithms")
    }
    assert not {m: d for m, d in bad.items() if d}


def test_the_stage_contract_sits_below_the_registry_and_the_pipeline_config():
    assert GRAPH["curation.section"] == set()
    assert not GRAPH["curation.stages.base"] & {"curation.config", "curation.stages.registry"}
    # Nothing a stage imports reaches the pipeline assembly: it sits above the registry.
    below = {m for m in MODULES if m.startswith(("curation.stages", "curation.algorithms", "curation.models"))}
    below |= {"curation.layout", "curation.tables", "curation.sources", "curation.preprocess"}
    assert not {m for m in below if "curation.config" in GRAPH[m]}
    # The embedding arrays, read by later stages, need nothing of the stages.
    assert not {d for d in GRAPH["curation.stages.embed.arrays"] if d.startswith("curation.stages")}
