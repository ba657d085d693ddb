"""ONNX Runtime as a CPU inference backend for encoder task models (classify, ner).

A task model (a padded batch in, logits out) is exported to ONNX with its head, batch and sequence axes dynamic,
and run by an `onnxruntime.InferenceSession` behind the same forward, so evaluation and prediction use it
unchanged. int8 is ONNX Runtime's dynamic quantization: MatMul weights int8 per output channel, activations
quantized per batch at run time. `onnxruntime`, `onnx` and `onnxscript` come with the optional extra `onnx`.
"""

import logging
import os
import warnings
from pathlib import Path

import torch
from torch import nn

from slimtune.errors import SlimtuneError

INPUT_NAMES = ("input_ids", "attention_mask", "token_type_ids")  # in the order of the exported graph's inputs
OUTPUT_NAME = "logits"  # [batch, classes] (classify) or [batch, sequence, classes] (ner)


def require_onnx() -> None:
    """One clear line when the optional packages are missing."""
    import importlib.util

    missing = [name for name in ("onnxruntime", "onnx", "onnxscript") if importlib.util.find_spec(name) is None]
    if missing:
        raise SlimtuneError(f"the ONNX backend needs {', '.join(missing)}: pip install 'slimtune[onnx]'")


class _Positional(nn.Module):
    """The task model with its inputs in graph order (the ONNX exporter traces positional inputs)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask, token_type_ids=None) -> torch.Tensor:
        extra = {"token_type_ids": token_type_ids} if token_type_ids is not None else {}
        return self.model(input_ids=input_ids, attention_mask=attention_mask, **extra)


def _reason(error: Exception) -> str:
    """The line of an exporter's long message that says what failed."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    summary = [line for line in lines if line.startswith("<class")]
    return (summary or lines or [type(error).__name__])[0]


def sample_batch(vocab_size: int, with_token_types: bool) -> dict[str, torch.Tensor]:
    """A padded [2, 8] batch to trace with: two rows of different lengths, so padding is in the graph."""
    ids = torch.arange(8).repeat(2, 1) % vocab_size
    mask = torch.tensor([[1] * 8, [1] * 5 + [0] * 3])
    batch = {"input_ids": ids, "attention_mask": mask}
    if with_token_types:
        batch["token_type_ids"] = torch.zeros_like(ids)
    return batch


def export_onnx(model: nn.Module, batch: dict[str, torch.Tensor], path: Path) -> list[str]:
    """Write `model` (eval mode, fp32) to `path` as one ONNX file; returns the graph's input names.

    `batch` is an example padded batch ([B, T] tensors, B and T > 1, as dims of size 1 get fixed); its keys among
    INPUT_NAMES become the inputs, each with dynamic `batch` and `sequence` axes.
    """
    names = tuple(n for n in INPUT_NAMES if n in batch)
    wrapper = _Positional(model).eval()
    batch_dim, sequence_dim = torch.export.Dim("batch"), torch.export.Dim("sequence")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            torch.onnx.export(wrapper, tuple(batch[n] for n in names), str(path), input_names=list(names),
                              output_names=[OUTPUT_NAME], dynamo=True, external_data=False, verbose=False,
                              dynamic_shapes={n: {0: batch_dim, 1: sequence_dim} for n in names})
        except Exception as e:  # the exporter raises many kinds; the model cannot be exported either way
            raise SlimtuneError(f"{type(model.backbone).__name__} could not be exported to ONNX: {_reason(e)}") from None
    return list(names)


def quantize_onnx_int8(fp32_path: Path, int8_path: Path) -> None:
    """ONNX Runtime dynamic int8: every MatMul/Gemm weight int8 per output channel, activations quantized per
    batch. On SST-2 held-out data (docs/results.md) it kept fp32's accuracy within 0.05 points with no layer left
    in fp32 and no calibration.

    The exporter's intermediate shape annotations are dropped first: some hold the traced example's sizes, which
    the quantizer's shape inference then rejects as conflicting; they are hints, and the graph runs without them."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    model = onnx.load(str(fp32_path))
    del model.graph.value_info[:]
    logging.disable(logging.WARNING)  # its advice to pre-process is logged to the root logger, i.e. the user
    try:
        quantize_dynamic(model, str(int8_path), per_channel=True, weight_type=QuantType.QInt8,
                         op_types_to_quantize=["MatMul", "Gemm"])
    finally:
        logging.disable(logging.NOTSET)


class OnnxRuntimeModel(nn.Module):
    """An ONNX task model run by ONNX Runtime, with the task model's forward: padded [B, T] tensors → logits."""

    def __init__(self, path: Path, threads: int | None = None):
        super().__init__()
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or torch.get_num_threads()
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3  # errors only: warnings about unused initialisers are not the user's
        try:
            self.session = ort.InferenceSession(os.fspath(path), options, providers=["CPUExecutionProvider"])
        except Exception as e:  # ORT raises its own exception types for unreadable or invalid models
            raise SlimtuneError(f"{path}: not a model ONNX Runtime can run ({str(e).splitlines()[0]})") from None
        self.input_names = [i.name for i in self.session.get_inputs()]

    def forward(self, input_ids, attention_mask, token_type_ids=None, **_) -> torch.Tensor:
        given = {"input_ids": input_ids, "attention_mask": attention_mask,
                 "token_type_ids": token_type_ids if token_type_ids is not None else torch.zeros_like(input_ids)}
        feeds = {name: given[name].cpu().numpy() for name in self.input_names}
        return torch.from_numpy(self.session.run([OUTPUT_NAME], feeds)[0])
