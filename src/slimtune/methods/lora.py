"""LoRA: a frozen linear layer plus a trainable low-rank update, W x + s·B A x, s = α/r (rsLoRA: α/√r).

With the default initialisations B starts at zero, so an injected model reproduces its base exactly until it
trains. PiSSA (A, B from W's top singular triplets) and OLoRA (from W's QR) start B A at the principal part of W
and keep the residual W − s·B₀A₀ frozen; here the base layer is left untouched (other adapters may share it) and
the update is s·(B A − B₀A₀), B₀A₀ rebuilt from W on load and never stored: the same model, an exact base at
initialisation, and a shared-base per-row update like any LoRA's.
"""

import math
import re
from dataclasses import dataclass, field

import torch
from torch import nn

from slimtune.errors import SlimtuneError
from slimtune.methods.base import Method
from slimtune.methods.peft_mappings import LoRAPeftMapping
from slimtune.models.folding import FoldableWrapper
from slimtune.models.surgery import find_linear_targets, replace_module, transformer_blocks

INITS = ("kaiming", "gaussian", "pissa", "olora")

ALL_BLOCK_LINEARS = r"(.*\.)?layers?\.\d+\..*"  # every linear layer inside the numbered transformer blocks


def lora_scaling(rank: int, alpha: float, rslora: bool) -> float:
    """s = α/r, or α/√r for rsLoRA (Kalajdzievski 2023), whose updates keep their size as the rank grows."""
    return alpha / math.sqrt(rank) if rslora else alpha / rank


