"""The attention wrappers of prefix tuning (methods/prefix.py): trained keys and values put in front of the real
ones in a BERT-style or a Llama-style self-attention module, and the attention masks extended to match."""

import importlib

import torch
from torch import nn

from slimtune.errors import SlimtuneError
from slimtune.models.kv_cache import OLD_CACHE_ARGUMENT, kv_cache


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
