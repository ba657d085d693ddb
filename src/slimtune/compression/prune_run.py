"""One pruning run from a model to a pruned model directory and its report: the API behind `slimtune prune`."""

import shutil
from dataclasses import dataclass, field
from pathlib import Path

from slimtune.atomic import write_json
from slimtune.compression.importance import gradient_importance, magnitude_importance
from slimtune.compression.magnitude import SCOPES, magnitude_prune
from slimtune.compression.measure import (forward_latency_ms, nonzero_count, parameter_count, safetensors_bytes,
                                          synthetic_batch)
from slimtune.compression.probe import batches, fit_probe, probe_data, probe_score
from slimtune.compression.structured import check_count, choose_lowest, prune_structure
from slimtune.data.batching import pad_batch
from slimtune.errors import SlimtuneError
from slimtune.models.loading import load_backbone, resolve_model_path
from slimtune.models.pruned_layout import encoder_parts, layout
from slimtune.ownership import check_out, new_output
from slimtune.tasks import get_task

METHODS = ("magnitude", "structured")
REPORT_FILE = "prune_report.json"
SENTENCE_TRANSFORMERS_FILES = ("1_Pooling", "modules.json", "sentence_bert_config.json")


@dataclass
class PruneRequest:
    out_dir: str
    method: str
    model: str | None = None
    sparsity: float | None = None
    heads: int | None = None  # structured: heads to remove in all
    neurons: int | None = None  # structured: FFN neurons to remove in all
    scope: str = "global"
    data: str | None = None
    task: str = "classify"
    read_options: dict = field(default_factory=dict)
    examples: int = 1024  # rows sampled from data: half fit the probe and importance, half score it
    batch_size: int = 32
    overwrite: bool = False  # replace a previous slimtune output in out_dir

    def validate(self) -> None:
        if self.method not in METHODS:
            raise SlimtuneError(f"unknown pruning method {self.method!r}; choose from {list(METHODS)}")
        if self.scope not in SCOPES:
            raise SlimtuneError(f"unknown scope {self.scope!r}; choose from {list(SCOPES)}")
        counts_given = self.heads is not None or self.neurons is not None
        if self.method == "magnitude" and (counts_given or self.sparsity is None):
            raise SlimtuneError("magnitude pruning takes --sparsity (and not --heads/--neurons)")
        if self.method == "structured" and counts_given == (self.sparsity is not None):
            raise SlimtuneError("structured pruning takes --heads and/or --neurons, or --sparsity for both, not both")
        if self.sparsity is not None and not 0 <= self.sparsity < 1:
            raise SlimtuneError(f"--sparsity must be in [0, 1), got {self.sparsity}")
        check_out(Path(self.out_dir), self.overwrite)


def prune(request: PruneRequest) -> dict:
    """Prune, measure before and after, write the model directory and prune_report.json into `out_dir`."""
    request.validate()
    backbone = load_backbone(request.model)
    model = backbone.model
    pooler = getattr(model, "pooler", None)  # a task model drops it; the saved encoder keeps it
    task = get_task(request.task) if request.data else None
    data = probe_data(task, request.data, request.read_options, backbone, request.examples) if request.data else None
    latency_batch = (pad_batch(data.score[: request.batch_size], backbone.tokenizer.pad_token_id) if data
                     else synthetic_batch(model.config.vocab_size))

    counts = _structured_counts(request, model) if request.method == "structured" else None
    before = _measure(model, latency_batch)
    probe = None
    if data:
        probe = fit_probe(backbone, task, data, request.batch_size)
        before["probe_" + task.primary_metric] = probe_score(probe, backbone, task, data, request.batch_size)
    if request.method == "structured":
        details = _prune_structured(request, counts, backbone, task, data, probe)
    else:
        details = magnitude_prune(model, request.sparsity, request.scope)
    _restore_pooler(model, pooler)
    after = _measure(model, latency_batch)
    if data:
        after["probe_" + task.primary_metric] = probe_score(fit_probe(backbone, task, data, request.batch_size),
                                                            backbone, task, data, request.batch_size)
        _restore_pooler(model, pooler)
    report = {"model": request.model, "method": request.method, "scope": request.scope, **details,
              "latency_batch": "real" if data else f"synthetic {list(latency_batch['input_ids'].shape)}",
              "probe_data": request.data, "probe_rows": data.rows if data else 0,
              "before": before, "after": after}
    _save(backbone, request.model, Path(request.out_dir), report, request.overwrite)
    return report


