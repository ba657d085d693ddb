"""One method measured before a long run: matched modules, trainable parameters, adapter size, a few timed steps.

The steps go through the real `Trainer` on a small sample (real rows from --train, or synthetic rows of
--seq-len tokens), so the step time is the one `slimtune train` will see. It runs in its own process,
`python -m slimtune.compare.probe REQUEST.json RESULT.json`, so the parent reads its peak resident memory the way
`compare` reads a whole training's.
"""

import json
import random
import re
import resource
import statistics
import sys
import tempfile
from pathlib import Path

import torch
from safetensors.torch import save

from slimtune.errors import SlimtuneError
from slimtune.methods.adaptation import adapter_state, attach, head_parameters
from slimtune.methods.registry import create_method
from slimtune.models.loading import load_backbone
from slimtune.runs.prepare import build_run, prepare_training
from slimtune.tasks import get_task
from slimtune.tasks.base import TAGGING
from slimtune.training.batch_source import FeatureBatches
from slimtune.training.config import TrainConfig


def matched_modules(backbone: torch.nn.Module) -> list[str]:
    """Backbone modules the method adapted: each wrapper (a module holding `base_layer`), else each module that
    owns a trainable parameter itself; in model order."""
    names = []
    wrappers = [n for n, m in backbone.named_modules() if n and hasattr(m, "base_layer")]
    for name, module in backbone.named_modules():
        if not any(p.requires_grad for p in module.parameters(recurse=False)):
            continue
        outer = next((w for w in wrappers if name == w or name.startswith(w + ".")), name)
        if outer not in names:
            names.append(outer)
    return names


def group_names(names: list[str]) -> list[tuple[str, int]]:
    """`encoder.layer.0.attention.self.query`, `...layer.1...` → [("encoder.layer.*.attention.self.query", 2)]."""
    groups: dict[str, int] = {}
    for name in names:
        pattern = re.sub(r"(?<=\.)\d+(?=\.|$)|^\d+(?=\.)", "*", name) or "(backbone)"
        groups[pattern] = groups.get(pattern, 0) + 1
    return list(groups.items())


def sample_features(request: dict, task, tokenizer, max_length: int, rows_needed: int) -> tuple[list, list, int]:
    """(features, labels, rows in --train or 0): a seeded sample of real rows, else synthetic ones."""
    if request.get("train"):
        rows = task.read(request["train"], **request.get("read_options", {}))
        chosen = random.Random(0).sample(rows, min(rows_needed, len(rows)))
        data_rows = len(rows)
    else:
        chosen, data_rows = synthetic_rows(task, tokenizer, request["seq_len"], rows_needed), 0
    labels = task.label_names(chosen)
    return task.encode(chosen, tokenizer, labels, max_length), labels, data_rows


def synthetic_rows(task, tokenizer, seq_len: int, n: int) -> list:
    """Rows of whole vocabulary words, about `seq_len` tokens each with [CLS] and [SEP], random labels or tags."""
    from slimtune.data.conll import Sentence
    from slimtune.data.table import LabelledText

    rng = random.Random(0)
    words = sorted(w for w in tokenizer.get_vocab() if w.isalpha() and w.islower())
    rows = []
    for _ in range(n):
        chosen = rng.choices(words, k=max(1, seq_len - 2))
        if task.kind == TAGGING:
            rows.append(Sentence(chosen, [rng.choice(("O", "B-ENT")) for _ in chosen], lines=tuple(range(len(chosen)))))
        else:
            rows.append(LabelledText(" ".join(chosen), rng.choice(("negative", "positive"))))
    return rows


class ProbeRun:
    """The `RunKind` of a probe: a seeded sample of --train (or synthetic rows), trained a few steps."""

    def __init__(self, request: dict):
        self.request, self.task = request, get_task(request["task"])
        self.rows_needed = (request["steps"] + 1) * request["batch_size"]

    def create_method(self):
        """The method as `train` configures it for the task on a full-size data set (the task's defaults)."""
        return create_method(self.request["method"], self.request.get("options", {}), self.task.name)

    def read(self, seed: int) -> None:
        """Nothing yet: synthetic rows need the tokenizer, so the sample is drawn in `build`."""

    def load_backbone(self):
        return load_backbone(self.request.get("model"), max_length=self.request.get("max_length"))

    def build(self, backbone):
        self.features, self.labels, self.data_rows = sample_features(self.request, self.task, backbone.tokenizer,
                                                                     backbone.max_length, self.rows_needed)
        return self.task.build_model(backbone, self.labels), self.task, self.labels

    def attach(self, model, method):
        self.formula = method.count_parameters(model.backbone)
        return attach(model, method)

    def encode(self, backbone):
        return self.features, self.features[:1]

    def batch_source(self, train_features, config: TrainConfig, pad_id: int):
        return FeatureBatches(train_features, config.batch_size, config.seed, pad_id)


def probe(request: dict) -> dict:
    """Measure one method; `request` holds task, method, options, model, train or seq_len, batch_size, steps."""
    kind, batch_size = ProbeRun(request), request["batch_size"]
    built = build_run(kind, TrainConfig(epochs=1, batch_size=batch_size, patience=0, seed=0))
    model, method = built.model, built.method
    rss_loaded = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

    with tempfile.TemporaryDirectory(prefix="slimtune-plan-") as run_dir:
        prepared = prepare_training(built)
        adapter_bytes = len(save({k: v.contiguous() for k, v in adapter_state(model, method, export=True).items()},
                                 metadata={"format": "slimtune"}))
        trainer = prepared.trainer(Path(run_dir))
        elapsed = []
        trainer.step_callbacks.append(lambda progress: elapsed.append(progress.train_seconds))
        trainer.fit(prepared.source, prepared.dev_features)
        step_seconds = [b - a for a, b in zip([0.0] + elapsed, elapsed)]
    timed = step_seconds[1:] or step_seconds  # the first step pays one-off allocations
    mean_step = statistics.fmean(timed)
    tokens = statistics.fmean(len(f["input_ids"]) for f in kind.features)
    return {
        "method": method.name, "options": {k: _plain(v) for k, v in method.options_dict().items()},
        "matched": matched_modules(model.backbone), "backbone_formula": kind.formula,
        "head_parameters": sum(p.numel() for p in head_parameters(model).values()),
        **built.parameter_counts, "adapter_bytes": adapter_bytes, "step_seconds": step_seconds,
        "mean_step_seconds": mean_step, "examples_per_second": batch_size / mean_step, "mean_tokens": tokens,
        "batch_size": batch_size, "data_rows": kind.data_rows, "rss_after_loading": rss_loaded,
        "peak_rss_in_process": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
    }


def _plain(value):
    return list(value) if isinstance(value, tuple) else value


def main(argv: list[str]) -> int:
    request_path, result_path = argv
    try:
        result = probe(json.loads(Path(request_path).read_text()))
    except SlimtuneError as e:
        print(e, file=sys.stderr)  # the last line, which `plan` repeats after "measuring M failed:"
        return 2
    Path(result_path).write_text(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
