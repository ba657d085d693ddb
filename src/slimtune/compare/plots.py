"""The four trade-off plots of a comparison, as PNG bytes (matplotlib's Agg canvas, no display, no pyplot state)."""

import io

from matplotlib.figure import Figure

MiB = 2**20


def _png(figure: Figure) -> bytes:
    buffer = io.BytesIO()
    figure.tight_layout()
    figure.savefig(buffer, format="png", dpi=110)
    return buffer.getvalue()


def method_style(index: int) -> dict:
    """One look per method, the same in every plot: ten colours, then the same colours with another line/marker."""
    cycle = index // 10
    return {"color": f"C{index % 10}", "linestyle": ("-", "--", ":")[cycle % 3], "marker": "os^"[cycle % 3]}


def _std(stat: dict) -> float:
    return stat["std"] or 0.0


def _quality_label(rows: list[dict]) -> str:
    row = rows[0]
    return f"{row['quality_source']} {row['metric']} (mean ± std)"


def _scatter(rows: list[dict], x_of, x_err_of, x_label: str, log_x: bool) -> bytes:
    figure = Figure(figsize=(7, 4.5))
    ax = figure.add_subplot()
    for index, row in enumerate(rows):
        x, y = x_of(row), row["quality"]["mean"]
        style = method_style(index)
        ax.errorbar(x, y, xerr=x_err_of(row), yerr=_std(row["quality"]), fmt=style["marker"], color=style["color"],
                    capsize=3)
        ax.annotate(row["method"], (x, y), textcoords="offset points", xytext=(5, 5), fontsize=9)
    if log_x:
        ax.set_xscale("log")
    ax.set_xlabel(x_label)
    ax.set_ylabel(_quality_label(rows))
    ax.grid(True, which="both", alpha=0.3)
    return _png(figure)


def quality_vs_parameters(rows: list[dict]) -> bytes:
    return _scatter(rows, lambda r: r["trainable_parameters"], lambda r: None, "trainable parameters (log scale)", True)


def quality_vs_time(rows: list[dict]) -> bytes:
    return _scatter(rows, lambda r: r["train_seconds"]["mean"], lambda r: _std(r["train_seconds"]),
                    "training time, s (wall-clock, no evaluation)", False)


def peak_memory(rows: list[dict]) -> bytes:
    figure = Figure(figsize=(7, 4))
    ax = figure.add_subplot()
    names = [r["method"] for r in rows]
    ax.bar(names, [r["peak_rss_bytes"]["mean"] / MiB for r in rows],
           yerr=[_std(r["peak_rss_bytes"]) / MiB for r in rows], capsize=3,
           color=[method_style(index)["color"] for index in range(len(rows))])
    ax.set_ylabel("peak RSS of the training process, MiB")
    ax.tick_params(axis="x", labelrotation=30)
    ax.grid(True, axis="y", alpha=0.3)
    return _png(figure)


def training_curves(rows: list[dict]) -> bytes:
    figure = Figure(figsize=(7, 4.5))
    ax = figure.add_subplot()
    for index, row in enumerate(rows):
        if row["loss_curve"]:
            steps, losses = zip(*row["loss_curve"])
            style = method_style(index)
            ax.plot(steps, losses, label=row["method"], color=style["color"], linestyle=style["linestyle"])
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("training loss (mean over seeds)")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)
    else:
        ax.text(0.5, 0.5, "no run was long enough to log a training loss", ha="center", transform=ax.transAxes)
    ax.grid(True, alpha=0.3)
    return _png(figure)


PLOTS = {
    "Quality against trainable parameters": quality_vs_parameters,
    "Quality against training time": quality_vs_time,
    "Peak memory per method": peak_memory,
    "Training curves": training_curves,
}
