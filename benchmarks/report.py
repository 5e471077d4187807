"""Rebuild benchmarks/REPORT.md and benchmarks/scaling.png from benchmarks/results/*.json."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from benchmarks import common

REPORT = common.BENCH / "REPORT.md"
PLOT = common.BENCH / "scaling.png"
NOTES = common.BENCH / "NOTES.md"


def _machine(results: dict[str, dict[str, Any]]) -> list[str]:
    newest = sorted((r for r in results.values() if "machine" in r),
                    key=lambda r: str(r.get("recorded_at", "")))
    m = newest[-1]["machine"] if newest else common.machine()
    v = m["versions"]
    return ["The newest run's machine (each section names the CPU it ran on):", "",
            f"- CPU: {m['cpu']}, {m['cores']} cores visible, ISA: {', '.join(m['isa'])}",
            f"- Python {m['python']}; " + ", ".join(f"{k} {val}" for k, val in v.items()),
            "- Each section gives the load average when it was recorded: about the core count means "
            "only the benchmark ran; well above it, other work shared the cores (read ratios from "
            "interleaved runs then, not seconds)"]


def _runtimes(r: dict[str, Any]) -> list[str]:
    out = [f"Screen: first {r['docs']} SciFact documents (\"title text\", truncated at 256 tokens), "
           f"batch {r['batch_size']}, {r['rounds']} interleaved rounds; speed-up is the median over "
           "rounds of (baseline seconds / candidate seconds) in the same round; cosine is per "
           "document to the baseline's vector.", "",
           "| candidate | speed-up vs torch fp32 | per-round | docs/s (best) | cosine mean | cosine min |",
           "|---|---|---|---|---|---|"]
    for row in r["rows"]:
        out.append(f"| {row['candidate']} | **{row['speedup']:.2f}x** | "
                   f"{', '.join(f'{x:.2f}' for x in row['speedups'])} | {row['docs_per_s']:.1f} | "
                   f"{row['cosine_mean']:.5f} | {row['cosine_min']:.5f} |")
    for family, err in r.get("errors", {}).items():
        out.append(f"\n{family} candidates could not run: `{err}`")
    return out


def _ndcg(r: dict[str, Any]) -> list[str]:
    out = ["| runtime | precision | nDCG@10 | recall@100 | corpus cosine to OpenVINO f32 (mean / min) |",
           "|---|---|---|---|---|"]
    for row in r["rows"]:
        cos = (f"{row['cosine_mean']:.5f} / {row['cosine_min']:.5f}" if "cosine_mean" in row
               else "(reference)")
        out.append(f"| {row['runtime']} | {row['precision']} | **{row['ndcg@10']:.5f}** | "
                   f"{row['recall@100']:.4f} | {cos} |")
    return out


def _overhead(r: dict[str, Any]) -> list[str]:
    rows = r["rows"]
    torch_bare = {row["docs"]: sum(row["bare_seconds"]) / 2 for row in rows
                  if row["runtime"] == "torch"}
    out = ["Each row: bare encode, then first ingest and an unchanged re-ingest in one fresh "
           "process, then bare encode again (ratios use the mean of the two bare runs). "
           "**strict** = this runtime's own bare encode / ingest; **vs ST** = torch "
           "`SentenceTransformer.encode` of the same chunks / this ingest (the goal's wording). "
           "Other = ingest wall minus the embed stage (model load and compile included in embed).",
           "", "| runtime | docs | chunks | bare encode s (before, after) | ingest s | embed stage s "
           "| other s | strict ratio | vs ST | re-ingest s | re-ingest / first | peak RSS MiB |",
           "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for row in rows:
        ingest = row["ingest_seconds"]
        embed = row.get("first_stages", {}).get("embed_seconds")
        st = torch_bare.get(row["docs"])
        stage = f"{embed:.1f} | {ingest - embed:.1f}" if embed is not None else "n/a | n/a"
        vs_st = f"**{st / ingest:.2f}**" if st else "n/a"
        out.append(f"| {row['runtime']} {row['precision']} | {row['docs']} | {row['chunks']} | "
                   f"{row['bare_seconds'][0]:.1f}, {row['bare_seconds'][1]:.1f} | {ingest:.1f} | "
                   f"{stage} | **{row['throughput_ratio']:.3f}** | {vs_st} | "
                   f"{row['reingest_seconds']:.2f} | **{row['reingest_fraction']:.3f}** | "
                   f"{row['peak_rss_mib']:.0f} |")
    runtime = [row for row in rows if row["runtime"] != "torch"]
    if len(runtime) >= 2:
        a, b = runtime[0], runtime[-1]
        marginal = ((sum(b["bare_seconds"]) - sum(a["bare_seconds"])) / 2
                    / (b["ingest_seconds"] - a["ingest_seconds"]))
        out += ["", f"Per-document (marginal) throughput ratio of {b['runtime']} {b['precision']} "
                f"between {a['docs']} and {b['docs']} documents, where the per-process costs "
                f"cancel: (bare {b['docs']} - bare {a['docs']}) / (ingest {b['docs']} - ingest "
                f"{a['docs']}) = **{marginal:.3f}**."]
    return out


def _scaling(r: dict[str, Any]) -> list[str]:
    out = [f"Runtime: {r['runtime']} {r['precision']}. Each size: a fresh home, a fresh process, "
           "first ingest. Marginal = (this size's seconds - the previous size's) / (documents "
           "added): the per-document cost once per-run costs are paid.", "",
           "| documents | chunks | ingest wall s | docs/s | wall s/doc vs smallest | marginal wall "
           "ms/doc | CPU s | CPU s/doc vs smallest | peak RSS MiB |",
           "|---|---|---|---|---|---|---|---|---|"]
    prev: dict[str, Any] | None = None
    for p in r["points"]:
        cpu = (f"{p['cpu_seconds']:.1f} | **{p['cpu_per_doc_vs_first']:.3f}**" if "cpu_seconds" in p
               else "n/a | n/a")
        marginal = (f"{1000 * (p['seconds'] - prev['seconds']) / (p['docs'] - prev['docs']):.1f}"
                    if prev else "-")
        out.append(f"| {p['docs']} | {p['chunks']} | {p['seconds']:.1f} | {p['docs_per_s']:.1f} | "
                   f"{p['seconds_per_doc_vs_first']:.3f} | {marginal} | {cpu} | "
                   f"{p['peak_rss_mib']:.0f} |")
        prev = p
    return out


def _search(r: dict[str, Any]) -> list[str]:
    out = [f"{r['points']} points (vectors from `{r['vectors_from']}`, cycled with noise), upsert "
           f"{r['upsert_seconds']:.1f} s, optimize {r['optimize_seconds']:.1f} s; "
           f"{r['queries']} queries x {r['passes']} passes, top 10, one `EdgeStore.search` each.", "",
           "| query | p50 ms | p99 ms | mean ms | n |", "|---|---|---|---|---|"]
    for label in ("unfiltered", "filtered (source = 1 of 10 parts)"):
        q = r[label]
        out.append(f"| {label} | {q['p50_ms']:.2f} | {q['p99_ms']:.2f} | {q['mean_ms']:.2f} | {q['n']} |")
    return out


def _hybrid_grid(r: dict[str, Any]) -> list[str]:
    out = [f"On the index `tessera quality` built (`{r['collection']}`); documents scored by their "
           f"best chunk; dense side exact. \"prefetch 100\": 100 chunks per side and 100 fused "
           f"chunks (fewer than 100 documents, so recall@100 is lower); \"deep\": "
           f"{r['deep_prefetch_chunks']} chunks per side and fused, as `tessera quality` looks.", "",
           "| variant | nDCG@10 | recall@10 | recall@100 | MRR@10 |", "|---|---|---|---|---|"]
    for row in r["rows"]:
        out.append(f"| {row['variant']} | **{row['ndcg@10']:.4f}** | {row['recall@10']:.4f} | "
                   f"{row['recall@100']:.4f} | {row['mrr@10']:.4f} |")
    return out


def _hybrid_ingest(r: dict[str, Any]) -> list[str]:
    out = [f"First {r['docs']} SciFact documents, {r['rounds']} round(s) of (sparse on, sparse off) "
           "interleaved, each a fresh home and a `tessera ingest` process, then an unchanged "
           "re-ingest; seconds are the run's own (`ingest --json`).", "",
           "| sparse | first ingest s | re-ingest s | re-ingest / first | chunks | sparse vectors written |",
           "|---|---|---|---|---|---|"]
    for run in r["runs"]:
        out.append(f"| {run['sparse']} | {run['first_seconds']:.1f} | {run['reingest_seconds']:.1f} | "
                   f"{run['reingest_seconds'] / run['first_seconds']:.3f} | "
                   f"{run['first']['chunks_embedded']} | {run['first'].get('sparse_written', 0)} |")
    out += ["", f"First ingest, sparse on / off: **{r['on_over_off']:.3f}** (goal <= 1.05); "
                f"re-ingest / first ingest with sparse on: **{r['reingest_over_first_on']:.3f}** "
                "(goal <= 0.05)."]
    return out


def _hybrid_search(r: dict[str, Any]) -> list[str]:
    out = [f"{r['points']} points (real SciFact chunk vectors and texts, cycled with noise; BM25 "
           f"vectors from the texts), upsert {r['upsert_seconds']:.1f} s, optimize "
           f"{r['optimize_seconds']:.1f} s; {r['queries']} SciFact queries x {r['passes']} "
           "passes, top 10, store only (queries embedded before timing). Documents: "
           "`query_documents`, 10 distinct documents, over-fetching 4 chunks per document.", "",
           "| mode | chunks p50 ms | chunks p99 ms | documents p50 ms | documents p99 ms | "
           "grouping cost (p50) |", "|---|---|---|---|---|---|"]
    for mode in ("dense", "sparse", "hybrid"):
        c, d = r["chunks"][mode], r["documents"][mode]
        out.append(f"| {mode} | {c['p50_ms']:.2f} | {c['p99_ms']:.2f} | {d['p50_ms']:.2f} | "
                   f"{d['p99_ms']:.2f} | {d['p50_ms'] / c['p50_ms']:.2f}x |")
    return out


def _side_scores(r: dict[str, Any]) -> list[str]:
    return [f"{r['docs']:,} SciFact documents ({r['points']:,} points), {r['queries']} SciFact "
            f"queries, hybrid, top {r['k']} documents, store only (queries embedded before "
            "timing). The side scores are one batched call of a dense and a sparse query "
            "over just the k points returned.", "",
            "| call | p50 ms | p99 ms |", "|---|---|---|",
            f"| hybrid document query | {r['hybrid_p50_ms']:.2f} | {r['hybrid_p99_ms']:.2f} |",
            f"| side scores (dense + sparse of the k hits) | {r['sides_p50_ms']:.2f} | "
            f"{r['sides_p99_ms']:.2f} |", "",
            f"Side scores add **{r['ratio_p50']:.2f}x** the hybrid query's engine time at p50."]


def _tracing(r: dict[str, Any]) -> list[str]:
    s = r["summary"]
    rows = [("ingest of the documents, wall s", "ingest_s"), ("API p50 ms, concurrency 1", "c1_p50_ms"),
            ("API p99 ms, concurrency 1", "c1_p99_ms"), ("API p50 ms, concurrency 8", "c8_p50_ms"),
            ("API p99 ms, concurrency 8", "c8_p99_ms")]
    out = [f"{r['docs']:,} SciFact documents; tracing off (`OTEL_SDK_DISABLED=true`) against on "
           "(spans exported over OTLP/HTTP to a sink in a process of its own, "
           "benchmarks/otlp_sink.py: "
           f"{r['exported']['requests']:,} exports, {r['exported']['bytes']:,} bytes); "
           f"{r['rounds']} interleaved rounds, medians; whole `tessera` processes; API levels "
           f"{r['seconds']:g} s each, hybrid SciFact queries; a search makes 3 spans.", "",
           "| measure | off | on | on / off |", "|---|---|---|---|"]
    out += [f"| {label} | {s['off'][key]:.2f} | {s['on'][key]:.2f} | "
            f"**{s['ratio_on_off'][key]:.3f}** |" for label, key in rows]
    pairs = [on[0]["p50_ms"] / off[0]["p50_ms"]
             for on, off in zip(r["api"]["on"], r["api"]["off"], strict=True)]
    out += ["", "Per-round on/off ratios of the concurrency-1 p50 (the noise of one round on "
            f"these shared cores): {', '.join(f'{p:.3f}' for p in pairs)}."]
    return out


def _api_load(r: dict[str, Any]) -> list[str]:
    d = r["direct"]
    out = [f"{r['points']:,} SciFact-derived points, {r['mode']} text queries, `tessera api` on "
           "loopback in a second process, a closed-loop aiohttp client in this one (each worker "
           "sends its next request when the last answers); CPU per request from /proc over each "
           "whole level.", "",
           "| concurrency | requests/s | p50 ms | p95 ms | p99 ms | server embed p50 | "
           "server engine p50 | server CPU ms / request | client CPU ms / request |",
           "|---|---|---|---|---|---|---|---|---|"]
    for lv in r["levels"]:
        out.append(f"| {lv['concurrency']} | {lv['requests_per_second']:.1f} | {lv['p50_ms']:.2f} | "
                   f"{lv['p95_ms']:.2f} | {lv['p99_ms']:.2f} | {lv['server_embed']['p50_ms']:.2f} | "
                   f"{lv['server_engine']['p50_ms']:.2f} | "
                   f"{lv.get('server_cpu_ms_per_request', float('nan')):.2f} | "
                   f"{lv.get('client_cpu_ms_per_request', float('nan')):.2f} |")
    out.append(f"| direct (no HTTP), 1 | - | {d['p50_ms']:.2f} | {d['p95_ms']:.2f} | "
               f"{d['p99_ms']:.2f} | {d['embed']['p50_ms']:.2f} | {d['engine']['p50_ms']:.2f} | "
               "- | - |")
    if d["embed"]["p50_ms"] < 1:
        out += ["", "The client cycles through the same queries, so the query cache (#29) answers "
                "nearly every embedding after the first pass (embed p50 under 1 ms): these rows "
                "are the repeated-query case; api_wrk below separates unique from repeated."]
    out += ["", f"API overhead at p50 (concurrency 1 minus direct): **{r['api_overhead_p50_ms']:.2f} "
            "ms** (goal <= 2 ms); p99 at concurrency 8: **"
            f"{next((lv['p99_ms'] for lv in r['levels'] if lv['concurrency'] == 8), float('nan')):.1f}"
            " ms** (goal < 30 ms)."]
    return out


def plot(r: dict[str, Any], path: Path = PLOT) -> None:
    """Ingest seconds and peak memory against documents, with the linear fit through the first."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pts = r["points"]
    n = [p["docs"] for p in pts]
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
    a.plot(n, [p["seconds"] for p in pts], "o-", label="wall (shared CPU)")
    if all("cpu_seconds" in p for p in pts):
        a.plot(n, [p["cpu_seconds"] for p in pts], "s-", label="CPU seconds, all threads")
        a.plot(n, [pts[0]["cpu_seconds"] * x / n[0] for x in n], "--", color="grey",
               label="CPU, linear from the smallest")
    a.set(xlabel="documents", ylabel="first ingest, seconds", title="Ingest time")
    a.legend()
    b.plot(n, [p["peak_rss_mib"] for p in pts], "o-")
    b.set(xlabel="documents", ylabel="peak RSS, MiB", title="Peak memory (whole process)")
    b.set_ylim(bottom=0)
    fig.suptitle(f"tessera ingest, SciFact, runtime {r['runtime']} {r['precision']}")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _cli_startup(r: dict[str, Any]) -> list[str]:
    out = [f"Whole `tessera` processes, {r['rounds']} interleaved rounds, medians (wall s / CPU s "
           f"/ peak RSS MiB); before = {r['before_commit']} (before #27's CLI work), after = this "
           f"tree; the no-op ingest re-reads {r['docs']:,} unchanged SciFact text files.", "",
           "| command | before | after | after / before (wall) |", "|---|---|---|---|"]
    for name, after in r["medians"]["after"].items():
        before = r["medians"]["before"][name]
        cell = [f"{m['wall_s']:.3f} / {m['cpu_s']:.3f} / {m['peak_rss_mib']:.0f}"
                for m in (before, after)]
        out.append(f"| `{name}` | {cell[0]} | {cell[1]} | "
                   f"{after['wall_s'] / before['wall_s']:.2f} |")
    return out


