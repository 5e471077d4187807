"""Goals 1, 3 and 4: ingest against the bare model, re-ingest, and the scaling curve.

Every measured step runs in its own process (`benchmarks.ingest_once`) against one Prefect test
server, so peak memory is that step's own. Bare-model and ingest steps alternate (bare, ingest,
bare) and the ratio uses the mean of the two bare runs around the ingest, because the CPU is
shared and drifts.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

from benchmarks import common

STEP_TIMEOUT = 3600.0


def corpus(n: int) -> Path:
    """A BEIR folder with the first n SciFact documents (cycled under new ids past 5,183)."""
    folder = common.OUT / f"corpus-{n}"
    if not (folder / "corpus.jsonl").exists():
        common.write_corpus(common.corpus_records(repeat_to=n), folder)
    return folder


def fresh_home(name: str, corpus_dir: Path, runtime: str, precision: str) -> Path:
    """An empty Tessera home whose model cache is the benchmarks' shared one (exports made once)."""
    home = common.OUT / "homes" / name
    shutil.rmtree(home, ignore_errors=True)
    home.mkdir(parents=True)
    shared = common.OUT / "models"
    shared.mkdir(parents=True, exist_ok=True)
    os.symlink(shared, home / "models")
    return common.write_config(home, corpus_dir, runtime, precision)


def _bare(corpus_dir: Path, api: str, runtime: str, precision: str) -> dict[str, Any]:
    return common.run_child(["benchmarks.ingest_once", "bare", str(corpus_dir), "--runtime", runtime,
                             "--precision", precision], api, STEP_TIMEOUT)


def overhead(api: str, docs: int, runtime: str, precision: str) -> dict[str, Any]:
    """bare, ingest (then an unchanged re-ingest in the same process), bare."""
    corpus_dir = corpus(docs)
    before = _bare(corpus_dir, api, runtime, precision)
    config = fresh_home(f"overhead-{runtime}-{precision}-{docs}", corpus_dir, runtime, precision)
    ingest = common.run_child(["benchmarks.ingest_once", "ingest", str(config), "--repeat", "2"],
                              api, STEP_TIMEOUT)
    after = _bare(corpus_dir, api, runtime, precision)
    bare_s = (before["seconds"] + after["seconds"]) / 2
    first, second = ingest["runs"][0], ingest["runs"][1]
    return {"docs": docs, "runtime": runtime, "precision": precision, "chunks": before["chunks"],
            "bare_seconds": [before["seconds"], after["seconds"]],
            "ingest_seconds": first["seconds"], "reingest_seconds": second["seconds"],
            "throughput_ratio": bare_s / first["seconds"],
            "reingest_fraction": second["seconds"] / first["seconds"],
            "first_summary": first["summary"], "reingest_summary": second["summary"],
            "first_stages": first.get("stages", {}), "reingest_stages": second.get("stages", {}),
            "peak_rss_mib": ingest["peak_rss_mib"]}


def scaling(api: str, sizes: list[int], runtime: str, precision: str) -> dict[str, Any]:
    """First-ingest time and peak memory at each size, each in a fresh home and process."""
    points = []
    for n in sizes:
        config = fresh_home(f"scale-{runtime}-{precision}-{n}", corpus(n), runtime, precision)
        out = common.run_child(["benchmarks.ingest_once", "ingest", str(config)], api, STEP_TIMEOUT)
        run = out["runs"][0]
        points.append({"docs": n, "seconds": run["seconds"], "cpu_seconds": run["cpu_seconds"],
                       "peak_rss_mib": out["peak_rss_mib"], "stages": run.get("stages", {}),
                       "chunks": run["summary"].get("chunks_embedded"),
                       "docs_per_s": n / run["seconds"]})
    base = points[0]
    for p in points:
        p["seconds_per_doc_vs_first"] = (p["seconds"] / p["docs"]) / (base["seconds"] / base["docs"])
        p["cpu_per_doc_vs_first"] = ((p["cpu_seconds"] / p["docs"])
                                     / (base["cpu_seconds"] / base["docs"]))
    return {"runtime": runtime, "precision": precision, "points": points}
