"""The layout holds: every import (inside functions and TYPE_CHECKING blocks too) points down
the layers, and no two files import each other, directly or round a circle."""

from __future__ import annotations

import ast
from pathlib import Path

from tests.support.paths import REPO

ROOTS = ("tessera", "flows", "models", "data_contracts", "infra")
# Highest first; a module may import only from its own layer's package or lower ones.
LAYERS = [
    ("tessera.cli", "infra"),
    ("flows",),
    ("tessera.jobs", "tessera.service"),
    ("tessera.ingest",),
    ("tessera.sources", "tessera.store"),
    ("data_contracts",),
    ("models",),
    ("tessera.core",),
]


def _modules() -> dict[str, Path]:
    found = {}
    for root in ROOTS:
        for path in (REPO / root).rglob("*.py"):
            parts = path.relative_to(REPO).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            found[name] = path
    return found


def _imports(path: Path, name: str, known: dict[str, Path]) -> set[str]:
    """The project modules `path` imports, wherever the import statement sits."""
    out = set()
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1]
                                + ([base] if base else []))
            # `from pkg import module` imports the module; `from module import name` the module.
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base
                       for a in node.names]
        for target in targets:
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target != name:
                out.add(target)
    return out


def _layer(name: str) -> int | None:
    for rank, group in enumerate(LAYERS):
        if any(name == g or name.startswith(g + ".") for g in group):
            return rank
    return None  # the `tessera` package's own __init__


def _graph() -> dict[str, set[str]]:
    known = _modules()
    return {name: _imports(path, name, known) for name, path in known.items()}


def test_every_import_points_down_the_layers() -> None:
    wrong = []
    for name, targets in _graph().items():
        here = _layer(name)
        for target in targets:
            there = _layer(target)
            if here is not None and there is not None and there < here:
                wrong.append(f"{name} -> {target}")
    assert wrong == []


def test_no_circle_of_imports_between_files() -> None:
    """Tarjan's strongly connected components over the file graph: every one is a single file."""
    graph = _graph()
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    circles: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            members = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                members.append(top)
                if top == node:
                    break
            if len(members) > 1:
                circles.append(sorted(members))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    assert circles == []


def test_the_product_lives_in_tessera_and_flows_is_prefect_only() -> None:
    """Every module of flows/ uses Prefect; the store, ingest, service and CLI are in tessera/."""
    for path in (REPO / "flows").rglob("*.py"):
        if path.name != "__init__.py":
            assert "prefect" in path.read_text(encoding="utf-8"), path
    for package in ("core", "store", "sources", "ingest", "jobs", "service", "cli"):
        assert (REPO / "tessera" / package / "__init__.py").is_file(), package


def test_gpu_time_is_priced_in_one_dbt_macro() -> None:
    """The GPU cost arithmetic is written once (dbt/macros/gpu_cost.sql): no mart reads the
    gpu_prices seed itself, and both cost marts bill through the macro."""
    models = {p.stem: p.read_text(encoding="utf-8") for p in (REPO / "dbt" / "models").rglob("*.sql")}
    assert [name for name, sql in models.items() if "gpu_prices" in sql] == []
    billed = {name for name, sql in models.items() if "gpu_cost(" in sql}
    assert billed == {"fct_caption_cost", "fct_embedding_cost"}


# The process environment is read (and its defaults written) in these two modules only.
_ENV_READERS = {Path("tessera/core/env.py"), Path("tessera/core/settings.py")}


def _environment_uses(path: Path) -> list[str]:
    """Each `os.environ` / `os.getenv` (or `from os import environ, getenv`) in one file."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if (isinstance(node, ast.Attribute) and node.attr in ("environ", "getenv")
                and isinstance(node.value, ast.Name) and node.value.id == "os"):
            found.append(f"{path.relative_to(REPO)}:{node.lineno} os.{node.attr}")
        elif isinstance(node, ast.ImportFrom) and node.module == "os":
            found += [f"{path.relative_to(REPO)}:{node.lineno} from os import {a.name}"
                      for a in node.names if a.name in ("environ", "getenv")]
    return found


def test_only_settings_and_env_read_the_process_environment() -> None:
    """Everything else asks `tessera.core.env` (named reads) or gets the settings passed in."""
    uses = [use for root in ROOTS for path in sorted((REPO / root).rglob("*.py"))
            if path.relative_to(REPO) not in _ENV_READERS for use in _environment_uses(path)]
    assert uses == []


MAX_FUNCTION_LINES = 50  # the house rule: a function fits on a screen


def _long_functions(path: Path) -> list[str]:
    """Each function or method in one file longer than MAX_FUNCTION_LINES, with its length."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            lines = (node.end_lineno or node.lineno) - node.lineno + 1
            if lines > MAX_FUNCTION_LINES:
                found.append(f"{path.relative_to(REPO)}:{node.lineno} {node.name} ({lines} lines)")
    return found


def test_no_function_is_over_50_lines() -> None:
    """Split a longer one into named pieces (one per subcommand group, route group, tool...)."""
    long = [f for root in ROOTS for path in sorted((REPO / root).rglob("*.py"))
            for f in _long_functions(path)]
    assert long == []