def principal_factors(weight: torch.Tensor, rank: int, scaling: float, init: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(A₀ [r, in], B₀ [out, r]) whose s·B₀A₀ is W's principal part, as peft's pissa_init / olora_init build them.

    Computed in float64 on the CPU so that every load rebuilds the same factors from the same W.
    """
    w = weight.detach().to("cpu", torch.float64)
    if init == "pissa":  # W = U S Vᵀ: A₀ = √(S_r/s) V_rᵀ, B₀ = U_r √(S_r/s)
        u, singular, vh = torch.linalg.svd(w, full_matrices=False)
        root = (singular[:rank] / scaling).sqrt()
        a, b = root[:, None] * vh[:rank], u[:, :rank] * root
    else:  # olora, W = Q R: A₀ = R_r, B₀ = Q_r, the update scaled by s as peft does
        q, r = torch.linalg.qr(w)
        a, b = r[:rank], q[:, :rank]
    # contiguous like the parameters they are copied into, so that B A and B₀ A₀ run the same kernels and cancel
    return a.to(weight.dtype).contiguous(), b.to(weight.dtype).contiguous()


class LowRankLinear(FoldableWrapper):
    """The factors A [r, in], B [out, r] of a low-rank update of a wrapped (never subclassed) linear layer.

    `offset` holds (A₀, B₀) for the principal initialisations: the update is then s·(B A − B₀ A₀).
    """

    def __init__(self, base_layer: nn.Linear, rank: int, alpha: float, dropout: float, rslora: bool = False,
                 init: str = "kaiming"):
        super().__init__()
        self.base_layer = base_layer
        # on the default device, not the base's: a server builds factors over a weightless (meta) base
        self.lora_A = nn.Parameter(torch.empty(rank, base_layer.in_features))  # [r, in]
        self.lora_B = nn.Parameter(torch.zeros(base_layer.out_features, rank))  # [out, r]
        self.scaling = lora_scaling(rank, alpha, rslora)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.principal = init in ("pissa", "olora")
        with torch.no_grad():
            if self.principal:
                a, b = principal_factors(base_layer.weight, rank, self.scaling, init)
                self.lora_A.copy_(a), self.lora_B.copy_(b)
                self.register_buffer("init_A", a, persistent=False)  # A₀ [r, in]
                self.register_buffer("init_B", b, persistent=False)  # B₀ [out, r]
            elif init == "gaussian":
                nn.init.normal_(self.lora_A, std=1 / rank)
            else:
                nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))

    def delta_weight(self) -> torch.Tensor:
        """s·(B A − B₀ A₀) [out, in]."""
        delta = self.lora_B @ self.lora_A
        if self.principal:
            delta = delta - self.init_B @ self.init_A
        return delta * self.scaling

    def delta(self, x: torch.Tensor, dropped: torch.Tensor | None = None) -> torch.Tensor:
        """s·(x Aᵀ Bᵀ − x A₀ᵀ B₀ᵀ) [..., out]; `dropped` is x after dropout, for the trained term."""
        out = (x if dropped is None else dropped) @ self.lora_A.T @ self.lora_B.T
        if self.principal:
            out = out - x @ self.init_A.T @ self.init_B.T
        return out * self.scaling


class LoRALinear(LowRankLinear):
    def adapted_forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base_layer(x) + self.delta(x, self.dropout(x))

    def folded_parameters(self) -> dict[str, torch.Tensor]:
        return {"weight": self.base_layer.weight + self.delta_weight()}

    def row_update(self, x: torch.Tensor, base_out: torch.Tensor, base_layer: nn.Module) -> torch.Tensor:
        """The update over a shared base (see `Method.row_updates`): base_out + s·x (B A − B₀A₀)ᵀ."""
        return base_out + self.delta(x)


def has_gated_mlp(backbone: nn.Module) -> bool:
    """Llama-style blocks: a gated feed-forward, two hidden→inner projections and one inner→hidden."""
    hidden, inner = backbone.config.hidden_size, getattr(backbone.config, "intermediate_size", None)
    try:
        block = transformer_blocks(backbone)[0]
    except SlimtuneError:
        return False
    shapes = [(m.in_features, m.out_features) for m in block.modules() if isinstance(m, nn.Linear)]
    return inner is not None and shapes.count((hidden, inner)) == 2 and shapes.count((inner, hidden)) == 1


def default_targets(backbone: nn.Module) -> tuple[str, ...]:
    """Every linear layer of llama-style blocks (attention and gated MLP projections, as in QLoRA); otherwise
    the attention query and value projections, by the naming convention the architecture uses."""
    if has_gated_mlp(backbone):
        block = transformer_blocks(backbone)[0]
        return tuple(dict.fromkeys(n.rsplit(".", 1)[-1] for n, m in block.named_modules() if isinstance(m, nn.Linear)))
    names = {n.rsplit(".", 1)[-1] for n, m in backbone.named_modules() if isinstance(m, nn.Linear)}
    for query, value in (("query", "value"), ("q_proj", "v_proj"), ("q_lin", "v_lin"), ("c_attn", "c_attn")):
        if query in names and value in names:
            return tuple(dict.fromkeys((query, value)))
    raise SlimtuneError(f"cannot guess LoRA targets for this model; pass --set targets=... from: {sorted(names)}")


def target_layers(backbone: nn.Module, patterns: tuple[str, ...]) -> list[str]:
    """Names of the linear layers `patterns` match, or of `default_targets` when none are given."""
    return find_linear_targets(backbone, patterns or default_targets(backbone))


@dataclass
class LoRAOptions:
    r: int = field(default=8, metadata={"help": "rank of the update"})
    alpha: float = field(default=16.0, metadata={"help": "scale; the update is multiplied by alpha/r"})
    dropout: float = field(default=0.0, metadata={"help": "dropout on the LoRA input"})
    use_rslora: bool = field(default=False, metadata={"help": "rank-stabilised scale alpha/sqrt(r) instead of alpha/r"})
    init: str = field(default="kaiming", metadata={
        "help": "A and B at the start: kaiming or gaussian (B zero), pissa (W's top singular triplets) or olora "
                "(W's QR); the last two keep the residual frozen"})
    targets: tuple[str, ...] = field(
        default=(), metadata={"help": "linear layer names or regexes (default: attention query,value; in llama-style "
                                   "blocks every attention and MLP projection)"}
    )

    def validate(self) -> None:
        if self.r < 1:
            raise SlimtuneError(f"LoRA rank r must be at least 1, got {self.r}")
        if not 0 <= self.dropout < 1:
            raise SlimtuneError(f"LoRA dropout must be in [0, 1), got {self.dropout}")
        if self.init not in INITS:
            raise SlimtuneError(f"LoRA init must be one of {', '.join(INITS)}, got {self.init!r}")


class LoRA(Method):
    name = "lora"
    peft_mapping = LoRAPeftMapping
    summary = "low-rank updates B·A added to chosen linear layers (mergeable)"
    Options = LoRAOptions
    default_lr = 2e-3  # measured: docs/results.md, "Choosing the defaults"
    # Encoders: every linear layer of the blocks, which beat query/value on both tasks' dev splits (SST-2 0.858 vs
    # 0.844, CoNLL 0.839 vs 0.780 entity F1); tagging also gains from batches of 16 (docs/results.md, "Per-task
    # defaults"). Causal LMs: every projection already (`targets` "default" finds them by structure). On a few
    # hundred sentences or fewer (the small-data recipes) query/value generalise better: SST-2 at 64 per class,
    # dev accuracy 0.819 against 0.795 (docs/results.md, "Few-shot"), with a 4x smaller adapter.
    task_defaults = {"classify": {"options": {"targets": ALL_BLOCK_LINEARS},
                                  "small_data": {"options": {"targets": ""}}},  # "": the option's own default
                     "ner": {"batch_size": 16, "options": {"targets": ALL_BLOCK_LINEARS}}}
    mergeable = True
    layer_type: type[LowRankLinear] = LoRALinear

    def inject(self, backbone: nn.Module) -> None:
        o = self.options
        for name in target_layers(backbone, self.options.targets):
            layer = backbone.get_submodule(name)
            replace_module(backbone, name, self.layer_type(layer, o.r, o.alpha, o.dropout, o.use_rslora, o.init))

    def count_parameters(self, backbone: nn.Module) -> int:
        layers = [backbone.get_submodule(n) for n in target_layers(backbone, self.options.targets)]
        return sum(self.options.r * (layer.in_features + layer.out_features) for layer in layers)

    def _layers(self, backbone: nn.Module) -> list[LowRankLinear]:
        return [m for m in backbone.modules() if isinstance(m, self.layer_type)]

    def trainable_parameters(self, backbone: nn.Module) -> list[nn.Parameter]:
        return [p for layer in self._layers(backbone) for p in (layer.lora_A, layer.lora_B)]

    def reads_base_weights(self) -> bool:
        return self.options.init in ("pissa", "olora")

    def row_updates(self, backbone: nn.Module) -> dict:
        return {name: m.row_update for name, m in backbone.named_modules() if isinstance(m, self.layer_type)}

    def low_rank_factors(self, state: dict[str, torch.Tensor]) -> dict[str, tuple[torch.Tensor, torch.Tensor]] | None:
        """(s·B, A) per layer; None for PiSSA/OLoRA, whose update also holds −s·B₀A₀, rebuilt from the base."""
        o = self.options
        if o.init in ("pissa", "olora"):
            return None
        scaling = lora_scaling(o.r, o.alpha, o.use_rslora)
        paths = sorted(k.removesuffix(".lora_A") for k in state if k.endswith(".lora_A"))
        return {p: (state[f"{p}.lora_B"] * scaling, state[f"{p}.lora_A"]) for p in paths}

    @classmethod
    def from_low_rank_factors(cls, factors: dict[str, tuple[torch.Tensor, torch.Tensor]]) -> tuple["LoRA", dict]:
        """A plain LoRA (scale 1) holding {path: (B, A)} of one rank: the method and its exported state."""
        rank = next(iter(factors.values()))[1].shape[0]
        options = LoRAOptions(r=rank, alpha=float(rank), targets=tuple(re.escape(p) for p in factors))
        state = {f"{p}.{name}": t.contiguous() for p, (b, a) in factors.items() for name, t in (("lora_A", a),
                                                                                                 ("lora_B", b))}
        return cls(options), state
