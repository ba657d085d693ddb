"""One row per method from its runs: mean ± std over seeds, failures kept with their error."""

import statistics

AVERAGED = ("quality", "best_dev", "train_seconds", "examples_per_second", "peak_rss_bytes")
SHARED = ("options", "lr", "metric", "quality_source", "trainable_parameters", "trainable_percent", "adapter_bytes")


def mean_std(values: list[float]) -> dict:
    """{"mean", "std", "n"}; std is the sample standard deviation, None for a single run."""
    return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else None,
            "n": len(values)}


def summarize(records: list[dict], methods: list[str]) -> list[dict]:
    rows = []
    for method in methods:
        runs = [r for r in records if r["method"] == method]
        ok = [r for r in runs if r["status"] == "ok"]
        not_ok = [r for r in runs if r["status"] != "ok"]
        row = {"method": method, "runs": len(ok), "failed": sum(r["status"] == "failed" for r in not_ok),
               "missing": sum(r["status"] == "missing" for r in not_ok),
               "errors": sorted({r["error"] for r in not_ok if r["status"] == "failed"})}
        if ok:
            row.update({key: ok[0][key] for key in SHARED})
            row.update({key: mean_std([r[key] for r in ok]) for key in AVERAGED})
            row["loss_curve"] = mean_curve([r["curve"]["loss"] for r in ok])
        rows.append(row)
    return rows


def mean_curve(curves: list[list[list[float]]]) -> list[list[float]]:
    """[[step, value], ...] averaged over the runs that logged each step (early stopping may end some sooner)."""
    by_step: dict[int, list[float]] = {}
    for curve in curves:
        for step, value in curve:
            by_step.setdefault(step, []).append(value)
    return [[step, statistics.fmean(values)] for step, values in sorted(by_step.items())]
