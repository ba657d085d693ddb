"""Head-only tuning: the frozen encoder is a feature extractor; only the task head trains."""

from torch import nn

from slimtune.methods.base import Method


class HeadOnly(Method):
    name = "head"
    summary = "train only the task head (and the pooler when the model pools through it)"
    mergeable = True  # nothing wraps the base, so there is nothing to fold
    default_lr = 1e-2  # measured: docs/results.md, "Choosing the defaults"
    tasks = ("classify", "ner", "multilabel")
    tasks_reason = ("causal-lm keeps the LM head frozen (in SmolLM2 and many small LMs it is the input embedding "
                    "matrix, tied), so head-only tuning would train nothing; use lora or another method")

    def count_parameters(self, backbone: nn.Module) -> int:
        return 0

    def trainable_parameters(self, backbone: nn.Module) -> list[nn.Parameter]:
        return []
