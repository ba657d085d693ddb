"""Prefix tuning (Li & Liang 2021): trained key/value vectors every query in every layer attends to.

Each self-attention module is wrapped: its own query/key/value projections run
unchanged, `length` trained keys and values are put in front of the real ones,
and the attention mask gains `length` always-visible columns. Queries are only the
real tokens, so the output keeps the input's length; a padded token still sees
exactly the prefix and the real tokens, whatever the padding.

Optionally the prefixes are trained through a small MLP (the paper's
reparameterisation, which steadies training); the saved adapter holds only the
prefixes it produces, so loading needs no MLP. Here each layer has its own MLP,
so every wrapped attention owns all it uses.

Two attention shapes are supported, found by structure:
- BERT-style bidirectional self-attention (`query`, `key`, `value` projections,
  `attention_head_size`): `PrefixAttention`.
- Llama-style causal self-attention (`q_proj`, `k_proj`, `v_proj`, `o_proj` and
  nothing else, rotary position embeddings, grouped-query attention):
  `DecoderPrefixAttention`. Prefix keys and values have the key/value projections'
  width, kv_heads × head_dim (SmolLM2: 3 × 64, shared by 9 query heads, as the
  real keys are); the prefix keys carry no rotary rotation, so they sit at no
  position and every token sees them alike. They are put in front after the
  key/value cache is updated, never into it, so generation with a cache works
  and positions are those of the unprefixed model; the causal mask gains the
  always-visible prefix columns.
"""

import importlib
from dataclasses import dataclass, field

import torch
from torch import nn

from slimtune.errors import SlimtuneError
from slimtune.methods.base import Method
from slimtune.methods.prefix_attention import DecoderPrefixAttention, PrefixAttention, projections
from slimtune.models.surgery import replace_module


LLAMA_PROJECTIONS = {"q_proj", "k_proj", "v_proj", "o_proj"}


def _is_bert_style(module: nn.Module) -> bool:
    return all(isinstance(getattr(module, p, None), nn.Linear) for p in ("query", "key", "value")) \
        and hasattr(module, "attention_head_size")


def _is_llama_style(module: nn.Module) -> bool:
    """Exactly the four projections (no extra norms, as Qwen3 has), head geometry, and the functions we call."""
    code = importlib.import_module(type(module).__module__)
    return {n for n, _ in module.named_children()} == LLAMA_PROJECTIONS \
        and all(isinstance(getattr(module, p), nn.Linear) for p in LLAMA_PROJECTIONS) \
        and all(hasattr(module, a) for a in ("head_dim", "layer_idx", "num_key_value_groups", "scaling")) \
        and all(hasattr(code, f) for f in ("apply_rotary_pos_emb", "eager_attention_forward"))


def attention_modules(backbone: nn.Module) -> list[tuple[str, type]]:
    """(dotted name, wrapper class) of the self-attention modules prefix tuning can wrap, or an error saying why."""
    config = backbone.config
    if getattr(config, "add_cross_attention", False):
        raise SlimtuneError("prefix tuning supports self-attention only; this model is configured with cross-attention")
    found = []
    for name, module in backbone.named_modules():
        if _is_bert_style(module):
            if getattr(config, "is_decoder", False):
                raise SlimtuneError("prefix tuning supports BERT-style attention in bidirectional encoders only; "
                                    "this model is configured as a decoder")
            found.append((name, PrefixAttention))
        elif _is_llama_style(module):
            if getattr(config, "sliding_window", None) is not None:
                raise SlimtuneError("prefix tuning does not support sliding-window attention "
                                    f"(config.sliding_window={config.sliding_window})")
            found.append((name, DecoderPrefixAttention))
    if not found:
        raise SlimtuneError(
            f"prefix tuning supports BERT-style self-attention (query/key/value projections) and Llama-style "
            f"causal self-attention (exactly q_proj/k_proj/v_proj/o_proj with rotary positions); "
            f"{type(backbone).__name__} has neither"
        )
    return found


