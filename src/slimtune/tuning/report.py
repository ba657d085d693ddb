"""What a finished study says: best.yaml (the best trial as a run config), report.json and report.html.

The HTML page is self-contained (plots inlined as PNG): the best trial, every trial's settings and score,
the optimisation history (each trial's dev score and the best so far) and parameter importance (Optuna's
default evaluator, over completed trials).
"""

import base64
import html
import io
from pathlib import Path

import yaml

from slimtune.atomic import write_json, write_text


def trial_rows(study) -> list[dict]:
    return [{"trial": t.number, "state": t.state.name.lower(), "value": t.value, "params": t.params,
             "train_seconds": t.user_attrs.get("train_seconds"),
             "seconds": round(t.duration.total_seconds(), 1) if t.duration else None} for t in study.trials]


def importance(study) -> dict[str, float]:
    """Parameter importance over completed trials; empty when there are too few to say."""
    import optuna

    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    if len(complete) < 3:
        return {}
    try:
        return {k: round(v, 4) for k, v in optuna.importance.get_param_importances(study).items()}
    except (RuntimeError, ValueError):  # e.g. every completed trial has the same parameters
        return {}


def write_report(study, request, metric: str) -> dict:
    out = Path(request.out_dir)
    best = study.best_trial
    rows = trial_rows(study)
    report = {"metric": f"dev {metric}", "study": request.study_name,
              "trials_finished": sum(r["state"] in ("complete", "pruned") for r in rows),
              "pruned": sum(r["state"] == "pruned" for r in rows), "failed": sum(r["state"] == "fail" for r in rows),
              "best": {"trial": best.number, "value": best.value, "params": best.params,
                       "flags": best.user_attrs.get("flags")},
              "importance": importance(study), "trials": rows}
    write_text(out / "best.yaml", yaml.safe_dump(best.user_attrs["flags"], sort_keys=False))
    write_json(out / "report.json", report)
    write_text(out / "report.html", render_html(report))
    return report


def _png(fig) -> str:
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    return base64.b64encode(buffer.getvalue()).decode()


def history_plot(report: dict) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    done = [r for r in report["trials"] if r["value"] is not None]
    fig, ax = plt.subplots(figsize=(6, 3.2))
    ax.scatter([r["trial"] for r in done], [r["value"] for r in done], s=18, label="trial")
    best, running = [], None
    for r in done:
        running = r["value"] if running is None else max(running, r["value"])
        best.append(running)
    ax.step([r["trial"] for r in done], best, where="post", color="C3", label="best so far")
    ax.set_xlabel("trial")
    ax.set_ylabel(report["metric"])
    ax.legend(loc="lower right")
    return _png(fig)


def importance_plot(report: dict) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    items = sorted(report["importance"].items(), key=lambda kv: kv[1])
    fig, ax = plt.subplots(figsize=(6, 0.4 * len(items) + 1))
    ax.barh([k for k, _ in items], [v for _, v in items], color="C0")
    ax.set_xlabel("importance")
    return _png(fig)


def render_html(report: dict) -> str:
    esc = html.escape
    best = report["best"]
    params = sorted({k for r in report["trials"] for k in r["params"]})
    head = "".join(f"<th>{esc(p)}</th>" for p in ["trial", "state", report["metric"], *params, "seconds"])
    body = "".join(
        "<tr>" + "".join(f"<td>{esc(str(v))}</td>" for v in [
            r["trial"], r["state"], "" if r["value"] is None else f"{r['value']:.4f}",
            *[_show(r["params"].get(p)) for p in params], r["seconds"]]) + "</tr>"
        for r in report["trials"])
    plots = f'<h2>Optimisation history</h2><img alt="history" src="data:image/png;base64,{history_plot(report)}">'
    if report["importance"]:
        plots += (f'<h2>Parameter importance</h2>'
                  f'<img alt="importance" src="data:image/png;base64,{importance_plot(report)}">')
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>slimtune tune: {esc(report['study'])}</title>"
            "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
            "td,th{border:1px solid #ccc;padding:2px 6px;text-align:right}</style></head><body>"
            f"<h1>slimtune tune: {esc(report['study'])}</h1>"
            f"<p>{report['trials_finished']} trials ({report['pruned']} pruned, {report['failed']} failed). Best: trial {best['trial']}, "
            f"{esc(report['metric'])} {best['value']:.4f}.</p>"
            f"<pre>{esc(yaml.safe_dump(best['flags'], sort_keys=False))}</pre>{plots}"
            f"<h2>Trials</h2><table><tr>{head}</tr>{body}</table></body></html>")


def _show(value) -> str:
    if isinstance(value, float):
        return f"{value:.3g}"
    return "" if value is None else str(value)
