"""`slimtune combine` on tiny trained adapters: cat is the exact weighted sum, the result evaluates, bad input exits 2."""

import pytest
import torch

from slimtune.runs.adapter_files import load_adapter
from slimtune.cli import main
from tests.conftest import sentiment_rows, write_tsv


@pytest.fixture(scope="module")
def runs(tiny_model, tmp_path_factory):
    root = tmp_path_factory.mktemp("combine")
    train = write_tsv(root / "train.tsv", sentiment_rows(48, 0))
    dev = write_tsv(root / "dev.tsv", sentiment_rows(16, 1))
    made = {"dev": dev}
    for name, method, options in (("a", "lora", ["r=2"]), ("b", "lora", ["r=3", "targets=query,key", "use_rslora=true"]),
                                  ("c", "adalora", ["r=3", "target_rank=2"]), ("h", "head", [])):
        sets = [arg for option in options for arg in ("--set", option)]
        assert main(["train", "--method", method, "--train", train, "--dev", dev, "--out", str(root / name),
                     "--model", tiny_model, "--epochs", "1", "--batch-size", "8", "--seed", "1", *sets]) == 0
        made[name] = str(root / name)
    return made


def _deltas(run_dir, model) -> dict[str, torch.Tensor]:
    backbone = load_adapter(run_dir, model).model.backbone
    return {n: m.delta_weight() for n, m in backbone.named_modules() if hasattr(m, "delta_weight")}


def test_cat_equals_the_weighted_sum_of_both_updates_and_evaluates(runs, tiny_model, tmp_path, capsys):
    out = tmp_path / "mix"
    assert main(["combine", "--adapter", f"a={runs['a']}", "--adapter", f"b={runs['b']}", "--adapter",
                 f"c={runs['c']}", "--weights", "0.5,0.3,0.2", "--how", "cat", "--out", str(out)]) == 0
    parts = [_deltas(runs[name], tiny_model) for name in "abc"]
    combined = _deltas(str(out), tiny_model)
    assert set(combined) == set().union(*parts)  # query, key and value of both layers
    for path, delta in combined.items():
        expected = sum(w * part.get(path, torch.zeros_like(delta)) for w, part in zip((0.5, 0.3, 0.2), parts))
        assert (delta - expected).abs().max() < 1e-6, path
    capsys.readouterr()
    assert main(["eval", "--adapter", str(out), "--data", runs["dev"]]) == 0
    assert "accuracy" in capsys.readouterr().out


@pytest.mark.parametrize("how", ["svd", "ties", "dare", "linear"])
def test_every_procedure_writes_an_adapter_that_loads(runs, tiny_model, tmp_path, how):
    extra = ["--head", "mean"] if how == "ties" else []
    pair = [f"a={runs['a']}", f"b={runs['a']}"] if how == "linear" else [f"a={runs['a']}", f"b={runs['b']}"]
    assert main(["combine", "--adapter", pair[0], "--adapter", pair[1], "--how", how, "--rank", "2",
                 "--out", str(tmp_path / how), *extra]) == 0
    deltas = _deltas(str(tmp_path / how), tiny_model)
    assert deltas and all(torch.linalg.matrix_rank(d) <= 2 for d in deltas.values())


@pytest.mark.parametrize("args,message", [
    (["--adapter", "a=A"], "at least two"),
    (["--adapter", "a=A", "--adapter", "a=B"], "given twice"),
    (["--adapter", "a=A", "--adapter", "bB"], "expected NAME=DIR"),
    (["--adapter", "a=A", "--adapter", "b=B", "--weights", "1"], "1 weights for 2 adapters"),
    (["--adapter", "a=A", "--adapter", "b=H"], "method head"),
    (["--adapter", "a=A", "--adapter", "b=B", "--how", "linear"], "one rank"),
    (["--adapter", "a=A", "--adapter", "b=B", "--head", "z"], "expected one of a, b or mean"),
])
def test_bad_input_exits_2_in_one_line(runs, tmp_path, capsys, args, message):
    args = [a.replace("=A", "=" + runs["a"]).replace("=B", "=" + runs["b"]).replace("=H", "=" + runs["h"])
            for a in args]
    assert main(["combine", *args, "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "x" / "adapter.safetensors").exists()


def test_the_command_lists_every_procedure_the_arithmetic_has():
    from slimtune.cli.combine import HOWS
    from slimtune.methods import arithmetic

    assert HOWS == arithmetic.HOWS