def _restore_pooler(model, pooler) -> None:
    if pooler is not None:
        model.pooler = pooler


def _measure(model, latency_batch) -> dict:
    return {"parameters": parameter_count(model), "nonzero_parameters": nonzero_count(model),
            "file_bytes": safetensors_bytes(model), "latency_ms": forward_latency_ms(model, latency_batch)}


def _structured_counts(request: PruneRequest, model) -> tuple[int, int]:
    """(heads, neurons) to remove, checked before any time is spent measuring."""
    parts = encoder_parts(model)
    heads, neurons = [p.num_heads for p in parts], [p.num_neurons for p in parts]
    if request.sparsity is not None:
        counts = round(request.sparsity * sum(heads)), round(request.sparsity * sum(neurons))
    else:
        counts = request.heads or 0, request.neurons or 0
    check_count(heads, counts[0], request.scope, "heads")
    check_count(neurons, counts[1], request.scope, "neurons")
    return counts


def _prune_structured(request: PruneRequest, counts: tuple[int, int], backbone, task, data, probe) -> dict:
    parts = encoder_parts(backbone.model)
    total_heads, total_neurons = sum(p.num_heads for p in parts), sum(p.num_neurons for p in parts)
    n_heads, n_neurons = counts
    if data:
        head_scores, neuron_scores = gradient_importance(
            probe, task, batches(data.fit, backbone.tokenizer.pad_token_id, request.batch_size))
        importance = f"gradient of the {task.name} loss w.r.t. head and neuron gates (Michel et al. 2019)"
    else:
        head_scores, neuron_scores = magnitude_importance(backbone.model)
        importance = "weight magnitude (no --data given; a weaker signal than task gradients)"
    heads = choose_lowest(head_scores, n_heads, request.scope, "heads")
    neurons = choose_lowest(neuron_scores, n_neurons, request.scope, "neurons")
    prune_structure(backbone.model, heads, neurons)
    return {"importance": importance, "removed_heads": heads, "removed_head_count": n_heads,
            "removed_neuron_count": n_neurons, "of_heads": total_heads, "of_neurons": total_neurons,
            "layout": layout(backbone.model)}


def _save(backbone, model_spec: str | None, out: Path, report: dict, overwrite: bool) -> None:
    """A model directory `--model` accepts: weights, config, tokenizer, sentence-transformers pooling files."""
    with new_output(out, "prune", overwrite) as tmp:
        backbone.model.save_pretrained(tmp)
        backbone.tokenizer.save_pretrained(tmp)
        source = Path(resolve_model_path(model_spec))
        for name in SENTENCE_TRANSFORMERS_FILES:
            if (source / name).is_dir():
                shutil.copytree(source / name, tmp / name)
            elif (source / name).is_file():
                shutil.copy2(source / name, tmp / name)
        write_json(tmp / REPORT_FILE, report)


def format_report(report: dict) -> str:
    """Before/after table for the terminal."""
    rows = [("parameters", "parameters", "{:,}"), ("non-zero parameters", "nonzero_parameters", "{:,}"),
            ("file size (MiB)", "file_bytes", "{:.2f}"), ("forward latency (ms)", "latency_ms", "{:.1f}")]
    rows += [(f"probe {k.removeprefix('probe_')}", k, "{:.4f}") for k in report["before"] if k.startswith("probe_")]
    lines = [f"{'':<24}{'before':>14}{'after':>14}{'change':>10}"]
    for label, key, fmt in rows:
        scale = 1 / 2**20 if key == "file_bytes" else 1
        b, a = report["before"][key] * scale, report["after"][key] * scale
        change = f"{100 * (a - b) / b:+.1f}%" if b else ""
        lines.append(f"{label:<24}{fmt.format(b):>14}{fmt.format(a):>14}{change:>10}")
    if report["method"] == "structured":
        lines.append(f"removed {report['removed_head_count']} of {report['of_heads']} heads and "
                     f"{report['removed_neuron_count']} of {report['of_neurons']} FFN neurons; "
                     f"importance: {report['importance']}")
        lines.append(f"heads per layer {report['layout']['attention_heads']}, "
                     f"FFN width per layer {report['layout']['intermediate_sizes']}")
    else:
        lines.append(f"zeroed {report['pruned_weights']:,} of {report['prunable_weights']:,} linear weights in the "
                     f"blocks ({report['scope']}); stored densely, so the file keeps its size")
    lines.append(f"latency: median of forward passes over a {report['latency_batch']} batch")
    return "\n".join(lines)
