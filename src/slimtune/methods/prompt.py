"""Prompt tuning (Lester et al. 2021): trained input vectors shown to the frozen backbone before every input.

Two hooks on the backbone, both owned by one `SoftPrompt` module that also holds
the trained vectors [P, H]:
  before forward: input ids [B, T] are embedded with the backbone's own word
    embeddings and the prompt is put in front → inputs_embeds [B, P + T, H]; the
    attention mask gains P ones and token type ids P zeros. The backbone numbers
    positions over the whole sequence, as in the paper and in PEFT.
  after forward: the P prompt positions are cut from `last_hidden_state` (and from
    `hidden_states`; `pooler_output` is recomputed from the real first token), so
    the task model sees [B, T, H] again: pooling and per-token labels are unaffected.

Decoders generating with a key/value cache: the first call (empty cache) puts the
prompt in front as above, and it stays in the cache; later calls bring only new
tokens, so the prompt is not added again, only its P mask columns. Explicit
position ids (transformers' generate passes them) are shifted by P, so real
tokens sit at positions P.. as in training.
"""

import inspect
from dataclasses import dataclass, field

import torch
from torch import nn

from slimtune.errors import SlimtuneError
from slimtune.methods.base import Method
from slimtune.methods.peft_mappings import PromptPeftMapping
from slimtune.models.kv_cache import kv_cache

INITS = ("vocab", "random")


class SoftPrompt(nn.Module):
    """The trained prompt [P, H] and the two backbone hooks that show it and hide it again."""

    def __init__(self, embeddings: torch.Tensor):
        super().__init__()
        self.embeddings = nn.Parameter(embeddings)
        self.prepended = False  # whether the current forward put the prompt in front (strip must cut it)

    @property
    def length(self) -> int:
        return self.embeddings.shape[0]

    def prepend(self, backbone: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
        """Forward pre-hook: the same call with the prompt in front of the embedded input."""
        names = list(inspect.signature(backbone.forward).parameters)
        inputs = {**dict(zip(names, args)), **kwargs}
        cache = kv_cache(inputs)
        continuing = cache is not None and cache.get_seq_length() > 0  # generating: the prompt is in the cache
        positions = inputs.get("position_ids")
        if positions is not None:  # real tokens after the prompt: [B, T] → [B, P + T], or shifted by P
            positions = positions + self.length
            if not continuing:
                prompt_positions = torch.arange(self.length, device=positions.device)
                positions = torch.cat([prompt_positions.expand(positions.shape[0], -1), positions], dim=1)
            inputs["position_ids"] = positions
        if continuing:
            self.prepended = False
            mask = inputs.get("attention_mask")
            if mask is not None:
                inputs["attention_mask"] = torch.cat([mask.new_ones(mask.shape[0], self.length), mask], dim=1)
            return (), inputs
        self.prepended = True
        ids, embeds = inputs.pop("input_ids", None), inputs.pop("inputs_embeds", None)
        if embeds is None:
            embeds = backbone.get_input_embeddings()(ids)  # [B, T, H]
        batch, length = embeds.shape[:2]
        window = getattr(backbone.config, "max_position_embeddings", None)
        if window is not None and length + self.length > window:
            raise SlimtuneError(f"{length} tokens plus a prompt of {self.length} exceed the model's {window} "
                                f"positions; pass --max-length {window - self.length} or less")
        prompt = self.embeddings.to(embeds.dtype).expand(batch, -1, -1)  # [B, P, H]
        inputs["inputs_embeds"] = torch.cat([prompt, embeds], dim=1)
        mask = inputs.get("attention_mask")
        if mask is None:
            mask = torch.ones(batch, length, dtype=torch.long, device=embeds.device)
        inputs["attention_mask"] = torch.cat([mask.new_ones(batch, self.length), mask], dim=1)
        types = inputs.get("token_type_ids")
        if types is not None:
            inputs["token_type_ids"] = torch.cat([types.new_zeros(batch, self.length), types], dim=1)
        return (), inputs

    def strip(self, backbone: nn.Module, args: tuple, output):
        """Forward hook: the output as if there had been no prompt, [B, P + T, H] → [B, T, H]."""
        if not self.prepended:
            return output
        output.last_hidden_state = output.last_hidden_state[:, self.length:]
        if getattr(output, "hidden_states", None) is not None:
            output.hidden_states = tuple(h[:, self.length:] for h in output.hidden_states)
        if getattr(output, "pooler_output", None) is not None:
            output.pooler_output = backbone.pooler(output.last_hidden_state)  # it pooled a prompt position
        return output


@dataclass
class PromptOptions:
    length: int = field(default=20, metadata={"help": "number of trained prompt vectors put before every input"})
    init: str = field(default="vocab", metadata={
        "help": "vocab: copies of randomly drawn vocabulary embeddings; random: normal at the embeddings' scale"})

    def validate(self) -> None:
        if self.length < 1:
            raise SlimtuneError(f"prompt length must be at least 1, got {self.length}")
        if self.init not in INITS:
            raise SlimtuneError(f"prompt init must be one of {', '.join(INITS)}, got {self.init!r}")


class Prompt(Method):
    name = "prompt"
    peft_mapping = PromptPeftMapping
    summary = "trained soft-prompt vectors put before every input (removed again from the outputs)"
    Options = PromptOptions
    default_lr = 3e-2
    keeps_packed_examples_apart = False

    def inject(self, backbone: nn.Module) -> None:
        if "inputs_embeds" not in inspect.signature(backbone.forward).parameters:
            raise SlimtuneError(f"prompt tuning needs a backbone that accepts inputs_embeds; "
                                f"{type(backbone).__name__} does not")
        if hasattr(backbone, "soft_prompt"):
            raise SlimtuneError("this backbone already carries a soft prompt")
        words = backbone.get_input_embeddings().weight  # [V, H]
        with torch.no_grad():
            if self.options.init == "vocab":
                initial = words[torch.randint(words.shape[0], (self.options.length,))].clone()
            else:
                initial = torch.randn(self.options.length, words.shape[1], dtype=words.dtype) * words.std()
        backbone.soft_prompt = SoftPrompt(initial.to(words.device))
        backbone.register_forward_pre_hook(backbone.soft_prompt.prepend, with_kwargs=True)
        backbone.register_forward_hook(backbone.soft_prompt.strip)

    def count_parameters(self, backbone: nn.Module) -> int:
        return self.options.length * backbone.get_input_embeddings().embedding_dim

    def trainable_parameters(self, backbone: nn.Module) -> list[nn.Parameter]:
        return [m.embeddings for m in backbone.modules() if isinstance(m, SoftPrompt)]
