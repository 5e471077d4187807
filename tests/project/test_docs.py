"""The docs name only what exists: every repository path, Python module and `tessera` subcommand
written in the README or under docs/ is checked here, and every setting has a description for
the generated configuration reference. (`make docs` builds the site with --strict for links.)"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import re
import sys
from pathlib import Path

import pytest

from tests.support.paths import REPO

PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
TOP = ("tessera/", "flows/", "models/", "data_contracts/", "infra/", "dbt/", "benchmarks/",
       "examples/", "tests/", "docs/")
FILES = ("Makefile", "tessera.toml", "pyproject.toml", "requirements.lock", "mkdocs.yml")
MODULE_ROOTS = ("tessera", "flows", "models", "data_contracts", "infra", "benchmarks")
# Paths the docs name that a run makes (under the home, the benchmark output, the built site).
MADE = ("benchmarks/out/", "benchmarks/scaling.png", "site/")
CODE = re.compile(r"`([^`\n]+)`")
FENCE = re.compile(r"^```.*?^```", re.S | re.M)


def _spans(text: str) -> list[str]:
    """Inline code spans, and each line of the fenced blocks."""
    blocks = FENCE.findall(text)
    inline = CODE.findall(FENCE.sub("", text))
    return inline + [line for block in blocks for line in block.splitlines()[1:-1]]


def _named(pattern: str) -> list[tuple[str, str]]:
    found = []
    for page in PAGES:
        for span in _spans(page.read_text(encoding="utf-8")):
            found += [(page.name, m) for m in re.findall(pattern, span)]
    return sorted(set(found))


def _links() -> list[tuple[Path, str]]:
    """Relative markdown links of every page."""
    return [(page, target.split("#")[0]) for page in PAGES
            for target in re.findall(r"\]\(([^)\s]+)\)", page.read_text(encoding="utf-8"))
            if not re.match(r"[a-z]+:|#", target)]


def test_every_path_the_docs_name_exists() -> None:
    tops, files = "|".join(map(re.escape, TOP)), "|".join(map(re.escape, FILES))
    path = rf"(?<![\w./<-])((?:{tops})[\w./{{}}*<>-]*|(?:{files})\b)"
    missing = []
    for page, name in _named(path):
        name = name.rstrip(".,:;)")
        if name.startswith(MADE) or re.search(r"[{*<]", name):
            continue  # made by a run, or a pattern
        if not (REPO / name).exists():
            missing.append(f"{page}: {name}")
    for page, target in _links():
        if target and not (page.parent / target).exists():
            missing.append(f"{page.name}: link {target}")
    assert not missing, "named in the docs but not in the repository:\n" + "\n".join(missing)


def test_every_module_the_docs_name_imports() -> None:
    roots = "|".join(MODULE_ROOTS)
    dotted = rf"(?<![\w./-])((?:{roots})(?:\.[A-Za-z_]\w*)+)(?![\w/-])"
    missing = []
    for page, name in _named(dotted):
        if name.endswith((".toml", ".md", ".py", ".yaml", ".yml", ".json", ".lock", ".sql")):
            continue  # a file, checked as a path
        if any(part.isupper() for part in name.split(".")):
            continue  # a config key with a placeholder: `models.NAME`
        if not _resolves(name):
            missing.append(f"{page}: {name}")
    assert not missing, "modules named in the docs that do not exist:\n" + "\n".join(missing)


def _resolves(name: str) -> bool:
    """True when `name` is a module, or a module and attributes in it."""
    parts = name.split(".")
    for cut in range(len(parts), 0, -1):
        module = ".".join(parts[:cut])
        try:
            spec = importlib.util.find_spec(module)
        except ModuleNotFoundError:
            spec = None
        if spec is None:
            continue
        obj: object = importlib.import_module(module)
        for attr in parts[cut:]:
            if not hasattr(obj, attr):
                return False
            obj = getattr(obj, attr)
        return True
    return False


def test_every_tessera_command_the_docs_name_exists() -> None:
    from tessera.cli.main import build_parser

    parser = build_parser()
    commands: set[str] = set()
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            commands |= set(action.choices)
    named = _named(r"(?:^|[\s|;(`$])tessera ([a-z][a-z-]*)\b")
    missing = [f"{page}: tessera {cmd}" for page, cmd in named if cmd not in commands]
    assert not missing, "commands named in the docs that `tessera` does not have:\n" + \
        "\n".join(missing)
    assert len({cmd for _, cmd in named}) >= 15  # the check reads the pages it should


def test_every_setting_is_described_for_the_reference() -> None:
    sys.path.insert(0, str(REPO / "docs" / "hooks"))
    try:
        reference = importlib.import_module("config_reference")
    finally:
        sys.path.remove(str(REPO / "docs" / "hooks"))
    from tessera.core.settings import Settings

    assert reference.undocumented(Settings) == []
    table = reference.render(Settings)
    for key in ("`store.url`<br>`TESSERA_STORE__URL`", "`sources[].options.caption`",
                "`api.max_k`", "`search.hnsw_ef`", "`models.NAME.dimension`"):
        assert key in table


def test_the_readme_is_short_and_has_the_two_commands() -> None:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert len(readme.splitlines()) < 150
    assert re.search(r"^make demo\b", readme, re.M) and re.search(r"^make test\b", readme, re.M)


@pytest.mark.parametrize("page", [p.name for p in PAGES if p.parent.name == "docs"])
def test_every_docs_page_is_in_the_site_nav(page: str) -> None:
    assert f": {page}" in (REPO / "mkdocs.yml").read_text(encoding="utf-8")
