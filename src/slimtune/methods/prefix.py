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
from slimtune.models.kv_cache import OLD_CACHE_ARGUMENT, kv_cache
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


def projections(module: nn.Module) -> tuple[nn.Module, nn.Module, nn.Module]:
    """(query, key, value) projections of a supported self-attention module."""
    if hasattr(module, "attention_head_size"):
        return module.query, module.key, module.value
    return module.q_proj, module.k_proj, module.v_proj


class PrefixAttention(nn.Module):
    """Wraps (never subclasses) a BERT-style self-attention module; keys/values [B, heads, P + T, d]."""

    def __init__(self, base_layer: nn.Module, key: torch.Tensor, value: torch.Tensor, reparam_hidden: int | None):
        super().__init__()
        self.base_layer = base_layer
        self.length = key.shape[0]
        self.widths = [key.shape[1], value.shape[1]]  # kv_heads * d each
        self.reparam: nn.Sequential | None = None
        if reparam_hidden is None:
            self.prefix_key = nn.Parameter(key)  # [P, kv_heads * d]
            self.prefix_value = nn.Parameter(value)
            return
        width, like = projections(base_layer)[0].in_features, {"device": key.device, "dtype": key.dtype}
        self.prefix_input = nn.Parameter(torch.randn(self.length, width, **like))  # [P, H], fed to the MLP
        self.reparam = nn.Sequential(
            nn.Linear(width, reparam_hidden, **like), nn.Tanh(), nn.Linear(reparam_hidden, sum(self.widths), **like),
        )

    def own_parameters(self) -> list[nn.Parameter]:
        if self.reparam is None:
            return [self.prefix_key, self.prefix_value]
        return [self.prefix_input, *self.reparam.parameters()]

    def prefixes(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(keys, values), each [P, kv_heads * d]."""
        if self.reparam is None:
            return self.prefix_key, self.prefix_value
        return self.reparam(self.prefix_input).split(self.widths, dim=-1)  # from [P, 2 * kv_heads * d]

    def batch_prefixes(self, batch: int, head_dim: int, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """(keys, values), each [B, kv_heads, P, d]."""
        return tuple(p.to(dtype).reshape(1, self.length, -1, head_dim).transpose(1, 2).expand(batch, -1, -1, -1)
                     for p in self.prefixes())

    @torch.no_grad()
    def fold(self) -> None:
        """Replace the MLP by the prefixes it currently produces."""
        if self.reparam is None:
            return
        key, value = (p.detach().clone() for p in self.prefixes())
        del self.prefix_input
        self.reparam = None
        self.prefix_key, self.prefix_value = nn.Parameter(key), nn.Parameter(value)

    def forward(self, hidden_states: torch.Tensor, attention_mask=None, cache=None, **kwargs):
        if cache is not None or kv_cache(kwargs) is not None:
            raise SlimtuneError("prefix tuning does not support a key/value cache in BERT-style attention")
        base = self.base_layer
        batch, length = hidden_states.shape[:2]
        head = base.attention_head_size

        def heads(x: torch.Tensor) -> torch.Tensor:  # [B, T, n * d] → [B, n, T, d]
            return x.reshape(batch, length, -1, head).transpose(1, 2)

        from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS  # here: listing methods needs no transformers
        from transformers.models.bert.modeling_bert import eager_attention_forward

        query = heads(base.query(hidden_states))
        prefix_key, prefix_value = self.batch_prefixes(batch, head, hidden_states.dtype)
        key = torch.cat([prefix_key, heads(base.key(hidden_states))], dim=2)
        value = torch.cat([prefix_value, heads(base.value(hidden_states))], dim=2)
        attention = ALL_ATTENTION_FUNCTIONS.get_interface(base.config._attn_implementation, eager_attention_forward)
        output, weights = attention(
            base, query, key, value, extend_mask(attention_mask, self.length),
            dropout=base.dropout.p if self.training else 0.0, scaling=base.scaling, **kwargs,
        )
        return output.reshape(batch, length, -1).contiguous(), weights


def causal_mask(queries: int, keys: int, device) -> torch.Tensor:
    """[1, 1, Q, K] bool: the Q queries are the last Q of K positions and see themselves and what precedes."""
    query_positions = torch.arange(keys - queries, keys, device=device)[:, None]
    return (torch.arange(keys, device=device)[None, :] <= query_positions)[None, None]


class DecoderPrefixAttention(PrefixAttention):
    """Wraps a Llama-style causal self-attention module with grouped-query attention.

    queries [B, heads, T, d]; keys/values [B, kv_heads, P + K, d] with K the cached
    plus current tokens. Runs the base module's own projections, rotary embedding
    (`apply_rotary_pos_emb` of the model's module), cache update and attention
    function, in the base module's order.
    """

    def forward(self, hidden_states: torch.Tensor, position_embeddings=None, attention_mask=None, cache=None,
                **kwargs):
        base = self.base_layer
        cache = cache if cache is not None else kwargs.pop(OLD_CACHE_ARGUMENT, None)  # a caller of the old API
        batch, length = hidden_states.shape[:2]
        code = importlib.import_module(type(base).__module__)

        def heads(x: torch.Tensor) -> torch.Tensor:  # [B, T, n * d] → [B, n, T, d]
            return x.view(batch, length, -1, base.head_dim).transpose(1, 2)

        query, key = heads(base.q_proj(hidden_states)), heads(base.k_proj(hidden_states))
        value = heads(base.v_proj(hidden_states))
        cos, sin = position_embeddings
        query, key = code.apply_rotary_pos_emb(query, key, cos, sin)
        if cache is not None:
            key, value = cache.update(key, value, base.layer_idx)
        if attention_mask is None:  # the attention function would have applied a causal mask by itself
            attention_mask = causal_mask(length, key.shape[2], hidden_states.device)
            if base.config._attn_implementation == "eager":  # eager adds its mask to the scores
                attention_mask = torch.zeros(attention_mask.shape, dtype=query.dtype, device=query.device
                                             ).masked_fill(~attention_mask, torch.finfo(query.dtype).min)
        prefix_key, prefix_value = self.batch_prefixes(batch, base.head_dim, hidden_states.dtype)
        key, value = torch.cat([prefix_key, key], dim=2), torch.cat([prefix_value, value], dim=2)
        from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

        attention = ALL_ATTENTION_FUNCTIONS.get_interface(base.config._attn_implementation,
                                                          code.eager_attention_forward)
        output, weights = attention(
            base, query, key, value, extend_mask(attention_mask, self.length),
            dropout=base.attention_dropout if self.training else 0.0, scaling=base.scaling, **kwargs,
        )
        return base.o_proj(output.reshape(batch, length, -1).contiguous()), weights


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
