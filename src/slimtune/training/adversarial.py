"""Adversarial training on the input embeddings: FGM (Miyato et al., 2017) and PGD (Madry et al., 2018).

Each training batch is also run with its word embeddings [B, T, H] moved by a small perturbation r along the
loss gradient, and the loss of the perturbed batch is added to the plain loss:

    FGM:  g = ∂L/∂e,  r = ε · g / ‖g‖   (‖g‖ over each example's [T, H], padding left alone)
    PGD:  r₀ = 0, then K times  r ← clip_ε(r + (ε/K) · g(r) / ‖g(r)‖)   (g(r): the gradient at e + r)

and the step's gradient is ∇θ [L(e) + L(e + r)], r held constant. With K = 1, PGD is FGM.

The perturbation enters through a forward hook on the backbone's input-embedding module, registered for the
adversarial forward passes only and removed right after: evaluation and prediction never see it, and no weight
is changed (the word-embedding matrix is usually frozen, so the common recipe of moving it would not work with
PEFT methods). The trainer calls `Adversary.backward` in place of its plain backward.
"""

import contextlib
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from slimtune.errors import SlimtuneError

ADVERSARIAL_KINDS = ("fgm", "pgd")


@dataclass(frozen=True)
class AdversarialConfig:
    kind: str  # "fgm" or "pgd"
    epsilon: float = 0.1  # the L2 norm of each example's perturbation [T, H] (docs/results.md, "Remedies")
    steps: int = 3  # PGD's ascent steps (FGM takes one)

    def validate(self) -> None:
        if self.kind not in ADVERSARIAL_KINDS:
            raise SlimtuneError(f"unknown --adversarial {self.kind!r}; choose from {list(ADVERSARIAL_KINDS)}")
        if not (math.isfinite(self.epsilon) and self.epsilon > 0):
            raise SlimtuneError(f"--adv-epsilon must be a positive finite number, got {self.epsilon}")
        if self.steps < 1:
            raise SlimtuneError(f"--adv-steps must be at least 1, got {self.steps}")

    @property
    def ascent_steps(self) -> int:
        return 1 if self.kind == "fgm" else self.steps


def unit_per_example(gradient: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """g / ‖g‖ for each example of gradient [B, T, H], over its unmasked tokens (mask [B, T]); 0 where g is 0."""
    gradient = gradient * mask.unsqueeze(-1).to(gradient.dtype)
    norm = gradient.flatten(1).norm(dim=1).clamp(min=1e-12)  # [B]
    return gradient / norm[:, None, None]


def project(r: torch.Tensor, epsilon: float) -> torch.Tensor:
    """r [B, T, H] scaled back onto the ε-ball of each example where it left it."""
    norm = r.flatten(1).norm(dim=1).clamp(min=1e-12)  # [B]
    return r * (epsilon / norm).clamp(max=1.0)[:, None, None]


class Adversary:
    """Adds the adversarial loss of each batch to the plain loss's gradient (see the module docstring)."""

    def __init__(self, config: AdversarialConfig, embeddings: nn.Module):
        config.validate()
        self.config, self.embeddings = config, embeddings

    @classmethod
    def for_model(cls, config: AdversarialConfig, model: nn.Module) -> "Adversary":
        """The adversary of a task model whose `backbone` has input embeddings (transformers' get_input_embeddings)."""
        get = getattr(model.backbone, "get_input_embeddings", None)
        embeddings = get() if get is not None else None
        if embeddings is None:
            raise SlimtuneError(f"--adversarial needs a backbone with input embeddings; "
                                f"{type(model.backbone).__name__} has none")
        return cls(config, embeddings)

    @contextlib.contextmanager
    def _perturbed(self, delta: torch.Tensor):
        """Forward passes inside see the input embeddings [B, T, H] plus `delta` [B, T, H]."""
        used = []

        def add_delta(module, args, output):
            used.append(True)
            return output + delta

        handle = self.embeddings.register_forward_hook(add_delta)
        try:
            yield
        finally:
            handle.remove()
        if not used:
            raise SlimtuneError("--adversarial: this model's training pass does not go through the input embeddings "
                                "(features computed once?), so there is nothing to perturb")

    def backward(self, training_model: nn.Module, model: nn.Module, loss_of: Callable[[nn.Module], torch.Tensor],
                 weight: float, mask: torch.Tensor, extra: torch.Tensor | None = None) -> torch.Tensor:
        """Back-propagate weight · (L(e) + L(e + r)) (+ `extra`); returns the plain loss L(e), detached.

        `loss_of(m)` runs model `m` on the batch and returns its loss; `training_model` is the model the step
        trains through (a DDP wrapper under data parallelism), `model` the plain module, used for PGD's inner
        ascent steps, which need only the gradient with respect to r. `mask` [B, T] marks the real tokens.
        """
        eps, steps = self.config.epsilon, self.config.ascent_steps
        width = self.embeddings.weight.shape[1]
        delta = torch.zeros(*mask.shape, width, device=mask.device, requires_grad=True)  # r = 0, for ∂L/∂e
        with self._perturbed(delta):
            loss = loss_of(training_model)
        (loss * weight).backward()
        gradient = delta.grad if delta.grad is not None else torch.zeros_like(delta)
        r = torch.zeros_like(delta)
        for step in range(steps):
            r = project(r + (eps / steps) * unit_per_example(gradient, mask), eps)
            if step + 1 < steps:
                inner = r.clone().requires_grad_(True)
                with self._perturbed(inner):
                    (gradient,) = torch.autograd.grad(loss_of(model), inner, allow_unused=True)
                gradient = torch.zeros_like(r) if gradient is None else gradient
        with self._perturbed(r.detach()):
            adversarial_loss = loss_of(training_model) * weight
        (adversarial_loss + extra if extra is not None else adversarial_loss).backward()
        return loss.detach()
