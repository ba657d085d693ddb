"""A comparison's results on disk: results.csv (one row per run), results.json (runs, per-method rows and how they
were made), results.md (the per-method table) and report.html (table plus plots, one self-contained file)."""

import base64
import csv
import html
from pathlib import Path

from slimtune.atomic import write_json
from slimtune.compare.plots import PLOTS

CSV_COLUMNS = ("method", "seed", "status", "metric", "quality_source", "quality", "best_dev", "train_seconds",
               "prepare_seconds", "examples_per_second", "peak_rss_bytes", "trainable_parameters", "trainable_percent",
               "adapter_bytes", "lr", "steps", "options", "error")


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB"):
        if n < 1024:
            return f"{n:.0f} {unit}"
        n /= 1024
    return f"{n:.2f} GiB"


def _stat(stat: dict, digits: int) -> str:
    text = f"{stat['mean']:.{digits}f}"
    return text + (f" ± {stat['std']:.{digits}f}" if stat["std"] is not None else "")


def _options(options: dict) -> str:
    return " ".join(f"{k}={v}" for k, v in options.items()) or "defaults"


def table(rows: list[dict]) -> tuple[list[str], list[list[str]]]:
    """(header, cells) of the per-method table, shared by Markdown and HTML."""
    done = next((r for r in rows if r["runs"]), None)
    quality = f"{done['quality_source']} {done['metric']}" if done else "quality"
    header = ["method", "options", "lr", "seeds", quality, "trainable (%)", "adapter", "train s", "examples/s",
              "peak RSS"]
    cells = []
    for r in rows:
        if not r["runs"]:
            why = "; ".join(r["errors"]) or "not run yet"
            cells.append([r["method"], "—", "—", "0", f"failed: {why}" if r["failed"] else why, *["—"] * 5])
            continue
        seeds = str(r["runs"]) + (f" ({r['failed']} failed)" if r["failed"] else "")
        cells.append([r["method"], _options(r["options"]), f"{r['lr']:g}", seeds, _stat(r["quality"], 4),
                      f"{r['trainable_parameters']:,} ({r['trainable_percent']:.2f}%)", human_bytes(r["adapter_bytes"]),
                      _stat(r["train_seconds"], 1), _stat(r["examples_per_second"], 0),
                      human_bytes(r["peak_rss_bytes"]["mean"])])
    return header, cells


def markdown(rows: list[dict], meta: dict) -> str:
    header, cells = table(rows)
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in cells]
    return "\n".join([*describe(meta), "", *lines, ""])


def describe(meta: dict) -> list[str]:
    """What was measured and how, in a few lines placed above every table."""
    quality = f"test {meta['metric']} on `{meta['test']}`" if meta["test"] else \
        f"best dev {meta['metric']} (the dev data also chose the kept weights)"
    left_out = [f"Left out of `all`: {why.rstrip('.')}." for why in meta.get("left_out", {}).values()]
    batch = meta["batch_size"] or "each method's own (`slimtune methods`)"
    return [
        f"Task `{meta['task']}`, train `{meta['train']}`, dev `{meta['dev'] or 'a seeded 10% split of train'}`; "
        f"quality is {quality}. {meta['epochs']} epoch(s), batch {batch}, seeds {meta['seeds']}; "
        "mean ± sample std over seeds.",
        "Training time is wall-clock of training only (no evaluation), counting a method's one-off preparation "
        "before the first step (features' encoder pass, from an empty feature cache); peak RSS is the peak "
        "resident memory of the whole training process (its own process, read with wait4); the adapter is the "
        "saved file's size.",
        *left_out,
        f"Machine: {meta['machine']}. Command: `{meta['command']}`",
    ]


def write_csv(path: Path, records: list[dict]) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, CSV_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        for record in records:
            writer.writerow({**record, "options": _options(record.get("options", {}))})


def html_report(rows: list[dict], meta: dict, title: str) -> str:
    header, cells = table(rows)
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in cells)
    measured = [r for r in rows if r["runs"]]
    figures = []
    for caption, plot in PLOTS.items() if measured else ():
        data = base64.b64encode(plot(measured)).decode()
        figures.append(f'<figure><img alt="{html.escape(caption)}" src="data:image/png;base64,{data}">'
                       f"<figcaption>{html.escape(caption)}</figcaption></figure>")
    notes = "".join(f"<p>{_inline_code(line)}</p>" for line in describe(meta))
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>
body {{ font-family: system-ui, sans-serif; max-width: 1100px; margin: 2em auto; padding: 0 1em; color: #222; }}
table {{ border-collapse: collapse; font-size: 0.9em; }}
th, td {{ border: 1px solid #ccc; padding: 0.3em 0.6em; text-align: right; }}
th:first-child, td:first-child, td:nth-child(2) {{ text-align: left; }}
figure {{ display: inline-block; margin: 1em 1em 0 0; }} img {{ max-width: 100%; }}
code {{ background: #f3f3f3; padding: 0 0.2em; }}
</style></head><body>
<h1>{html.escape(title)}</h1>
{notes}
<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>
{"".join(figures)}
</body></html>
"""


def _inline_code(text: str) -> str:
    parts = html.escape(text).split("`")
    return "".join(f"<code>{p}</code>" if i % 2 else p for i, p in enumerate(parts))


def write_reports(out_dir: Path, records: list[dict], rows: list[dict], meta: dict, title: str) -> None:
    out_dir = Path(out_dir)
    write_csv(out_dir / "results.csv", records)
    write_json(out_dir / "results.json", {"meta": meta, "methods": rows, "runs": records})
    (out_dir / "results.md").write_text(markdown(rows, meta))
    (out_dir / "report.html").write_text(html_report(rows, meta, title))
