"""`make bench`: run the benchmarks, save each one's figures, rebuild REPORT.md and scaling.png.

    python -m benchmarks.run [--only runtimes,ndcg,overhead,scaling,search,api_load] [--docs 1000]
                             [--sizes 1000,2500,5000] [--screen-docs 200] [--rounds 2]

Each benchmark saves benchmarks/results/<name>.json as soon as it finishes; the report is rebuilt
from whatever results exist, so a partial run still updates its rows.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from benchmarks import common, report

ALL = ("runtimes", "ndcg", "overhead", "scaling", "search", "api_load")


def _default_runtime() -> tuple[str, str]:
    """The runtime the report recommends (fastest at equal nDCG), unless the config default is
    already something other than torch."""
    from tessera.core.settings import EmbeddingConfig

    conf = EmbeddingConfig()
    return (conf.runtime, conf.precision) if conf.runtime != "torch" else ("openvino", "bf16")


def main(argv: list[str] | None = None) -> None:
    """Run the chosen benchmarks in order and write the report."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run")
    parser.add_argument("--only", default=",".join(ALL))
    parser.add_argument("--docs", default="1000,5000",
                        help="overhead run sizes (torch runs at the first only)")
    parser.add_argument("--sizes", default="1000,2500,5000", help="scaling curve sizes")
    parser.add_argument("--screen-docs", type=int, default=200, help="documents per runtime screen")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds per screen")
    parser.add_argument("--search-points", type=int, default=50_000)
    parser.add_argument("--runtime", help="runtime for ingest runs (default: openvino)")
    parser.add_argument("--precision", help="precision for ingest runs (default: bf16)")
    args = parser.parse_args(argv)
    chosen = [s.strip() for s in args.only.split(",") if s.strip()]
    runtime, precision = _default_runtime()
    runtime, precision = args.runtime or runtime, args.precision or precision
    steps: dict[str, Callable[[str], dict[str, Any]]] = {
        "runtimes": lambda api: _runtimes(args.screen_docs, args.rounds),
        "ndcg": lambda api: _ndcg(),
        "overhead": lambda api: _overhead(api, [int(d) for d in args.docs.split(",")], runtime,
                                          precision),
        "scaling": lambda api: _scaling(api, [int(s) for s in args.sizes.split(",")], runtime,
                                        precision),
        "search": lambda api: _search(args.search_points),
        "api_load": lambda api: _api_load(args.search_points),
    }
    with common.prefect_server() as api:
        for name in chosen:
            print(f"== {name}", flush=True)
            result = steps[name](api)
            common.save_result(name, {**result, "machine": common.machine()})
            report.write()
    print(f"wrote {report.REPORT}", flush=True)


def _runtimes(docs: int, rounds: int) -> dict[str, Any]:
    from benchmarks import runtimes

    return runtimes.run(docs, rounds)


def _ndcg() -> dict[str, Any]:
    """The screen's finalist (OpenVINO bf16) against fp32 on all of SciFact."""
    from benchmarks import ndcg

    rows = [ndcg.evaluate("openvino", "f32"), ndcg.evaluate("openvino", "bf16")]
    rows[-1].update(ndcg.compare(common.OUT / "scifact-openvino-f32.npy",
                                 common.OUT / "scifact-openvino-bf16.npy"))
    return {"rows": rows}


def _overhead(api: str, sizes: list[int], runtime: str, precision: str) -> dict[str, Any]:
    """torch fp32 at the first size (the goal's bare `SentenceTransformer.encode`), the chosen
    runtime at every size (its own bare encode is the strict baseline)."""
    from benchmarks import pipeline

    rows = [pipeline.overhead(api, sizes[0], "torch", "f32")]
    if runtime != "torch":
        rows += [pipeline.overhead(api, n, runtime, precision) for n in sizes]
    return {"rows": rows}


def _scaling(api: str, sizes: list[int], runtime: str, precision: str) -> dict[str, Any]:
    from benchmarks import pipeline

    return pipeline.scaling(api, sizes, runtime, precision)


def _search(points: int) -> dict[str, Any]:
    from benchmarks import search

    found = sorted(common.OUT.glob("scifact-*.npy"))
    docs = [p for p in found if "queries" not in p.name]
    if not docs:
        raise SystemExit("search needs SciFact vectors: run --only ndcg first")
    queries = docs[0].with_name(docs[0].name.replace("scifact-", "scifact-queries-"))
    return {**search.run(docs[0], queries, points), "vectors_from": docs[0].name}


def _api_load(points: int) -> dict[str, Any]:
    from benchmarks import api_load

    return api_load.run(points)


if __name__ == "__main__":
    main()
