"""Comparing two runs over the same queries: is the candidate worse, or is the difference noise?

Every comparison the quality machinery makes (a migration's live against its shadow, a nightly
run against the last one, a tuning candidate against the current settings) is paired: the same
queries, scored both ways. Per metric it reports the mean difference (candidate - baseline), a
95% confidence interval of it (a bootstrap over queries) and a two-sided p-value from a paired
permutation test (each query's two scores swapped at random), both from `scipy.stats`.

It also says how much the set can see: the power to detect a drop of `quality.max_drop` at the
gate's significance level, from the spread of the per-query differences (a normal
approximation), and how many queries would give 80%. The 14-query sample set cannot tell a
0.02 drop of nDCG@10 from noise; the gate says so instead of passing as if it could.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from tessera.core.events import EventLog, utcnow
from tessera.core.settings import QualityConfig

RESAMPLES = 9999
WANTED_POWER = 0.8
SEED = 20261207  # fixed: the same two runs always get the same interval and p-value


@dataclass(frozen=True)
class Comparison:
    """One metric of a paired comparison."""

    metric: str
    queries: int
    baseline: float  # mean over the queries
    candidate: float
    difference: float  # candidate - baseline
    low: float  # 95% interval of the difference
    high: float
    p_value: float  # paired permutation test, two-sided
    alpha: float  # the significance level it is judged at
    power: float  # chance of detecting a drop of `drop` at `alpha` with this many queries
    drop: float  # the drop the power is for (quality.max_drop)
    needed: int  # queries that would give WANTED_POWER for that drop

    @property
    def worse(self) -> bool:
        """Significantly worse: the candidate lost, and chance alone rarely loses that much."""
        return self.difference < 0 and self.p_value < self.alpha

    @property
    def better(self) -> bool:
        """Significantly better."""
        return self.difference > 0 and self.p_value < self.alpha

    @property
    def underpowered(self) -> bool:
        """Too few queries to see a `drop`-sized loss most of the time."""
        return self.power < WANTED_POWER

    def describe(self) -> str:
        """`ndcg@10 -0.0123 [-0.0301, +0.0050], p = 0.17` (and the power, when it is low)."""
        text = (f"{self.metric} {self.difference:+.4f} [{self.low:+.4f}, {self.high:+.4f}], "
                f"p = {self.p_value:.3g}")
        return text + (f" (underpowered: {self.power:.0%} chance to see a {self.drop} drop with "
                       f"{self.queries} queries; ~{self.needed} needed)" if self.underpowered
                       else "")

    def row(self) -> dict[str, Any]:
        """The comparison as plain values (JSON, events)."""
        return {**asdict(self), "worse": self.worse, "better": self.better,
                "underpowered": self.underpowered}


def compare(baseline: dict[str, dict[str, float]], candidate: dict[str, dict[str, float]],
            metrics: tuple[str, ...], alpha: float, drop: float) -> dict[str, Comparison]:
    """Per metric, the paired comparison of two runs' per-query scores (`{query: {metric:
    score}}`) over the queries both scored."""
    queries = sorted(set(baseline) & set(candidate))
    out = {}
    for metric in metrics:
        before = np.array([baseline[q][metric] for q in queries], dtype=np.float64)
        after = np.array([candidate[q][metric] for q in queries], dtype=np.float64)
        out[metric] = _one(metric, before, after, alpha, drop)
    return out


def _one(metric: str, before: np.ndarray, after: np.ndarray, alpha: float,
         drop: float) -> Comparison:
    from scipy import stats

    diff = after - before
    n = len(diff)
    mean = float(diff.mean()) if n else 0.0
    if n < 2 or not diff.any():  # nothing varies: no test to run, and no difference
        low = high = mean
        p_value = 1.0
    else:
        p_value = float(stats.permutation_test(
            (after, before), _mean_difference, permutation_type="samples", vectorized=True,
            n_resamples=RESAMPLES, rng=np.random.default_rng(SEED)).pvalue)
        interval = stats.bootstrap((diff,), np.mean, n_resamples=RESAMPLES, method="percentile",
                                   rng=np.random.default_rng(SEED)).confidence_interval
        low, high = float(interval.low), float(interval.high)
    power, needed = _power(diff, before, alpha, drop)
    return Comparison(metric=metric, queries=n, baseline=_mean(before), candidate=_mean(after),
                      difference=round(mean, 6), low=round(low, 6), high=round(high, 6),
                      p_value=round(p_value, 6), alpha=alpha, power=round(power, 4), drop=drop,
                      needed=needed)


def _mean_difference(x: np.ndarray, y: np.ndarray, axis: int = -1) -> Any:
    return np.mean(x - y, axis=axis)


def _mean(values: np.ndarray) -> float:
    return round(float(values.mean()), 6) if len(values) else 0.0


def _power(diff: np.ndarray, before: np.ndarray, alpha: float, drop: float) -> tuple[float, int]:
    """Power of the paired test against a true mean drop of `drop`, and the queries needed for
    WANTED_POWER. The spread is the differences' own; when the two runs agree on every query
    there is none to measure, and the largest spread a score in [0, 1] with the baseline's mean
    can have stands in (sqrt(m(1 - m)), the Bhatia-Davis bound): the power is then a floor. (A
    set scoring 1.0 on nearly every query would otherwise look able to see anything.)"""
    from scipy.stats import norm

    n = len(diff)
    if n < 2 or drop <= 0:
        return 0.0, 0
    spread = float(diff.std(ddof=1))
    if spread == 0.0:
        mean = min(max(float(before.mean()), 0.0), 1.0)
        spread = math.sqrt(mean * (1 - mean))
    if spread == 0.0:  # every query scored 0 (or 1) both times: any drop would show
        return 1.0, n
    z = norm.ppf(1 - alpha / 2)
    shift = drop * math.sqrt(n) / spread
    power = float(norm.cdf(shift - z) + norm.cdf(-shift - z))
    needed = math.ceil(((z + norm.ppf(WANTED_POWER)) * spread / drop) ** 2)
    return power, needed


def compare_runs(gates: QualityConfig, baseline: dict[str, dict[str, float]],
                 candidate: dict[str, dict[str, float]],
                 metrics: tuple[str, ...]) -> dict[str, Comparison]:
    """`compare` at the gates' significance level, powered for their `max_drop`."""
    return compare(baseline, candidate, metrics, gates.significance, gates.max_drop)


def breaches(gates: QualityConfig, found: dict[str, Comparison],
             sides: tuple[str, str] = ("baseline", "candidate")) -> list[str]:
    """One message per rule the candidate breaks: significantly worse on a gated metric, or a
    mean drop of any metric beyond `max_drop` (however noisy)."""
    out = [f"{m} is significantly worse: {c.describe()}, under quality.significance = "
           f"{gates.significance}" for m, c in found.items() if m in gates.gate_metrics and c.worse]
    out += [f"{m} {sides[1]} {c.candidate:.4f} vs {sides[0]} {c.baseline:.4f}: drops "
            f"{-c.difference:.4f}, "
            f"more than quality.max_drop = {gates.max_drop}"
            for m, c in found.items() if -c.difference > gates.max_drop + 1e-9]
    return out


def power_notes(gates: QualityConfig, found: dict[str, Comparison]) -> list[str]:
    """What the set cannot see: one note per gated metric it is underpowered for."""
    return [f"{m}: {c.queries} queries give a {c.power:.0%} chance to detect a {c.drop} drop "
            f"(~{c.needed} would give {WANTED_POWER:.0%}); a pass says little"
            for m, c in found.items() if m in gates.gate_metrics and c.underpowered]


def record(events: EventLog, gates: QualityConfig, kind: str, subject: str, dataset: str,
           mode: str,
           sides: tuple[str, str], found: dict[str, Comparison],
           scores: tuple[dict[str, dict[str, float]], dict[str, dict[str, float]]],
           decision: str) -> None:
    """The comparison as events: one `quality_comparisons` row per metric, and one
    `quality_query_changes` row per query and metric that scored differently (the marts list
    the losses of a switch from them)."""
    now = utcnow()
    for metric, c in found.items():
        events.add("quality_comparisons", kind=kind, subject=subject, dataset=dataset,
                   mode=mode, baseline=sides[0], candidate=sides[1], metric=metric,
                   queries=c.queries, baseline_mean=c.baseline, candidate_mean=c.candidate,
                   difference=c.difference, ci_low=c.low, ci_high=c.high, p_value=c.p_value,
                   alpha=c.alpha, power=c.power, power_drop=c.drop, queries_needed=c.needed,
                   significantly_worse=c.worse, significantly_better=c.better,
                   gated=metric in gates.gate_metrics, decision=decision,
                   recorded_at=now)
        before, after = scores
        for query in sorted(set(before) & set(after)):
            delta = after[query][metric] - before[query][metric]
            if abs(delta) > 1e-12:
                events.add("quality_query_changes", kind=kind, subject=subject,
                           dataset=dataset, mode=mode, metric=metric, query_id=query,
                           baseline=before[query][metric], candidate=after[query][metric],
                           difference=delta, recorded_at=now)
