"""A state of the machine is not a bug: a read-only home, a full disk and a reader that hung up
get one line on stderr (one JSON object under --json) from every command, never a traceback.

Each command runs as a real `tessera` process (`python -m tessera.cli.main`), the way a user runs it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.support.machine import run_cli
from tests.support.paths import EXAMPLES, REPO

# Long-running servers: they listen until stopped, so a walk cannot wait for their answer. Their
# start-up on a read-only home is the store's and the report's, which the walk covers.
SERVERS = {"serve", "api", "mcp"}
# Arguments a command needs to get past its parser and reach the home. A command missing here
# (a new one) still runs, with none: the walk covers it anyway.
ARGS: dict[str, list[list[str]]] = {
    "search": [["tides"]],
    "caption": [[str(EXAMPLES / "tides.txt")]],
    "alias": [["test", "test"]],
    "migrate": [["--alias", "test", "--dry-run"], ["--alias", "test", "--rollback"]],
    "prune": [[], ["--dry-run"]],
    "quality": [[str(REPO / "examples" / "quality"), "--limit-queries", "2"]],
    "report": [[]],  # not --serve: a server (see SERVERS)
}


@contextmanager
def _read_only(folder: Path) -> Iterator[Path]:
    """`folder` bind-mounted read-only over itself: EROFS for every write, root's included
    (chmod stops no write by root, and the tests run as root)."""
    if os.geteuid() != 0:
        pytest.skip("a read-only bind mount needs root; CI runs as root")
    subprocess.run(["mount", "--bind", str(folder), str(folder)], check=True)
    try:
        subprocess.run(["mount", "-o", "remount,ro,bind", str(folder)], check=True)
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], check=False)


def _problems(argv: list[str], done: subprocess.CompletedProcess[str]) -> list[str]:
    """What is wrong with a command's answer to a state of the machine (empty: nothing)."""
    where = f"tessera {' '.join(argv)}: exit {done.returncode}"
    found = []
    if done.returncode not in (0, 2):
        found.append(f"{where}, not 0 or 2")
    if "Traceback" in done.stderr:
        found.append(f"{where}, a traceback: {done.stderr[-1500:]}")
    lines = done.stdout.strip().splitlines()
    try:
        answer = json.loads(lines[0]) if len(lines) == 1 else None
    except ValueError:
        answer = None
    if not isinstance(answer, dict):
        found.append(f"{where}, not one JSON object on stdout: {done.stdout[-500:]!r}")
    elif done.returncode == 2:
        last = (done.stderr.strip().splitlines() or [""])[-1]
        if not ({"error", "message"} <= set(answer) and last == f"error: {answer['message']}"):
            found.append(f"{where}, the refusal is not one error line and its JSON: "
                         f"{answer} / {last!r}")
    return found


def test_every_command_answers_a_read_only_home_without_a_traceback(
        make_config: Callable[..., Path], corpus: Path, tmp_path: Path) -> None:
    from tessera.cli.main import COMMANDS
    from tessera.core.settings import load_settings
    from tessera.ingest.run import run_ingest

    config = make_config(sources=[{"name": "docs", "path": str(corpus)}])
    settings = load_settings(config)
    assert run_ingest(settings)["indexed"] == 9  # the home holds an index before it turns read-only
    walked, problems = [], []
    with _read_only(settings.home):
        with pytest.raises(OSError, match="Read-only file system"):
            (settings.home / "probe").write_text("")  # the state is real, for root too
        for name in COMMANDS:
            if name in SERVERS:
                continue
            for extra in ARGS.get(name, [[]]):
                argv = [name, *extra, "--config", str(config), "--json"]
                problems += _problems(argv, run_cli(*argv, cwd=REPO))
                walked.append(name)
    assert not problems, "\n".join(problems)
    assert set(walked) == set(COMMANDS) - SERVERS


def test_a_read_only_home_is_named_with_what_to_do(
        make_config: Callable[..., Path], corpus: Path) -> None:
    from tessera.core.settings import load_settings
    from tessera.ingest.run import run_ingest

    config = make_config(sources=[{"name": "docs", "path": str(corpus)}])
    settings = load_settings(config)
    run_ingest(settings)
    with _read_only(settings.home):
        done = run_cli("prune", "--config", str(config), "--json", cwd=REPO)
        human = run_cli("prune", "--config", str(config), cwd=REPO)
    assert done.returncode == 2 and human.returncode == 2, done.stderr[-2000:]
    answer = json.loads(done.stdout)
    assert answer["error"] == "StorageError" and answer["path"].startswith(str(settings.home))
    assert "read-only" in answer["message"] and "TESSERA_HOME" in answer["message"]
    # The last line (before it, the store may warn that it reads a private copy).
    assert human.stdout == "" and human.stderr.strip().splitlines()[-1] == f"error: {answer['message']}"


