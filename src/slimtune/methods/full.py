"""Full fine-tuning: the baseline every other method is measured against."""

from torch import nn

from slimtune.methods.base import Method


class FullFineTuning(Method):
    name = "full"
    summary = "train every weight of the model (baseline; the adapter is a full copy)"
    mergeable = True  # nothing wraps the base, so there is nothing to fold
    default_lr = 3e-5  # measured: docs/results.md, "Choosing the defaults"
    task_defaults = {"ner": {"lr": 1e-4}}  # 3e-5 under-trains NER in an epoch (docs/results.md, "Per-task defaults")

    def inject(self, backbone: nn.Module) -> None:
        backbone.requires_grad_(True)

    def count_parameters(self, backbone: nn.Module) -> int:
        return sum(p.numel() for p in backbone.parameters())

    def trainable_parameters(self, backbone: nn.Module) -> list[nn.Parameter]:
        return list(backbone.parameters())
