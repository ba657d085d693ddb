"""The settings of one training run: what `slimtune train`'s training flags become, checked once."""

import math
from dataclasses import dataclass

from slimtune.data.eda import AUGMENTATIONS
from slimtune.errors import SlimtuneError
from slimtune.training.adversarial import AdversarialConfig


@dataclass
class TrainConfig:
    epochs: int = 3
    batch_size: int = 32
    lr: float | None = None  # None: the method's measured default
    weight_decay: float = 0.01
    warmup_ratio: float = 0.06
    grad_clip: float = 1.0
    grad_accum: int = 1
    eval_every: int = 0  # optimizer steps between dev evaluations; 0 = once per epoch
    patience: int = 3  # evaluations without improvement before stopping; 0 = never stop early
    checkpoint_every: int = 0  # optimizer steps between checkpoints; 0 = only at epoch ends
    log_every: int = 20
    seed: int = 42
    log_to: tuple[str, ...] = ()  # experiment logs beside metrics.jsonl (training/loggers.py)
    max_batch_tokens: int = 1024  # padded tokens per forward pass: a longer batch runs in pieces (`token_pieces`)
    adversarial: str | None = None  # "fgm" or "pgd": adversarial training on the input embeddings (adversarial.py)
    adv_epsilon: float = 0.1
    adv_steps: int = 3
    augment: str | None = None  # "eda": training texts augmented afresh each epoch (training/augmented_batches.py)
    augment_rate: float = 0.1
    pack: int = 0  # causal-lm: tokens per packed row of several examples (training/packing.py); 0 = no packing

    def loop_only_flags(self) -> list[str]:
        """The flags set here that only the supervised training loop carries out: the contrastive few-shot recipe
        has no adversarial step, augmentation, checkpoints, dev evaluations during training or gradient
        accumulation (training/small_data.py)."""
        return [flag for flag, given in (("--augment", self.augment), ("--adversarial", self.adversarial),
                                         ("--checkpoint-every", self.checkpoint_every),
                                         ("--eval-every", self.eval_every),
                                         ("--grad-accum", self.grad_accum > 1)) if given]

    def adversarial_config(self) -> AdversarialConfig | None:
        return AdversarialConfig(self.adversarial, self.adv_epsilon, self.adv_steps) if self.adversarial else None

    def validate(self) -> None:
        for name in ("epochs", "batch_size", "grad_accum", "max_batch_tokens"):
            if getattr(self, name) < 1:
                raise SlimtuneError(f"--{name.replace('_', '-')} must be at least 1")
        if self.lr is not None and not (math.isfinite(self.lr) and self.lr > 0):
            raise SlimtuneError(f"--lr must be a positive finite number, got {self.lr}")
        if not (math.isfinite(self.grad_clip) and self.grad_clip > 0):
            raise SlimtuneError(f"--grad-clip must be a positive finite number, got {self.grad_clip}")
        if self.pack and self.pack < 16:
            raise SlimtuneError(f"--pack must be at least 16 tokens (or 0: no packing), got {self.pack}")
        for name in ("weight_decay", "eval_every", "patience", "checkpoint_every"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise SlimtuneError(f"--{name.replace('_', '-')} must be a finite number, at least 0, got {value}")
        if not (math.isfinite(self.warmup_ratio) and 0 <= self.warmup_ratio <= 1):
            raise SlimtuneError(f"--warmup-ratio must be in [0, 1], got {self.warmup_ratio}")
        if self.adversarial:
            self.adversarial_config().validate()
        if self.augment not in (None, *AUGMENTATIONS):
            raise SlimtuneError(f"unknown --augment {self.augment!r}; choose from {list(AUGMENTATIONS)}")
        if not (math.isfinite(self.augment_rate) and 0 < self.augment_rate <= 1):
            raise SlimtuneError(f"--augment-rate must be in (0, 1], got {self.augment_rate}")
