"""A trained encoder adapter as an ONNX model: `slimtune export --format onnx`, and the ONNX Runtime backend of
`eval` and `predict` (`--backend onnxruntime` / `onnxruntime-int8`).

The adapter is merged into the base where the method allows (otherwise its layers are traced as they are), and
the whole task model, head included, becomes one graph: input_ids, attention_mask (and token_type_ids when the
tokenizer makes them), each [batch, sequence], to logits.
"""

import tempfile
from pathlib import Path

from slimtune.atomic import write_json
from slimtune.errors import SlimtuneError
from slimtune.models.onnx_runtime import (OUTPUT_NAME, OnnxRuntimeModel, export_onnx, quantize_onnx_int8, require_onnx,
                                          sample_batch)
from slimtune.models.surgery import unwrap
from slimtune.runs.int8_keys import base_int8_of, inference_int8_of
from slimtune.tasks.base import GENERATION, TAGGING

BACKENDS = ("pytorch", "onnxruntime", "onnxruntime-int8")
FP32_FILE, INT8_FILE, CONFIG_FILE = "model.onnx", "model_int8.onnx", "onnx_config.json"
SETTINGS = ("task", "labels", "pooling", "max_length", "scheme", "base_model", "method")  # kept from the run


def check_exportable(task, config: dict) -> None:
    """Refuse, in one line, a run whose model has no ONNX form: a causal LM, an int8 base, a `quantize` output.
    `config` is the run's (one task's) adapter_config.json; checked before anything is loaded or read from a cache."""
    require_onnx()
    if task.kind == GENERATION:
        raise SlimtuneError(f"ONNX export covers encoder tasks (classify, ner), not {task.name}")
    if base_int8_of(config):
        raise SlimtuneError("this adapter was trained on an int8 base, which has no ONNX form; retrain without "
                            "--base-int8 (ONNX Runtime's own int8 is --backend onnxruntime-int8)")
    if inference_int8_of(config):
        raise SlimtuneError("this adapter is a `slimtune quantize` output, already in PyTorch's int8; give the fp32 "
                            "run it was made from (ONNX Runtime's own int8 is --backend onnxruntime-int8)")


def _export_loaded(loaded, path: Path) -> list[str]:
    """Merge `loaded`'s adapter where it can be and write its task model to `path`; returns the input names."""
    check_exportable(loaded.task, loaded.config)
    if loaded.method is not None and loaded.method.mergeable:
        loaded.method.merge(loaded.model.backbone)
        unwrap(loaded.model.backbone)
    model = loaded.model.eval()
    tokenizer = loaded.backbone.tokenizer
    with_token_types = "token_type_ids" in tokenizer("a")
    return export_onnx(model, sample_batch(model.backbone.config.vocab_size, with_token_types), path)


def write_onnx_export(loaded, out: Path) -> None:
    """model.onnx (fp32), model_int8.onnx (ONNX Runtime dynamic int8), the tokenizer and onnx_config.json
    (task, labels, pooling, max length, inputs) in `out`."""
    inputs = _export_loaded(loaded, out / FP32_FILE)
    quantize_onnx_int8(out / FP32_FILE, out / INT8_FILE)
    loaded.backbone.tokenizer.save_pretrained(out)
    write_json(out / CONFIG_FILE, {
        **{key: loaded.config[key] for key in SETTINGS if key in loaded.config},
        "inputs": {name: ["batch", "sequence"] for name in inputs},
        "output": {OUTPUT_NAME: ["batch", "classes"] if loaded.task.kind != TAGGING
                   else ["batch", "sequence", "classes"]},
        "files": {"fp32": FP32_FILE, "int8": INT8_FILE},
    })


def export_for_backend(loaded, backend: str, directory: Path) -> tuple[Path, list[str]]:
    """Write the graph `backend` runs into `directory` (model.onnx, or only model_int8.onnx for int8); returns its
    path and input names. `loaded` is changed: its adapter is merged into the base where the method allows."""
    path = directory / FP32_FILE
    inputs = _export_loaded(loaded, path)
    if backend == "onnxruntime-int8":
        quantize_onnx_int8(path, directory / INT8_FILE)
        path.unlink()
        path = directory / INT8_FILE
    return path, inputs


def check_backend(backend: str, inference_int8: str | None = None) -> None:
    """A known backend, and not ONNX Runtime together with PyTorch's int8 (`--inference-int8`)."""
    if backend not in BACKENDS:
        raise SlimtuneError(f"unknown --backend {backend!r}; choose from {list(BACKENDS)}")
    if backend != "pytorch" and inference_int8:
        raise SlimtuneError("--inference-int8 is PyTorch's int8; with ONNX Runtime use --backend onnxruntime-int8")


def use_backend(loaded, backend: str) -> None:
    """Run `loaded` with `backend` from now on: PyTorch as loaded, or its ONNX export in ONNX Runtime (fp32 or
    dynamic int8), exported to a temporary directory that is gone once the session has read it (`eval` and
    `predict` keep exports instead: slimtune.runs.onnx_cache)."""
    if backend == "pytorch":
        return
    check_backend(backend)
    with tempfile.TemporaryDirectory(prefix="slimtune-onnx-") as tmp:
        path, _ = export_for_backend(loaded, backend, Path(tmp))
        loaded.model = OnnxRuntimeModel(path)
