"""ONNX export and the ONNX Runtime backend on the tiny BERT, classify and ner: fp32 logits equal PyTorch's,
ONNX Runtime's dynamic int8 stays close, the export directory runs in plain ONNX Runtime, bad input is one line."""

import json

import pytest
import torch

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

from slimtune.cli import main  # noqa: E402
from slimtune.errors import SlimtuneError  # noqa: E402
from slimtune.models.loading import fingerprint, load_backbone  # noqa: E402
from slimtune.models.onnx_runtime import OnnxRuntimeModel  # noqa: E402
from slimtune.runs.adapter_files import load_adapter, run_config, save_adapter  # noqa: E402
from slimtune.tasks import get_task  # noqa: E402
from tests.conftest import TASK_BATCHES, TASK_LABELS, build_classifier, sentiment_rows, write_tsv  # noqa: E402

FP32_TOLERANCE = 1e-4  # the same graph in another runtime: float rounding only
INT8_TOLERANCE = 5e-2  # int8 weights and activations on logits of order 1 (measured near 1e-2)


@pytest.fixture(scope="module", params=["classify", "ner"])
def lora_run(request, tiny_model, tmp_path_factory):
    """(task, run directory) of a LoRA adapter with a non-zero update, so merging matters."""
    task = request.param
    model, method, _, backbone = build_classifier(tiny_model, "lora", {"r": "4"}, task=task)
    torch.manual_seed(1)
    with torch.no_grad():
        for p in method.trainable_parameters(model.backbone):
            p.normal_(0, 0.2)
    base_fingerprint = fingerprint(load_backbone(tiny_model).model)
    settings = {"scheme": "iob2"} if task == "ner" else {}
    config = run_config(get_task(task), method, tiny_model, base_fingerprint, backbone, TASK_LABELS[task], settings)
    run = tmp_path_factory.mktemp(f"onnx-{task}") / "run"
    save_adapter(run, model, method, config)
    return task, run


@pytest.fixture(scope="module")
def exported(lora_run, tmp_path_factory):
    """(task, run directory, `slimtune export --format onnx` of it): one export per task, as exports take seconds."""
    task, run = lora_run
    out = tmp_path_factory.mktemp(f"onnx-export-{task}") / "onnx"
    assert main(["export", "--adapter", str(run), "--format", "onnx", "--out", str(out)]) == 0
    return task, run, out


def _logits(model, batch) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(**{k: v for k, v in batch.items() if k != "labels"})


@pytest.mark.parametrize("rows", [6, 1])
def test_onnxruntime_fp32_equals_pytorch_and_int8_stays_close(exported, rows):
    task, run, out = exported
    reference = load_adapter(run)
    batch = TASK_BATCHES[task](reference.backbone, n=rows, seed=5)  # other batch and sequence sizes than traced
    expected = _logits(reference.model, batch)
    for name, tolerance in (("model.onnx", FP32_TOLERANCE), ("model_int8.onnx", INT8_TOLERANCE)):
        got = _logits(OnnxRuntimeModel(out / name), batch)
        assert got.shape == expected.shape
        gap = (got - expected).abs().max().item()
        assert gap < tolerance, (name, gap)
        if name == "model_int8.onnx":
            assert gap > 0  # really quantized


def test_export_directory_runs_in_plain_onnxruntime(exported):
    import onnxruntime as ort

    task, _, out = exported
    config = json.loads((out / "onnx_config.json").read_text())
    assert config["task"] == task and config["labels"] == TASK_LABELS[task]
    assert set(config["inputs"]) == {"input_ids", "attention_mask", "token_type_ids"}
    session = ort.InferenceSession(str(out / config["files"]["fp32"]), providers=["CPUExecutionProvider"])
    ids = torch.tensor([[2, 40, 41, 3], [2, 40, 3, 0]])
    feeds = {"input_ids": ids, "attention_mask": (ids > 0).long(), "token_type_ids": torch.zeros_like(ids)}
    logits = session.run(None, {k: v.numpy() for k, v in feeds.items()})[0]
    assert logits.shape == ((2, 2) if task == "classify" else (2, 4, len(TASK_LABELS[task])))


def test_eval_and_predict_with_onnxruntime_match_pytorch(tiny_model, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("SLIMTUNE_CACHE", str(tmp_path / "cache"))  # the export is kept there
    train = write_tsv(tmp_path / "train.tsv", sentiment_rows(48, 0))
    dev = write_tsv(tmp_path / "dev.tsv", sentiment_rows(16, 1))
    run = str(tmp_path / "run")
    assert main(["train", "--method", "lora", "--train", train, "--dev", dev, "--out", run, "--model", tiny_model,
                 "--epochs", "1", "--batch-size", "8"]) == 0
    capsys.readouterr()
    results = {}
    for backend in ("pytorch", "onnxruntime"):
        assert main(["eval", "--adapter", run, "--data", dev, "--json", "--backend", backend]) == 0
        assert main(["predict", "--adapter", run, "--json", "--backend", backend, "good film", "a dull plot"]) == 0
        lines = capsys.readouterr().out.strip().splitlines()
        results[backend] = json.loads(lines[0]), [json.loads(line) for line in lines[1:]]
    (torch_metrics, torch_predictions), (ort_metrics, ort_predictions) = results["pytorch"], results["onnxruntime"]
    assert ort_metrics["accuracy"] == torch_metrics["accuracy"]
    assert ort_metrics["loss"] == pytest.approx(torch_metrics["loss"], abs=1e-5)
    assert ort_predictions == torch_predictions  # labels and probabilities rounded to 4 digits


def _error(capsys, argv) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    return err


def test_bad_inputs_give_one_clear_line(exported, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("SLIMTUNE_CACHE", str(tmp_path / "cache"))
    _, run, out = exported
    assert "onnxruntime-int8" in _error(capsys, ["predict", "--adapter", str(run), "--backend", "onnxruntime",
                                                 "--inference-int8", "int8", "good"])
    assert _error(capsys, ["export", "--adapter", str(tmp_path / "missing"), "--format", "onnx",
                           "--out", str(tmp_path / "o")])
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "mine.txt").write_text("not slimtune's")
    assert _error(capsys, ["export", "--adapter", str(run), "--format", "onnx", "--out", str(tmp_path / "taken")])
    assert (tmp_path / "taken" / "mine.txt").read_text() == "not slimtune's"
    assert main(["quantize", "--adapter", str(run), "--out", str(tmp_path / "int8")]) == 0
    capsys.readouterr()
    assert "slimtune quantize" in _error(capsys, ["predict", "--adapter", str(tmp_path / "int8"), "--backend",
                                                  "onnxruntime", "good"])
    (tmp_path / "broken.onnx").write_bytes(b"not onnx")
    with pytest.raises(SlimtuneError, match="not a model ONNX Runtime can run"):
        OnnxRuntimeModel(tmp_path / "broken.onnx")
