"""Load test of the search API: requests/s and p50/p95/p99 at concurrency 1, 8 and 32.

    python -m benchmarks.api_load [--points 50000] [--base-docs 1000] [--seconds 10]
                                  [--levels 1,8,32]

Builds an embedded collection of SciFact-derived points (the first `--base-docs` SciFact
documents embedded with the configured runtime, cycled under new ids with a small perturbation,
each point carrying its document's title and text), starts `tessera api` in a second process on
a free loopback port, and drives it from this process with an aiohttp asyncio client (closed loop): each level
runs a fixed number of seconds after a short warm-up, so the run stops by itself. In the same
run it times the same queries through the service's own search code in-process (the same
snapshot and embedding workers, no HTTP) and reports the API's overhead at p50. Queries are the SciFact test queries, as text, in hybrid
mode (dense + BM25 fused in the engine): every point carries both vectors, as an ingest writes.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks import common

KEY = "bench-load-key-0123456789"  # api keys are at least 16 characters
COLLECTION = "bench"
MODE = "hybrid"


def _pct(values: list[float]) -> dict[str, float]:
    arr = np.asarray(values, dtype=np.float64)
    if arr.size == 0:
        return {"p50_ms": float("nan"), "p95_ms": float("nan"), "p99_ms": float("nan")}
    return {f"p{q}_ms": round(float(np.percentile(arr, q)), 3) for q in (50, 95, 99)}


def _base_vectors(settings: Any, records: list[dict[str, Any]]) -> np.ndarray:
    """The base documents' vectors with the configured runtime (cached under benchmarks/out)."""
    cache = common.OUT / f"api-load-base-{len(records)}-{settings.embedding.runtime}.npy"
    if cache.exists():
        return np.load(cache)
    from models import make_backend

    backend = make_backend(settings)
    vectors = backend.embed_texts([f"{r.get('title', '')} {r['text']}" for r in records])
    backend.close()
    cache.parent.mkdir(parents=True, exist_ok=True)
    np.save(cache, vectors)
    return vectors


def build(home: Path, points: int, base_docs: int) -> tuple[Path, Any]:
    """A config and an optimised collection of `points` SciFact-derived points under `home`."""
    from models import get_spec
    from tessera.core.settings import load_settings
    from tessera.core.sparse import Bm25Encoder, sparse_identity, sparse_signature
    from tessera.core.types import CollectionInfo, PointRecord, point_id
    from tessera.store.edge import EdgeStore

    shutil.rmtree(home, ignore_errors=True)
    home.mkdir(parents=True)
    config = home / "tessera.toml"
    config.write_text(f'home = "{home}"\ncollection = "{COLLECTION}"\nmodel = "{common.MODEL}"\n'
                      '\n[embedding]\ndevice = "cpu"\n', encoding="utf-8")
    settings = load_settings(config)
    records = common.corpus_records(limit=base_docs)
    base = _base_vectors(settings, records)
    rng = np.random.default_rng(7)
    store = EdgeStore(home / "qdrant")
    identity = sparse_identity(settings.sparse)
    assert identity is not None, "hybrid needs sparse.enabled"
    encoder = Bm25Encoder(settings.sparse)
    sparse = encoder.documents([f"{r.get('title', '')} {r['text']}" for r in records])
    store.create_collection(CollectionInfo.for_model(COLLECTION, get_spec(settings), identity))
    for lo in range(0, points, 512):
        batch = []
        for i in range(lo, min(lo + 512, points)):
            rec = records[i % len(records)]
            v = base[i % len(base)] + rng.normal(0, 0.01, base.shape[1]).astype(np.float32)
            doc = f"scifact/{rec['_id']}-r{i // len(records)}"
            batch.append(PointRecord(point_id(COLLECTION, doc, 0), v / np.linalg.norm(v), {
                "doc_id": doc, "source": f"part{i % 10}", "modality": "text", "chunk_index": 0,
                "chunk_count": 1, "title": rec.get("title", ""), "text": rec["text"][:2000],
                "uri": f"scifact://{rec['_id']}", "expires_at": 2**31 - 1,
                "sparse": sparse_signature(identity)}, sparse=sparse[i % len(records)]))
        store.upsert(COLLECTION, batch)
    store.optimize(COLLECTION)
    store.close()
    return config, settings


def direct(settings: Any, queries: list[str], mode: str | None, seconds: float) -> dict[str, Any]:
    """The same queries through the service's own search (`SearchService.search`: its snapshot,
    its embedding workers) in this process, one at a time: everything the API runs but HTTP."""
    from tessera.service.schemas import SearchRequest
    from tessera.service.service import SearchService

    service = SearchService(settings)
    service.warm()
    total, embed, engine = [], [], []
    try:
        body = {"k": 10, **({"mode": mode} if mode else {})}
        service.search(SearchRequest(query=queries[0], **body))
        deadline = time.perf_counter() + seconds
        i = 0
        while time.perf_counter() < deadline:
            t0 = time.perf_counter()
            _, timings = service.search(SearchRequest(query=queries[i % len(queries)], **body))
            total.append((time.perf_counter() - t0) * 1000)
            embed.append(timings["embed_ms"])
            engine.append(timings["engine_ms"])
            i += 1
    finally:
        service.close()
    return {"n": len(total), **_pct(total), "embed": _pct(embed), "engine": _pct(engine)}


