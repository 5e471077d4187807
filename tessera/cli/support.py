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
    "tune": "tessera tune .tessera/scifact --json",
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
        from tessera.cli.version import version_line

        print(version_line(getattr(namespace, "config", None)))
        raise SystemExit(0)


def configure_logging(verbosity: int, log_format: str = "text") -> None:
    """-q: errors only; default: warnings; -v: info, Prefect's task-state lines included; -vv:
    debug, with every HTTP request the Prefect client makes. `log_format` json: one JSON object
    per line on stderr, with the trace and span ids of the work that logged it."""
    level = {-1: logging.ERROR, 0: logging.WARNING, 1: logging.INFO}.get(verbosity, logging.DEBUG)
    # Prefect reads its level at import, which comes later, so the environment says it.
    env.default_prefect_logging_level(logging.getLevelName(max(level, logging.INFO)
                                                           if verbosity > 0 else level))
    logging.basicConfig(level=level, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")
    if log_format == "json":
        from tessera.core.telemetry import JsonLines, TraceIds

        for handler in logging.getLogger().handlers:
            handler.setFormatter(JsonLines())
            handler.addFilter(TraceIds())
    if verbosity < 2:  # a line per request to the Prefect API would bury what -v is for
        for noisy in ("httpx", "httpcore"):
            logging.getLogger(noisy).setLevel(logging.WARNING)


def ingest_bar(console: Any = None) -> Any:
    """The ingest's progress bar: what the run is doing, files done of all listed (a total that
    does not move), documents and chunks so far, documents per second and time left."""
    from rich.progress import (
        BarColumn,
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

            elapsed = task.elapsed or 0.0
            docs = task.fields.get("documents", 0)
            return Text(f"{docs / elapsed:,.0f} docs/s" if docs and elapsed > 0 else "")

    class Files(TextColumn):
        def __init__(self) -> None:
            super().__init__("")

        def render(self, task: Any) -> Any:
            from rich.text import Text

            total = "?" if task.total is None else f"{task.total:,.0f}"  # before the listing
            return Text(f"{task.completed:,.0f}/{total} files")

    return Progress(TextColumn("{task.description:<13}"), BarColumn(), Files(),
                    TaskProgressColumn(), TextColumn("{task.fields[documents]:,} docs"),
                    TextColumn("{task.fields[chunks]:,} chunks"), Rate(), TextColumn("ETA"),
                    TimeRemainingColumn(), console=console, transient=True)


def bar_callback(bar: Any, job: Any) -> Any:
    """A `Progress` callback (tessera.ingest.context.Tick) that draws on `bar`'s task."""
    def update(tick: Any) -> None:
        bar.update(job, description=tick.phase, completed=tick.files_done,
                   total=tick.files_total or None, documents=tick.documents, chunks=tick.chunks)
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
