"""`tessera` command line. Every command takes --json and then prints exactly one JSON object."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tessera.env import apply_offline_defaults
from tessera.errors import PipelineError

Handler = Callable[[argparse.Namespace], dict[str, Any]]
COMMANDS: dict[str, Handler] = {}


def command(name: str) -> Callable[[Handler], Handler]:
    """Register a sub-command handler."""
    def wrap(fn: Handler) -> Handler:
        COMMANDS[name] = fn
        return fn
    return wrap


def _settings(args: argparse.Namespace) -> Any:
    if getattr(args, "settings", None) is None:
        from tessera.settings import load_settings

        args.settings = load_settings(args.config)
    return args.settings


def prepare_runtime(home: Path) -> None:
    """Environment for the libraries we drive: offline, quiet, Prefect's state under home."""
    apply_offline_defaults()
    prefect_home = Path(os.environ.setdefault("PREFECT_HOME", str(home / "prefect")))
    prefect_home.mkdir(parents=True, exist_ok=True)


def _interactive(args: argparse.Namespace) -> bool:
    return not args.json and sys.stderr.isatty() and not os.environ.get("CI")


@command("ingest")
def cmd_ingest(args: argparse.Namespace) -> dict[str, Any]:
    """Index new and changed documents."""
    from data_contracts import warm_up
    from flows import ingest

    warm_up()  # GE imports while Prefect creates the flow run

    def run() -> dict[str, Any]:
        # The flow builds its own settings from --config: deployments call it the same way.
        summary: dict[str, Any] = ingest.ingest_flow(
            config=args.config, sources=args.source or None, ttl=args.ttl, path=args.path)
        return summary

    if _interactive(args):
        from rich.progress import Progress

        with Progress(transient=True) as bar:
            job = bar.add_task("ingest", total=None)
            ingest.progress_hook = lambda done, total: bar.update(job, completed=done, total=total)
            return run()
    return run()


@command("search")
def cmd_search(args: argparse.Namespace) -> dict[str, Any]:
    """Search the index with text or an image."""
    from flows.search import search

    settings = _settings(args)
    image = Path(args.image).read_bytes() if args.image else None
    hits = search(settings, query=args.query, image=image, k=args.k, source=args.source,
                  modality=args.modality, collection=args.collection)
    return {"results": hits}


@command("status")
def cmd_status(args: argparse.Namespace) -> dict[str, Any]:
    """Collections, their models and sizes, and the last runs."""
    from flows.search import status

    return status(_settings(args), last=args.last)


@command("alias")
def cmd_alias(args: argparse.Namespace) -> dict[str, Any]:
    """Point an alias (what readers search) at a collection: the last step of a model change."""
    from flows.store import open_store, switch_alias

    store = open_store(_settings(args))
    try:
        return switch_alias(store, args.alias, args.collection)
    finally:
        store.close()


@command("marts")
def cmd_marts(args: argparse.Namespace) -> dict[str, Any]:
    """Build the dbt marts into TESSERA_HOME/warehouse.duckdb."""
    from flows.marts import build_marts, generate_docs

    result: dict[str, Any] = build_marts(_settings(args))
    if args.docs:
        result["docs"] = str(generate_docs(_settings(args)))
    return result


@command("quarantine")
def cmd_quarantine(args: argparse.Namespace) -> dict[str, Any]:
    """Quarantined records and why."""
    from flows.search import quarantine_rows

    rows = quarantine_rows(_settings(args), run_id=args.run)
    return {"count": len(rows), "rows": rows}


@command("prune")
def cmd_prune(args: argparse.Namespace) -> dict[str, Any]:
    """Delete points whose expires_at has passed."""
    from flows.prune import prune_flow

    result: dict[str, Any] = prune_flow(config=args.config, dry_run=args.dry_run)
    return result


@command("refresh-models")
def cmd_refresh_models(args: argparse.Namespace) -> dict[str, Any]:
    """Verify (and where reachable, fill) the model cache."""
    from flows.nightly import refresh_models_flow

    result: dict[str, Any] = refresh_models_flow(config=args.config)
    return result


@command("quality")
def cmd_quality(args: argparse.Namespace) -> dict[str, Any]:
    """Score retrieval quality on a BEIR-layout dataset."""
    from flows.quality import quality_flow

    result: dict[str, Any] = quality_flow(dataset=args.dataset, config=args.config,
                                          limit_queries=args.limit_queries)
    return result