def _snapshots(r: dict[str, Any]) -> list[str]:
    out = [f"A search snapshot taken after a writer re-upserted {r['change']:.0%} of the points "
           "(new versions of existing ids, spread over every segment) and closed. before: the "
           "whole shard copied under the writer's lock (the reader up to 3934b90); after: sealed "
           "write-once files hard-linked, the rest copied (`tessera.service.shard_copy`). Lock "
           "held = the most a writer arriving then waits. Extra disk: blocks of shard and "
           "snapshot counted once (`du`), minus the shard's. Medians of the rounds; the arms "
           "alternate which goes first.", "",
           "| points | shard on disk | segments | lock held before / after | refresh before / "
           "after | extra disk before / after | old snapshot after the changes |",
           "|---|---|---|---|---|---|---|"]
    for size in r["sizes"]:
        b, a = size["medians"]["before"], size["medians"]["after"]
        old = max(size["old_snapshot_extra_share"])
        out.append(f"| {size['points']:,} | {size['shard_disk_mib']:,.0f} MiB | "
                   f"{size['segments']} | {b['lock_s']:.2f} s / **{a['lock_s']:.2f} s** | "
                   f"{b['take_s']:.2f} s / **{a['take_s']:.2f} s** | "
                   f"{b['extra_disk_share']:.0%} / **{a['extra_disk_share']:.1%}** "
                   f"({a['extra_disk_bytes'] / 2**20:,.0f} MiB) | {old:.1%} |")
    out += ["", "Goals at 1M after a 1% change: refresh <= 2 s, writer wait <= 1 s, extra disk "
            "<= 25% of the shard. \"Old snapshot\": what the snapshot a reader still serves "
            "keeps alive of files the writers replaced since it was taken (the worst round)."]
    return out


