"""The human form of each command's answer (without `--json`): tables for rows, a sentence for a
run, search hits as rank, title and readable scores. `--json` prints the same answer as one JSON
object and never comes here.

Rich is imported on first use: `tessera --help` and `--version` stay fast.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from typing import Any


def _console() -> Any:
    from rich.console import Console

    class Piped(Console):
        def on_broken_pipe(self) -> None:
            # Rich would exit 1; the CLI answers a reader that hung up with 141, as `git log |
            # head` does (tessera.cli.errors.reader_hung_up).
            self.quiet = True
            raise BrokenPipeError

    # A pipe or a file gets lines wide enough not to wrap ids; a terminal its own width.
    return Piped(width=None if sys.stdout.isatty() else 160)


def _table(title: str | None, columns: list[str], right: tuple[str, ...] = ()) -> Any:
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    for name in columns:
        table.add_column(name, justify="right" if name in right else "left",
                         overflow="fold")
    return table


def print_human(command: str, result: dict[str, Any]) -> None:
    """Print `result` for a person: the command's own form, else a key/value table."""
    printer = _PRINTERS.get(command)
    if printer is not None and printer(result):
        return
    _print_fields(result)


def _print_ingest(result: dict[str, Any]) -> bool:
    if "run_id" not in result:
        return False
    from flows.runs import describe_ingest

    print(describe_ingest(result))
    if result.get("quarantined"):
        print(f"See what was refused and why: tessera quarantine --run {result['run_id']}")
    return True


def _print_prune(result: dict[str, Any]) -> bool:
    if "run_id" not in result:
        return False
    from flows.runs import describe_prune

    print(describe_prune(result))
    return True


def _print_hits(result: dict[str, Any]) -> bool:
    """Each hit as rank, title and what it scored, then where it is and a line of its text."""
    if "results" not in result:
        return False
    from tessera.service.search import readable_score

    if not result["results"]:
        print(f"no results ({result.get('mode')} search of {result.get('collection')})")
    for hit in result["results"]:
        text = " ".join(str(hit.get("text") or "").split())
        where = hit.get("uri") or hit.get("doc_id")
        print(f"{hit['rank']:>2}. {hit.get('title') or hit['doc_id']}  ({readable_score(hit)})")
        print(f"    {where} — {text[:90] + '…' if len(text) > 90 else text}")
    return True


def _print_captions(result: dict[str, Any]) -> bool:
    """`IMAGE: caption` (or `IMAGE: error: why`), a line each: what a shell loop reads."""
    if "captions" not in result:
        return False
    for row in result["captions"]:
        print(f"{row['image']}: {row.get('caption') or 'error: ' + str(row.get('error'))}")
    return True


def _print_quarantine(result: dict[str, Any]) -> bool:
    if "rows" not in result:
        return False
    if not result["rows"]:
        print("Nothing is quarantined.")
        return True
    table = _table(f"{result['count']} quarantined record(s), newest first",
                   ["recorded (UTC)", "run", "source", "record", "check", "reason"])
    for r in result["rows"]:
        table.add_row(str(r.get("recorded_at"))[:19], str(r.get("run_id")), str(r.get("source")),
                      str(r.get("doc_id")), str(r.get("expectation") or ""), str(r.get("reason")))
    _console().print(table)
    return True


def _print_marts(result: dict[str, Any]) -> bool:
    if "models" not in result:
        return False
    print(f"Built {result['models']} models, {result['seeds']} seeds and ran {result['tests']} "
          f"tests into {result['warehouse']} in {result['seconds']:.1f} s ({result['status']}).")
    if result.get("failures"):
        table = _table("Warnings", ["node", "status", "message"])
        for f in result["failures"]:
            table.add_row(str(f["node"]), str(f["status"]), str(f["message"]))
        _console().print(table)
    if result.get("docs"):
        print(f"dbt docs: {result['docs']}")
    return True


def _print_status(result: dict[str, Any]) -> bool:
    if "collections" not in result:
        return False
    console = _console()
    cols = _table(f"Collections in {result['home']}",
                  ["collection", "model", "dim", "distance", "points", "aliases"],
                  right=("dim", "points"))
    aliases = result.get("aliases") or {}
    for c in result["collections"]:
        names = ", ".join(a for a, target in aliases.items() if target == c["name"])
        cols.add_row(c["name"], str(c["model"]), str(c["dimension"]), str(c["distance"]),
                     f"{c['points']:,}", names)
    console.print(cols)
    if result.get("unlisted"):
        console.print(f"Unlisted: {', '.join(result['unlisted'])}: {result['unlisted_fix']}",
                      style="yellow", markup=False)
    counts = ("seen", "indexed", "unchanged", "quarantined", "deleted")
    runs = _table("Last runs", ["run", "status", "started (UTC)", "s", *counts],
                  right=("s", *counts))
    for r in result.get("last_runs") or []:
        style = {"failed": "red", "killed": "red", "failed_input": "yellow"}.get(
            str(r.get("status")), "")
        runs.add_row(str(r["run_id"]), str(r["status"]), str(r["started_at"])[:19],
                     f"{r.get('seconds') or 0:.1f}", *(str(r.get(k) or 0) for k in counts),
                     style=style)
    console.print(runs)
    return True


def _print_fields(result: dict[str, Any]) -> None:
    """Any other answer: one row per key, nested values as compact JSON."""
    table = _table(None, ["field", "value"])
    for key, value in result.items():
        shown = json.dumps(value, default=str) if isinstance(value, (list, dict)) else str(value)
        table.add_row(str(key), shown)
    _console().print(table)


_PRINTERS: dict[str, Callable[[dict[str, Any]], bool]] = {
    "ingest": _print_ingest, "prune": _print_prune, "status": _print_status,
    "search": _print_hits, "caption": _print_captions, "quarantine": _print_quarantine,
    "marts": _print_marts,
}