@command("nightly")
def cmd_nightly(args: argparse.Namespace) -> dict[str, Any]:
    """Prune, refresh models, score quality sets, build marts."""
    from flows.nightly import nightly_flow

    result: dict[str, Any] = nightly_flow(config=args.config)
    return result


@command("serve")
def cmd_serve(args: argparse.Namespace) -> dict[str, Any]:
    """Serve every deployment (ingest per source, nightly) from this process."""
    from flows.nightly import serve_all

    serve_all(_settings(args), config=args.config)
    return {"served": True}


@command("demo")
def cmd_demo(args: argparse.Namespace) -> dict[str, Any]:
    """Ingest the sample corpus, run a few searches, print a summary."""
    from flows.demo import run_demo

    return run_demo(args.config, interactive=_interactive(args))


def build_parser() -> argparse.ArgumentParser:
    """The argument parser for every command."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", help="path to tessera.toml (default: $TESSERA_CONFIG or ./tessera.toml)")
    common.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    parser = argparse.ArgumentParser(prog="tessera", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("ingest", parents=[common], help=cmd_ingest.__doc__)
    p.add_argument("path", nargs="?", help="ingest this file or folder instead of the declared sources")
    p.add_argument("--source", action="append", help="only this declared source (repeatable)")
    p.add_argument("--ttl", help="expiry for this run's points, e.g. 7d, 12h, none")

    p = sub.add_parser("search", parents=[common], help=cmd_search.__doc__)
    p.add_argument("query", nargs="?", help="text to search for")
    p.add_argument("--image", help="search with this image instead of text")
    p.add_argument("-k", type=int, default=5, help="number of results")
    p.add_argument("--source", help="only results from this source")
    p.add_argument("--modality", choices=["text", "image"], help="only text or only image results")
    p.add_argument("--collection", help="search this collection (default: from config)")

    p = sub.add_parser("status", parents=[common], help=cmd_status.__doc__)
    p.add_argument("--last", type=int, default=5, help="how many recent runs to show")

    p = sub.add_parser("alias", parents=[common], help=cmd_alias.__doc__)
    p.add_argument("alias", help="the name readers use, e.g. the configured collection name")
    p.add_argument("collection", help="the collection it should point at")

    p = sub.add_parser("marts", parents=[common], help=cmd_marts.__doc__)
    p.add_argument("--docs", action="store_true", help="also write the offline dbt docs site")
    p = sub.add_parser("quarantine", parents=[common], help=cmd_quarantine.__doc__)
    p.add_argument("--run", help="only this run id")
    p = sub.add_parser("prune", parents=[common], help=cmd_prune.__doc__)
    p.add_argument("--dry-run", action="store_true", help="count what would be deleted, delete nothing")
    sub.add_parser("refresh-models", parents=[common], help=cmd_refresh_models.__doc__)
    p = sub.add_parser("quality", parents=[common], help=cmd_quality.__doc__)
    p.add_argument("dataset", help="folder with corpus.jsonl, queries.jsonl, qrels/test.tsv")
    p.add_argument("--limit-queries", type=int, default=None, help="score only the first N queries")
    sub.add_parser("nightly", parents=[common], help=cmd_nightly.__doc__)
    sub.add_parser("serve", parents=[common], help=cmd_serve.__doc__)
    sub.add_parser("demo", parents=[common], help=cmd_demo.__doc__)
    return parser


def _print_human(result: dict[str, Any]) -> None:
    if "results" in result:
        for i, hit in enumerate(result["results"], 1):
            text = " ".join(str(hit.get("text", "")).split())[:100]
            print(f"{i:>2}. {hit['score']:.3f}  {hit['doc_id']}  [{hit['source']}]  {text}")
        return
    for key, value in result.items():
        if isinstance(value, (list, dict)):
            value = json.dumps(value, default=str, indent=2)
        print(f"{key}: {value}")


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `tessera` console script."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        prepare_runtime(_settings(args).home)
        result = COMMANDS[args.command](args)
    except PipelineError as exc:
        if args.json:
            print(json.dumps({"error": type(exc).__name__, "message": str(exc)}))
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(result, default=str))
    elif args.command != "demo":
        _print_human(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
