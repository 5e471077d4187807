"""Whole-process time of the commands a person types most, before and after a change.

    python -m benchmarks.cli_startup [--before a5b3674] [--docs 1000] [--rounds 7]

Each figure is one whole `tessera` process (interpreter start-up included), measured by
`os.wait4` (benchmarks.cli_peer.measure): `--help`, `--version`, `status`, and a no-op ingest of
`--docs` SciFact text files already indexed (every file unchanged). `before` is the tree at
`--before` (the commit before #27's CLI work), extracted with `git archive` and run with this
venv; `after` is this tree. The two alternate within every round; medians are reported.
Results: benchmarks/results/cli_startup.json (and the report's section).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

from benchmarks import common
from benchmarks.cli_peer import WORK, _config, _env, ensure_before_tree, make_corpus, measure

BEFORE = "a5b3674"  # main after the layout (#26), before the CLI manners of #27
COMMANDS = {"--help": ["--help"], "--version": ["--version"], "status": ["status"],
            "no-op ingest": ["ingest"]}


def _argv(tree: Path, config: Path, name: str) -> list[str]:
    argv = [sys.executable, "-m", "tessera.cli.main", *COMMANDS[name]]
    # --help and --version as typed alone: a config would be read by --version (after only).
    return argv if name.startswith("--") else [*argv, "--config", str(config)]


def run(before: str, docs: int, rounds: int) -> dict[str, Any]:
    """Alternate the two trees over `rounds` rounds; medians of wall, CPU and peak RSS."""
    WORK.mkdir(parents=True, exist_ok=True)
    corpus = make_corpus(docs, WORK / "corpus-startup")
    trees = {"before": ensure_before_tree(before), "after": common.REPO}
    configs = {}
    for arm, tree in trees.items():
        home = WORK / f"startup-home-{arm}"
        subprocess.run(["rm", "-rf", str(home)], check=True)
        configs[arm] = _config(home, corpus)
        measure(_argv(tree, configs[arm], "no-op ingest"), env=_env(tree, home), cwd=tree)
    samples: dict[str, dict[str, list[dict[str, Any]]]] = {a: {c: [] for c in COMMANDS}
                                                           for a in trees}
    for _ in range(rounds):
        for name in COMMANDS:
            for arm, tree in trees.items():
                home = configs[arm].parent
                samples[arm][name].append(measure(_argv(tree, configs[arm], name),
                                                  env=_env(tree, home), cwd=tree))
    medians = {arm: {name: {key: statistics.median(s[key] for s in runs)
                            for key in ("wall_s", "cpu_s", "peak_rss_mib")}
                     for name, runs in by_name.items()} for arm, by_name in samples.items()}
    return {"before_commit": before, "docs": docs, "rounds": rounds, "medians": medians,
            "wall_runs": {arm: {n: [s["wall_s"] for s in r] for n, r in by.items()}
                          for arm, by in samples.items()},
            "machine": common.machine()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--before", default=BEFORE)
    ap.add_argument("--docs", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=7)
    args = ap.parse_args()
    result = run(args.before, args.docs, args.rounds)
    common.save_result("cli_startup", result)
    print(json.dumps(result["medians"], indent=1))


if __name__ == "__main__":
    main()
