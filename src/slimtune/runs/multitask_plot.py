"""The task weights (and raw task losses) of a multi-task run over its steps, read from metrics.jsonl."""

import json
from pathlib import Path


def read_weight_records(metrics_path: Path) -> list[dict]:
    lines = Path(metrics_path).read_text().splitlines() if Path(metrics_path).exists() else []
    return [r for r in map(json.loads, lines) if r.get("type") == "task_weights"]


def plot_task_weights(metrics_path: Path, png_path: Path, title: str) -> bool:
    """Two panels over steps: each task's loss weight, and its raw loss. False when there is nothing to plot."""
    records = read_weight_records(metrics_path)
    if not records:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(records[0]["weights"])
    fig, (top, bottom) = plt.subplots(2, 1, sharex=True, figsize=(7, 5.5))
    for name in names:
        top.plot([r["step"] for r in records], [r["weights"][name] for r in records], label=name)
        losses = [(r["step"], r["task_loss"][name]) for r in records if name in r["task_loss"]]
        bottom.plot([s for s, _ in losses], [v for _, v in losses], label=name, alpha=0.7, linewidth=0.8)
    top.set_ylabel("loss weight")
    top.set_title(title, fontsize=10)
    top.legend()
    bottom.set_ylabel("task loss (unweighted)")
    bottom.set_xlabel("optimizer step")
    bottom.set_yscale("log")
    fig.tight_layout()
    Path(png_path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png_path, dpi=120)
    plt.close(fig)
    return True
