"""`slimtune inspect` on tiny trained adapters: the adalora rank table and heatmap, a summary for other methods."""

import pytest

from slimtune.cli import main
from slimtune.methods.adalora_view import rank_rows, short_labels
from tests.conftest import sentiment_rows, write_tsv


def _train(tiny_model, root, method, *options) -> str:
    train = write_tsv(root / "train.tsv", sentiment_rows(64, 0))
    dev = write_tsv(root / "dev.tsv", sentiment_rows(16, 1))
    out = root / method
    sets = [arg for option in options for arg in ("--set", option)]
    assert main(["train", "--method", method, "--train", train, "--dev", dev, "--out", str(out), "--model", tiny_model,
                 "--epochs", "1", "--batch-size", "8", *sets]) == 0
    return str(out)


@pytest.fixture(scope="module")
def adalora_run(tiny_model, tmp_path_factory):
    return _train(tiny_model, tmp_path_factory.mktemp("inspect"), "adalora", "r=4", "target_rank=2",
                  "targets=query,key,value")


def test_adalora_table_lists_every_matrix_and_meets_the_budget(adalora_run, capsys, tmp_path):
    png = tmp_path / "plots" / "ranks.png"
    assert main(["inspect", adalora_run, "--png", str(png)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("method      adalora (classify task")
    rows = [line.split() for line in out.splitlines() if line[:1].isdigit()]
    assert [(r[0], r[1]) for r in rows] == [(str(layer), f"attention.self.{m}")
                                            for layer in (0, 1) for m in ("key", "query", "value")]
    assert all(r[3] == "/" and r[4] == "4" and 0 <= int(r[2]) <= 4 for r in rows)
    assert sum(int(r[2]) for r in rows) == 12
    assert "total" in out and "12 / 24 (target 12, mean 2.00)" in out
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_heatmap_goes_into_the_adapter_directory_by_default(adalora_run, capsys):
    from pathlib import Path

    from matplotlib.image import imread

    assert main(["inspect", adalora_run]) == 0
    assert f"heatmap written to {adalora_run}/ranks.png" in capsys.readouterr().out
    assert imread(Path(adalora_run) / "ranks.png").ndim == 3


def test_other_methods_get_a_summary_and_no_heatmap(tiny_model, tmp_path, capsys):
    run = _train(tiny_model, tmp_path, "lora", "r=2", "targets=query,value")
    assert main(["inspect", run]) == 0
    out = capsys.readouterr().out
    assert "method      lora" in out and "r=2" in out
    # 2 layers x (query, value) x (A: 2x32 + B: 32x2) + head 32*2+2
    assert "parameters  578 (512 method, 66 task head)" in out and "tensors     10 " in out
    assert main(["inspect", run, "--png", str(tmp_path / "x.png")]) == 2
    assert "method lora draws no figure" in capsys.readouterr().err
    assert main(["inspect", str(tmp_path)]) == 2
    assert "not an adapter directory" in capsys.readouterr().err


def test_rank_rows_read_the_layer_from_the_name_and_labels_stay_distinct():
    ranks = {"backbone.pooler.dense": 1, "backbone.encoder.layer.10.output.dense": 2,
             "backbone.encoder.layer.3.output.dense": 2, "backbone.encoder.layer.3.attention.output.dense": 5}
    assert rank_rows(ranks) == [(3, "attention.output.dense", 5), (3, "output.dense", 2), (10, "output.dense", 2),
                                (None, "pooler.dense", 1)]
    assert short_labels(["attention.self.query", "attention.output.dense", "intermediate.dense", "output.dense"]) == [
        "query", "attention.output.dense", "intermediate.dense", "output.dense"]
