"""Sparse fine-tuning: train a fixed, chosen fraction of each Linear weight matrix and nothing else.

Each Linear of the encoder (outside the pooler) is wrapped with a trainable
vector of k values scattered into its weight at k fixed positions, so only the
k values are parameters and the adapter holds (indices, values) pairs. The
positions are chosen per matrix, k = round(density · out · in), by weight
magnitude, by a Fisher estimate (squared gradients on a few training batches),
or at random (seeded).

Fisher selection needs training data, which the method cannot fetch itself: the
trainer must call `prepare(model, batches, loss_fn)` once after attaching and
before the first step. Without that call the magnitude mask is used and a
warning says so.
"""

import itertools
import warnings
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from slimtune.errors import SlimtuneError
from slimtune.methods.base import Method
from slimtune.models.folding import FoldableWrapper
from slimtune.models.surgery import replace_module

SELECTIONS = ("magnitude", "fisher", "random")


def selected_count(numel: int, density: float) -> int:
    """How many weights of a matrix train: round(density · numel), at least 1."""
    return min(numel, max(1, round(density * numel)))


def top_positions(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Sorted flat positions of the k largest scores: [k] long."""
    return scores.flatten().topk(k).indices.sort().values


class SparseDeltaLinear(FoldableWrapper):
    """A frozen linear layer whose weight gets trainable values at fixed positions: W + scatter(values, indices)."""

    def __init__(self, base_layer: nn.Linear, indices: torch.Tensor):
        super().__init__()
        self.base_layer = base_layer
        self.register_buffer("indices", indices)  # [k] long, sorted flat positions in W [out, in]
        self.values = nn.Parameter(torch.zeros(len(indices), dtype=base_layer.weight.dtype))  # [k]

    def effective_weight(self) -> torch.Tensor:
        weight = self.base_layer.weight
        return weight.flatten().index_add(0, self.indices, self.values).view_as(weight)  # [out, in]

    def adapted_forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.effective_weight(), self.base_layer.bias)

    def folded_parameters(self) -> dict[str, torch.Tensor]:
        return {"weight": self.effective_weight()}

    @torch.no_grad()
    def select(self, indices: torch.Tensor) -> None:
        """Move the k trainable positions before training (the values must still be zero)."""
        self.indices.copy_(indices)


def sparse_targets(backbone: nn.Module) -> list[tuple[str, nn.Linear]]:
    """(name, base Linear) for every Linear outside the pooler (which the task head owns), wrapped or not."""
    pooler = getattr(backbone, "pooler", None)
    found = []

    def walk(module: nn.Module, prefix: str) -> None:
        for name, child in module.named_children():
            if child is pooler:
                continue
            if isinstance(child, (nn.Linear, SparseDeltaLinear)):
                found.append((prefix + name, child.base_layer if isinstance(child, SparseDeltaLinear) else child))
            else:
                walk(child, f"{prefix}{name}.")

    walk(backbone, "")
    if not found:
        raise SlimtuneError(f"subnetwork: {type(backbone).__name__} has no Linear layers to sparsify")
    return found


@dataclass
class SubnetworkOptions:
    density: float = field(default=0.005, metadata={"help": "fraction of each Linear weight matrix that trains"})
    selection: str = field(default="magnitude", metadata={
        "help": "how the weights are chosen: magnitude (largest |w|), fisher (largest squared gradient on a few "
                "training batches, given by train()) or random"})
    seed: int = field(default=0, metadata={"help": "seed for selection=random"})
    fisher_batches: int = field(default=8, metadata={"help": "training batches the fisher estimate uses"})

    def validate(self) -> None:
        if not 0 < self.density <= 1:
            raise SlimtuneError(f"subnetwork: density must be in (0, 1], got {self.density}")
        if self.selection not in SELECTIONS:
            raise SlimtuneError(f"subnetwork: selection must be one of {', '.join(SELECTIONS)}, got {self.selection!r}")
        if self.fisher_batches < 1:
            raise SlimtuneError(f"subnetwork: fisher_batches must be at least 1, got {self.fisher_batches}")


class Subnetwork(Method):
    name = "subnetwork"
    summary = "sparse fine-tuning of a fixed fraction of each weight matrix, saved as indices + values"
    Options = SubnetworkOptions
    mergeable = True
    needs_float_base_weights = True  # W + scatter(values) needs W itself
    # Reasoned, not yet swept: each trained value moves alone (no shared factor as in LoRA), so it needs a
    # rate well above full fine-tuning's 5e-5; sparse fine-tuning papers use 1e-4..1e-3 over several epochs.
    default_lr = 1e-3

    def __init__(self, options=None, task_name: str | None = None, small_data: bool = False):
        super().__init__(options, task_name, small_data)
        self.fisher_done = False

    def inject(self, backbone: nn.Module) -> None:
        generator = torch.Generator().manual_seed(self.options.seed)
        for name, layer in sparse_targets(backbone):
            weight = layer.weight.detach()
            k = selected_count(weight.numel(), self.options.density)
            if self.options.selection == "random":
                indices = torch.randperm(weight.numel(), generator=generator)[:k].sort().values
            else:  # fisher starts from magnitude until prepare() has data
                indices = top_positions(weight.abs(), k)
            replace_module(backbone, name, SparseDeltaLinear(layer, indices.to(weight.device)))

    def _layers(self, backbone: nn.Module) -> list[tuple[str, SparseDeltaLinear]]:
        return [(n, m) for n, m in backbone.named_modules() if isinstance(m, SparseDeltaLinear)]

    def prepare(self, model: nn.Module, batches, loss_fn) -> None:
        """Choose the fisher mask from squared gradients of the task loss on up to `fisher_batches` batches.

        `batches` yields padded training batches (dicts with `labels`), `loss_fn(logits, labels)` is the task loss.
        Call once after attach() and before the first step; other selections need no data and return at once.
        The estimate is coarse (squared batch gradients, through the freshly initialised head), as in FISH masks.
        """
        if self.options.selection != "fisher":
            return
        layers = [layer for _, layer in self._layers(model.backbone)]
        if any(layer.values.any() for layer in layers):
            raise SlimtuneError("subnetwork: prepare() must run before training starts")
        weights = [layer.base_layer.weight for layer in layers]
        scores = [torch.zeros_like(w) for w in weights]
        was_training, used = model.training, 0
        model.eval()
        for w in weights:
            w.requires_grad_(True)
        try:
            for batch in itertools.islice(batches, self.options.fisher_batches):
                loss = loss_fn(model(**batch), batch["labels"])
                for score, grad in zip(scores, torch.autograd.grad(loss, weights)):
                    score += grad.pow(2)
                used += 1
        finally:
            for w in weights:
                w.requires_grad_(False)
            model.train(was_training)
        if not used:
            raise SlimtuneError("subnetwork: selection=fisher was given no training batches")
        for layer, score in zip(layers, scores):
            layer.select(top_positions(score, len(layer.indices)))
        self.fisher_done = True

    def on_step(self, backbone: nn.Module, step: int, total_steps: int) -> None:
        if step == 1 and self.options.selection == "fisher" and not self.fisher_done:
            warnings.warn("subnetwork: selection=fisher needs training batches through prepare(), which was not "
                          "called; this run trains the magnitude mask instead", stacklevel=2)

    def trainable_parameters(self, backbone: nn.Module) -> list[nn.Parameter]:
        return [layer.values for _, layer in self._layers(backbone)]

    def count_parameters(self, backbone: nn.Module) -> int:
        return sum(selected_count(layer.weight.numel(), self.options.density) for _, layer in sparse_targets(backbone))

    def state_dict(self, backbone: nn.Module) -> dict[str, torch.Tensor]:
        """Per wrapped layer its values [k] and positions [k] (int32 is plenty for one matrix and halves them)."""
        state = {}
        for name, layer in self._layers(backbone):
            state[f"{name}.values"] = layer.values.detach().clone()
            state[f"{name}.indices"] = layer.indices.to(torch.int32)
        return state

    def load_state_dict(self, backbone: nn.Module, state: dict[str, torch.Tensor]) -> None:
        layers = dict(self._layers(backbone))
        expected = {f"{n}.{part}" for n in layers for part in ("values", "indices")}
        if set(state) != expected:
            wrong = sorted(set(state) ^ expected)
            raise KeyError(f"adapter and model disagree on {wrong[:5]}")
        with torch.no_grad():
            for name, layer in layers.items():
                layer.select(state[f"{name}.indices"].long())
                layer.values.copy_(state[f"{name}.values"])
