"""AdaLoRA's part of `slimtune inspect`: where the rank budget went, as a table and a heatmap (layer × matrix)."""

from pathlib import Path

import torch

from slimtune.methods.base import InspectView


def final_ranks(adapter: dict[str, torch.Tensor]) -> dict[str, int]:
    """Adapted module name → rank, read from a saved adapter's tensors (or a training state's masks)."""
    if any(k.endswith(".rank_mask") for k in adapter):
        return {k.removesuffix(".rank_mask"): int(v.sum()) for k, v in adapter.items() if k.endswith(".rank_mask")}
    return {k.removesuffix(".lora_lambda"): len(v) for k, v in adapter.items() if k.endswith(".lora_lambda")}


def rank_view(state: dict[str, torch.Tensor], initial: int, target: int) -> InspectView:
    rows = rank_rows(final_ranks(state))
    title = f"AdaLoRA final rank per matrix\n(initial {initial}, target mean {target})"
    return InspectView(text=rank_table(rows, initial, target),
                       write_figure=lambda path: write_heatmap(rows, initial, path, title=title),
                       figure="heatmap", figure_file="ranks.png")


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
