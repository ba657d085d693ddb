"""The ONNX export cache of `eval`/`predict --backend onnxruntime*`: a second call reads the kept export (no
transformers model code imported, no export) and scores as the first and as PyTorch; a changed adapter or base
file is exported afresh; a damaged entry is exported again, never a traceback; the cache stays bounded and removes
only its own entries."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

from safetensors.torch import load_file, save_file  # noqa: E402

from slimtune.cli import main  # noqa: E402
from slimtune.ownership import mark, read_marker  # noqa: E402
from slimtune.runs import onnx_cache, onnx_export  # noqa: E402
from slimtune.runs.run_directory import read_run  # noqa: E402
from tests.conftest import make_tiny_bert, ner_sentences, sentiment_rows, write_conll, write_tsv  # noqa: E402

HIT_CHECK = """
import json, sys
from slimtune.cli import main
assert main({argv}) == 0
print(json.dumps(sorted(m for m in ("transformers.models.bert.modeling_bert", "transformers.models") if m in sys.modules)))
"""


@pytest.fixture
def cache(slimtune_cache):
    return slimtune_cache / "onnx"


@pytest.fixture
def exports(monkeypatch):
    """Counts the exports `eval`/`predict` make."""
    made = []
    real = onnx_export.export_for_backend

    def counting(loaded, backend, directory):
        made.append(backend)
        return real(loaded, backend, directory)

    monkeypatch.setattr(onnx_cache, "export_for_backend", counting)
    monkeypatch.setattr(onnx_export, "export_for_backend", counting)  # the uncached path's
    return made


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """(base model directory, run directory, dev data) of a LoRA classify run on its own tiny BERT."""
    root = tmp_path_factory.mktemp("onnx-cache")
    base = make_tiny_bert(root / "base")
    train = write_tsv(root / "train.tsv", sentiment_rows(48, 0))
    dev = write_tsv(root / "dev.tsv", sentiment_rows(16, 1))
    run = str(root / "run")
    assert main(["train", "--method", "lora", "--train", train, "--dev", dev, "--out", run, "--model", base,
                 "--epochs", "1", "--batch-size", "8"]) == 0
    return base, run, dev


def _eval(capsys, run, dev, backend="onnxruntime") -> dict:
    capsys.readouterr()
    assert main(["eval", "--adapter", run, "--data", dev, "--json", "--backend", backend]) == 0
    return json.loads(capsys.readouterr().out)


def _predict(capsys, run, backend) -> list[dict]:
    capsys.readouterr()
    assert main(["predict", "--adapter", run, "--json", "--backend", backend, "good film", "a dull plot"]) == 0
    return [json.loads(line) for line in capsys.readouterr().out.splitlines()]


def test_a_second_call_reads_the_kept_export_and_scores_the_same(trained, cache, exports, capsys):
    _, run, dev = trained
    first = _eval(capsys, run, dev)
    assert exports == ["onnxruntime"] and len(list(cache.iterdir())) == 1
    env = {**os.environ, "SLIMTUNE_CACHE": str(cache.parent)}
    argv = ["eval", "--adapter", run, "--data", dev, "--json", "--backend", "onnxruntime"]
    out = subprocess.run([sys.executable, "-c", HIT_CHECK.format(argv=argv)], capture_output=True, text=True,
                         env=env, check=True).stdout.splitlines()
    assert json.loads(out[0]) == first
    assert json.loads(out[1]) == []  # no transformers model code, not even the scan of its model packages
    entry = next(cache.iterdir())
    assert json.loads((entry / "onnx_config.json").read_text())["tokenizer"] == "tokenizers"  # the probe agreed
    assert _eval(capsys, run, dev) == first and exports == ["onnxruntime"]  # in process too: no second export
    torch_metrics = _eval(capsys, run, dev, "pytorch")
    assert first["accuracy"] == torch_metrics["accuracy"]
    assert first["loss"] == pytest.approx(torch_metrics["loss"], abs=1e-5)
    assert _predict(capsys, run, "onnxruntime") == _predict(capsys, run, "pytorch")  # rounded to 4 digits
    assert exports == ["onnxruntime"]


def test_int8_is_its_own_entry_and_a_hit_too(trained, cache, exports, capsys, monkeypatch):
    """Also with the checkpoint's own tokenizer class, used when the generic one encodes differently."""
    monkeypatch.setattr(onnx_cache, "_tokenizer_loader", lambda tokenizer, directory: "auto")
    _, run, dev = trained
    first = _eval(capsys, run, dev, "onnxruntime-int8")
    assert _eval(capsys, run, dev, "onnxruntime-int8") == first
    assert exports == ["onnxruntime-int8"]
    entry = next(cache.iterdir())
    assert sorted(p.name for p in entry.glob("*.onnx")) == ["model_int8.onnx"]
    assert first["accuracy"] == _eval(capsys, run, dev, "pytorch")["accuracy"]


