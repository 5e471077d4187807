"""Build the analysts' marts: `dbt build`, in a child process, into TESSERA_HOME/warehouse.duckdb.

dbt runs as its own process (the venv's dbt CLI, `python -m dbt.cli.main`): dbt in-process, beside
OpenVINO, Qdrant Edge, pyarrow and Prefect's threads, once took a whole test run down with a
segfault in its manifest write. A child that crashes, hangs past `marts.timeout_seconds` or fills
the disk fails only the build, with a MartsError that says which; no process of ours imports dbt.

DuckDB allows one writer per file and analysts may have the warehouse open at any time, so the
build never writes the live file. It holds an exclusive lock (TESSERA_HOME/locks/marts.lock),
builds into TESSERA_HOME/.marts-build/warehouse.duckdb, and renames that over the warehouse only
when every model and test passed. A reader opens either the previous warehouse or the new one,
never a half-built file; a failed build leaves the previous warehouse in place.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from tessera.core import telemetry
from tessera.core.env import child_env
from tessera.core.errors import MartsError, TransientError
from tessera.core.events import SCHEMAS, write_empty_tables
from tessera.core.fs import atomic_write_with, locked
from tessera.core.settings import Settings
from tessera.core.steps import Steps

logger = logging.getLogger(__name__)

DBT_PROJECT_DIR = Path(__file__).resolve().parents[2] / "dbt"
LOCK_TIMEOUT_SECONDS = 120.0

# The dbt profile reads these (dbt/profiles.yml); they are set only for the length of a build.
ENV_DUCKDB_PATH = "DBT_TESSERA_DUCKDB_PATH"
ENV_EVENTS_DIR = "DBT_TESSERA_EVENTS_DIR"
ENV_CONFIG_DIR = "DBT_TESSERA_CONFIG_DIR"

_SOURCE_CONFIG_SCHEMA = pa.schema(
    [
        ("source", pa.string()),
        ("kind", pa.string()),
        ("path", pa.string()),
        ("glob", pa.string()),
        ("modality", pa.string()),
        ("ttl", pa.string()),
        ("ttl_seconds", pa.int64()),
        ("schedule", pa.string()),
        # Seconds between two scheduled runs (null: unscheduled), for freshness per schedule.
        ("schedule_interval_seconds", pa.int64()),
        ("delete_missing", pa.bool_()),
        ("collection", pa.string()),
        ("snapshot_at", pa.timestamp("us", tz="UTC")),
    ]
)


class MartsBusyError(MartsError, TransientError):
    """Another marts build held the lock for longer than we were willing to wait (a retry,
    once that build is done, can succeed)."""


class MartsTimeoutError(MartsError):
    """dbt ran past `marts.timeout_seconds` and was stopped (not retried: it would hang again)."""


@telemetry.traced("marts build")
def build_marts(
    settings: Settings, select: str | None = None, *, lock_timeout: float = LOCK_TIMEOUT_SECONDS
) -> dict[str, Any]:
    """Run `dbt build` (optionally `--select`) and swap the result in as the warehouse."""
    started = time.monotonic()
    home = settings.home
    warehouse = settings.warehouse_path
    with _exclusive_lock(home / "locks" / "marts.lock", lock_timeout):
        _prepare_events(settings.events_dir)
        config_dir = _write_source_config(settings, home / "marts" / "config")
        # A partial build starts from the current warehouse so the marts it skips stay in it.
        seed = warehouse if select and warehouse.exists() else None
        build_db = _fresh_build_file(home / ".marts-build" / warehouse.name, seed)
        env = {
            ENV_DUCKDB_PATH: str(build_db),
            ENV_EVENTS_DIR: str(settings.events_dir),
            ENV_CONFIG_DIR: str(config_dir),
        }
        result = _invoke_dbt(_dbt_args("build", home, select), env, home,
                             settings.marts.timeout_seconds)
        summary = _summarize(result, home)
        if summary["errors"]:
            raise MartsError(_failure_message(summary["errors"], build_db, home))
        _durable_replace(build_db, warehouse)
    summary.pop("errors")
    summary.update(
        status="warn" if summary["failures"] else "success",
        warehouse=str(warehouse),
        seconds=round(time.monotonic() - started, 2),
    )
    logger.info("marts built into %s in %.1fs", warehouse, summary["seconds"])
    return summary


def generate_docs(settings: Settings, *, lock_timeout: float = LOCK_TIMEOUT_SECONDS) -> Path:
    """Write the dbt docs site as one offline HTML file; returns its path."""
    home = settings.home
    if not settings.warehouse_path.exists():
        raise MartsError(f"no warehouse at {settings.warehouse_path}; run `tessera marts` first")
    with _exclusive_lock(home / "locks" / "marts.lock", lock_timeout):
        # Read the catalog from a copy: the live file may be open in analysts' sessions.
        copy = _fresh_build_file(
            home / ".marts-build" / settings.warehouse_path.name, settings.warehouse_path
        )
        env = {
            ENV_DUCKDB_PATH: str(copy),
            ENV_EVENTS_DIR: str(settings.events_dir),
            ENV_CONFIG_DIR: str(home / "marts" / "config"),
        }
        result = _invoke_dbt(_dbt_args("docs", home, None) + ["--static"], env, home,
                             settings.marts.timeout_seconds)
        copy.unlink(missing_ok=True)
        if result.returncode != 0:
            raise MartsError(f"dbt docs generate failed (exit {result.returncode}): "
                             f"{result.last_error or 'no message'}; see {home}/marts/logs/dbt.log")
    return home / "marts" / "target" / "static_index.html"


def build_and_report(settings: Settings, steps: Steps, select: str | None = None
                     ) -> dict[str, Any]:
    """Rebuild the marts as one step (retried only while another build holds the lock), log
    the outcome, and publish it as the `marts-build` report."""
    summary: dict[str, Any] = steps.run("build-marts", build_marts, settings, select, io=True)
    logger.info("marts %s: %d models, %d tests, %d seeds in %.1fs -> %s", summary["status"],
                summary["models"], summary["tests"], summary["seeds"], summary["seconds"],
                summary["warehouse"])
    for failure in summary["failures"]:
        logger.warning("dbt %s %s: %s", failure["status"], failure["node"], failure["message"])
    steps.report("marts-build", _report(summary), "dbt build of the analysts' marts")
    return summary


def _report(summary: dict[str, Any]) -> str:
    warnings = "".join(f"\n- `{f['node']}` ({f['status']}): {f['message']}" for f in summary["failures"])
    return (f"## Marts build: {summary['status']}\n\n"
            f"{summary['models']} models, {summary['tests']} tests, {summary['seeds']} seeds in "
            f"{summary['seconds']} s into `{summary['warehouse']}`."
            + (f"\n\n### Warnings{warnings}" if warnings else ""))


def _exclusive_lock(path: Path, timeout: float) -> Any:
    """Hold the marts lock, waiting up to `timeout` seconds, then MartsBusyError."""
    def busy(holder: str, waited: float) -> MartsBusyError:
        return MartsBusyError(f"another marts build is running (pid {holder}); waited "
                              f"{waited:.0f}s for {path}. Let it finish and run `tessera marts` "
                              "again.")

    return locked(path, timeout, busy)


def _prepare_events(events_dir: Path) -> None:
    """Give dbt every table's schema, even before any run (and after SCHEMAS gains a column)."""
    write_empty_tables(events_dir)
    for table, schema in SCHEMAS.items():
        target = events_dir / table / "_schema.parquet"
        if not pq.read_schema(target).equals(schema, check_metadata=False):
            atomic_write_with(target, partial(pq.write_table, schema.empty_table()))