def _int8(r: dict[str, Any]) -> list[str]:
    out = [f"SciFact ({r['queries']} test queries) on `{r['collection']}` (documents embedded as "
           f"shipped, OpenVINO {r['precision']}); int8 = `api.query_precision = \"int8\"` "
           f"(NNCF, calibrated on {r['calibration_texts']} of the collection's chunks). Cosine "
           f"of each int8 query vector to the default's: mean {r['cosine_mean']:.4f}, min "
           f"{r['cosine_min']:.4f}.", "",
           "| mode | nDCG@10 default | int8 | difference [95%] | p | recall@100 default | "
           "int8 |", "|---|---|---|---|---|---|---|"]
    for mode, m in r["modes"].items():
        c = m["comparison"]["ndcg@10"]
        out.append(f"| {mode} | {m['default']['ndcg@10']:.4f} | {m['int8']['ndcg@10']:.4f} | "
                   f"{c['difference']:+.4f} [{c['low']:+.4f}, {c['high']:+.4f}] | "
                   f"{c['p_value']:.3g} | {m['default']['recall@100']:.4f} | "
                   f"{m['int8']['recall@100']:.4f} |")
    t = r["ms_per_query_median"]
    out += ["", f"One query at a time (all cores, as the service runs it): default "
            f"{t['default']:.2f} ms, int8 {t['int8']:.2f} ms a query "
            f"(**{t['int8'] / t['default']:.2f}x**), medians of {len(r['ms_per_query']['int8'])} "
            "interleaved rounds over the 300 queries."]
    one = r.get("one_thread_ms_per_query_median")
    if one:
        out.append(f"On one OpenVINO thread: default {one['default']:.2f} ms, int8 "
                   f"{one['int8']:.2f} ms (**{one['int8'] / one['default']:.2f}x**).")
    return out


