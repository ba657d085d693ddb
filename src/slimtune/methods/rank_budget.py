"""AdaLoRA's rank budget: when to cut (the schedule) and what to cut (smoothed sensitivity scores).

Not a method itself: `adalora.py` uses it. Following Zhang et al. 2023 ("AdaLoRA"):
the importance of a weight is its sensitivity |w·∇w|, smoothed by an exponential
moving average Ī and weighted by an uncertainty term Ū (the moving average of
|I - Ī|); a singular triplet (P column, λ, Q row) scores s(λ) + mean s(P col) + mean s(Q row).
"""

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class BudgetSchedule:
    """Total surviving triplets after each optimizer step `step` (1-based).

    Steps 1..warmup_end keep the initial budget; from there it falls along a cubic to the
    target, which it reaches at `final_start`; from `final_start` to the end the mask is fixed.
    """

    initial: int
    target: int
    warmup_end: int
    final_start: int

    @classmethod
    def over(cls, total_steps: int, initial: int, target: int, tinit: float, tfinal: float) -> "BudgetSchedule":
        """The schedule for a run of `total_steps`, with warm-up and final phases as fractions of it."""
        final_start = max(1, total_steps - int(tfinal * total_steps))
        return cls(initial, target, min(int(tinit * total_steps), final_start), final_start)

    def budget(self, step: int) -> int:
        if step >= self.final_start:
            return self.target
        if step <= self.warmup_end:
            return self.initial
        remaining = 1 - (step - self.warmup_end) / (self.final_start - self.warmup_end)
        return self.target + int((self.initial - self.target) * remaining**3)

    def phase(self, step: int) -> str:
        if step <= self.warmup_end and step < self.final_start:
            return "warmup"
        if step < self.final_start:
            return "decrease"
        return "fix" if step == self.final_start else "final"


@torch.no_grad()
def update_sensitivity(param: torch.Tensor, average: torch.Tensor, uncertainty: torch.Tensor,
                       beta1: float, beta2: float) -> None:
    """One step of the smoothed sensitivity Ī and its uncertainty Ū, in place; needs `param.grad`."""
    sensitivity = (param * param.grad).abs()
    average.mul_(beta1).add_(sensitivity, alpha=1 - beta1)
    uncertainty.mul_(beta2).add_((sensitivity - average).abs(), alpha=1 - beta2)


def keep_most_important(scores: list[torch.Tensor], budget: int) -> list[torch.Tensor]:
    """Boolean masks, one per matrix, keeping the `budget` highest triplet scores across all matrices."""
    flat = torch.cat(scores)
    keep = torch.zeros_like(flat, dtype=torch.bool)
    keep[flat.topk(min(budget, flat.numel())).indices] = True
    return list(keep.split([len(s) for s in scores]))
