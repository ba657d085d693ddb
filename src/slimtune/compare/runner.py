"""Every (method, seed) of a comparison, one at a time, each training in its own process.

A run lives in OUT/runs/METHOD-sSEED: its training log and record, and the run directory `slimtune train` wrote
in adapter/ (train replaces only a directory of its own, see slimtune.ownership). It is finished when its result.json exists and was made with the same
settings; a later `compare` reuses it. A run that fails leaves failure.json (its error line) instead, is reported,
and is tried again next time; the other runs go on either way. Every run starts with an empty $SLIMTUNE_CACHE, so
no run's time is shortened by features another run cached.
"""

import json
import tempfile
from collections.abc import Callable
from pathlib import Path

from slimtune.atomic import write_json
from slimtune.compare.measure import run_measured
from slimtune.compare.settings import CompareSettings
from slimtune.tasks import get_task

RESULT_FILE = "result.json"
FAILURE_FILE = "failure.json"
TRAIN_LOG = "train.log"
ADAPTER_DIR = "adapter"  # train's --out


def run_comparison(settings: CompareSettings, out_dir: Path, log: Callable[[str], None] = print,
                   execute: bool = True) -> list[dict]:
    """One record per (method, seed), in --methods order; with execute=False only what is on disk."""
    runs_dir = Path(out_dir) / "runs"
    return [run_one(settings, method, seed, runs_dir, log, execute)
            for method in settings.methods for seed in settings.seeds]


def run_one(settings: CompareSettings, method: str, seed: int, runs_dir: Path, log, execute: bool = True) -> dict:
    name = settings.run_name(method, seed)
    run_dir = runs_dir / name
    recorded = settings.recorded(method, seed)
    earlier = _read(run_dir / RESULT_FILE) or _read(run_dir / FAILURE_FILE)
    if earlier is not None and earlier["settings"] == recorded and (earlier["status"] == "ok" or not execute):
        if execute:
            log(f"{name}: finished earlier, reused")
        return earlier
    if not execute:
        return {"method": method, "seed": seed, "status": "missing", "settings": recorded, "error": "not run yet"}
    if earlier is not None and earlier["settings"] != recorded:
        log(f"{name}: settings changed since it ran; running it again")
    for stale in (RESULT_FILE, FAILURE_FILE):
        (run_dir / stale).unlink(missing_ok=True)

    log(f"{name}: training")
    with tempfile.TemporaryDirectory(prefix="slimtune-cold-cache-") as cold_cache:
        child = run_measured(settings.train_command(method, seed, str(run_dir / ADAPTER_DIR)), run_dir / TRAIN_LOG,
                             settings.threads, {"SLIMTUNE_CACHE": cold_cache})
    if child.returncode != 0:
        return _fail(run_dir, method, seed, recorded, child.last_error_line or f"exit status {child.returncode}", log)
    try:
        record = _collect(settings, method, seed, run_dir)
    except Exception as e:  # a broken method must not end the comparison; it is reported with its error
        return _fail(run_dir, method, seed, recorded, f"{type(e).__name__}: {e}", log)
    record.update(settings=recorded, peak_rss_bytes=child.peak_rss_bytes, process_seconds=round(child.wall_seconds, 2))
    write_json(run_dir / RESULT_FILE, record)
    shown = f"{record['quality_source']} {record['metric']} {record['quality']:.4f}"
    log(f"{name}: {shown}, {record['train_seconds']:.1f} s training, peak RSS {child.peak_rss_bytes / 2**20:.0f} MiB")
    return record


def _collect(settings: CompareSettings, method: str, seed: int, run_dir: Path) -> dict:
    task = get_task(settings.task)
    metric = task.primary_metric
    summary = json.loads((run_dir / ADAPTER_DIR / "metrics.json").read_text())
    test = evaluate(run_dir / ADAPTER_DIR, settings.test, settings.read_options) if settings.test else None
    record = {key: summary[key] for key in ("trainable_parameters", "total_parameters", "trainable_percent",
                                            "adapter_bytes", "steps", "epochs_run", "train_examples", "lr")}
    # A method's one-off work before the first step (features' encoder pass, subnetwork's Fisher scores) is part
    # of what its training costs, so time and throughput count it.
    loop_seconds, prepare_seconds = summary["train_seconds"], summary["prepare_seconds"]
    record.update(train_seconds=round(loop_seconds + prepare_seconds, 2), prepare_seconds=prepare_seconds,
                  examples_per_second=round(summary["examples_per_second"] * loop_seconds
                                            / max(loop_seconds + prepare_seconds, 1e-9), 1))
    record.update(method=method, seed=seed, status="ok", options=settings.options.get(method, {}), metric=metric,
                  best_dev=summary[f"best_dev_{metric}"], test=test, curve=read_curve(run_dir / ADAPTER_DIR / "metrics.jsonl", metric))
    record["quality"], record["quality_source"] = (test[metric], "test") if test else (record["best_dev"], "dev")
    return record


def evaluate(run_dir: Path, path: str, read_options: dict) -> dict:
    """The numeric metrics of a saved run on labelled data (the training process never saw this file)."""
    from slimtune.runs.adapter_files import load_adapter

    loaded = load_adapter(run_dir)
    rows = loaded.task.read(path, **read_options)
    features = loaded.task.encode(rows, loaded.backbone.tokenizer, loaded.labels, loaded.backbone.max_length)
    metrics = loaded.task.evaluate(loaded.model, features, loaded.backbone.tokenizer.pad_token_id, 64, loaded.labels)
    return {k: v for k, v in metrics.items() if isinstance(v, (int, float))}


def read_curve(path: Path, metric: str) -> dict:
    """Training loss and dev score by optimizer step, from a run's metrics.jsonl: {"loss": [[step, value]], "dev": ...}."""
    curve = {"loss": [], "dev": []}
    for line in path.read_text().splitlines():
        record = json.loads(line)
        if record["type"] == "train":
            curve["loss"].append([record["step"], record["loss"]])
        elif record["type"] == "eval":
            curve["dev"].append([record["step"], record[f"dev_{metric}"]])
    return curve


def _fail(run_dir: Path, method: str, seed: int, recorded: dict, error: str, log) -> dict:
    record = {"method": method, "seed": seed, "status": "failed", "settings": recorded, "error": error,
              "log": str(run_dir / TRAIN_LOG)}
    write_json(run_dir / FAILURE_FILE, record)
    log(f"{run_dir.name}: FAILED: {error}")
    return record


def _read(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.exists() else None
