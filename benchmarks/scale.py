"""Scale benchmark: peak memory and cost of a first ingest, an unchanged re-ingest and a re-ingest
after 1% of the files changed, for folders of N one-sentence files; and one big JSONL file.

    python -m benchmarks.scale folder --sizes 10000,100000
    python -m benchmarks.scale jsonl --megabytes 20,2000

Each ingest runs in a fresh process (`benchmarks.ingest_once`, plain steps as `tessera ingest`
runs them), so peak RSS (VmHWM) is that run's own. Documents are one short sentence each, so the
model does not dominate. JSONL records carry a field the pipeline reads and parses but does not
embed (`blob`), so a 2 GB file is 2 GB of parsing with a modest number of sentences to embed.
Figures go to benchmarks/results/scale-<mode>.json and benchmarks/SCALE.md.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks import common

WORDS = ("river", "lantern", "orchard", "harbor", "meadow", "glacier", "canyon", "village",
         "market", "library", "bridge", "forest", "tower", "valley", "island", "station")
PER_DIR = 1000


def sentence(i: int, version: int = 0) -> str:
    """One short sentence, different for each document (and each version of it)."""
    a, b = WORDS[i % 16], WORDS[(i // 16) % 16]
    return f"Note {i} (v{version}): the {a} near the {b} was seen at hour {i % 24}."


def _path(root: Path, i: int) -> Path:
    return root / f"d{i // PER_DIR:04d}" / f"n{i:07d}.txt"


def make_folder(root: Path, n: int) -> None:
    """N one-sentence text files, PER_DIR per folder."""
    for d in range((n + PER_DIR - 1) // PER_DIR):
        (root / f"d{d:04d}").mkdir(parents=True, exist_ok=True)
    for i in range(n):
        _path(root, i).write_text(sentence(i), encoding="utf-8")


def change_files(root: Path, n: int, fraction: float) -> int:
    """Rewrite `fraction` of the files, spread evenly (size changes: a new version tag)."""
    step = max(1, round(1 / fraction))
    changed = 0
    for i in range(0, n, step):
        _path(root, i).write_text(sentence(i, 1) + " Changed.", encoding="utf-8")
        changed += 1
    return changed


def make_jsonl(path: Path, megabytes: int, blob_bytes: int) -> int:
    """A JSONL file of about `megabytes`, each record a sentence and a blob; returns records."""
    target = megabytes * 1024 * 1024
    blob = "x" * blob_bytes
    written, i = 0, 0
    with path.open("w", encoding="utf-8") as fh:
        while written < target:
            line = json.dumps({"id": f"r{i}", "text": sentence(i), "blob": blob}) + "\n"
            fh.write(line)
            written += len(line)
            i += 1
    return i


def write_config(home: Path, src: Path) -> Path:
    """A tessera.toml with one directory source (default runtime) under `home`."""
    home.mkdir(parents=True, exist_ok=True)
    path = home / "tessera.toml"
    path.write_text(
        f'home = "{home}"\nmodel = "{common.MODEL}"\ncollection = "scale"\n\n'
        '[embedding]\nbackend = "local"\ndevice = "cpu"\n\n[store]\nkind = "edge"\n\n'
        f'[[sources]]\nname = "src"\npath = "{src}"\nttl = "30d"\n', encoding="utf-8")
    return path


def ingest(config: Path, timeout: float, ttl: str | None = None) -> dict[str, Any]:
    """One `run_ingest` in a fresh process: wall, CPU seconds (user+sys of the child), peak RSS."""
    before = os.times()
    start = time.perf_counter()
    extra = ["--ttl", ttl] if ttl else []
    proc = subprocess.run([sys.executable, "-m", "benchmarks.ingest_once", "ingest", str(config),
                           *extra],
                          cwd=common.REPO, capture_output=True, text=True, timeout=timeout,
                          check=False)
    wall = time.perf_counter() - start
    after = os.times()
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr[-3000:])
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    run = out["runs"][0]
    s = run["summary"]
    return {"process_seconds": round(wall, 2), "run_seconds": round(run["seconds"], 2),
            "cpu_seconds": round((after.children_user - before.children_user)
                                 + (after.children_system - before.children_system), 2),
            "peak_rss_mib": round(out["peak_rss_mib"], 1),
            "peak_anon_mib": out.get("peak_anon_mib"), "peak_file_mib": out.get("peak_file_mib"),
            **{k: s[k] for k in ("seen", "indexed", "unchanged", "quarantined", "deleted",
                                 "chunks_embedded")},
            "stages": {k: round(v, 2) for k, v in run["stages"].items()},
            "loadavg": os.getloadavg()}


def _save(name: str, data: dict[str, Any]) -> None:
    common.RESULTS.mkdir(parents=True, exist_ok=True)
    data = {**data, "machine": common.machine(), "recorded_at": time.strftime("%Y-%m-%d %H:%M:%S"),
            "command": " ".join(["python -m benchmarks.scale", *sys.argv[1:]])}
    (common.RESULTS / f"{name}.json").write_text(json.dumps(data, indent=1) + "\n")


def folder(sizes: list[int], fraction: float, timeout: float,
           name: str = "scale-folder") -> dict[str, Any]:
    """First ingest, unchanged re-ingest, re-ingest after changing `fraction`, per size."""
    rows = []
    for n in sizes:
        work = common.OUT / f"scale-{n}"
        shutil.rmtree(work, ignore_errors=True)
        src = work / "src"
        t0 = time.perf_counter()
        make_folder(src, n)
        made = time.perf_counter() - t0
        config = write_config(work / "home", src)
        row: dict[str, Any] = {"documents": n, "make_seconds": round(made, 1)}
        print(f"  {n:,} files made in {made:.0f} s", flush=True)
        row["first"] = ingest(config, timeout)
        print(f"  first: {row['first']}", flush=True)
        row["unchanged"] = ingest(config, timeout)
        print(f"  unchanged: {row['unchanged']}", flush=True)
        row["changed_files"] = change_files(src, n, fraction)
        row["changed"] = ingest(config, timeout)
        print(f"  changed: {row['changed']}", flush=True)
        # Unchanged again, when every point's expiry moves: what a re-run pays once per expiry
        # step (1% of the TTL: 7.2 h of these 30 days), or when the TTL changes, as here.
        row["unchanged_expiry_moved"] = ingest(config, timeout, ttl="31d")
        print(f"  unchanged, every expiry moved: {row['unchanged_expiry_moved']}", flush=True)
        rows.append(row)
        _save(name, {"rows": rows, "fraction": fraction,
                     "store_env": {k: v for k, v in os.environ.items()
                                   if k.startswith("TESSERA_STORE__")}})
        shutil.rmtree(work, ignore_errors=True)
    return {"rows": rows}


def jsonl(megabytes: list[int], blob_bytes: int, timeout: float) -> dict[str, Any]:
    """One ingest of a JSONL file per size."""
    rows = []
    for mb in megabytes:
        work = common.OUT / f"scale-jsonl-{mb}"
        shutil.rmtree(work, ignore_errors=True)
        src = work / "src"
        src.mkdir(parents=True)
        records = make_jsonl(src / "export.jsonl", mb, blob_bytes)
        size = (src / "export.jsonl").stat().st_size
        row = {"megabytes": mb, "bytes": size, "records": records,
               "first": ingest(write_config(work / "home", src), timeout)}
        print(f"  {mb} MB: {row}", flush=True)
        rows.append(row)
        _save("scale-jsonl", {"rows": rows, "blob_bytes": blob_bytes})
        shutil.rmtree(work, ignore_errors=True)
    return {"rows": rows}


def main() -> None:
    """Parse the mode and run it."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.scale")
    parser.add_argument("mode", choices=["folder", "jsonl"])
    parser.add_argument("--sizes", default="10000,100000,1000000")
    parser.add_argument("--fraction", type=float, default=0.01)
    parser.add_argument("--megabytes", default="20,2000")
    parser.add_argument("--blob-bytes", type=int, default=40_000)
    parser.add_argument("--timeout", type=float, default=6 * 3600)
    parser.add_argument("--name", default=None,
                        help="results file name (default scale-folder / scale-jsonl); e.g. to "
                             "compare TESSERA_STORE__HNSW_M=0 with the default")
    args = parser.parse_args()
    if args.mode == "folder":
        folder([int(s) for s in args.sizes.split(",")], args.fraction, args.timeout,
               args.name or "scale-folder")
    else:
        jsonl([int(m) for m in args.megabytes.split(",")], args.blob_bytes, args.timeout)


if __name__ == "__main__":
    main()
