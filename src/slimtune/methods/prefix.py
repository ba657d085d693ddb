"""Prefix tuning (Li & Liang 2021): trained key/value vectors every query in every layer attends to.

Each self-attention module is wrapped: its own query/key/value projections run
unchanged, `length` trained keys and values are put in front of the real ones,
and the padding mask gains `length` always-visible columns. Queries are only the
real tokens, so the output keeps the input's length; a padded token still sees
exactly the prefix and the real tokens, whatever the padding.

Optionally the prefixes are trained through a small MLP (the paper's
reparameterisation, which steadies training); the saved adapter holds only the
prefixes it produces, so loading needs no MLP. Here each layer has its own MLP,
so every wrapped attention owns all it uses.

Supported: bidirectional BERT-style self-attention (one module with `query`,
`key`, `value` projections and `attention_head_size`). Prefix widths follow the
key/value projections, so grouped-query attention (fewer key/value heads) fits
the same shapes; Llama-style decoders still need rotary positions and a causal
mask handled here, and are refused until then.
"""

from dataclasses import dataclass, field

import torch
from torch import nn
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
from transformers.models.bert.modeling_bert import eager_attention_forward

from slimtune.errors import SlimtuneError
from slimtune.methods.base import Method
from slimtune.models.surgery import replace_module


def extend_mask(mask: torch.Tensor | None, length: int) -> torch.Tensor | None:
    """Prepend `length` key columns every query may attend to.

    The forms transformers builds: None (all visible), [B, 1|heads, Q, K] bool
    (True = attend) or additive float (0 = attend), [B, K] padding (1 = attend).
    """
    if mask is None:
        return None
    if not isinstance(mask, torch.Tensor) or mask.dim() not in (2, 4):
        raise SlimtuneError(f"prefix tuning cannot extend an attention mask of type {type(mask).__name__}; "
                            "load the model with attn_implementation 'sdpa' or 'eager'")
    if mask.dtype == torch.bool:
        visible = True
    elif mask.dim() == 4:
        visible = 0  # additive: leaves the score as it is
    else:
        visible = 1
    columns = torch.full((*mask.shape[:-1], length), visible, dtype=mask.dtype, device=mask.device)
    return torch.cat([columns, mask], dim=-1)


class PrefixAttention(nn.Module):
    """Wraps (never subclasses) a self-attention module; keys/values [B, kv_heads, P + T, d], queries [B, heads, T, d]."""

    def __init__(self, base_layer: nn.Module, key: torch.Tensor, value: torch.Tensor, reparam_hidden: int | None):
        super().__init__()
        self.base_layer = base_layer
        self.length = key.shape[0]
        self.reparam: nn.Sequential | None = None
        if reparam_hidden is None:
            self.prefix_key = nn.Parameter(key)  # [P, kv_heads * d]
            self.prefix_value = nn.Parameter(value)
            return
        width, like = base_layer.query.in_features, {"device": key.device, "dtype": key.dtype}
        self.prefix_input = nn.Parameter(torch.randn(self.length, width, **like))  # [P, H], fed to the MLP
        self.reparam = nn.Sequential(
            nn.Linear(width, reparam_hidden, **like), nn.Tanh(),
            nn.Linear(reparam_hidden, key.shape[1] + value.shape[1], **like),
        )

    def own_parameters(self) -> list[nn.Parameter]:
        if self.reparam is None:
            return [self.prefix_key, self.prefix_value]
        return [self.prefix_input, *self.reparam.parameters()]

    def prefixes(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(keys, values), each [P, kv_heads * d]."""
        if self.reparam is None:
            return self.prefix_key, self.prefix_value
        both = self.reparam(self.prefix_input)  # [P, 2 * kv_heads * d]
        return both.split([self.base_layer.key.out_features, self.base_layer.value.out_features], dim=-1)

    @torch.no_grad()
    def fold(self) -> None:
        """Replace the MLP by the prefixes it currently produces."""
        if self.reparam is None:
            return
        key, value = (p.detach().clone() for p in self.prefixes())
        del self.prefix_input
        self.reparam = None
        self.prefix_key, self.prefix_value = nn.Parameter(key), nn.Parameter(value)

    def forward(self, hidden_states: torch.Tensor, attention_mask=None, past_key_values=None, **kwargs):
        if past_key_values is not None:
            raise SlimtuneError("prefix tuning does not support a key/value cache")
        base = self.base_layer
        batch, length = hidden_states.shape[:2]
        head = base.attention_head_size

        def heads(x: torch.Tensor) -> torch.Tensor:  # [B, T', n * d] → [B, n, T', d]
            return x.reshape(x.shape[0], x.shape[1], -1, head).transpose(1, 2)

        query = heads(base.query(hidden_states))
        prefix_key, prefix_value = (p.to(hidden_states.dtype).expand(batch, -1, -1) for p in self.prefixes())
        key = torch.cat([heads(prefix_key), heads(base.key(hidden_states))], dim=2)
        value = torch.cat([heads(prefix_value), heads(base.value(hidden_states))], dim=2)
        attention = ALL_ATTENTION_FUNCTIONS.get_interface(base.config._attn_implementation, eager_attention_forward)
        output, weights = attention(
            base, query, key, value, extend_mask(attention_mask, self.length),
            dropout=base.dropout.p if self.training else 0.0, scaling=base.scaling, **kwargs,
        )
        return output.reshape(batch, length, -1).contiguous(), weights


def attention_modules(backbone: nn.Module) -> list[str]:
    """Dotted names of the self-attention modules prefix tuning can wrap, or an error saying why there are none."""
    config = backbone.config
    if getattr(config, "is_decoder", False) or getattr(config, "add_cross_attention", False):
        raise SlimtuneError("prefix tuning supports bidirectional encoders only; this model is configured as a decoder")
    found = [
        n for n, m in backbone.named_modules()
        if all(isinstance(getattr(m, p, None), nn.Linear) for p in ("query", "key", "value"))
        and hasattr(m, "attention_head_size")
    ]
    if not found:
        raise SlimtuneError(
            f"prefix tuning supports BERT-style self-attention (one module with query/key/value projections); "
            f"{type(backbone).__name__} has none. Llama-style decoders (rotary positions, causal mask, grouped "
            "key/value heads) are not supported yet"
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
        result[name] = (module.key(hidden).clone(), module.value(hidden).clone())
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

    def inject(self, backbone: nn.Module) -> None:
        names = attention_modules(backbone)
        initial = activation_prefixes(backbone, names, self.options.length)
        hidden = self.options.reparam_hidden if self.options.reparam else None
        for name in names:
            key, value = initial[name]
            replace_module(backbone, name, PrefixAttention(backbone.get_submodule(name), key, value, hidden))

    def count_parameters(self, backbone: nn.Module) -> int:
        length, hidden, total = self.options.length, self.options.reparam_hidden, 0
        for name in attention_modules(backbone):
            module = backbone.get_submodule(name)
            width, out = module.query.in_features, module.key.out_features + module.value.out_features
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
