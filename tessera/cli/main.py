"""`tessera` command line. Every command takes --json and then prints exactly one JSON object.

Jobs (ingest, prune, refresh-models, quality, nightly) run in this process as plain steps: no
Prefect server starts, and nothing the command starts outlives it. With `PREFECT_API_URL` set
they run as Prefect flows on that server instead, so they show up in its UI.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tessera.cli import errors as cli_errors
from tessera.cli import preflight, usage
from tessera.cli import support as cli_support
from tessera.cli.output import print_human
from tessera.core import env
from tessera.core.env import apply_offline_defaults
from tessera.core.errors import PipelineError, UsageError

Handler = Callable[[argparse.Namespace], dict[str, Any]]
COMMANDS: dict[str, Handler] = {}


def command(name: str) -> Callable[[Handler], Handler]:
    """Register a sub-command handler."""
    def wrap(fn: Handler) -> Handler:
        COMMANDS[name] = fn
        return fn
    return wrap


# Long-running commands: no root span of their own (each request or run is a trace).
SERVERS = frozenset({"api", "mcp", "serve"})


def _settings(args: argparse.Namespace) -> Any:
    if getattr(args, "settings", None) is None:
        from flows import config

        args.settings = config.load(args.config)
    return args.settings


def orchestrated() -> bool:
    """True when a Prefect server is configured: jobs then run as flows on it."""
    return env.prefect_api_url() is not None


def _flow_runtime(home: Path) -> None:
    """Prefect's state under the home, for a command that runs flows."""
    prefect_home = env.default_prefect_home(home / "prefect")
    prefect_home.mkdir(parents=True, exist_ok=True)


