"""Many LoRA adapters over one frozen base, in one forward pass (in the spirit of S-LoRA / Punica).

Each linear layer that some loaded adapter targets is wrapped once by a
`MultiLoRALinear` holding every adapter's factors stacked by slot:
A [S, r_max, in] and B [S, out, r_max], zero-padded to the largest rank, so a
slot without an update on that layer adds exactly zero. Every row of a batch
names its adapter's slot; the layer gathers each row's factors and adds
(x·Aᵀ·Bᵀ)·scale with two batched matmuls. Rows of different adapters thus share
the base matmuls and all the attention work, and each row gets its own delta.
The base layer may be PyTorch's dynamic int8 Linear (`serve --quantize int8`):
the deltas stay fp32 and are added to its output.
"""

from contextlib import contextmanager

import torch
from torch import nn

from slimtune.errors import SlimtuneError
from slimtune.methods.lora import LoRALinear

BASE_LINEARS = (nn.Linear, torch.ao.nn.quantized.dynamic.Linear)  # what a MultiLoRALinear can wrap


class RowSlots:
    """The adapter slot of each row of the batch now running, shared by every MultiLoRALinear of one base."""

    def __init__(self):
        self.slots: torch.Tensor | None = None  # [B] long

    @contextmanager
    def use(self, slots: torch.Tensor):
        self.slots = slots
        try:
            yield
        finally:
            self.slots = None


class MultiLoRALinear(nn.Module):
    """A frozen linear layer plus, per row, the low-rank update of that row's adapter."""

    def __init__(self, base_layer: nn.Module, rows: RowSlots):
        super().__init__()
        self.base_layer = base_layer
        self.rows = rows
        self.factors: dict[int, tuple[torch.Tensor, torch.Tensor, float]] = {}  # slot → (A [r, in], B [out, r], scale)
        self.stacked: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None

    def put(self, slot: int, lora_a: torch.Tensor, lora_b: torch.Tensor, scaling: float) -> None:
        self.factors[slot] = (lora_a.detach().clone(), lora_b.detach().clone(), scaling)
        self._restack()

    def drop(self, slot: int) -> None:
        self.factors.pop(slot, None)
        self._restack()

    def _restack(self) -> None:
        if not self.factors:
            self.stacked = None
            return
        slots = max(self.factors) + 1
        rank = max(a.shape[0] for a, _, _ in self.factors.values())
        a_any, _, _ = next(iter(self.factors.values()))
        stacked_a = a_any.new_zeros(slots, rank, self.base_layer.in_features)
        stacked_b = a_any.new_zeros(slots, self.base_layer.out_features, rank)
        scale = a_any.new_zeros(slots)
        for slot, (a, b, scaling) in self.factors.items():
            stacked_a[slot, : a.shape[0]] = a
            stacked_b[slot, :, : b.shape[1]] = b
            scale[slot] = scaling
        self.stacked = (stacked_a, stacked_b, scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x [B, ..., in]
        out = self.base_layer(x)
        slots = self.rows.slots
        if self.stacked is None or slots is None:
            return out
        if x.shape[0] != slots.shape[0]:
            raise RuntimeError(f"{x.shape[0]} rows reached a multi-LoRA layer but {slots.shape[0]} slots were given")
        stacked_a, stacked_b, scale = self.stacked
        has_update = slots < len(scale)  # later slots have no update on this layer
        slots = slots.clamp(max=len(scale) - 1)
        a = stacked_a[slots]  # [B, r, in]
        b = stacked_b[slots]  # [B, out, r]
        flat = x.reshape(x.shape[0], -1, x.shape[-1])  # [B, T, in]
        delta = torch.bmm(torch.bmm(flat, a.transpose(1, 2)), b.transpose(1, 2))  # [B, T, out]
        delta = delta * (scale[slots] * has_update).view(-1, 1, 1)
        return out + delta.reshape(*x.shape[:-1], -1)


class SharedLoRABase(nn.Module):
    """One frozen backbone carrying the LoRA factors of every loaded adapter, each in its own slot."""

    def __init__(self, backbone: nn.Module):
        super().__init__()
        self.backbone = backbone.requires_grad_(False).eval()
        self.rows = RowSlots()

    def add(self, slot: int, adapted_backbone: nn.Module) -> None:
        """Copy the LoRA factors of `adapted_backbone` (the same architecture, LoRA-injected) into `slot`."""
        layers = {name: m for name, m in adapted_backbone.named_modules() if isinstance(m, LoRALinear)}
        if not layers:
            raise SlimtuneError("the adapter has no LoRA layers")
        targets = {name: self._wrapped(name, layer) for name, layer in layers.items()}
        for name, layer in layers.items():
            targets[name].put(slot, layer.lora_A, layer.lora_B, layer.scaling)

    def remove(self, slot: int) -> None:
        for module in self.backbone.modules():
            if isinstance(module, MultiLoRALinear):
                module.drop(slot)

    def _wrapped(self, name: str, layer: LoRALinear) -> MultiLoRALinear:
        """The MultiLoRALinear at `name`, wrapping the base's linear layer there on first use."""
        try:
            current = self.backbone.get_submodule(name)
        except AttributeError:
            raise SlimtuneError(f"the adapter has a LoRA layer {name!r} that the base model lacks") from None
        if isinstance(current, MultiLoRALinear):
            return current
        shape = (layer.base_layer.out_features, layer.base_layer.in_features)
        if not isinstance(current, BASE_LINEARS) or (current.out_features, current.in_features) != shape:
            raise SlimtuneError(f"the adapter's LoRA layer {name!r} does not fit the base model's {current}")
        wrapper = MultiLoRALinear(current, self.rows)
        parent_name, _, child = name.rpartition(".")
        setattr(self.backbone.get_submodule(parent_name) if parent_name else self.backbone, child, wrapper)
        return wrapper

    @torch.no_grad()
    def forward(self, batch: dict[str, torch.Tensor], slots: torch.Tensor) -> torch.Tensor:
        """Token states [B, T, H] for a padded batch whose row i uses the adapter in `slots[i]`."""
        inputs = {k: v for k, v in batch.items() if k in ("input_ids", "attention_mask", "token_type_ids")}
        with self.rows.use(slots):
            return self.backbone(**inputs).last_hidden_state