def _cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process so far, all threads (from /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def _level(url: str, queries: list[str], mode: str | None, concurrency: int,
                 seconds: float, warmup: float, server_pid: int) -> dict[str, Any]:
    """One concurrency level: `concurrency` workers, each one request at a time (closed loop).

    The driver is aiohttp (C-accelerated HTTP parsing): the client shares the two cores with the
    server, so the lighter it is, the more of the machine the server under test gets. The CPU
    each side spends per request is measured over the whole level (warm-up included).
    """
    import aiohttp

    latencies: list[float] = []
    embed: list[float] = []
    engine: list[float] = []
    errors: dict[str, int] = {}
    sent = 0
    body: dict[str, Any] = {"k": 10, **({"mode": mode} if mode else {})}
    connector = aiohttp.TCPConnector(limit=concurrency)
    headers = {"Authorization": f"Bearer {KEY}"}
    server_cpu0, client_cpu0 = _cpu_seconds(server_pid), time.process_time()
    async with aiohttp.ClientSession(base_url=url, headers=headers, connector=connector,
                                     timeout=aiohttp.ClientTimeout(total=30)) as client:
        start = time.perf_counter()
        measure_from, stop_at = start + warmup, start + warmup + seconds

        async def worker(offset: int) -> None:
            nonlocal sent
            i = offset
            while (now := time.perf_counter()) < stop_at:
                t0 = time.perf_counter()
                timing_header = ""
                try:
                    async with client.post("/v1/search", json={
                            **body, "query": queries[i % len(queries)]}) as response:
                        await response.read()
                        code = str(response.status)
                        timing_header = response.headers.get("server-timing", "")
                except (aiohttp.ClientError, TimeoutError) as exc:
                    code = type(exc).__name__
                elapsed = (time.perf_counter() - t0) * 1000
                i += concurrency
                sent += 1
                if now < measure_from:
                    continue
                if code != "200":
                    errors[code] = errors.get(code, 0) + 1
                    continue
                latencies.append(elapsed)
                timing = dict(part.split(";dur=") for part in timing_header.split(", ")
                              if ";dur=" in part)  # not the `trace;desc=` entry
                embed.append(float(timing.get("embed", "nan")))
                engine.append(float(timing.get("engine", "nan")))

        await asyncio.gather(*(worker(w) for w in range(concurrency)))
    server_cpu = _cpu_seconds(server_pid) - server_cpu0
    client_cpu = time.process_time() - client_cpu0
    return {"concurrency": concurrency, "seconds": seconds, "requests": len(latencies),
            "requests_per_second": round(len(latencies) / seconds, 1), **_pct(latencies),
            "errors": errors, "server_embed": _pct(embed), "server_engine": _pct(engine),
            "server_cpu_ms_per_request": round(server_cpu * 1000 / max(sent, 1), 3),
            "client_cpu_ms_per_request": round(client_cpu * 1000 / max(sent, 1), 3)}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_ready(url: str, server: subprocess.Popen[bytes], timeout: float = 300) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"tessera api exited with {server.returncode} during start-up")
        try:
            if httpx.get(f"{url}/readyz", timeout=5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise SystemExit("tessera api did not become ready")


def stop_server(server: subprocess.Popen[bytes]) -> None:
    """Ctrl-C, as a user stops `tessera api`; killed if it has not exited in 30 s."""
    server.send_signal(signal.SIGINT)
    try:
        server.wait(timeout=30)
    except subprocess.TimeoutExpired:
        server.kill()


def run(points: int = 50_000, base_docs: int = 1000, seconds: float = 10.0,
        levels: tuple[int, ...] = (1, 8, 32), warmup: float = 2.0,
        queries_limit: int = 300) -> dict[str, Any]:
    """Build, serve, load each level, time the store directly; the figures as a dict."""
    from tessera.core.beir import load_test_set

    home = common.OUT / "api-load-home"
    started = time.perf_counter()
    config, settings = build(home, points, base_docs)
    build_s = time.perf_counter() - started
    queries = list(load_test_set(common.SCIFACT)[0].values())[:queries_limit]
    mode = MODE
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "TESSERA_CONFIG": str(config), "TESSERA_API__KEYS": KEY,
           "TESSERA_API__RATE_LIMIT": "1000000", "TESSERA_API__BURST": "1000000",
           "PYTHONPATH": str(common.REPO)}
    server = subprocess.Popen([sys.executable, "-m", "tessera.cli.main", "api", "--port", str(port)],
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    rows = []
    try:
        _wait_ready(url, server)
        for level in levels:
            rows.append(asyncio.run(_level(url, queries, mode, level, seconds, warmup,
                                            server.pid)))
            print(json.dumps(rows[-1]), flush=True)
    finally:
        stop_server(server)
    straight = direct(settings, queries, mode, seconds)
    first = rows[0] if rows else {}
    overhead = round(first.get("p50_ms", float("nan")) - straight["p50_ms"], 3)
    return {"points": points, "base_docs": base_docs, "mode": mode,
            "runtime": settings.embedding.runtime, "build_seconds": round(build_s, 1),
            "levels": rows, "direct": straight, "api_overhead_p50_ms": overhead,
            "api_over_direct_p50": round(first.get("p50_ms", float("nan")) / straight["p50_ms"], 3),
            "load_average": os.getloadavg()}


def main(argv: list[str] | None = None) -> None:
    """Run the load test and save benchmarks/results/api_load.json."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.api_load")
    parser.add_argument("--points", type=int, default=50_000)
    parser.add_argument("--base-docs", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--levels", default="1,8,32")
    args = parser.parse_args(argv)
    result = run(args.points, args.base_docs, args.seconds,
                 tuple(int(x) for x in args.levels.split(",")))
    path = common.save_result("api_load", {**result, "machine": common.machine()})
    print(json.dumps({k: v for k, v in result.items() if k != "levels"}, indent=2))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
