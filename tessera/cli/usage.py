"""How the `tessera` command line reads like uv's and gh's: global options anywhere on the line,
`tessera` and `tessera help [COMMAND]` for help, commands listed in groups, defaults shown.

Cheap to import (the standard library only): `tessera --help` answers without loading the rest.
"""

from __future__ import annotations

import argparse
import re
import textwrap

# The options every command takes; before the command they are moved after it, where its
# parser reads them (argparse reads an option only after the command it belongs to).
GLOBAL_FLAGS = frozenset({"--json", "-q", "--quiet", "-v", "--verbose"})
GLOBAL_WITH_VALUE = frozenset({"--config", "--log-format"})
_SHORT_FLAGS = re.compile(r"-[qv]+")

COMMAND_GROUPS: dict[str, tuple[str, ...]] = {
    "ingest & search": ("ingest", "search", "caption", "demo"),
    "operate": ("status", "quarantine", "prune", "alias", "migrate", "backfill-sparse",
                "optimize", "refresh-models", "nightly"),
    "serve": ("api", "mcp", "serve"),
    "analyse": ("report", "marts", "quality", "tune"),
}


def normalise(argv: list[str]) -> list[str]:
    """The command line as the parser reads it: bare `tessera` and `tessera help` ask for the
    overview, `tessera help CMD` for CMD's help, and global options before the command go
    after it (`tessera --json status` is `tessera status --json`)."""
    if "--version" in argv:  # last, so that a --config anywhere is read before it answers
        argv = [w for w in argv if w != "--version"] + ["--version"]
    hoisted, rest = _split_globals(argv)
    if not rest and not hoisted:
        return ["--help"]
    if rest and rest[0] == "help":
        wanted = [w for w in rest[1:] if not w.startswith("-") and w != "help"]
        return [wanted[0], "--help"] if wanted else ["--help"]
    if rest and not rest[0].startswith("-"):
        return [rest[0], *hoisted, *rest[1:]]
    return [*hoisted, *rest]


def _split_globals(argv: list[str]) -> tuple[list[str], list[str]]:
    """(global options before the command, the line from the command on)."""
    hoisted: list[str] = []
    i = 0
    while i < len(argv):
        word = argv[i]
        if word in GLOBAL_FLAGS or _SHORT_FLAGS.fullmatch(word) or word.startswith(("--config=", "--log-format=")):
            hoisted.append(word)
        elif word in GLOBAL_WITH_VALUE and i + 1 < len(argv):
            hoisted += argv[i:i + 2]
            i += 1
        else:
            break
        i += 1
    return hoisted, argv[i:]


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Descriptions and examples as written, and each option's default where it has a telling
    one (not None, a flag's False, a counter's 0 or an empty list)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help
        default = action.default
        if (not text or not action.option_strings or "default" in text
                or default in (None, argparse.SUPPRESS, []) or isinstance(default, bool)
                or isinstance(action, argparse._CountAction)):
            return text
        return f"{text} (default: %(default)s)"


def overview(summaries: dict[str, str], width: int = 100) -> str:
    """The commands, by group, each with the first sentence of its help."""
    name_width = max(len(name) for name in summaries) + 2
    lines: list[str] = []
    for group, names in COMMAND_GROUPS.items():
        lines += ["", f"{group}:"]
        for name in names:
            first = " ".join(summaries[name].split()).split(". ")[0].rstrip(".")
            lines.append(textwrap.fill(first, width, initial_indent=f"  {name:<{name_width}}",
                                       subsequent_indent=" " * (name_width + 2)))
    return "\n".join(lines)
