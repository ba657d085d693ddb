"""Folding seeds into mean ± std, and the table and plots made from it (no training here)."""

import pytest

from slimtune.compare.plots import PLOTS, method_style
from slimtune.compare.report import human_bytes, markdown
from slimtune.compare.summary import mean_curve, summarize


def record(method, seed, quality, seconds, status="ok"):
    if status != "ok":
        return {"method": method, "seed": seed, "status": status, "error": "slimtune train: error: boom"}
    return {"method": method, "seed": seed, "status": "ok", "options": {"r": "4"}, "lr": 2e-3, "metric": "accuracy",
            "quality_source": "test", "trainable_parameters": 1000, "trainable_percent": 1.5, "adapter_bytes": 5000,
            "quality": quality, "best_dev": quality, "train_seconds": seconds, "examples_per_second": 100 / seconds,
            "peak_rss_bytes": 2**30, "curve": {"loss": [[20, 0.7], [40, 0.5 + seed / 100]], "dev": [[40, quality]]}}


META = {"task": "classify", "metric": "accuracy", "train": "t.tsv", "dev": None, "test": "h.tsv", "epochs": 1,
        "batch_size": 32, "seeds": [1, 2], "machine": "test machine", "command": "slimtune compare ..."}


@pytest.fixture
def rows():
    records = [record("lora", 1, 0.80, 10.0), record("lora", 2, 0.84, 12.0), record("head", 1, 0.7, 5.0),
               record("head", 2, None, None, status="failed"), record("prompt", 1, None, None, status="failed")]
    return summarize(records, ["lora", "head", "prompt"])


def test_mean_and_sample_std_over_seeds(rows):
    lora, head, prompt = rows
    assert lora["quality"]["mean"] == pytest.approx(0.82) and lora["quality"]["std"] == pytest.approx(0.0283, abs=1e-4)
    assert head["runs"] == 1 and head["failed"] == 1 and head["quality"]["std"] is None
    assert prompt["runs"] == 0 and prompt["errors"] == ["slimtune train: error: boom"]
    assert lora["loss_curve"] == [[20, 0.7], [40, pytest.approx(0.515)]]


def test_markdown_table(rows):
    lines = markdown(rows, META).splitlines()
    assert "| lora | r=4 | 0.002 | 2 | 0.8200 ± 0.0283 | 1,000 (1.50%) | 5 KiB | 11.0 ± 1.4 |" in "\n".join(lines)
    assert any(l.startswith("| head | r=4 | 0.002 | 1 (1 failed) | 0.7000 |") for l in lines)
    assert "| prompt | — | — | 0 | failed: slimtune train: error: boom |" in "\n".join(lines)


def test_every_plot_draws_each_method_in_its_colour(rows):
    """Decode each PNG: the figure's size in pixels, and pixels of every measured method's own colour in it."""
    import io

    import numpy as np
    from matplotlib.colors import to_rgb
    from matplotlib.image import imread

    measured = [r for r in rows if r["runs"]]
    for name, plot in PLOTS.items():
        image = imread(io.BytesIO(plot(measured)), format="png")[..., :3]  # [H, W, RGB] floats in 0..1
        assert image.shape[0] > 200 and image.shape[1] > 300, name
        for index, row in enumerate(measured):
            colour = np.array(to_rgb(method_style(index)["color"]))
            drawn = (np.abs(image - colour).max(axis=-1) < 0.02).sum()
            assert drawn >= 10, f"{name}: no pixels of {row['method']}'s colour"


def test_mean_curve_keeps_steps_only_some_runs_reached():
    assert mean_curve([[[1, 1.0], [2, 3.0]], [[1, 2.0]]]) == [[1, 1.5], [2, 3.0]]


def test_human_bytes():
    assert [human_bytes(n) for n in (512, 300 * 1024, 5 * 2**20, 3 * 2**30)] == ["512 B", "300 KiB", "5 MiB", "3.00 GiB"]


def test_methods_left_out_of_all_are_named(rows):
    meta = {**META, "left_out": {"features": "method features serves only task classify, not ner: a head."}}
    assert "Left out of `all`: method features serves only task classify, not ner: a head." in markdown(rows, meta)


def test_every_method_of_the_registry_has_its_own_look():
    looks = [method_style(i) for i in range(13)]  # 13 methods: more than the ten default colours
    assert len({(look["color"], look["linestyle"]) for look in looks}) == 13
    assert len({(look["color"], look["marker"]) for look in looks}) == 13
