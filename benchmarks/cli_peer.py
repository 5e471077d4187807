"""Whole-process cost of `tessera` commands, before and after, and against the LlamaIndex peer.

    python -m benchmarks.cli_peer [--docs 1000] [--rounds 3] [--skip-before] [--skip-peer]

Every figure is one whole process (start-up included), measured by `os.wait4`: wall time, CPU
seconds (user + system) and peak RSS of that process and its children.

- after: this tree's `tessera` CLI (no PREFECT_API_URL: plain steps, no Prefect server).
- before: the CLI as it was at BEFORE_COMMIT (every job a Prefect flow, so each command starts a
  temporary Prefect server), extracted with `git archive` into benchmarks/out, same venv.
- peer: benchmarks/peer_llamaindex.py in its own venv (LlamaIndex IngestionPipeline,
  SimpleDocumentStore, UPSERTS_AND_DELETE, Qdrant local mode, the same model files), torch
  through the same constraint as ours.

Phases on the same N SciFact documents (one .txt file each): first ingest, re-ingest of the
unchanged corpus, then an incremental run after 10 edits and 5 deletes; Tessera and the peer
alternate within each phase. Results: benchmarks/results/cli_peer.json and benchmarks/CLI.md.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tarfile
import time
from io import BytesIO
from pathlib import Path
from typing import Any

from benchmarks import common

BEFORE_COMMIT = "1149e75"  # the last CLI that ran every job as a Prefect flow (ephemeral server)
WORK = common.OUT / "cli-peer"
PEER_VENV = common.OUT / "peer-venv"
PEER_PACKAGES = ["llama-index-core", "llama-index-vector-stores-qdrant",
                 "llama-index-embeddings-huggingface"]
QUERY = "vitamin D deficiency and bone fractures"


def measure(args: list[str], env: dict[str, str] | None = None, cwd: Path = common.REPO,
            timeout: float = 1800) -> dict[str, Any]:
    """Run one whole process; wall, CPU and peak RSS from its own rusage (children included)."""
    start = time.perf_counter()
    with open(WORK / "last.log", "wb") as err:
        proc = subprocess.Popen(args, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=err)
        assert proc.stdout is not None
        out = proc.stdout.read()
        _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} exited {proc.returncode}:\n"
                           + (WORK / "last.log").read_text(errors="replace")[-3000:])
    last = out.decode(errors="replace").strip().splitlines()
    return {"wall_s": round(wall, 3), "cpu_s": round(usage.ru_utime + usage.ru_stime, 3),
            "peak_rss_mib": round(usage.ru_maxrss / 1024, 1), "out": last[-1][:500] if last else ""}


def make_corpus(docs: int, folder: Path) -> Path:
    """N SciFact documents, one text file each (title, blank line, abstract)."""
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    for rec in common.corpus_records(docs):
        (folder / f"{rec['_id']}.txt").write_text(f"{rec.get('title', '')}\n\n{rec['text']}\n",
                                                  encoding="utf-8")
    return folder


def edit_corpus(folder: Path, edits: int = 10, deletes: int = 5) -> None:
    """Change `edits` files and remove `deletes` others (the incremental phase)."""
    files = sorted(folder.glob("*.txt"))
    for path in files[:edits]:
        path.write_text(path.read_text(encoding="utf-8") + "\nRevised: a sentence was added.\n",
                        encoding="utf-8")
    for path in files[edits:edits + deletes]:
        path.unlink()


def ensure_peer_venv() -> Path:
    """The peer's own venv (torch held to the version our lock pins)."""
    python = PEER_VENV / "bin" / "python"
    if not (PEER_VENV / ".installed").exists():
        subprocess.run(["python3.11", "-m", "venv", str(PEER_VENV)], check=True)
        constraint = common.OUT / "peer-constraints.txt"
        constraint.write_text(_lock_pin("torch") + "\n")
        subprocess.run([str(python), "-m", "pip", "install", "-q", "-c", str(constraint),
                        *PEER_PACKAGES], check=True)
        (PEER_VENV / ".installed").touch()
    return python


