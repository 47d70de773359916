"""Is a difference between two trainings more than noise? Seeds and paired per-case statistics.

Two students trained once each differ by the luck of their seeds as much as by their method:
on 42 Hippocampus test cases one seed alone resolves about ±0.2 Dice points. So every arm of a
comparison is trained with several seeds, and two arms are compared case by case:

1. per test case and arm, the metric's mean over classes (undefined classes left out), then
   its mean over the arm's seeds (:func:`per_case_values`);
2. per case, the paired difference between the two arms; over the cases, its mean with a
   95 % bootstrap confidence interval (``scipy.stats.bootstrap``, BCa) and the two-sided
   Wilcoxon signed-rank p-value (``scipy.stats.wilcoxon``) (:func:`paired_difference`);
3. a verdict from the interval alone: evidence of a difference only when it excludes 0
   (:func:`verdict`); a difference inside the interval is "no evidence", whatever its sign.

Seed-to-seed spread of an arm's mean is reported beside it (:func:`seed_spread`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

import numpy as np
from scipy import stats

CONFIDENCE = 0.95
RESAMPLES = 10_000


@dataclass(frozen=True)
class PairedDifference:
    """``a - b`` over the cases both define: mean, confidence interval, Wilcoxon p, number of cases."""

    mean: float
    ci_low: float
    ci_high: float
    p_value: float | None  # None when every difference is 0 (the test is undefined)
    cases: int

    def to_dict(self) -> dict:
        return asdict(self)


def per_case_values(runs: Sequence[Sequence[Mapping]], metric: str) -> dict[str, float]:
    """``{case: value}``: per case, ``metric`` (``"dice"`` or ``"hd95_mm"``) averaged over classes, then over runs.

    ``runs`` holds one list of per-case entries per seed (the ``cases`` of
    :func:`recokd.evaluate.comparison.evaluate_models`). A class whose value is undefined
    (``None``: absent from reference and prediction; HD95 of an empty prediction) is left out
    of its case's mean; a case undefined in every run is left out.
    """
    by_case: dict[str, list[float]] = {}
    for run in runs:
        for case in run:
            values = [v for v in case[metric].values() if v is not None and math.isfinite(v)]
            if values:
                by_case.setdefault(case["case"], []).append(float(np.mean(values)))
    return {case: float(np.mean(values)) for case, values in by_case.items()}


def paired_difference(a: Mapping[str, float], b: Mapping[str, float], confidence: float = CONFIDENCE,
                      resamples: int = RESAMPLES, seed: int = 0) -> PairedDifference | None:
    """``a - b`` paired by case over the cases both hold; ``None`` with fewer than 2 such cases."""
    cases = sorted(set(a) & set(b))
    if len(cases) < 2:
        return None
    differences = np.array([a[case] - b[case] for case in cases], dtype=np.float64)
    mean = float(differences.mean())
    if np.ptp(differences) == 0:  # no spread: the interval is the value itself; all zeros leave no ranks
        p_value = float(stats.wilcoxon(differences).pvalue) if mean != 0 else None
        return PairedDifference(mean, mean, mean, p_value, len(cases))
    interval = stats.bootstrap((differences,), np.mean, confidence_level=confidence, n_resamples=resamples,
                               method="BCa", rng=np.random.default_rng(seed)).confidence_interval
    p_value = float(stats.wilcoxon(differences).pvalue)  # zero differences are dropped ("wilcox")
    return PairedDifference(mean, float(interval.low), float(interval.high), p_value, len(cases))


def verdict(difference: PairedDifference | None, higher_is_better: bool = True) -> str:
    """What the interval says about ``a`` against ``b``: better, worse, or no evidence either way."""
    if difference is None:
        return "not measured"
    if difference.ci_low > 0:
        return "a better" if higher_is_better else "a worse"
    if difference.ci_high < 0:
        return "a worse" if higher_is_better else "a better"
    return "no evidence either way"


def seed_spread(values: Sequence[float | None]) -> tuple[float | None, float | None]:
    """Mean and sample standard deviation (``ddof=1``) of per-seed values; sd ``None`` below 2 seeds."""
    defined = [float(v) for v in values if v is not None and math.isfinite(v)]
    if not defined:
        return None, None
    return float(np.mean(defined)), float(np.std(defined, ddof=1)) if len(defined) > 1 else None


def seed_aggregate(runs: Sequence[Mapping]) -> dict:
    """One model entry for an arm trained with several seeds: means over seeds, every seed under ``runs``.

    ``runs`` are :func:`recokd.evaluate.comparison.evaluate_models` entries (plus ``seed`` and
    ``training``). Dice and HD95 (per class and mean), latencies are seed means;
    ``mean_dice_sd`` and ``mean_hd95_sd`` the seed-to-seed standard deviations; ``cases`` are
    per case the seed means of each class (what the small-structure table reads).
    """
    first = runs[0]
    classes = list(first["dice_per_class"])
    entry = {key: first[key] for key in ("package", "params", "flops", "flops_input_shape", "mirroring", "mode", "init")
             if key in first}
    entry["mean_dice"], entry["mean_dice_sd"] = seed_spread([r["mean_dice"] for r in runs])
    entry["dice_per_class"] = {c: seed_spread([r["dice_per_class"][c] for r in runs])[0] for c in classes}
    entry["hd95_per_class"] = {c: seed_spread([r["hd95_per_class"][c] for r in runs])[0] for c in classes}
    entry["mean_hd95_mm"], entry["mean_hd95_sd"] = seed_spread([r["mean_hd95_mm"] for r in runs])
    for key in ("cpu_latency_s", "gpu_latency_s", "ct_cpu_latency_s", "peak_rss_mb"):
        entry[key] = seed_spread([r.get(key) for r in runs])[0]
    entry["cases"] = [
        {"case": case["case"],
         "latency_s": seed_spread([run["cases"][i]["latency_s"] for run in runs])[0],
         **{metric: {c: seed_spread([run["cases"][i][metric][c] for run in runs])[0] for c in classes}
            for metric in ("dice", "hd95_mm")},
         "volume_ml": case["volume_ml"]}
        for i, case in enumerate(first["cases"])]
    entry["seeds"] = [r["seed"] for r in runs]
    entry["runs"] = [dict(r) for r in runs]
    return entry


METRICS = {"dice": True, "hd95_mm": False}  # metric -> higher is better


def compare_models(models: Mapping[str, Mapping], pairs: Sequence[tuple[str, str]]) -> list[dict]:
    """Per pair ``(a, b)`` and metric, :func:`paired_difference` of ``a - b`` over the test cases and its verdict.

    A model's per-case values come from its ``runs`` (every seed) or, trained once, from its
    ``cases``. Returns JSON-ready entries ``{a, b, metric, mean, ci_low, ci_high, p_value,
    cases, verdict}``; Dice in [0, 1], HD95 in mm.
    """
    comparisons = []
    for a, b in pairs:
        for metric, higher_is_better in METRICS.items():
            values = [per_case_values([r["cases"] for r in models[key].get("runs", [models[key]])], metric)
                      for key in (a, b)]
            difference = paired_difference(*values)
            comparisons.append({"a": a, "b": b, "metric": metric,
                                **(difference.to_dict() if difference else {}),
                                "verdict": verdict(difference, higher_is_better)})
    return comparisons
