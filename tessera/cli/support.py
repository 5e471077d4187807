"""What the `tessera` command line needs besides its commands: an argument parser whose mistakes
are one line (with "did you mean"), `--version`, and the -v/-q logging set-up.

Cheap to import: `tessera --help`, `--version` and a mistyped command answer without loading
Prefect, the model or the store.
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import sys
from collections.abc import Callable
from typing import Any, NoReturn

from tessera.cli.preflight import did_you_mean
from tessera.core import env

EXAMPLES: dict[str, str] = {
    "ingest": "tessera ingest                      # every declared source\n"
              "  tessera ingest --source examples    # one source\n"
              "  tessera ingest ~/notes --ttl 7d     # a folder of your own, expiring in a week",
    "search": 'tessera search "why do tides happen" -k 3\n'
              "  tessera search --image photo.png --modality image",
    "status": "tessera status --last 10",
    "quarantine": "tessera quarantine --run 20261202T012400-1a2b3c4d",
    "prune": "tessera prune --dry-run",
    "marts": "tessera marts --docs",
    "quality": "tessera quality examples/quality --limit-queries 20",
    "nightly": "tessera nightly",
    "refresh-models": "tessera refresh-models",
    "alias": "tessera alias tessera tessera-v2",
    "optimize": "TESSERA_STORE__HNSW_M=32 tessera optimize --collection tessera",
    "serve": "PREFECT_API_URL=http://127.0.0.1:4200/api tessera serve",
    "demo": "tessera demo",
    "report": "tessera report                      # writes TESSERA_HOME/report/index.html\n"
              "  tessera report --serve --port 8765  # or serves it, with a live search box",
}


def wants_json(argv: list[str]) -> bool:
    """`--json` anywhere on the line (before parsing, so a parse error can answer in JSON)."""
    return "--json" in argv


def fail(message: str, as_json: bool, kind: str = "UsageError") -> NoReturn:
    """Refuse the command: one line on stderr (and one JSON object on stdout under --json)."""
    if as_json:
        print(json.dumps({"error": kind, "message": message}))
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(2)


def name_arg(declared: bool) -> Callable[[str], str]:
    """An argparse type for a collection or alias name: `declared` for a name the command
    creates (an alias), else any name the store may hold (versioned ones too)."""
    def check(value: str) -> str:
        from tessera.core.types import name_problem  # numpy: not for `tessera --help`

        problem = name_problem(value, declared)
        if problem:
            raise argparse.ArgumentTypeError(f"{value!r}: {problem}")
        return value
    return check


def positive_int(value: str) -> int:
    """An argparse type for a count of 1 or more (`-k 0` is the argument's mistake, named so)."""
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid int value: {value!r}") from None
    if number < 1:
        raise argparse.ArgumentTypeError(f"{value!r}: give 1 or more")
    return number


class Parser(argparse.ArgumentParser):
    """argparse, with mistakes answered in one line and with the nearest valid spelling."""

    json_errors = False
    argv: list[str] = []  # the command line being parsed (main() sets it)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # No prefix matching: `--sourc` is a typo to point out, not `--source` taken silently.
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        """One line, "did you mean", exit 2 (argparse prints the whole usage instead)."""
        fail(self._advise(message), self.json_errors)

    def _advise(self, message: str) -> str:
        bad_choice = re.search(r"invalid choice: '([^']*)' \(choose from (.*)\)", message)
        if bad_choice:
            word = bad_choice.group(1)
            choices = re.findall(r"'([^']*)'", bad_choice.group(2)) or [
                c.strip() for c in bad_choice.group(2).split(",")]
            what = "command" if "argument COMMAND" in message else "value"
            return (f"{word!r} is not a tessera {what}{did_you_mean(word, choices)}; "
                    f"choose from {', '.join(choices)} (tessera --help)")
        unknown = re.search(r"unrecognized arguments: (.*)", message)
        if unknown:
            words = unknown.group(1).split()
            flag = next((w for w in words if w.startswith("-")), words[0])
            options = self._all_options()
            return (f"unknown option {flag!r}{did_you_mean(flag.split('=')[0], options)}; "
                    f"see `tessera {self._command() or ''} --help`".replace("  ", " "))
        return f"{message} (see `tessera {self._command() or ''} --help`)".replace("  ", " ")

    def _all_options(self) -> list[str]:
        """Option strings of this parser and, for the command named on the line, its own."""
        options = [o for a in self._actions for o in a.option_strings]
        command = self._command()
        for action in self._actions:
            if isinstance(action, argparse._SubParsersAction) and command in action.choices:
                sub = action.choices[command]
                options += [o for a in sub._actions for o in a.option_strings]
        return options

    def _command(self) -> str | None:
        for action in self._actions:
            if isinstance(action, argparse._SubParsersAction):
                return next((w for w in Parser.argv if w in action.choices), None)
        return None


class VersionAction(argparse.Action):
    """`--version`: the version, the model, the runtime and the store kind, then exit 0."""

    def __init__(self, option_strings: list[str], dest: str = argparse.SUPPRESS,
                 default: str = argparse.SUPPRESS, help: str | None = None) -> None:  # noqa: A002
        super().__init__(option_strings, dest=dest, default=default, nargs=0, help=help)

    def __call__(self, parser: argparse.ArgumentParser, namespace: Any, values: Any,
                 option_string: str | None = None) -> None:
        print(version_line(getattr(namespace, "config", None)))
        raise SystemExit(0)


def version_line(config: str | None = None) -> str:
    """`tessera 0.1.0 · model ... · runtime ... · store ...` (from the config in force)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        ours = version("tessera")
    except PackageNotFoundError:  # pragma: no cover - a source tree without an install
        ours = "unknown"
    parts = [f"tessera {ours}", f"python {sys.version.split()[0]}"]
    try:
        from tessera.core.settings import load_settings

        s = load_settings(config)
    except Exception as exc:  # noqa: BLE001 - the version must print even with a broken config
        return " · ".join([*parts, f"config not loaded ({exc})"])
    emb = s.embedding
    runtime = (f"{emb.runtime} {emb.precision}" if emb.runtime == "openvino" else emb.runtime)
    store = s.store.kind if s.store.kind == "edge" else f"qdrant server {s.store.url or s.store.path}"
    parts += [f"model {s.model}", f"backend {emb.backend} ({runtime}, device {emb.device})",
              f"store {store}", f"home {s.home}"]
    return " · ".join(parts)


def configure_logging(verbosity: int) -> None:
    """-q: errors only; default: warnings; -v: info, Prefect's task-state lines included."""
    level = {-1: logging.ERROR, 0: logging.WARNING}.get(verbosity, logging.INFO)
    # Prefect reads its level at import, which comes later, so the environment says it.
    env.default_prefect_logging_level(logging.getLevelName(max(level, logging.INFO)
                                                           if verbosity > 0 else level))
    logging.basicConfig(level=level, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")


def ingest_bar(console: Any = None) -> Any:
    """The ingest's progress bar: documents done / expected, chunks embedded, documents per
    second and time left (rich's estimates over the recent updates)."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TaskProgressColumn,
        TextColumn,
        TimeRemainingColumn,
    )

    class Rate(TextColumn):
        def __init__(self) -> None:
            super().__init__("")

        def render(self, task: Any) -> Any:
            from rich.text import Text

            speed = task.finished_speed or task.speed
            return Text("" if speed is None else f"{speed:,.0f} docs/s")

    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TaskProgressColumn(), TextColumn("{task.fields[chunks]:,} chunks"), Rate(),
                    TextColumn("ETA"), TimeRemainingColumn(), console=console, transient=True)


def bar_callback(bar: Any, job: Any) -> Any:
    """A `Progress` callback (documents done, expected, chunks) that draws on `bar`'s task."""
    def update(done: int, total: int, chunks: int) -> None:
        bar.update(job, completed=done, total=total, chunks=chunks)
    return update


class route_logs:
    """While a progress bar is drawn, log records go through its console (never over the bar)."""

    def __init__(self, console: Any) -> None:
        self.console = console
        self.saved: list[logging.Handler] = []

    def __enter__(self) -> None:
        from rich.logging import RichHandler

        root = logging.getLogger()
        self.saved = list(root.handlers)
        handler = RichHandler(console=self.console, show_time=False, show_path=False)
        handler.setLevel(root.level)
        root.handlers = [handler]

    def __exit__(self, *exc: object) -> None:
        logging.getLogger().handlers = self.saved


def print_human(command: str, result: dict[str, Any]) -> bool:
    """Human output for the commands that have one; False for the generic key: value dump."""
    if command == "ingest" and "run_id" in result:
        from flows.runs import describe_ingest

        print(describe_ingest(result))
        return True
    if command == "prune" and "run_id" in result:
        from flows.runs import describe_prune

        print(describe_prune(result))
        return True
    if command == "status" and "collections" in result:
        _print_status(result)
        return True
    return False


def _print_status(result: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(width=None if sys.stdout.isatty() else 160)
    cols = Table(title=f"Collections in {result['home']}", title_justify="left")
    for name in ("collection", "model", "dim", "distance", "points", "aliases"):
        cols.add_column(name, no_wrap=True, justify="right" if name in ("dim", "points") else "left")
    aliases = result.get("aliases") or {}
    for c in result["collections"]:
        names = ", ".join(a for a, target in aliases.items() if target == c["name"])
        cols.add_row(c["name"], str(c["model"]), str(c["dimension"]), str(c["distance"]),
                     f"{c['points']:,}", names)
    console.print(cols)
    if result.get("unlisted"):
        console.print(f"Unlisted: {', '.join(result['unlisted'])}: {result['unlisted_fix']}",
                      style="yellow", markup=False)
    runs = Table(title="Last runs", title_justify="left")
    for name in ("run", "status", "started (UTC)", "s", "seen", "indexed", "unchanged",
                 "quarantined", "deleted"):
        runs.add_column(name, no_wrap=True,
                        justify="left" if name in ("run", "status", "started (UTC)") else "right")
    for r in result.get("last_runs") or []:
        style = "red" if r.get("status") in ("failed", "killed") else ("yellow" if r.get("status") == "failed_input" else "")
        runs.add_row(str(r["run_id"]), str(r["status"]), str(r["started_at"])[:19],
                     f"{r.get('seconds') or 0:.1f}", *(str(r.get(k) or 0) for k in
                                                      ("seen", "indexed", "unchanged", "quarantined",
                                                       "deleted")), style=style)
    console.print(runs)