def test_a_reader_that_hangs_up_ends_the_command_quietly(
        make_config: Callable[..., Path], corpus: Path) -> None:
    """`tessera quarantine --json | head -c 5`, with the reader gone before the answer comes."""
    from tessera.core.settings import load_settings
    from tessera.ingest.run import run_ingest

    (corpus / "empty.txt").write_text("")  # one quarantined record, so there is a row to print
    config = make_config(sources=[{"name": "docs", "path": str(corpus)}])
    run_ingest(load_settings(config))
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    for args in (["quarantine", "--json"], ["quarantine"], ["status", "--json"]):
        child = subprocess.Popen([sys.executable, "-m", "tessera.cli.main", *args, "--config",
                                  str(config)], env=env, cwd=REPO, stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE)
        assert child.stdout is not None and child.stderr is not None
        child.stdout.close()  # the reader hangs up before the command writes its answer
        err = child.stderr.read().decode()
        child.stderr.close()
        code = child.wait(timeout=120)
        # 141 = 128 + SIGPIPE: what a shell reports for `git log | head`, and `gh ... | head`.
        assert code == 141, (args, code, err[-2000:])
        assert "Traceback" not in err and "BrokenPipe" not in err and "Exception ignored" not in err


# ------------------------------------------------------------------ an ingest killed mid-run


def _unfinished_run(events_dir: Path, pid: int, documents: int, start: datetime,
                    run_id: str | None = None) -> str:
    """The events an ingest leaves when it dies before its summary: the start row (with the
    host and pid that ran it), then a batch and its documents, written by the real event log."""
    import socket

    from tessera.core.events import EventLog, new_run_id

    log = EventLog(events_dir, run_id or new_run_id())
    log.add("ingest_batches", source="docs", stage="start", batch_index=-1, items=documents,
            seconds=0.0, recorded_at=start, host=socket.gethostname(), pid=pid)
    log.flush()
    log.add("ingest_batches", source="docs", stage="embed", batch_index=0, items=documents,
            seconds=4.0, recorded_at=start + timedelta(seconds=12))
    for i in range(documents):
        log.add("documents_indexed", source="docs", collection="test", doc_id=f"docs/{i}.txt",
                outcome="indexed", modality="text", content_hash=str(i), chunk_count=2, bytes=10,
                recorded_at=start + timedelta(seconds=12))
    log.flush()
    return log.run_id


def test_status_lists_a_killed_ingest_as_killed_and_a_live_one_as_running(
        make_config: Callable[..., Path]) -> None:
    from tessera.core.events import utcnow
    from tessera.core.settings import load_settings
    from tessera.service.status import status

    settings = load_settings(make_config())
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    killed = _unfinished_run(settings.events_dir, int(gone.stdout), documents=3,
                             start=datetime(2026, 12, 1, 9, 0, tzinfo=UTC))
    # Started after this process did: a run this process could be running.
    running = _unfinished_run(settings.events_dir, os.getpid(), documents=1, start=utcnow())
    # This process, but a run older than it: the pid was handed out again after that run died.
    reused = _unfinished_run(settings.events_dir, os.getpid(), documents=1,
                             start=datetime(2026, 1, 1, tzinfo=UTC))
    rows = {r["run_id"]: r for r in status(settings, last=5)["last_runs"]}
    assert rows[killed]["status"] == "killed" and rows[running]["status"] == "running"
    assert rows[reused]["status"] == "killed"
    assert (rows[killed]["indexed"], rows[killed]["seen"], rows[killed]["chunks_embedded"]) == (3, 3, 6)
    assert rows[killed]["seconds"] == 12.0
    assert str(rows[killed]["started_at"]).startswith("2026-12-01 09:00:00")


def test_status_reads_only_the_newest_killed_runs_it_shows(
        make_config: Callable[..., Path], monkeypatch: pytest.MonkeyPatch) -> None:
    """Killed runs pile up over months: `status --last 2` reads the events of the two newest
    unfinished runs only (run ids start with their start time), and shows those two."""
    from tessera.core.settings import load_settings
    from tessera.service import status as status_module

    settings = load_settings(make_config())
    ids = [_unfinished_run(settings.events_dir, 0, documents=1, run_id=f"2026120{day}T090000-{day:08x}",
                           start=datetime(2026, 12, day, 9, 0, tzinfo=UTC)) for day in range(1, 6)]
    read: list[str] = []
    real = status_module._unfinished

    def counting(events_dir: Path, run_id: str) -> dict[str, object]:
        read.append(run_id)
        return real(events_dir, run_id)

    monkeypatch.setattr(status_module, "_unfinished", counting)
    shown = [r["run_id"] for r in status_module.status(settings, last=2)["last_runs"]]
    assert shown == [ids[4], ids[3]] and sorted(read) == sorted(ids[3:])


def test_an_ingest_records_the_host_and_pid_that_ran_it(
        make_config: Callable[..., Path], corpus: Path) -> None:
    import socket

    from tessera.core.events import read_events
    from tessera.core.settings import load_settings
    from tessera.ingest.run import run_ingest

    settings = load_settings(make_config(sources=[{"name": "docs", "path": str(corpus)}]))
    run_id = run_ingest(settings)["run_id"]
    starts = [r for r in read_events(settings.events_dir, "ingest_batches")
              if r["run_id"] == run_id and r["stage"] == "start"]
    assert [(r["host"], r["pid"]) for r in starts] == [(socket.gethostname(), os.getpid())]