def _lock_pin(name: str) -> str:
    for line in (common.REPO / "requirements.lock").read_text().splitlines():
        if line.lower().startswith(f"{name}=="):
            return line.strip()
    raise KeyError(name)


def ensure_before_tree(commit: str = BEFORE_COMMIT) -> Path:
    """The code as it was at `commit`, as plain files (no worktree, no checkout)."""
    tree = common.OUT / f"before-{commit}"
    if not (tree / "pyproject.toml").exists():
        blob = subprocess.run(["git", "archive", commit], cwd=common.REPO, check=True,
                              capture_output=True).stdout
        tree.mkdir(parents=True, exist_ok=True)
        with tarfile.open(fileobj=BytesIO(blob)) as tar:
            tar.extractall(tree, filter="data")
    return tree


def _env(pythonpath: Path, home: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "TESSERA_"))}
    env.update({"PYTHONPATH": str(pythonpath), "PREFECT_HOME": str(home / "prefect"),
                "DO_NOT_TRACK": "1", "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
                "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
                "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120", **extra})
    return env


def _config(home: Path, corpus: Path) -> Path:
    home.mkdir(parents=True, exist_ok=True)
    path = home / "tessera.toml"
    path.write_text(f'home = "{home}"\ncollection = "bench"\n\n[[sources]]\nname = "scifact"\n'
                    f'path = "{corpus}"\nttl = "30d"\n', encoding="utf-8")
    return path


def _cli(config: Path, *argv: str) -> list[str]:
    return [sys.executable, "-m", "tessera.cli.main", *argv, "--config", str(config), "--json"]


def run(docs: int, rounds: int, skip_before: bool, skip_peer: bool) -> dict[str, Any]:
    """Every arm, interleaved; returns the figures."""
    WORK.mkdir(parents=True, exist_ok=True)
    model = str(common.model_dir())
    out: dict[str, Any] = {"docs": docs, "rounds": rounds, "before_commit": BEFORE_COMMIT,
                           "commands": {}, "peer": {}}
    arms: dict[str, Path] = {"after": common.REPO}
    if not skip_before:
        arms["before"] = ensure_before_tree()
    # 1. Command start-up and no-op costs: before vs after on one indexed corpus.
    corpus = make_corpus(docs, WORK / "corpus-commands")
    for arm, tree in arms.items():
        home = WORK / f"home-{arm}"
        shutil.rmtree(home, ignore_errors=True)
        config = _config(home, corpus)
        env = _env(tree, home)
        print(f"[{arm}] first ingest of {docs} documents", flush=True)
        out["commands"].setdefault(arm, {})["first_ingest"] = measure(_cli(config, "ingest"), env, cwd=tree)
    commands = {"ingest_noop": ["ingest"], "search": ["search", QUERY], "status": ["status"],
                "prune_dry_run": ["prune", "--dry-run"]}
    for r in range(rounds):
        for name, argv in commands.items():
            for arm, tree in arms.items():
                home = WORK / f"home-{arm}"
                env = _env(tree, home)
                fig = measure(_cli(home / "tessera.toml", *argv), env, cwd=tree)
                out["commands"][arm].setdefault(name, []).append(fig)
                print(f"[{arm}] round {r + 1} {name}: {fig['wall_s']} s", flush=True)
    # 2. The peer, phase by phase, alternating with Tessera (after) on a corpus of their own.
    if not skip_peer:
        out["peer"] = _peer_phases(docs, model)
    return out