def _job(args: argparse.Namespace, plain: Callable[[Any], dict[str, Any]],
         flow: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """Run a job as plain steps here, or as a flow on the configured Prefect server."""
    if orchestrated():
        _flow_runtime(_settings(args).home)
        return flow()
    return plain(_settings(args))


def _interactive(args: argparse.Namespace) -> bool:
    return not args.json and sys.stderr.isatty() and not env.in_ci()


@command("ingest")
def cmd_ingest(args: argparse.Namespace) -> dict[str, Any]:
    """Index new and changed documents."""
    preflight.ingest_checks(_settings(args), args.source, args.ttl, args.path)
    from tessera.ingest.run import run_ingest

    def plain(settings: Any) -> dict[str, Any]:
        if not _interactive(args) or args.quiet:
            return run_ingest(settings, None, args.source, args.ttl, args.path,
                              verify=args.verify)
        with cli_support.ingest_bar() as bar, cli_support.route_logs(bar.console):
            job = bar.add_task("starting", total=None, documents=0, chunks=0)
            return run_ingest(settings, None, args.source, args.ttl, args.path,
                              progress=cli_support.bar_callback(bar, job), verify=args.verify)

    def flow() -> dict[str, Any]:
        from flows.ingest import ingest_flow

        return ingest_flow(config=args.config, sources=args.source, ttl=args.ttl, path=args.path,
                           verify=args.verify)

    return _job(args, plain, flow)


@command("search")
def cmd_search(args: argparse.Namespace) -> dict[str, Any]:
    """Search the index with text or an image."""
    from tessera.service.request_log import record_search
    from tessera.service.search import SearchQuery, run_search

    if (args.query is None) == (args.image is None):
        what = "not both" if args.image else 'e.g. tessera search "why do tides happen"'
        raise UsageError(f"give a text query or --image PATH, {what}")
    if args.image and not Path(args.image).is_file():
        raise UsageError(f"--image {args.image!r} is not a file; give the path of an image")
    image = Path(args.image).read_bytes() if args.image else None
    preflight.check_search(_settings(args), args.collection, args.source)
    timings: dict[str, float] = {}
    started = time.perf_counter()
    answer = run_search(_settings(args), SearchQuery(
        text=args.query, image=image, k=args.k, mode=args.mode, chunks=args.chunks,
        source=args.source, modality=args.modality, collection=args.collection), timings=timings)
    # Counted with the API's and MCP's searches (the dashboard's latency, fct_search_requests).
    record_search(_settings(args), "cli", answer, k=args.k, timings=timings, query=args.query,
                  latency_ms=(time.perf_counter() - started) * 1000)
    return answer


@command("caption")
def cmd_caption(args: argparse.Namespace) -> dict[str, Any]:
    """Caption images with the captioner (BLIP), through the caption cache."""
    from tessera.service.caption import NamedImage, caption_images

    missing = [p for p in args.images if not Path(p).is_file()]
    if missing:  # refused before the model loads
        raise UsageError(f"{', '.join(missing)}: no such file; give `tessera caption` image files")
    images = [NamedImage(p, Path(p).read_bytes()) for p in args.images]
    result = caption_images(_settings(args), images, args.captioner)
    _some_captioned(result)
    return result


def _some_captioned(result: dict[str, Any]) -> None:
    """Refuse a caption run where every image failed (some failing is a result: exit 0).
    The checks turned them all away: the input's fault (UsageError). Else the captioner failed
    on images that passed them: a CaptionError, which names the model's fault."""
    rows = result["captions"]
    if not rows or result["failed"] < len(rows):
        return
    why = "; ".join(f"{r['image']}: {r['error']}" for r in rows[:3])
    why += f"; and {len(rows) - 3} more" if len(rows) > 3 else ""
    if result["refused"] == len(rows):
        raise UsageError(f"no image was captioned, every file failed the image checks: {why}")
    from models.captioning import CaptionError

    raise CaptionError(f"the captioner ({result['captioner']}) captioned none of the images: {why}")


@command("status")
def cmd_status(args: argparse.Namespace) -> dict[str, Any]:
    """Collections, their models and sizes, and the last runs."""
    from tessera.service.status import status

    preflight.check_store(_settings(args))
    return status(_settings(args), last=args.last)


@command("alias")
def cmd_alias(args: argparse.Namespace) -> dict[str, Any]:
    """Point an alias (what readers search) at a collection: the last step of a model change."""
    from tessera.store import open_store, switch_alias

    store = open_store(_settings(args))
    try:
        return switch_alias(store, args.alias, args.collection)
    finally:
        store.close()


@command("backfill-sparse")
def cmd_backfill_sparse(args: argparse.Namespace) -> dict[str, Any]:
    """Add BM25 sparse vectors to a collection built without them (from payload text; no model)."""
    from tessera.jobs.backfill import run_backfill_sparse

    return run_backfill_sparse(_settings(args), args.collection, args.batch_size)


@command("optimize")
def cmd_optimize(args: argparse.Namespace) -> dict[str, Any]:
    """Rebuild a collection's HNSW graph with store.hnsw_m and store.hnsw_ef_construct (after
    changing them, or for a collection built before the graph was on)."""
    from tessera.jobs.optimize import run_optimize

    return run_optimize(_settings(args), args.collection)


@command("migrate")
def cmd_migrate(args: argparse.Namespace) -> dict[str, Any]:
    """Move an alias to a new model or settings: build, score against live, switch (or roll back)."""
    from tessera.jobs.migration.job import run_migrate, run_rollback

    def plain(settings: Any) -> dict[str, Any]:
        if args.rollback:
            return run_rollback(settings, args.alias)
        return run_migrate(settings, args.alias, args.model, args.set, args.dry_run)

    def flow() -> dict[str, Any]:
        from flows.migrate import migrate_flow

        return migrate_flow(alias=args.alias, config=args.config, model=args.model,
                            set=args.set, dry_run=args.dry_run, rollback=args.rollback)

    if args.rollback and (args.model or args.set or args.dry_run):
        from tessera.core.errors import UsageError

        raise UsageError("--rollback takes only --alias: it points the alias back where the "
                         "last migration took it from")
    return _job(args, plain, flow)


@command("marts")
def cmd_marts(args: argparse.Namespace) -> dict[str, Any]:
    """Build the dbt marts into TESSERA_HOME/warehouse.duckdb."""
    from tessera.jobs.marts import build_marts, generate_docs

    result: dict[str, Any] = build_marts(_settings(args))
    if args.docs:
        result["docs"] = str(generate_docs(_settings(args)))
    return result


@command("quarantine")
def cmd_quarantine(args: argparse.Namespace) -> dict[str, Any]:
    """Quarantined records and why."""
    from tessera.service.status import quarantine_rows

    preflight.check_run(_settings(args), args.run)
    rows = quarantine_rows(_settings(args), run_id=args.run)
    return {"count": len(rows), "rows": rows}


@command("prune")
def cmd_prune(args: argparse.Namespace) -> dict[str, Any]:
    """Delete points whose expires_at has passed."""
    preflight.check_store(_settings(args))
    from tessera.jobs.prune import run_prune

    def flow() -> dict[str, Any]:
        from flows.prune import prune_flow

        return prune_flow(config=args.config, dry_run=args.dry_run)

    return _job(args, lambda s: run_prune(s, dry_run=args.dry_run), flow)


@command("refresh-models")
def cmd_refresh_models(args: argparse.Namespace) -> dict[str, Any]:
    """Verify (and where reachable, fill) the model cache."""
    from tessera.jobs.model_cache import run_refresh_models

    def flow() -> dict[str, Any]:
        from flows.nightly import refresh_models_flow

        return refresh_models_flow(config=args.config)

    return _job(args, run_refresh_models, flow)


@command("quality")
def cmd_quality(args: argparse.Namespace) -> dict[str, Any]:
    """Score retrieval quality on a BEIR-layout dataset."""
    preflight.check_store(_settings(args))
    preflight.check_backend(_settings(args))
    from tessera.jobs.quality import run_quality

    def flow() -> dict[str, Any]:
        from flows.quality import quality_flow

        return quality_flow(dataset=args.dataset, config=args.config,
                            limit_queries=args.limit_queries)

    return _job(args, lambda s: run_quality(s, args.dataset, limit_queries=args.limit_queries),
                flow)


@command("tune")
def cmd_tune(args: argparse.Namespace) -> dict[str, Any]:
    """Learn search settings on a labelled set's train split; keep them if its test split agrees."""
    preflight.check_store(_settings(args))
    preflight.check_backend(_settings(args))
    from tessera.jobs.tune import run_tune

    def flow() -> dict[str, Any]:
        from flows.tune import tune_flow

        return tune_flow(dataset=args.dataset, config=args.config, name=args.name)

    return _job(args, lambda s: run_tune(s, args.dataset, name=args.name), flow)


@command("nightly")
def cmd_nightly(args: argparse.Namespace) -> dict[str, Any]:
    """Prune, refresh models, score quality sets, build marts."""
    preflight.check_store(_settings(args))
    def flow() -> dict[str, Any]:
        from flows.nightly import nightly_flow

        return nightly_flow(config=args.config)

    return _job(args, _plain_nightly, flow)


def _plain_nightly(settings: Any) -> dict[str, Any]:
    from tessera.core.steps import PlainSteps
    from tessera.jobs.marts import build_and_report
    from tessera.jobs.model_cache import run_refresh_models
    from tessera.jobs.nightly import NightlySteps, run_nightly
    from tessera.jobs.prune import run_prune
    from tessera.jobs.quality import run_quality

    steps = PlainSteps()
    return run_nightly(settings, NightlySteps(
        prune=lambda: run_prune(settings, steps),
        refresh_models=lambda: run_refresh_models(settings, steps),
        quality=lambda qs: run_quality(settings, str(qs.path), steps, name=qs.name),
        marts=lambda: build_and_report(settings, steps)))


@command("serve")
def cmd_serve(args: argparse.Namespace) -> dict[str, Any]:
    """Serve every deployment (ingest per source, nightly) from this process."""
    from flows.deployments import serve_all

    _flow_runtime(_settings(args).home)
    serve_all(_settings(args), config=args.config)
    return {"served": True}


@command("api")
def cmd_api(args: argparse.Namespace) -> dict[str, Any]:
    """Serve the search API (HTTP) with the store and models held open."""
    from tessera.service.server import serve_api

    serve_api(_settings(args), args.host, args.port, no_auth=args.no_auth)
    return {"served": True}


@command("mcp")
def cmd_mcp(args: argparse.Namespace) -> dict[str, Any]:
    """Serve the MCP server for agents (tools: search, get_document)."""
    from tessera.service.mcp_server import serve_mcp

    serve_mcp(_settings(args), args.transport, args.host, args.port)
    return {}  # stdout is the protocol's: print nothing after the client hangs up


@command("demo")
def cmd_demo(args: argparse.Namespace) -> dict[str, Any]:
    """Ingest the sample corpus, run a few searches, print a summary."""
    from tessera.cli.demo import run_demo

    return run_demo(_settings(args))


@command("report")
def cmd_report(args: argparse.Namespace) -> dict[str, Any]:
    """A web page of the index: search, freshness per schedule, quality, volume, latency."""
    settings = _settings(args)
    if not args.serve:
        from tessera.service.web import write_report

        out = Path(args.out) if args.out else settings.home / "report" / "index.html"
        return {"report": str(write_report(settings, out))}
    from tessera.service.server import check_exposure, listen, serve_report

    check_exposure(args.host, keyed=bool(settings.api.key_list()))  # before the store opens
    preflight.check_store(settings)
    sock = listen(args.host, args.port)
    url = f"http://{args.host}:{sock.getsockname()[1]}/"
    print(f"serving the report on {url} (Ctrl-C stops)", file=sys.stderr, flush=True)
    serve_report(settings, sock)  # the search service's app, with the page at /
    return {"served": url}


def build_parser() -> argparse.ArgumentParser:
    """The argument parser for every command."""
    common = _common_options()
    summaries = {name: fn.__doc__ or "" for name, fn in COMMANDS.items()}
    parser = cli_support.Parser(
        prog="tessera", usage="%(prog)s [options] COMMAND [command options]",
        description=f"{__doc__}{usage.overview(summaries)}", parents=[common],
        epilog="`tessera help COMMAND` (or `tessera COMMAND --help`) shows a command's options "
               "and an example.\nThe options above go before or after the command: "
               "`tessera --json status` is `tessera status --json`.",
        formatter_class=usage.HelpFormatter)
    parser.add_argument("--version", action=cli_support.VersionAction,
                        help="print the version, model, runtime and store kind, then exit")
    add = _subcommands(parser, common)
    # In this order: `tessera COMMAND`'s did-you-mean lists them so (--help lists usage's groups).
    _add_ingest_and_search(add)
    _add_collection_commands(add)
    _add_job_commands(add)
    _add_server_commands(add)
    for name in ("refresh-models", "nightly", "serve", "demo"):
        add(name)
    _add_help(parser)
    return parser


def _add_help(parser: argparse.ArgumentParser) -> None:
    """`tessera help [COMMAND]`: answered by usage.normalise before parsing, and listed among
    the commands so that a typo of it gets a did-you-mean."""
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    sub.add_parser("help", description="`tessera help` lists the commands; `tessera help "
                   "COMMAND` is `tessera COMMAND --help`.").add_argument(
                       "topic", nargs="?", metavar="COMMAND")


AddCommand = Callable[[str], argparse.ArgumentParser]


def _common_options() -> cli_support.Parser:
    """The options every command takes (a parent parser)."""
    common = cli_support.Parser(add_help=False)
    common.add_argument("--config", metavar="PATH", help="path to tessera.toml (default: $TESSERA_CONFIG or ./tessera.toml)")
    common.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    common.add_argument("-v", "--verbose", action="count", default=0,
                        help="more output: -v adds info logs and Prefect's task-state lines, "
                             "-vv debug logs and each request to the Prefect API")
    common.add_argument("-q", "--quiet", action="store_true",
                        help="errors only: no progress bar, no summary")
    common.add_argument("--log-format", choices=["text", "json"], default="text",
                        help="logs on stderr as text, or one JSON object per line with the "
                             "trace id of the work that logged it")
    return common


def _subcommands(parser: argparse.ArgumentParser, common: cli_support.Parser) -> AddCommand:
    """The parser's sub-commands, as a function that adds one: its handler's docstring as help,
    its example as epilog, the common options."""
    # The listing is the description's (grouped), not argparse's one brace blob.
    sub = parser.add_subparsers(dest="command", required=True, parser_class=cli_support.Parser,
                                metavar="COMMAND", help=argparse.SUPPRESS, prog=parser.prog)

    def add(name: str) -> argparse.ArgumentParser:
        doc = COMMANDS[name].__doc__
        return sub.add_parser(name, parents=[common], help=doc, description=doc,
                              epilog="example:\n  " + cli_support.EXAMPLES.get(name, f"tessera {name}"),
                              formatter_class=usage.HelpFormatter)
    return add


def _add_ingest_and_search(add: AddCommand) -> None:
    """ingest, search, caption, status."""
    p = add("ingest")
    p.add_argument("path", nargs="?", help="ingest this file or folder instead of the declared sources")
    p.add_argument("--source", action="append", help="only this declared source (repeatable)")
    p.add_argument("--ttl", help="expiry for this run's points, e.g. 7d, 12h, none")
    p.add_argument("--verify", action="store_true",
                   help="read and hash every file, even one whose size, mtime and inode are unchanged")
    p = add("search")
    p.add_argument("query", nargs="?", help="text to search for")
    p.add_argument("--image", help="search with this image instead of text")
    p.add_argument("-k", type=cli_support.positive_int, default=5, help="number of results")
    p.add_argument("--source", help="only results from this source")
    p.add_argument("--modality", choices=["text", "image"], help="only text or only image results")
    p.add_argument("--collection", type=cli_support.name_arg(declared=False),
                   help="search this collection (default: from config)")
    p.add_argument("--mode", choices=["dense", "sparse", "hybrid"],
                   help="dense (model), sparse (BM25) or hybrid (both fused); default: search.mode")
    p.add_argument("--chunks", action="store_true",
                   help="raw chunk hits instead of one result (its best chunk) per document")
    p = add("caption")
    p.add_argument("images", nargs="+", metavar="IMAGE", help="png, jpeg, webp or gif files")
    p.add_argument("--captioner", help="a model of kind captioner (default: "
                   "blip-image-captioning-base)")
    add("status").add_argument("--last", type=int, default=5, help="how many recent runs to show")


def _add_collection_commands(add: AddCommand) -> None:
    """alias, backfill-sparse, optimize, migrate."""
    p = add("alias")
    p.add_argument("alias", type=cli_support.name_arg(declared=True),
                   help="the name readers use, e.g. the configured collection name")
    p.add_argument("collection", type=cli_support.name_arg(declared=False),
                   help="the collection it should point at")
    p = add("backfill-sparse")
    p.add_argument("--collection", type=cli_support.name_arg(declared=False),
                   help="the collection (or alias) to backfill (default: from config)")
    p.add_argument("--batch-size", type=int, default=512, help="points per write")
    add("optimize").add_argument("--collection", type=cli_support.name_arg(declared=False),
                                 help="the collection (or alias) to rebuild (default: from config)")
    p = add("migrate")
    # Any store name: a versioned one gets migrate's own advice (give the part before "--").
    p.add_argument("--alias", required=True, type=cli_support.name_arg(declared=False),
                   help="the name readers use, e.g. tessera")
    p.add_argument("--model", help="the model to move to (default: the configured one)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="a setting to change, e.g. chunking.overlap=48 (repeatable)")
    p.add_argument("--dry-run", action="store_true", help="say what would be built; build nothing")
    p.add_argument("--rollback", action="store_true",
                   help="point the alias back at the collection the last migration replaced")


def _add_job_commands(add: AddCommand) -> None:
    """marts, quarantine, prune, quality, tune."""
    add("marts").add_argument("--docs", action="store_true", help="also write the offline dbt docs site")
    add("quarantine").add_argument("--run", help="only this run id")
    add("prune").add_argument("--dry-run", action="store_true",
                              help="count what would be deleted, delete nothing")
    p = add("quality")
    p.add_argument("dataset", help="folder with corpus.jsonl, queries.jsonl, qrels/test.tsv")
    p.add_argument("--limit-queries", type=int, default=None, help="score only the first N queries")
    p = add("tune")
    p.add_argument("dataset", help="folder with corpus.jsonl, queries.jsonl, qrels/train.tsv and "
                   "qrels/test.tsv")
    p.add_argument("--name", default=None,
                   help="the set's name in events and marts (default: the folder's name)")


def _add_server_commands(add: AddCommand) -> None:
    """api, mcp, report."""
    p = add("api")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: loopback)")
    p.add_argument("--port", type=int, default=8000, help="port to listen on (0: any free port)")
    p.add_argument("--no-auth", action="store_true",
                   help="serve without API keys (loopback addresses only)")
    p = add("mcp")
    p.add_argument("--transport", choices=["stdio", "http"], default="stdio",
                   help="stdio (an agent starts this command) or streamable HTTP")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on, with --transport http (default: loopback)")
    p.add_argument("--port", type=int, default=8001,
                   help="port to listen on, with --transport http")
    p = add("report")
    p.add_argument("--out", help="where to write the page (default: TESSERA_HOME/report/index.html)")
    p.add_argument("--serve", action="store_true", help="serve the page, with a working search box")
    p.add_argument("--host", default="127.0.0.1", help="address to serve on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8765, help="port to serve on (0: any free port)")


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `tessera` console script."""
    apply_offline_defaults()
    argv = usage.normalise(sys.argv[1:] if argv is None else argv)
    cli_support.Parser.argv = argv
    cli_support.Parser.json_errors = cli_support.wants_json(argv)
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # --help, --version or a mistake: already printed
        code = int(exc.code or 0)
        return _answer(lambda: code)
    except BrokenPipeError:
        return cli_errors.reader_hung_up()
    cli_support.configure_logging(-1 if args.quiet else args.verbose, args.log_format)
    try:
        result = _run(args)
    except PipelineError as exc:
        refused = exc
        return _answer(lambda: _refuse(args, refused))
    return _answer(lambda: _print_result(args, result))


def _run(args: argparse.Namespace) -> dict[str, Any]:
    """The command's result. An OSError that is a state of the machine (a read-only or full disk,
    a quota, a permission) is refused like a mistake; any other OSError is a bug, and shows."""
    try:
        with _command_span(args):
            return COMMANDS[args.command](args)
    except OSError as exc:
        home = getattr(getattr(args, "settings", None), "home", None)
        refusal = cli_errors.storage_error(exc, args.command, home)
        if refusal is None:
            raise
        raise refusal from exc


@contextmanager
def _command_span(args: argparse.Namespace) -> Iterator[None]:
    """The command as the root span of its trace (a search, an ingest run and their steps are
    its children); exported as `[telemetry]` and the OTEL_* variables say. A server (api, mcp,
    serve, report --serve) makes a trace per request or run instead."""
    if args.command in SERVERS or getattr(args, "serve", False):
        yield
        return
    from tessera.core import telemetry

    telemetry.setup(_settings(args).telemetry, role="cli")
    try:
        with telemetry.span(f"tessera {args.command}", command=args.command):
            yield
    finally:
        telemetry.shutdown()


def _answer(print_answer: Callable[[], int]) -> int:
    """Print the answer and flush it here, where a reader that hung up (`| head`) can still be
    answered quietly (at exit, Python would print "Exception ignored" and exit 120)."""
    try:
        code = print_answer()
        sys.stdout.flush()
    except BrokenPipeError:
        return cli_errors.reader_hung_up()
    return code


def _refuse(args: argparse.Namespace, exc: PipelineError) -> int:
    """One line on stderr (and one JSON object under --json); exit 2."""
    if args.json:
        # A refused migration prints its decision record (metrics, reason), not just a message.
        print(json.dumps(getattr(exc, "result", None) or preflight.error_object(exc), default=str))
    print(f"error: {exc}", file=sys.stderr)
    return 2


def _print_result(args: argparse.Namespace, result: dict[str, Any]) -> int:
    """The result: one JSON object under --json, else the command's human form; exit 0."""
    if args.json:
        print(json.dumps(result, default=str))
    elif args.command != "demo" and not args.quiet:
        print_human(args.command, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
