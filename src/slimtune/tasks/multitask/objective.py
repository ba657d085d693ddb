"""What a multi-task run minimises and how it scores dev data.

Each batch comes from one task, so a step's loss is that task's term of
L = Σᵢ wᵢ·Lᵢ: with fixed weights wᵢ·Lᵢ, with learned weights (uncertainty
weighting, Kendall et al. 2018) exp(−sᵢ)·Lᵢ + sᵢ with sᵢ trainable. For fixed Lᵢ
the optimum is sᵢ = log Lᵢ, so a task whose loss stays high (noisy labels) is
weighed down. sᵢ starts at 0 (weight 1).
"""

from statistics import mean

import torch
from torch import nn

from slimtune.tasks.multitask.files import MULTI

LOSS_WEIGHTINGS = ("learned", "fixed")


class LossWeights(nn.Module):
    """Per-task loss weights: `log_vars` [n_tasks] trainable (learned) or constant weights (fixed)."""

    def __init__(self, names: list[str], mode: str, fixed: dict[str, float] | None = None):
        super().__init__()
        self.names, self.mode = list(names), mode
        if mode == "learned":
            self.log_vars = nn.Parameter(torch.zeros(len(self.names)))  # sᵢ
        else:
            self.register_buffer("fixed", torch.tensor([(fixed or {}).get(n, 1.0) for n in self.names]),
                                 persistent=False)

    def forward(self, name: str, loss: torch.Tensor) -> torch.Tensor:
        i = self.names.index(name)
        if self.mode == "learned":
            return torch.exp(-self.log_vars[i]) * loss + self.log_vars[i]
        return self.fixed[i] * loss

    def weights(self) -> dict[str, float]:
        """The factor each task's loss is multiplied by now: exp(−sᵢ), or the fixed weight."""
        values = torch.exp(-self.log_vars) if self.mode == "learned" else self.fixed
        return dict(zip(self.names, values.tolist()))


class MultiTask:
    """The trainer's task for a MultiTaskModel: the combined loss of a batch and the dev score of all tasks.

    Model selection and early stopping use `mean_score`, the mean of each task's own
    primary metric (accuracy for classify, entity F1 for ner).
    """

    name = MULTI
    primary_metric = "mean_score"

    def __init__(self, tasks: dict, loss_weights: LossWeights, loss_weights_lr: float | None = None):
        self.tasks, self.loss_weights, self.loss_weights_lr = tasks, loss_weights, loss_weights_lr
        self.recent_losses: dict[str, list[float]] = {name: [] for name in tasks}  # raw losses since the last record

    def batch_loss(self, logits: torch.Tensor, batch: dict) -> torch.Tensor:
        name = batch["task"]
        loss = self.tasks[name].loss(logits, batch["labels"])
        self.recent_losses[name].append(loss.item())
        return self.loss_weights(name, loss)

    def loss_for(self, batch: dict):
        """The unweighted loss of the batch's own task."""
        return self.tasks[batch["task"]].loss

    def own_learning_rates(self) -> list[tuple[nn.Parameter, float]]:
        """Learned loss weights train at `loss_weights_lr`: Adam moves them about that much per step."""
        if self.loss_weights.mode == "learned" and self.loss_weights_lr is not None:
            return [(self.loss_weights.log_vars, self.loss_weights_lr)]
        return []

    def step_record(self, step: int) -> dict:
        """A metrics.jsonl record of the weights after `step`, with the raw task losses since the last one."""
        record = {"type": "task_weights", "step": step, "weights": self.loss_weights.weights(),
                  "task_loss": {name: mean(values) for name, values in self.recent_losses.items() if values}}
        if self.loss_weights.mode == "learned":
            record["log_vars"] = dict(zip(self.loss_weights.names, self.loss_weights.log_vars.tolist()))
        for values in self.recent_losses.values():
            values.clear()
        return record

    def loss_units(self, features: list[dict]) -> int:
        """What the loss of these rows (all of one task, each tagged with its `task`) averages over."""
        return self.tasks[features[0]["task"]].loss_units(features) if features else 0

    def gathered_outputs(self, model, features: dict[str, list[dict]], pad_id: int, batch_size: int,
                         on_shares) -> dict[str, list]:
        """Each task's outputs from its own task model, {task name: outputs per feature}, shared out task by task."""
        return {name: task.gathered_outputs(model.task_models[name], features[name], pad_id, batch_size, on_shares)
                for name, task in self.tasks.items()}

    def score(self, outputs: dict[str, list], features: dict[str, list[dict]], labels: dict[str, list[str]]) -> dict:
        """Every task's metrics as `NAME_METRIC` (numbers only), and their primary metrics' mean."""
        out, scores = {}, []
        for name, task in self.tasks.items():
            metrics = task.score(outputs[name], features[name], labels[name])
            scores.append(metrics[task.primary_metric])
            out.update({f"{name}_{k}": v for k, v in metrics.items() if isinstance(v, (int, float))})
        return {"mean_score": mean(scores), **out}