def _api_wrk(r: dict[str, Any]) -> list[str]:
    out = [f"{r['points']:,} points, {r['mode']} SciFact queries, {r['pinning']}; wrk "
           f"{r['seconds']:g} s per level, query cache {r['cache_size']:,} entries, queries "
           f"embedded {r.get('query_precision', 'same')}. unique: every "
           "request's text differs (a running number appended); repeated: a Zipf mix (s = 1.1) "
           f"over the {r['queries']} queries.", "",
           "| mix | connections | requests/s | p50 ms | p90 ms | p99 ms | server CPU ms / "
           "request | cache hit ratio | errors |", "|---|---|---|---|---|---|---|---|---|"]
    for mix, rows in r["levels"].items():
        for lv in rows:
            ratio = "-" if lv["cache_hit_ratio"] is None else f"{lv['cache_hit_ratio']:.2f}"
            out.append(f"| {mix} | {lv['concurrency']} | {lv['requests_per_second']:.1f} | "
                       f"{lv['p50_ms']:.2f} | {lv['p90_ms']:.2f} | {lv['p99_ms']:.2f} | "
                       f"{lv['server_cpu_ms_per_request']:.2f} | {ratio} | {lv['errors']} |")
    split = r.get("components_cpu_ms") or {}
    if split:
        c1 = {mix: next(lv for lv in rows if lv["concurrency"] == 1)
              for mix, rows in r["levels"].items()}
        out += ["", "CPU per search by component, measured apart in a child pinned to the "
                "server's core (300 SciFact queries each), beside the server's own:", "",
                "| measured | CPU ms / search |", "|---|---|",
                f"| query embedding alone (unique texts) | {split['embedding']:.2f} |",
                "| in-process search, vector cached (engine, side scores, grouping, payload) | "
                f"{split['search, cached query vector']:.2f} |",
                f"| in-process search, unique query | {split['search, unique query']:.2f} |",
                f"| server over HTTP, unique, concurrency 1 | "
                f"{c1['unique']['server_cpu_ms_per_request']:.2f} |",
                f"| server over HTTP, repeated (hit ratio "
                f"{c1['repeated']['cache_hit_ratio'] or 0:.2f}), concurrency 1 | "
                f"{c1['repeated']['server_cpu_ms_per_request']:.2f} |"]
    return out