def schedule_interval(cron: str | None, now: datetime, tz: str) -> int | None:
    """The typical gap between a cron's runs (the median of its next 8), in seconds."""
    if not cron:
        return None
    from zoneinfo import ZoneInfo

    from cronsim import CronSim

    times = []
    for when in CronSim(cron, now.astimezone(ZoneInfo(tz))):
        times.append(when)
        if len(times) == 9:
            break
    gaps = sorted(int((b - a).total_seconds()) for a, b in zip(times, times[1:], strict=False))
    return gaps[len(gaps) // 2] if gaps else None


def _write_source_config(settings: Settings, config_dir: Path) -> Path:
    """Snapshot the declared sources for dim_sources (config is not in the events)."""
    now = datetime.now(UTC)
    rows = [
        {
            "source": s.name,
            "kind": s.kind,
            "path": str(s.path),
            "glob": s.glob,
            "modality": s.modality,
            "ttl": s.ttl,
            "ttl_seconds": s.ttl_seconds,
            "schedule": s.schedule,
            "schedule_interval_seconds": schedule_interval(s.schedule, now, settings.timezone),
            "delete_missing": s.delete_missing,
            "collection": settings.collection_for(s),
            "snapshot_at": now,
        }
        for s in settings.sources
    ]
    table = pa.Table.from_pylist(rows, schema=_SOURCE_CONFIG_SCHEMA)
    atomic_write_with(config_dir / "sources.parquet", lambda tmp: pq.write_table(table, tmp))
    return config_dir


def _fresh_build_file(build_db: Path, copy_from: Path | None) -> Path:
    """Clear leftovers of an earlier build, and start from a copy of `copy_from` if given."""
    # Same file name as the warehouse, so DuckDB's catalog name (the file stem) does not change
    # when the file is renamed into place.
    if build_db.parent.exists():
        shutil.rmtree(build_db.parent)
    build_db.parent.mkdir(parents=True)
    if copy_from is not None:
        shutil.copy2(copy_from, build_db)
    return build_db


def _dbt_args(command: str, home: Path, select: str | None) -> list[str]:
    args = [command] if command != "docs" else ["docs", "generate"]
    args += [
        "--project-dir", str(DBT_PROJECT_DIR),
        "--profiles-dir", str(DBT_PROJECT_DIR),
        # Keep dbt's artifacts out of the repo and inside this home's lock.
        "--target-path", str(home / "marts" / "target"),
        "--log-path", str(home / "marts" / "logs"),
        # Events as JSON lines on stdout (folded into our log), dbt's own log file beside.
        "--log-format", "json",
        "--log-level", "info",
        "--log-level-file", "info",
        "--no-use-colors",
        "--no-send-anonymous-usage-stats",
        "--no-version-check",
    ]
    if select:
        args += ["--select", select]
    return args


@dataclass
class DbtResult:
    """What one dbt command did: its exit code, its node results (from run_results.json) and
    the last error it logged."""

    returncode: int
    results: list[dict[str, Any]] = field(default_factory=list)
    last_error: str | None = None


def _invoke_dbt(args: list[str], env: dict[str, str], home: Path, timeout: float) -> DbtResult:
    """Run one dbt command in a child process of this interpreter; its log lines are ours."""
    run_results = home / "marts" / "target" / "run_results.json"
    run_results.unlink(missing_ok=True)  # a stale file would pass an earlier build off as this one
    command = [sys.executable, "-m", "dbt.cli.main", *args]
    try:
        child = subprocess.Popen(command, env=child_env(env), cwd=home,
                                 stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                 stderr=subprocess.STDOUT, text=True, errors="replace",
                                 start_new_session=True)
    except OSError as exc:
        raise MartsError(f"cannot start dbt ({exc.strerror}): {command[0]}; "
                         "reinstall with `make install`") from exc
    try:
        out, _ = child.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        _stop(child)
        raise MartsTimeoutError(
            f"dbt ran longer than marts.timeout_seconds = {timeout:g} s and was stopped; the "
            f"warehouse was left as it was. Its log: {home}/marts/logs/dbt.log") from None
    except BaseException:  # Ctrl-C, a cancelled flow: the build must not outlive us
        _stop(child)
        raise
    last_error = _fold_log(out)
    if child.returncode != 0 and "No space left on device" in out:
        free = shutil.disk_usage(home).free / 2**20
        raise MartsError(f"the disk holding {home} is full ({free:.0f} MiB free): dbt could not "
                         "write the build; the warehouse was left as it was. Free some space "
                         "and run `tessera marts` again")
    if child.returncode < 0:
        raise MartsError(f"dbt died with signal {signal.Signals(-child.returncode).name}; the "
                         f"warehouse was left as it was. Its log: {home}/marts/logs/dbt.log")
    return DbtResult(child.returncode, _read_results(run_results), last_error)


def _stop(child: subprocess.Popen[str]) -> None:
    """Kill dbt and anything it started (it leads its own process group), and reap it."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(child.pid, signal.SIGKILL)
    child.communicate()


def _fold_log(out: str) -> str | None:
    """Log dbt's JSON events through our logger (at info for its warnings and errors, which the
    build's own error repeats; debug for the rest); returns the last error's text, else the last
    line that was not JSON (a crash's own words)."""
    last_error = last_raw = None
    for line in out.splitlines():
        try:
            info = json.loads(line)["info"]
            level, msg = str(info.get("level", "info")), str(info.get("msg", "")).strip()
        except (ValueError, KeyError, TypeError):
            level, msg = "raw", line.strip()
        if not msg:
            continue
        if level == "error":
            last_error = msg
        elif level == "raw":
            last_raw = msg
        logger.log(logging.INFO if level in ("error", "warn") else logging.DEBUG, "dbt: %s", msg)
    return last_error or last_raw


def _read_results(path: Path) -> list[dict[str, Any]]:
    """The node results of dbt's run_results.json ([] when dbt wrote none, e.g. a parse error)."""
    try:
        return list(json.loads(path.read_text(encoding="utf-8")).get("results") or [])
    except (OSError, ValueError):
        return []


_KINDS = {"model": "models", "seed": "seeds", "test": "tests", "unit_test": "tests"}


def _summarize(result: DbtResult, home: Path) -> dict[str, Any]:
    """Count what dbt built and tested; split blocking errors from warnings."""
    summary: dict[str, Any] = {"models": 0, "tests": 0, "seeds": 0, "failures": [], "errors": []}
    for node in result.results:
        unique_id = str(node.get("unique_id", ""))
        kind = _KINDS.get(unique_id.split(".", 1)[0])
        if kind:
            summary[kind] += 1
        status = str(node.get("status"))
        if status in {"success", "pass", "skipped"}:
            continue
        entry = {"node": unique_id, "status": status, "message": node.get("message") or ""}
        summary["failures" if status == "warn" else "errors"].append(entry)
    if result.returncode != 0 and not summary["errors"]:
        message = result.last_error or f"dbt exited {result.returncode}"
        summary["errors"].append({"node": "dbt", "status": "error",
                                  "message": f"{message} (see {home}/marts/logs/dbt.log)"})
    return summary


def _failure_message(errors: list[dict[str, str]], build_db: Path, home: Path) -> str:
    lines = [f"  {e['node']} ({e['status']}): {e['message']}" for e in errors[:10]]
    more = f"\n  ... and {len(errors) - 10} more" if len(errors) > 10 else ""
    return (
        "dbt build failed; the warehouse was left as it was.\n" + "\n".join(lines) + more
        + f"\nThe failed build is at {build_db}; dbt's log is {home}/marts/logs/dbt.log."
    )


def _durable_replace(build_db: Path, warehouse: Path) -> None:
    """Rename the finished build over the warehouse: readers see the old file or the new one."""
    wal = build_db.with_name(build_db.name + ".wal")
    if wal.exists():
        raise MartsError(f"{build_db} still has a write-ahead log; the build did not close cleanly")
    with open(build_db, "rb") as handle:
        os.fsync(handle.fileno())
    warehouse.parent.mkdir(parents=True, exist_ok=True)
    os.replace(build_db, warehouse)
    dir_fd = os.open(warehouse.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
