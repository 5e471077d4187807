"""Should a search default change? The rule of issue #30, applied on every labelled set we ship.

    python -m benchmarks.defaults --home HOME [--candidate fusion=dbsf ...]

A default changes only if the candidate is not significantly worse on any shipped set (SciFact's
test split, the sample set in examples/quality) and significantly better on at least one. Each
set is indexed through the pipeline into HOME (a second run embeds nothing), both settings are
scored on it query by query in hybrid mode, and compared with tessera.jobs.significance.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from benchmarks import common
from tessera.core.settings import Settings, load_settings
from tessera.jobs.quality import METRICS, dataset_settings, load_dataset, quality_collection
from tessera.jobs.significance import compare_runs
from tessera.jobs.tune import embedded, score_all

SETS = {"scifact": common.SCIFACT, "sample": common.REPO / "examples" / "quality"}


def judge(settings: Settings, candidate: dict[str, Any]) -> dict[str, Any]:
    """Per set, the candidate against the shipped default; the rule's verdict."""
    from tessera.ingest.run import run_ingest

    default = settings.search
    trial = default.model_copy(update=candidate)
    out: dict[str, Any] = {"candidate": candidate, "sets": {}}
    for name, path in SETS.items():
        scoped = dataset_settings(settings, path, name)
        run_ingest(scoped, sources=[scoped.sources[0].name], flow="quality")
        data = load_dataset(path, name)
        before, after = score_all(settings, quality_collection(settings, path, name), data,
                                  "hybrid", [default, trial], embedded(settings, data, "hybrid"))
        found = compare_runs(settings.quality, before, after, METRICS)
        out["sets"][name] = {m: c.row() for m, c in found.items()}
    gated = settings.quality.gate_metrics
    worse = any(s[m]["worse"] for s in out["sets"].values() for m in gated)
    better = any(s[m]["better"] for s in out["sets"].values() for m in gated)
    out["verdict"] = "may change" if better and not worse else "keep the default"
    return out


def main() -> None:
    """Judge each candidate; save `results/defaults.json`."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--home", type=Path, default=common.OUT / "defaults")
    parser.add_argument("--candidate", action="append", default=None,
                        help="KEY=VALUE of [search] (repeatable; each is judged alone; "
                        "default: fusion=dbsf)")
    args = parser.parse_args()
    config = args.home / "tessera.toml"
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text(f'home = "{args.home / "home"}"\ncollection = "defaults"\n')
    settings = load_settings(config)
    results = []
    for pair in dict.fromkeys(args.candidate or ["fusion=dbsf"]):
        key, _, value = pair.partition("=")
        results.append(judge(settings, {key: int(value) if value.isdigit() else value}))
        sets = results[-1]["sets"]
        print(pair, results[-1]["verdict"], {n: (s["ndcg@10"]["difference"], s["ndcg@10"][
            "p_value"]) for n, s in sets.items()}, flush=True)
    common.save_result("defaults", {"results": results, "machine": common.machine()})


if __name__ == "__main__":
    main()