def _peer_phases(docs: int, model: str) -> dict[str, Any]:
    python = ensure_peer_venv()
    corpus = make_corpus(docs, WORK / "corpus-peer")
    home = WORK / "home-vs-peer"
    peer_work = WORK / "peer-state"
    shutil.rmtree(home, ignore_errors=True)
    shutil.rmtree(peer_work, ignore_errors=True)
    config = _config(home, corpus)
    env = _env(common.REPO, home)
    peer_env = {k: v for k, v in env.items() if k != "PYTHONPATH"}
    peer_cmd = [str(python), str(common.BENCH / "peer_llamaindex.py"), str(corpus), str(peer_work),
                model]
    phases: dict[str, Any] = {}
    for phase in ("first_ingest", "reingest", "incremental"):
        if phase == "incremental":
            edit_corpus(corpus)
        # Alternate who goes first, so neither always meets a warm page cache.
        order = ["tessera", "peer"] if phase != "reingest" else ["peer", "tessera"]
        figs: dict[str, Any] = {}
        for who in order:
            cmd = _cli(config, "ingest") if who == "tessera" else peer_cmd
            figs[who] = measure(cmd, env if who == "tessera" else peer_env)
            print(f"[{who}] {phase}: {figs[who]['wall_s']} s", flush=True)
        figs["ratio"] = {k: round(figs["tessera"][k] / figs["peer"][k], 3)
                         for k in ("wall_s", "cpu_s", "peak_rss_mib")}
        phases[phase] = figs
    return phases


def _median(figs: list[dict[str, Any]], key: str) -> float:
    return round(statistics.median(f[key] for f in figs), 3)


def write_markdown(result: dict[str, Any], path: Path) -> None:
    """benchmarks/CLI.md: the tables a reader wants."""
    lines = [f"# Whole-process cost of `tessera` commands ({result['docs']} SciFact documents)", "",
             f"Recorded {result.get('recorded_at', '')}, `python -m benchmarks.cli_peer --docs "
             f"{result['docs']} --rounds {result['rounds']}`; load "
             f"average at the end {result['machine']['loadavg']}, {result['machine']['cores']} "
             f"cores, {result['machine']['cpu']}.", "",
             "## Before and after (median of the rounds; wall s / CPU s / peak RSS MiB)", "",
             "| command | before (" + result["before_commit"] + ", a flow per command) | after |",
             "|---|---|---|"]
    cmds = result["commands"]
    for name in ("first_ingest", "ingest_noop", "search", "status", "prune_dry_run"):
        cells = []
        for arm in ("before", "after"):
            figs = cmds.get(arm, {}).get(name)
            if not figs:
                cells.append("not run")
                continue
            figs = figs if isinstance(figs, list) else [figs]
            cells.append(" / ".join(str(_median(figs, k)) for k in ("wall_s", "cpu_s", "peak_rss_mib")))
        lines.append(f"| {name.replace('_', ' ')} | {cells[0]} | {cells[1]} |")
    if result.get("peer"):
        lines += ["", "## Against LlamaIndex IngestionPipeline (Qdrant local mode, same model)", "",
                  "| phase | Tessera wall / CPU / RSS | peer wall / CPU / RSS | Tessera ÷ peer (wall, CPU, RSS) |",
                  "|---|---|---|---|"]
        for phase, figs in result["peer"].items():
            t, p, r = figs["tessera"], figs["peer"], figs["ratio"]
            lines.append(f"| {phase.replace('_', ' ')} | {t['wall_s']} / {t['cpu_s']} / "
                         f"{t['peak_rss_mib']} | {p['wall_s']} / {p['cpu_s']} / {p['peak_rss_mib']} | "
                         f"{r['wall_s']}, {r['cpu_s']}, {r['peak_rss_mib']} |")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def main(argv: list[str] | None = None) -> None:
    """Run, save, write the table."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.cli_peer")
    parser.add_argument("--docs", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--skip-before", action="store_true")
    parser.add_argument("--skip-peer", action="store_true")
    args = parser.parse_args(argv)
    result = run(args.docs, args.rounds, args.skip_before, args.skip_peer)
    saved = common.save_result("cli_peer", {**result, "machine": common.machine()})
    write_markdown(json.loads(saved.read_text()), common.BENCH / "CLI.md")
    print(f"wrote {saved} and {common.BENCH / 'CLI.md'}", flush=True)


if __name__ == "__main__":
    main()
