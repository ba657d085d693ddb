"""How much each attention head and FFN neuron matters, to decide what structured pruning removes.

With task data: a gate g = 1 multiplies each head's context vector and each FFN
neuron's activation, and the importance is |∂L/∂g| summed over batches of the task
loss (Michel et al., 2019, "Are Sixteen Heads Really Better than One?"). For a
neuron this is |Σ_tokens activation · ∂L/∂activation|, gradient × activation.
Head scores are then L2-normalised within each layer, as Michel et al. do.
Without data: the norm of the weights each unit owns, a much weaker signal.
"""

from contextlib import contextmanager

import torch
from torch import nn

from slimtune.models.pruned_layout import BlockParts, encoder_parts
from slimtune.progress import progress_bar


def _gate_hook(gate: torch.Tensor, unit: int):
    """A forward pre-hook scaling each group of `unit` input features [..., units·unit] by gate [units]."""
    def hook(module, args):
        x = args[0]
        scaled = (x.unflatten(-1, (gate.numel(), unit)) * gate[:, None].to(x.dtype)).flatten(-2)
        return (scaled, *args[1:])
    return hook


@contextmanager
def gates(backbone: nn.Module, head_gates: list[torch.Tensor], neuron_gates: list[torch.Tensor]):
    """Multiply head contexts and FFN activations by the given per-layer gates while inside.

    Gate 0 on a head is the head mask of the paper (and of transformers' old `head_mask`).
    """
    handles = []
    try:
        for parts, head_gate, neuron_gate in zip(encoder_parts(backbone), head_gates, neuron_gates):
            handles.append(parts.layer("attention_out").register_forward_pre_hook(_gate_hook(head_gate, parts.head_dim)))
            handles.append(parts.layer("ffn_out").register_forward_pre_hook(_gate_hook(neuron_gate, 1)))
        yield
    finally:
        for handle in handles:
            handle.remove()


def gradient_importance(model: nn.Module, task, batches) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """(head scores [heads] per layer, neuron scores [neurons] per layer) from the task loss on `batches`."""
    parts = encoder_parts(model.backbone)
    head_gates = [torch.ones(p.num_heads, requires_grad=True) for p in parts]
    neuron_gates = [torch.ones(p.num_neurons, requires_grad=True) for p in parts]
    head_scores = [torch.zeros(p.num_heads) for p in parts]
    neuron_scores = [torch.zeros(p.num_neurons) for p in parts]
    was_training = model.training
    model.eval()
    try:
        with gates(model.backbone, head_gates, neuron_gates), progress_bar(len(batches), "importance") as bar:
            for batch in batches:
                inputs = {k: v for k, v in batch.items() if k != "labels"}
                loss = task.loss(model(**inputs), batch["labels"])
                grads = torch.autograd.grad(loss, head_gates + neuron_gates)
                for score, grad in zip(head_scores + neuron_scores, grads):
                    score += grad.abs()
                bar.update(1)
    finally:
        model.train(was_training)
    return _normalised(head_scores), neuron_scores


def _normalised(scores: list[torch.Tensor]) -> list[torch.Tensor]:
    return [s / s.norm().clamp(min=1e-12) for s in scores]


@torch.no_grad()
def magnitude_importance(backbone: nn.Module) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Data-free scores: the L2 norm of the weights a head or neuron owns (see structured.py)."""
    heads, neurons = [], []
    for parts in encoder_parts(backbone):
        d = parts.head_dim
        owned = sum(parts.layer(p).weight.pow(2).sum(1) for p in ("query", "key", "value"))  # [heads·d]
        owned = owned + parts.layer("attention_out").weight.pow(2).sum(0)
        heads.append(owned.view(parts.num_heads, d).sum(1).sqrt())
        neurons.append(parts.layer("intermediate").weight.norm(dim=1) * parts.layer("ffn_out").weight.norm(dim=0))
    return _normalised(heads), neurons


def head_mask_gates(parts: list[BlockParts], masked: list[list[int]]) -> list[torch.Tensor]:
    """Gates that zero the listed heads per layer and keep the rest: a head mask."""
    out = []
    for p, heads in zip(parts, masked):
        gate = torch.ones(p.num_heads)
        gate[list(heads)] = 0.0
        out.append(gate)
    return out
