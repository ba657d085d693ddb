"""Where slimtune's modules sit in the transformers model that `peft` wraps for a task.

slimtune adapts a backbone (an encoder from `AutoModel`, or a causal LM's decoder stack); peft wraps the
whole transformers model its user loads: `AutoModel` for classify (slimtune's mean- or cls-pooled sentence head
has no transformers class, so it travels beside the adapter), `AutoModelForSequenceClassification` for classify
pooled through the pooler (BERT's own sequence classifier: pooler, dropout, linear),
`AutoModelForTokenClassification` for ner and `AutoModelForCausalLM` for causal-lm. The layout is read from a weightless (meta-device) instance of that
class built from the base model's config, so names are exact without loading any weights.
"""

import copy
from dataclasses import dataclass

import torch
from torch import nn

from slimtune.errors import SlimtuneError

TASK_TYPES = {"classify": "FEATURE_EXTRACTION", "ner": "TOKEN_CLS", "causal-lm": "CAUSAL_LM"}
POOLER_TASK_TYPE = "SEQ_CLS"  # classify pooled through the pooler
TUNER_PREFIX = "base_model.model."  # tensor keys of tuners that wrap layers (LoRA, AdaLoRA, IA3, ...)
PROMPT_PREFIX = "base_model."  # tensor keys of the task head for prompt-learning methods


@dataclass
class PeftLayout:
    task: str
    task_type: str
    backbone_prefix: str  # where slimtune's backbone sits in the transformers model: "", "bert." or "model."
    linear_names: tuple[str, ...]  # every Linear module of the transformers model, by peft's names
    head_name: str | None  # the linear classifier of a TOKEN_CLS or SEQ_CLS model ("classifier"), else None
    config: object  # the base model's transformers config

    def peft_module(self, backbone_path: str) -> str:
        return self.backbone_prefix + backbone_path

    def backbone_module(self, peft_module: str) -> str:
        """The backbone path of a module peft names; a name outside the backbone is a foreign adapter."""
        if not peft_module.startswith(self.backbone_prefix):
            raise SlimtuneError(f"the adapter adapts {peft_module}, which this {self.task} model does not have")
        return peft_module[len(self.backbone_prefix):]

    def target_modules(self, backbone_paths: list[str]) -> list[str]:
        """peft's `target_modules`: the short layer names when they select exactly these layers, else full names."""
        wanted = {self.peft_module(p) for p in backbone_paths}
        short = sorted({name.rsplit(".", 1)[-1] for name in wanted})
        if {n for n in self.linear_names if n.rsplit(".", 1)[-1] in short} == wanted:
            return short
        return sorted(wanted)


def task_type_of(task: str, pooling: str | None = None) -> str:
    if task not in TASK_TYPES:
        raise SlimtuneError(f"task {task} has no peft counterpart; peft task types: {', '.join(TASK_TYPES.values())}")
    return POOLER_TASK_TYPE if task == "classify" and pooling == "pooler" else TASK_TYPES[task]


def peft_layout(task: str, base_config, num_labels: int = 0, pooling: str | None = None) -> PeftLayout:
    """The layout of the model a peft user loads for `task` (and classify's `pooling`) on a base with `base_config`."""
    from transformers import (AutoModel, AutoModelForCausalLM, AutoModelForSequenceClassification,
                              AutoModelForTokenClassification)

    task_type = task_type_of(task, pooling)
    config = copy.deepcopy(base_config)
    auto = {"FEATURE_EXTRACTION": AutoModel, "TOKEN_CLS": AutoModelForTokenClassification,
            "SEQ_CLS": AutoModelForSequenceClassification, "CAUSAL_LM": AutoModelForCausalLM}[task_type]
    if task_type in ("TOKEN_CLS", "SEQ_CLS"):
        config.num_labels = num_labels
    try:
        with torch.device("meta"):
            model = auto.from_config(config)
    except (ValueError, KeyError) as e:
        raise SlimtuneError(f"transformers has no {auto.__name__} for this base model: {str(e).splitlines()[0]}") from None
    inner = model.base_model
    prefix = next(name for name, module in model.named_modules() if module is inner)
    head = None
    if task_type in ("TOKEN_CLS", "SEQ_CLS"):
        heads = [name for name, module in model.named_children()
                 if isinstance(module, nn.Linear) and module.out_features == num_labels]
        if len(heads) != 1 or (task_type == "SEQ_CLS" and getattr(inner, "pooler", None) is None):
            kind = "token classifier" if task_type == "TOKEN_CLS" else "classifier on the pooler output"
            raise SlimtuneError(f"{type(model).__name__} has no single linear {kind} for peft to save")
        head = heads[0]
    linears = tuple(n for n, m in model.named_modules() if isinstance(m, nn.Linear))
    return PeftLayout(task, task_type, f"{prefix}." if prefix else "", linears, head, base_config)
