"""Load test of the search API with a compiled load generator: wrk, pinned to its own core.

    python -m benchmarks.api_wrk [--points 50000] [--seconds 15] [--levels 1,8,32]
                                 [--cache-size 4096] [--query-precision same|int8] [--profile]

The collection is benchmarks.api_load's (SciFact-derived points, hybrid). `tessera api` runs
pinned to core 0 and wrk (Debian's `wrk`, one thread, `-c` connections, a Lua script that writes
each POST body) to core 1 with `taskset`, so the client's CPU is not the server's. Two query
mixes, each level run once per mix:

- unique: the SciFact test queries in turn, each with the run's id and a running number
  appended, so no two requests carry the same text (every request embeds: the cache cannot help);
- repeated: a Zipf mix (s = 1.1) over the same queries, as real traffic repeats itself.

Per level: requests/s, latency p50/p90/p99 (wrk's own histogram), server CPU per request (from
/proc over the level), and the query cache's hits and misses over the level (from /metrics).
With `--profile`, a child pinned to core 0 measures CPU per search by component in-process: the
query embedding alone, a whole search of a unique query, and one whose vector is cached (engine
and pipeline); the server's CPU per request beyond a whole search is HTTP, JSON, the event loop
and the hand-offs between threads. Results:
benchmarks/results/api_wrk.json.
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

import numpy as np

from benchmarks import common
from benchmarks.api_load import KEY, MODE, _cpu_seconds, _free_port, _wait_ready, build, stop_server

WORK = common.OUT / "api-wrk"
LUA = """
local bodies = {%(bodies)s}
local unique = %(unique)s
local n = 0
local run = "0"
init = function(args) run = args[1] or "0" end
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer %(key)s"
request = function()
  n = n + 1
  local body = bodies[(n - 1) %% #bodies + 1]
  if unique then body = string.gsub(body, "@N@", run .. "." .. tostring(n)) end
  return wrk.format(nil, "/v1/search", nil, body)
end
done = function(summary, latency, requests)
  io.write(string.format('{"requests": %%d, "duration_us": %%d, "non2xx": %%d, '
    .. '"socket_errors": %%d, "p50_us": %%d, "p90_us": %%d, "p99_us": %%d, "max_us": %%d}\\n',
    summary.requests, summary.duration, summary.errors.status,
    summary.errors.connect + summary.errors.read + summary.errors.write
    + summary.errors.timeout, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency.max))
end
"""


def _lua_string(text: str) -> str:
    return "[==[" + text.replace("]==]", "] ==]") + "]==]"


def script(queries: list[str], mix: str, path: Path) -> Path:
    """The wrk Lua script for a mix: every body pre-rendered (unique: @N@ becomes a counter)."""
    body = {"k": 10, "mode": MODE}
    if mix == "unique":
        texts = [f"{q} @N@" for q in queries]
    else:
        rng = np.random.default_rng(11)
        ranks = np.arange(1, len(queries) + 1, dtype=np.float64)
        weights = ranks ** -1.1
        picks = rng.choice(len(queries), size=20_000, p=weights / weights.sum())
        texts = [queries[i] for i in picks]
    bodies = ",\n".join(_lua_string(json.dumps({**body, "query": t})) for t in texts)
    path.write_text(LUA % {"bodies": bodies, "unique": "true" if mix == "unique" else "false",
                           "key": KEY}, encoding="utf-8")
    return path


def _cache_counts(url: str) -> tuple[float, float]:
    import httpx
    from prometheus_client.parser import text_string_to_metric_families

    text = httpx.get(f"{url}/metrics", timeout=10).text
    hits = misses = 0.0
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == "tessera_query_cache_hits_total":
                hits += s.value
            elif s.name == "tessera_query_cache_misses_total":
                misses += s.value
    return hits, misses


def level(url: str, lua: Path, concurrency: int, seconds: float, pid: int) -> dict[str, Any]:
    """One wrk run on core 1; the server's CPU and cache counters over it."""
    hits0, misses0 = _cache_counts(url)
    cpu0 = _cpu_seconds(pid)
    run_id = f"{time.time_ns()}"  # unique texts stay unique across levels (each is a new wrk)
    out = subprocess.run(["taskset", "-c", "1", "wrk", "-t1", f"-c{concurrency}",
                          f"-d{seconds:g}s", "--timeout", "10s", "-s", str(lua), url, "--",
                          run_id],
                         check=True, capture_output=True, text=True).stdout
    cpu = _cpu_seconds(pid) - cpu0
    hits1, misses1 = _cache_counts(url)
    summary = json.loads(next(line for line in out.splitlines() if line.startswith("{")))
    n = summary["requests"]
    lookups = (hits1 - hits0) + (misses1 - misses0)
    return {"concurrency": concurrency, "requests": n,
            "requests_per_second": round(n / (summary["duration_us"] / 1e6), 1),
            "p50_ms": summary["p50_us"] / 1000, "p90_ms": summary["p90_us"] / 1000,
            "p99_ms": summary["p99_us"] / 1000, "max_ms": summary["max_us"] / 1000,
            "errors": summary["non2xx"] + summary["socket_errors"],
            "server_cpu_ms_per_request": round(cpu * 1000 / max(n, 1), 3),
            "cache_hit_ratio": round((hits1 - hits0) / lookups, 3) if lookups else None}


def components(config: Path, queries: list[str], precision: str) -> dict[str, float]:
    """CPU ms per search by component, measured in a child pinned to the server's core: the
    query embedding alone (unique queries), a whole in-process search with a unique query, and
    one whose vector is cached (the engine and the pipeline alone). HTTP, JSON, the event loop
    and thread hand-offs are what the server spends per request beyond the whole search."""
    out = subprocess.run(["taskset", "-c", "0", sys.executable, "-m", "benchmarks.api_wrk",
                          "--components-child", str(config), "--query-precision", precision],
                         input=json.dumps(queries), check=True, capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": str(common.REPO)}).stdout
    return json.loads(out.strip().splitlines()[-1])


def _components_child(config: Path, precision: str) -> None:
    from tessera.core.settings import load_settings
    from tessera.service.schemas import SearchRequest
    from tessera.service.service import SearchService

    queries = json.loads(sys.stdin.read())
    settings = load_settings(config)
    api = settings.api.model_copy(update={"query_precision": precision})
    service = SearchService(settings.model_copy(update={"api": api}))
    service.warm()
    info = service.info(service.resolve(None))
    backend = service.embedder(info).backend

    def cpu_ms(fn: Any, items: list[str]) -> float:
        fn(items[0])
        started = time.process_time()
        for item in items:
            fn(item)
        return (time.process_time() - started) * 1000 / len(items)

    unique = [f"{q} u{i}" for i, q in enumerate(queries)]
    result = {
        "embedding": cpu_ms(lambda q: backend.embed_queries([q]), unique),
        "search, unique query": cpu_ms(lambda q: service.search(
            SearchRequest(query=q + " s", k=10, mode=MODE)), unique),
        "search, cached query vector": cpu_ms(lambda q: service.search(
            SearchRequest(query=q + " s", k=10, mode=MODE)), unique)}
    service.close()
    print(json.dumps(result))


def run(points: int, seconds: float, levels: list[int], cache_size: int, precision: str,
        profile: bool) -> dict[str, Any]:
    """Build (or reuse) the collection, serve it on core 0, load it from core 1."""
    from tessera.core.beir import load_test_set

    home = common.OUT / "api-load-home"
    config, _ = build(home, points, 1000)
    queries = list(load_test_set(common.SCIFACT)[0].values())
    WORK.mkdir(parents=True, exist_ok=True)
    scripts = {mix: script(queries, mix, WORK / f"{mix}.lua") for mix in ("unique", "repeated")}
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "TESSERA_CONFIG": str(config), "TESSERA_API__KEYS": KEY,
           "TESSERA_API__RATE_LIMIT": "1000000", "TESSERA_API__BURST": "1000000",
           "TESSERA_API__QUERY_CACHE_SIZE": str(cache_size),
           "TESSERA_API__QUERY_PRECISION": precision, "PYTHONPATH": str(common.REPO)}
    server = subprocess.Popen(["taskset", "-c", "0", sys.executable, "-m", "tessera.cli.main",
                               "api", "--port", str(port)], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    rows: dict[str, list[dict[str, Any]]] = {"unique": [], "repeated": []}
    try:
        _wait_ready(url, server)
        level(url, scripts["unique"], 8, 3, server.pid)  # warm-up, not reported
        for concurrency in levels:
            for mix in ("unique", "repeated"):
                rows[mix].append(level(url, scripts[mix], concurrency, seconds, server.pid))
                print(mix, json.dumps(rows[mix][-1]), flush=True)
                time.sleep(1)
    finally:
        stop_server(server)
    split = components(config, queries, precision) if profile else {}
    return {"points": points, "seconds": seconds, "mode": MODE, "cache_size": cache_size,
            "query_precision": precision,
            "pinning": "server on core 0, wrk on core 1 (taskset)", "levels": rows,
            "components_cpu_ms": split, "queries": len(queries)}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.api_wrk")
    ap.add_argument("--points", type=int, default=50_000)
    ap.add_argument("--seconds", type=float, default=15.0)
    ap.add_argument("--levels", default="1,8,32")
    ap.add_argument("--cache-size", type=int, default=4096)
    ap.add_argument("--query-precision", default="same", choices=("same", "int8"))
    ap.add_argument("--profile", action="store_true",
                    help="also split the CPU per search by component (a child on core 0)")
    ap.add_argument("--components-child", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--name", default="api_wrk", help="the results file's name")
    args = ap.parse_args(argv)
    if args.components_child:
        _components_child(args.components_child, args.query_precision)
        return
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed: apt-get install wrk (Debian's package)")
    result = run(args.points, args.seconds, [int(x) for x in args.levels.split(",")],
                 args.cache_size, args.query_precision, args.profile)
    print(f"wrote {common.save_result(args.name, {**result, 'machine': common.machine()})}")


if __name__ == "__main__":
    main()
