"""What tracing costs: OpenTelemetry spans exported over OTLP/HTTP to a local sink, against
spans off (`OTEL_SDK_DISABLED=true`), interleaved, whole processes.

    python -m benchmarks.tracing_overhead [--docs 1000] [--rounds 2] [--seconds 8]

Ingest: `tessera ingest` of `--docs` SciFact documents into a new collection, each round once per
setting (the order alternates), the model cache warmed first. API: `tessera api` over the first
ingest's collection, per setting a fresh process, the benchmarks.api_load closed-loop client at
concurrency 1 and 8 (hybrid SciFact test queries). The sink (benchmarks.otlp_sink) is an HTTP
server in a process of its own that answers every OTLP POST with 200 and counts what it received
(so "on" really exported); in this process its threads took the GIL from the load client.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks import common
from benchmarks.api_load import KEY, MODE, _free_port, _level, _wait_ready, stop_server
from benchmarks.otlp_sink import Sink


def _settings_env(sink: str) -> dict[str, dict[str, str]]:
    """Each setting's variables."""
    return {"off": {"OTEL_SDK_DISABLED": "true"},
            "on": {"OTEL_EXPORTER_OTLP_ENDPOINT": sink, "OTEL_SERVICE_NAME": "tessera-bench"}}


def _env(config: Path, extra: dict[str, str]) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "TESSERA_"))}
    return {**base, "TESSERA_CONFIG": str(config), "PYTHONPATH": str(common.REPO), **extra}


def _ingest(config: Path, collection: str, extra: dict[str, str]) -> float:
    """One whole `tessera ingest` process into `collection`; its wall seconds."""
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "tessera.cli.main", "ingest", "-q"], check=True,
                   env=_env(config, {**extra, "TESSERA_COLLECTION": collection}))
    return time.perf_counter() - start


def ingest_rounds(config: Path, modes: dict[str, dict[str, str]], rounds: int
                  ) -> dict[str, list[float]]:
    """Wall seconds per setting, interleaved (the order alternates each round)."""
    _ingest(config, "warm", {})  # the model's export and cache: not part of any round
    out: dict[str, list[float]] = {m: [] for m in modes}
    for r in range(rounds):
        for mode in (list(modes) if r % 2 == 0 else list(reversed(modes))):
            out[mode].append(_ingest(config, f"c-{mode}-{r}", modes[mode]))
            print(mode, round(out[mode][-1], 2), flush=True)
    return out


def api_levels(config: Path, collection: str, extra: dict[str, str], seconds: float
               ) -> list[dict[str, Any]]:
    """A fresh `tessera api` with these variables; levels 1 and 8."""
    from tessera.core.beir import load_test_set

    queries = list(load_test_set(common.SCIFACT)[0].values())
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    env = _env(config, {**extra, "TESSERA_COLLECTION": collection, "TESSERA_API__KEYS": KEY,
                        "TESSERA_API__RATE_LIMIT": "1000000", "TESSERA_API__BURST": "1000000"})
    server = subprocess.Popen([sys.executable, "-m", "tessera.cli.main", "api", "--port",
                               str(port)], env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    try:
        _wait_ready(url, server)
        return [asyncio.run(_level(url, queries, MODE, level, seconds, 2.0, server.pid))
                for level in (1, 8)]
    finally:
        stop_server(server)


def measure(docs: int, rounds: int, seconds: float) -> dict[str, Any]:
    """Both parts, both settings; the figures and the ratios on/off."""
    sink = Sink()
    modes = _settings_env(sink.url)
    home = common.OUT / "tracing-overhead"
    corpus = common.write_corpus(common.corpus_records(limit=docs), home / "corpus")
    config = common.write_config(home / "home", corpus, runtime="openvino", precision="bf16")
    try:
        walls = ingest_rounds(config, modes, rounds)
        api: dict[str, list[list[dict[str, Any]]]] = {m: [] for m in modes}
        for r in range(rounds):
            for mode in (list(modes) if r % 2 == 0 else list(reversed(modes))):
                api[mode].append(api_levels(config, "c-off-0", modes[mode], seconds))
    finally:
        exported = sink.stop()
    return {"docs": docs, "rounds": rounds, "seconds": seconds, "ingest_seconds": walls,
            "api": api, "exported": exported, "summary": _summary(walls, api),
            "machine": common.machine()}


def _summary(walls: dict[str, list[float]], api: dict[str, list[list[dict[str, Any]]]]
             ) -> dict[str, Any]:
    """Medians per setting and on/off ratios."""
    out: dict[str, Any] = {m: {"ingest_s": round(statistics.median(w), 2)} for m, w in walls.items()}
    for mode, runs in api.items():
        for i, level in enumerate((1, 8)):
            for stat in ("p50_ms", "p99_ms"):
                out[mode][f"c{level}_{stat}"] = round(statistics.median(
                    run[i][stat] for run in runs), 2)
    out["ratio_on_off"] = {k: round(out["on"][k] / out["off"][k], 3) for k in out["off"]}
    return out


def main() -> None:
    """Run and save `results/tracing_overhead.json`."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=8.0)
    args = parser.parse_args()
    result = measure(args.docs, args.rounds, args.seconds)
    print(json.dumps(result["summary"]))
    common.save_result("tracing_overhead", result)


if __name__ == "__main__":
    main()