def _defaults(r: dict[str, Any]) -> list[str]:
    out = ["Each candidate against the shipped `[search]` default, hybrid, on every labelled set "
           "the project ships, paired over the queries (95% bootstrap interval, permutation "
           "p-value). A default may change only if the candidate is significantly worse on no "
           "set and significantly better on one.", "",
           "| candidate | set | queries | nDCG@10 default | candidate | difference [95%] | p | "
           "verdict |", "|---|---|---|---|---|---|---|---|"]
    for res in r["results"]:
        label = ", ".join(f"{k}={v}" for k, v in res["candidate"].items())
        for name, metrics in res["sets"].items():
            c = metrics["ndcg@10"]
            out.append(f"| {label} | {name} | {c['queries']} | {c['baseline']:.4f} | "
                       f"{c['candidate']:.4f} | {c['difference']:+.4f} [{c['low']:+.4f}, "
                       f"{c['high']:+.4f}] | {c['p_value']:.3g} | {res['verdict']} |")
    return out


SECTIONS = (("runtimes", "Goal 2: CPU runtimes for all-MiniLM-L6-v2", _runtimes),
            ("ndcg", "Goal 2: quality of the finalist on all of SciFact (5,183 documents, 300 "
                     "test queries)", _ndcg),
            ("overhead", "Goals 1 and 3: ingest against the bare model, and re-ingest", _overhead),
            ("scaling", "Goal 4: scaling curve", _scaling),
            ("search", "Goal 4: search latency, 50k points, Qdrant Edge (store benchmark)", _search),
            ("hybrid-grid", "Hybrid retrieval: SciFact per mode and the fusion grid", _hybrid_grid),
            ("hybrid-ingest", "Hybrid retrieval: ingest with sparse vectors on / off", _hybrid_ingest),
            ("hybrid-search", "Hybrid retrieval: search latency per mode, 50k points, Qdrant Edge",
             _hybrid_search),
            ("api_load", "Search service: load test over HTTP", _api_load),
            ("side_scores", "Readable scores: what a hybrid answer's per-side scores cost",
             _side_scores),
            ("defaults", "Defaults: decided on every shipped labelled set", _defaults),
            ("tracing_overhead", "Tracing: spans exported over OTLP against tracing off",
             _tracing),
            ("cli_startup", "CLI: the commands typed most, whole process", _cli_startup),
            ("snapshots", "Snapshots: what a refresh costs after a 1% change", _snapshots),
            ("int8_queries", "Int8 queries: quality and speed against the shipped default",
             _int8),
            ("api_wrk", "Search service under wrk (server and load generator on their own "
                        "cores)", _api_wrk),
            ("api_wrk_nocache", "The same, query cache off (api.query_cache_size = 0): as before "
                                "#29", _api_wrk),
            ("api_wrk_int8", "The same, int8 queries (api.query_precision = \"int8\")",
             _api_wrk))


def write() -> Path:
    """Rebuild the report (and the plot when scaling results exist)."""
    results = common.load_results()
    lines = ["# Tessera benchmarks", "",
             "Tables generated by `make bench` (`python -m benchmarks.run`) from "
             "`benchmarks/results/*.json`; the summary, the decisions and what was not measured "
             "come from `benchmarks/NOTES.md` (hand-written).", "",
             *(NOTES.read_text(encoding="utf-8").splitlines() if NOTES.exists() else []), "",
             "## Machine", "", *_machine(results)]
    for key, title, fmt in SECTIONS:
        if key not in results:
            continue
        r = results[key]
        load = r.get("machine", {}).get("loadavg")
        load_note = (f"; load average {', '.join(f'{x:.1f}' for x in load)} when recorded"
                     if load else "")
        cpu = r.get("machine", {}).get("cpu")
        load_note += f"; CPU: {cpu}" if cpu else ""  # sections come from different machines
        lines += ["", f"## {title}", "",
                  f"Command: `{r.get('command', '')}` at {r.get('recorded_at')}{load_note}",
                  "", *fmt(r)]
        if key == "scaling":
            plot(r)
            lines += ["", "![scaling curve](scaling.png)"]
    REPORT.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return REPORT
