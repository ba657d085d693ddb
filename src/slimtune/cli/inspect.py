"""`slimtune inspect`: what a saved adapter holds, and for AdaLoRA where its rank budget went.

Reads the run directory's checked description (slimtune.runs.run_directory): the config and the adapter file's
header; tensors only for the adalora rank table. The base model is not loaded.
"""

import argparse
from pathlib import Path

HELP = """Describe a saved adapter: method, options, tensors and parameter count.

For an adalora adapter it also prints the final rank of every adapted matrix
(layer × matrix) and writes a heatmap of those ranks as a PNG.

examples:
  slimtune inspect runs/sst2-adalora
  slimtune inspect runs/sst2-adalora --png docs/adalora_ranks_sst2.png
"""


def register(sub) -> None:
    p = sub.add_parser("inspect", help="describe an adapter; rank table and heatmap for adalora", description=HELP,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("adapter", metavar="ADAPTER_DIR", help="run directory written by `slimtune train`")
    p.add_argument("--png", metavar="PATH", help="where to write the adalora rank heatmap (default: ADAPTER_DIR/ranks.png)")
    p.set_defaults(handler=run)


def run(args) -> int:
    import math

    from slimtune.errors import SlimtuneError
    from slimtune.runs.run_directory import read_run

    from slimtune.runs.formats.peft_import import resolve_adapter_dir

    given = args.adapter
    run_dir = read_run(Path(resolve_adapter_dir(given)))  # a peft adapter directory, converted
    print(summary(run_dir.data, {name: math.prod(shape) for name, shape in run_dir.tensor_shapes.items()},
                  run_dir.adapter_bytes))
    if run_dir.config.method != "adalora":
        if args.png:
            raise SlimtuneError(f"--png: only adalora adapters have per-matrix ranks; this one is {run_dir.config.method}")
        return 0
    from slimtune.methods.adalora import final_ranks

    rows = rank_rows(final_ranks(run_dir.load_tensors()))
    initial, target = run_dir.config.options["r"], run_dir.config.options["target_rank"]
    print()
    print(rank_table(rows, initial, target))
    png = Path(args.png) if args.png else Path(given) / "ranks.png"
    write_heatmap(rows, initial, png, title=f"AdaLoRA final rank per matrix\n(initial {initial}, target mean {target})")
    print(f"\nheatmap written to {png}")
    return 0


def summary(config: dict, sizes: dict[str, int], file_bytes: int) -> str:
    """`sizes`: elements per tensor of the adapter file (from its header)."""
    backbone = sum(n for k, n in sizes.items() if k.startswith("backbone."))
    head = sum(n for k, n in sizes.items() if not k.startswith("backbone."))
    options = " ".join(f"{k}={','.join(map(str, v)) if isinstance(v, list) else v}" for k, v in config["options"].items())
    return "\n".join([
        f"method      {config['method']} ({_tasks(config)})",
        f"base model  {config.get('base_model') or 'default (all-MiniLM-L6-v2)'}",
        f"options     {options or 'none'}",
        f"tensors     {len(sizes)} ({file_bytes / 1024:.1f} KiB)",
        f"parameters  {backbone + head:,} ({backbone:,} method, {head:,} task head)",
    ])


def _tasks(config: dict) -> str:
    """What the adapter predicts: its task and labels, or (multi-task) each task's name and type, and the sharing."""
    from slimtune.tasks.multitask.files import is_multi

    if is_multi(config):
        tasks = ", ".join(f"{name}: {entry['task']}" for name, entry in config["tasks"].items())
        return f"multi-task, {config['sharing']} adapter; {tasks}"
    return f"{config['task']} task, labels: {', '.join(map(str, config['labels']))}"


def rank_rows(ranks: dict[str, int]) -> list[tuple[int | None, str, int]]:
    """(layer, matrix, rank) per adapted module, by layer then matrix: the layer is the first number in its name."""
    rows = []
    for name, rank in ranks.items():
        parts = name.removeprefix("backbone.").split(".")
        index = next((i for i, part in enumerate(parts) if part.isdigit()), None)
        if index is None:
            rows.append((None, ".".join(parts), rank))
        else:
            rows.append((int(parts[index]), ".".join(parts[index + 1:]), rank))
    return sorted(rows, key=lambda row: (row[0] is None, row[0] or 0, row[1]))


def rank_table(rows: list[tuple[int | None, str, int]], initial: int, target: int) -> str:
    width = max(len("matrix"), *(len(matrix) for _, matrix, _ in rows))
    lines = [f"{'layer':<6} {'matrix':<{width}}  rank / initial"]
    for layer, matrix, rank in rows:
        lines.append(f"{'-' if layer is None else layer:<6} {matrix:<{width}}  {rank:>4} / {initial}")
    total = sum(rank for _, _, rank in rows)
    lines.append(f"{'total':<6} {'':<{width}}  {total:>4} / {initial * len(rows)} "
                 f"(target {target * len(rows)}, mean {total / len(rows):.2f})")
    return "\n".join(lines)


def short_labels(names: list[str]) -> list[str]:
    """The shortest dotted suffix of each name that no other name shares: attention.self.query → query."""
    split = [name.split(".") for name in names]
    labels = []
    for parts in split:
        k = 1
        while k < len(parts) and sum(other[-k:] == parts[-k:] for other in split) > 1:
            k += 1
        labels.append(".".join(parts[-k:]))
    return labels


def write_heatmap(rows: list[tuple[int | None, str, int]], initial: int, path, title: str) -> None:
    """Layers down, matrices across, the final rank written in each cell; blank where a layer lacks a matrix."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    layers = sorted({layer for layer, _, _ in rows}, key=lambda layer: (layer is None, layer or 0))
    matrices = list(dict.fromkeys(matrix for _, matrix, _ in rows))
    grid = np.full((len(layers), len(matrices)), np.nan)
    for layer, matrix, rank in rows:
        grid[layers.index(layer), matrices.index(matrix)] = rank
    fig, ax = plt.subplots(figsize=(max(4.5, 2 + 1.1 * len(matrices)), 1.8 + 0.45 * len(layers)))
    image = ax.imshow(np.ma.masked_invalid(grid), cmap="viridis", vmin=0, vmax=initial, aspect="auto")
    for (i, j), rank in np.ndenumerate(grid):
        if not np.isnan(rank):
            ax.text(j, i, int(rank), ha="center", va="center", color="white" if rank < 0.6 * initial else "black")
    ax.set_xticks(range(len(matrices)), short_labels(matrices), rotation=30, ha="right")
    ax.set_yticks(range(len(layers)), ["-" if layer is None else str(layer) for layer in layers])
    ax.set_xlabel("matrix")
    ax.set_ylabel("layer")
    ax.set_title(title, fontsize=10)
    fig.colorbar(image, ax=ax, label="rank")
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