def test_a_changed_adapter_or_base_file_is_exported_afresh(trained, cache, exports, capsys, tmp_path):
    base, run, dev = trained
    before = _predict(capsys, run, "onnxruntime")
    changed = tmp_path / "changed"
    changed.mkdir()
    for name in ("adapter_config.json", "adapter.safetensors"):
        (changed / name).write_bytes((Path(run) / name).read_bytes())
    state = load_file(str(changed / "adapter.safetensors"))
    bias = next(k for k in state if k.startswith("head") and k.endswith("bias"))
    state[bias][0] += 1.0  # one class's logit: the scores move
    save_file(state, str(changed / "adapter.safetensors"), metadata={"format": "slimtune"})
    after = _predict(capsys, str(changed), "onnxruntime")
    assert exports == ["onnxruntime", "onnxruntime"] and after != before
    assert after == _predict(capsys, str(changed), "pytorch")
    os.utime(os.path.join(base, "model.safetensors"))  # same bytes, a new modification time: a new key
    assert _predict(capsys, run, "onnxruntime") == before
    assert len(exports) == 3 and len(list(cache.iterdir())) == 3


def test_ner_from_the_cache_tags_as_pytorch(tiny_model, cache, exports, capsys, tmp_path):
    """Words aligned through the cached tokenizer's word ids: the same entities, metrics and tagged file."""
    train = write_conll(tmp_path / "train.conll", ner_sentences(32, 0))
    dev = write_conll(tmp_path / "dev.conll", ner_sentences(12, 1))
    run = str(tmp_path / "run")
    assert main(["train", "--task", "ner", "--method", "lora", "--train", train, "--dev", dev, "--out", run,
                 "--model", tiny_model, "--epochs", "1", "--batch-size", "8"]) == 0
    tagged = {}
    for backend in ("onnxruntime", "onnxruntime", "pytorch"):
        metrics = _eval(capsys, run, dev, backend)
        out = tmp_path / f"tagged-{len(tagged)}.conll"
        assert main(["predict", "--adapter", run, "--backend", backend, "--conll-in", dev,
                     "--conll-out", str(out)]) == 0
        tagged[len(tagged)] = (metrics, out.read_text())
    assert tagged[0] == tagged[1]  # miss, then hit
    assert tagged[1][1] == tagged[2][1] and tagged[1][0]["f1"] == tagged[2][0]["f1"]  # as PyTorch
    assert exports == ["onnxruntime"]


def test_each_task_of_a_multi_task_run_is_its_own_entry(tiny_model, cache, exports, capsys, tmp_path):
    sst, sst_dev = (write_tsv(tmp_path / f"sst{i}.tsv", sentiment_rows(n, i)) for i, n in ((0, 32), (1, 12)))
    ner, ner_dev = (write_conll(tmp_path / f"ner{i}.conll", ner_sentences(n, i)) for i, n in ((0, 32), (1, 12)))
    run = str(tmp_path / "run")
    assert main(["train", "--task", "multi", "--method", "lora", "--tasks", f"sst=classify:{sst}:{sst_dev}",
                 "--tasks", f"conll=ner:{ner}:{ner_dev}", "--model", tiny_model, "--epochs", "1",
                 "--batch-size", "8", "--out", run]) == 0
    for _ in range(2):  # exports, then both from the cache
        for name, dev, metric in (("sst", sst_dev, "accuracy"), ("conll", ner_dev, "f1")):
            capsys.readouterr()
            scores = {}
            for backend in ("onnxruntime", "pytorch"):
                assert main(["eval", "--adapter", run, "--task-name", name, "--data", dev, "--json",
                             "--backend", backend]) == 0
                scores[backend] = json.loads(capsys.readouterr().out)[metric]
            assert scores["onnxruntime"] == scores["pytorch"], name
    assert exports == ["onnxruntime", "onnxruntime"] and len(list(cache.iterdir())) == 2