@torch.no_grad()
def activation_prefixes(backbone: nn.Module, names: list[str], length: int) -> dict[str, tuple]:
    """Per attention module, the keys/values of real hidden states for `length` random vocabulary tokens.

    Li & Liang found prefixes initialised from real word activations train better
    than random ones; one eval-mode pass over the frozen backbone gives them.
    """
    ids = torch.randint(backbone.get_input_embeddings().num_embeddings, (1, length))
    captured = {}

    def capture(module, args, kwargs):
        captured[module] = args[0] if args else kwargs["hidden_states"]  # [1, P, H]

    hooks = [backbone.get_submodule(n).register_forward_pre_hook(capture, with_kwargs=True) for n in names]
    was_training = backbone.training
    try:
        backbone.eval()
        backbone(input_ids=ids.to(backbone.device), attention_mask=torch.ones_like(ids, device=backbone.device))
    finally:
        backbone.train(was_training)
        for hook in hooks:
            hook.remove()
    result = {}
    for name in names:
        module = backbone.get_submodule(name)
        hidden = captured[module][0]  # [P, H]
        _, key, value = projections(module)
        result[name] = (key(hidden).clone(), value(hidden).clone())
    return result


@dataclass
class PrefixOptions:
    length: int = field(default=10, metadata={"help": "number of trained key/value vectors per layer"})
    reparam: bool = field(default=False, metadata={
        "help": "train the prefixes through an MLP; the saved adapter holds only the prefixes it produces"})
    reparam_hidden: int = field(default=512, metadata={"help": "hidden width of the reparameterisation MLP"})

    def validate(self) -> None:
        if self.length < 1:
            raise SlimtuneError(f"prefix length must be at least 1, got {self.length}")
        if self.reparam_hidden < 1:
            raise SlimtuneError(f"prefix reparam_hidden must be at least 1, got {self.reparam_hidden}")


class Prefix(Method):
    name = "prefix"
    summary = "trained key/value prefixes every query attends to, in every layer"
    Options = PrefixOptions
    default_lr = 1e-2
    keeps_packed_examples_apart = False

    def inject(self, backbone: nn.Module) -> None:
        found = attention_modules(backbone)
        initial = activation_prefixes(backbone, [name for name, _ in found], self.options.length)
        hidden = self.options.reparam_hidden if self.options.reparam else None
        for name, wrapper in found:
            key, value = initial[name]
            replace_module(backbone, name, wrapper(backbone.get_submodule(name), key, value, hidden))

    def count_parameters(self, backbone: nn.Module) -> int:
        length, hidden, total = self.options.length, self.options.reparam_hidden, 0
        for name, _ in attention_modules(backbone):
            query, key, value = projections(backbone.get_submodule(name))
            width, out = query.in_features, key.out_features + value.out_features
            if self.options.reparam:
                total += length * width + (width * hidden + hidden) + (hidden * out + out)  # input, 2-layer MLP
            else:
                total += length * out
        return total

    def _wrappers(self, backbone: nn.Module) -> list[tuple[str, PrefixAttention]]:
        return [(n, m) for n, m in backbone.named_modules() if isinstance(m, PrefixAttention)]

    def trainable_parameters(self, backbone: nn.Module) -> list[nn.Parameter]:
        return [p for _, wrapper in self._wrappers(backbone) for p in wrapper.own_parameters()]

    def export_state_dict(self, backbone: nn.Module) -> dict[str, torch.Tensor]:
        """Only the final prefixes, the MLP folded away: [P, kv_heads * d] keys and values per layer."""
        state = {}
        with torch.no_grad():
            for name, wrapper in self._wrappers(backbone):
                key, value = wrapper.prefixes()
                state[f"{name}.prefix_key"], state[f"{name}.prefix_value"] = key.clone(), value.clone()
        return state

    def load_state_dict(self, backbone: nn.Module, state: dict[str, torch.Tensor]) -> None:
        """Accepts a training state (with the MLP, to resume) or an exported one (plain prefixes)."""
        for name, wrapper in self._wrappers(backbone):
            if f"{name}.prefix_key" in state:
                wrapper.fold()
        super().load_state_dict(backbone, state)
