"""Run directories made without training: a method attached to a tiny model, its weights perturbed, saved as
`train` saves them; and the slimtune logits of such a run on a toy batch."""

import json
from pathlib import Path

import pytest
import torch

from tests.conftest import TASK_BATCHES, TASK_LABELS


PROMPT_LENGTH = 3


CASE_OPTIONS = {"prompt": {"length": str(PROMPT_LENGTH)}, "lora": {"r": "4"}, "adalora": {"r": "4", "target_rank": "2"},
                "lora-rslora": {"r": "4", "use_rslora": "true"}, "lora-pissa": {"r": "4", "init": "pissa"},
                "lora-olora": {"r": "2", "init": "olora", "use_rslora": "true"}, "dora": {"r": "4"},
                "dora-pissa": {"r": "2", "init": "pissa"},
                "vera": {"r": "8", "seed": "3"}, "loha": {"r": "2", "alpha": "4"}, "lokr": {"r": "2", "alpha": "4"}}


def method_options(case: str) -> dict:
    return CASE_OPTIONS.get(case, {})


def make_run(model_dir: str, task: str, case: str, out: Path, seed: int = 0, pooling: str | None = None) -> Path:
    """A run directory for `case` (a method, or method-variant such as lora-pissa) on `model_dir`, every trained
    weight moved off its initial value."""
    from slimtune.methods.adaptation import attach
    from slimtune.runs.adapter_files import run_config, save_adapter
    from slimtune.methods.registry import create_method
    from slimtune.models.loading import fingerprint
    from slimtune.tasks import get_task

    task_obj = get_task(task)
    base_fingerprint = fingerprint(task_obj.load_backbone(model_dir).model)
    backbone = task_obj.load_backbone(model_dir, pooling=pooling)
    torch.manual_seed(seed)
    method = case.split("-")[0]
    model, m = task_obj.build_model(backbone, list(TASK_LABELS[task])), create_method(method, method_options(case))
    params = attach(model, m)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in params:
            p.add_(torch.randn(p.shape, generator=generator) * 0.2)
    settings = {"scheme": "iob2"} if task == "ner" else {}
    config = run_config(task_obj, m, model_dir, base_fingerprint, backbone, list(TASK_LABELS[task]), settings)
    if method == "adalora":  # some triplets pruned, as the rank budget leaves them: matrices of several ranks
        layers = [layer for layer in model.backbone.modules() if hasattr(layer, "rank_mask")]
        for i, layer in enumerate(layers):
            layer.set_mask(torch.arange(layer.rank) < 1 + i % layer.rank)
    save_adapter(out, model, m, config)
    (out / "metrics.json").write_text(json.dumps({"best_dev_accuracy": 0.75, "train_examples": 96, "steps": 12}))
    return out


def slimtune_logits(run_dir: Path, task: str) -> tuple[torch.Tensor, dict]:
    """(logits, the toy batch they are for) of a run loaded by slimtune; padded positions included."""
    from slimtune.runs.adapter_files import load_adapter

    loaded = load_adapter(run_dir)
    batch = TASK_BATCHES[task](loaded.backbone, n=4, seed=3)
    with torch.no_grad():
        logits = loaded.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
    return logits, batch


@pytest.fixture(scope="session")
def base_dirs(tiny_model, tiny_lm) -> dict[str, str]:
    return {"classify": tiny_model, "ner": tiny_model, "causal-lm": tiny_lm}