DAMAGES = ("config not json", "config wrong type", "truncated graph", "tokenizer gone")


def _damage(entry, damage: str) -> None:
    config = json.loads((entry / "onnx_config.json").read_text())
    if damage == "config not json":
        (entry / "onnx_config.json").write_text("{not json")
    elif damage == "config wrong type":
        (entry / "onnx_config.json").write_text(json.dumps({**config, "max_length": "long"}))
    elif damage == "truncated graph":
        graph = entry / config["model_file"]
        graph.write_bytes(graph.read_bytes()[:1000])
    else:
        (entry / "tokenizer.json").unlink()


def test_a_damaged_entry_is_exported_again(trained, cache, exports, capsys):
    _, run, dev = trained
    first = _eval(capsys, run, dev)
    entry = next(cache.iterdir())
    for done, damage in enumerate(DAMAGES, start=2):
        _damage(entry, damage)
        capsys.readouterr()
        assert main(["eval", "--adapter", run, "--data", dev, "--json", "--backend", "onnxruntime"]) == 0, damage
        captured = capsys.readouterr()
        assert json.loads(captured.out) == first, damage
        assert "damaged" in captured.err and "Traceback" not in captured.err, damage
        assert len(exports) == done and list(cache.iterdir()) == [entry], damage
    assert _eval(capsys, run, dev) == first and len(exports) == 1 + len(DAMAGES)  # the rebuilt entry is used


def test_a_directory_not_written_by_the_cache_is_left_alone(trained, cache, exports, capsys):
    _, run, dev = trained
    view = read_run(run).view(None)
    entry = cache / onnx_cache.export_key(read_run(run), view, None, "onnxruntime")
    entry.mkdir(parents=True)
    (entry / "mine.txt").write_text("not slimtune's")
    first = _eval(capsys, run, dev)
    assert _eval(capsys, run, dev) == first and len(exports) == 2  # exported for each call, kept nowhere
    assert [p.name for p in entry.iterdir()] == ["mine.txt"] and list(cache.iterdir()) == [entry]


def test_the_cache_keeps_its_newest_entries_and_removes_only_its_own(cache, monkeypatch):
    monkeypatch.setattr(onnx_cache, "ONNX_KEPT", 2)
    cache.mkdir(parents=True)
    entries = []
    for i in range(4):
        entry = cache / (f"{i}" * 64)
        entry.mkdir()
        mark(entry, onnx_cache.KIND)
        (entry / "model.onnx").write_bytes(b"graph")
        os.utime(entry, ns=(i * 10**9, i * 10**9))
        entries.append(entry)
    foreign = cache / ("f" * 64)
    foreign.mkdir()
    (foreign / "mine.txt").write_text("not slimtune's")
    other_kind = cache / ("e" * 64)
    other_kind.mkdir()
    mark(other_kind, "merge")
    onnx_cache._bound(entries[0])  # just written: kept whatever its time
    assert sorted(p.name for p in cache.iterdir()) == sorted([entries[0].name, entries[3].name, foreign.name,
                                                              other_kind.name])
    assert read_marker(entries[0])["kind"] == onnx_cache.KIND and (foreign / "mine.txt").is_file()


def test_eval_keeps_a_bounded_cache(trained, cache, monkeypatch, capsys, tmp_path):
    """End to end: with room for one entry, a second adapter's export replaces the first's."""
    monkeypatch.setattr(onnx_cache, "ONNX_KEPT", 1)
    _, run, dev = trained
    _eval(capsys, run, dev)
    _eval(capsys, run, dev, "onnxruntime-int8")
    (entry,) = cache.iterdir()
    assert (entry / "model_int8.onnx").is_file()


def test_refusals_come_before_the_cache(trained, cache, capsys, tmp_path):
    _, run, _ = trained
    assert main(["quantize", "--adapter", run, "--out", str(tmp_path / "int8")]) == 0
    capsys.readouterr()
    assert main(["predict", "--adapter", str(tmp_path / "int8"), "--backend", "onnxruntime", "good"]) == 2
    err = capsys.readouterr().err
    assert "slimtune quantize" in err and len(err.strip().splitlines()) == 1
    assert not cache.exists()

