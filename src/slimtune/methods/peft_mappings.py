"""The peft mappings of slimtune's methods (the interface and helpers: peft_mapping_base.py).

LoRA → LORA, AdaLoRA → ADALORA, prompt tuning → PROMPT_TUNING; a method names its mapping in
`Method.peft_mapping`. A new one (IA3, LoHa, ...) is one more class here, or in a file of its own.
"""

import math
from typing import Literal

from pydantic import Field

from slimtune.errors import SlimtuneError
from slimtune.methods.peft_mapping_base import (TUNER_PREFIX, Imported, PeftFields, PeftMapping, check_shape,
                                                group_by_module, linear, refuse_unmapped, target_option, validated)


def _defaults(method) -> dict:
    return method.Options().__dict__


class LoRAFields(PeftFields):
    """Fields that change what a LoRA tensor means; target_modules, layers_to_transform and the like need no check,
    as the tensors themselves name the adapted layers."""

    r: int = Field(gt=0)
    lora_alpha: float = Field(gt=0)
    lora_dropout: float = Field(default=0.0, ge=0, lt=1)
    use_rslora: bool = False
    use_dora: Literal[False] = False
    bias: Literal["none"] = "none"
    fan_in_fan_out: Literal[False] = False
    lora_bias: Literal[False] = False
    rank_pattern: dict[str, int] | None = None
    alpha_pattern: dict[str, float] | None = None
    layer_replication: None = None
    trainable_token_indices: None = None


class LoRAPeftMapping(PeftMapping):
    """slimtune's lora_A [r, in] and lora_B [out, r], scale α/r, are peft's LoRA exactly.

    An rsLoRA adapter from peft (scale α/√r) is read as LoRA with α' = α·√r, the same update.
    """

    peft_type = "LORA"

    @staticmethod
    def export(method, state, layout, total_steps=None):
        o = method.options
        refuse_unmapped(method.name, method.options_dict(), _defaults(method), {"r", "alpha", "dropout", "targets"})
        paths = sorted({k.rsplit(".", 1)[0] for k in state})
        fields = {"peft_type": "LORA", "r": o.r, "lora_alpha": o.alpha, "lora_dropout": o.dropout,
                  "target_modules": layout.target_modules(paths), "bias": "none", "fan_in_fan_out": False,
                  "use_rslora": False, "use_dora": False, "init_lora_weights": True, "rank_pattern": {},
                  "alpha_pattern": {}}
        tensors = {f"{TUNER_PREFIX}{layout.peft_module(p)}.{part}.weight": state[f"{p}.{part}"]
                   for p in paths for part in ("lora_A", "lora_B")}
        return fields, tensors

    @staticmethod
    def import_(fields, tensors, layout, backbone, where):
        f = validated(LoRAFields, fields, where)
        if any(v != f.r for v in (f.rank_pattern or {}).values()) or any(
                v != f.lora_alpha for v in (f.alpha_pattern or {}).values()):
            raise SlimtuneError(f"{where}: per-module ranks or alphas (rank_pattern, alpha_pattern) have no slimtune "
                                "LoRA form; one r and lora_alpha for every layer are needed")
        state, paths = {}, []
        for module, parts in sorted(group_by_module(tensors, ("lora_A", "lora_B"), ".weight").items()):
            path = layout.backbone_module(module)
            layer = linear(backbone, path, layout)
            check_shape(parts["lora_A"], (f.r, layer.in_features), f"{TUNER_PREFIX}{module}.lora_A.weight")
            check_shape(parts["lora_B"], (layer.out_features, f.r), f"{TUNER_PREFIX}{module}.lora_B.weight")
            state[f"{path}.lora_A"], state[f"{path}.lora_B"] = parts["lora_A"], parts["lora_B"]
            paths.append(path)
        alpha = f.lora_alpha * math.sqrt(f.r) if f.use_rslora else f.lora_alpha  # α/√r = (α√r)/r
        options = {"r": str(f.r), "alpha": repr(alpha), "dropout": repr(f.lora_dropout),
                   "targets": target_option(backbone, paths)}
        return Imported(options, state)


class AdaLoRAFields(PeftFields):
    init_r: int = Field(gt=0)
    target_r: int = Field(default=8, ge=0)
    lora_alpha: float = Field(gt=0)
    lora_dropout: float = Field(default=0.0, ge=0, lt=1)
    bias: Literal["none"] = "none"
    fan_in_fan_out: Literal[False] = False
    rank_pattern: dict[str, list[bool]] | None = None


class AdaLoRAPeftMapping(PeftMapping):
    """slimtune's SVD factors P [out, k], λ [k], Q [k, in], scale α/r at the initial r, are peft's AdaLoRA
    lora_B, lora_E [k, 1] and lora_A with `init_r` = r; each matrix's surviving rank k travels in `rank_pattern`
    (peft keeps the scale of the initial rank when it resizes to it)."""

    peft_type = "ADALORA"

    @staticmethod
    def export(method, state, layout, total_steps=None):
        o = method.options
        refuse_unmapped(method.name, method.options_dict(), _defaults(method),
                        {"r", "target_rank", "alpha", "dropout", "targets", "tinit", "tfinal", "beta1", "beta2",
                         "orth_reg"})
        paths = sorted({k.rsplit(".", 1)[0] for k in state})
        steps = max(total_steps or 1, 1)
        tinit, tfinal = int(o.tinit * steps), int(o.tfinal * steps)
        if tinit >= steps - tfinal:  # peft insists on a reduction phase; the schedule only matters for training
            tinit, tfinal = 0, 0
        rank_pattern, tensors = {}, {}
        for p in paths:
            k = len(state[f"{p}.lora_lambda"])
            if k < o.r:  # peft gives every other matrix the initial rank
                rank_pattern[f"{layout.peft_module(p)}.lora_E"] = [True] * k + [False] * (o.r - k)
            prefix = f"{TUNER_PREFIX}{layout.peft_module(p)}"
            tensors[f"{prefix}.lora_A"] = state[f"{p}.lora_Q"]
            tensors[f"{prefix}.lora_B"] = state[f"{p}.lora_P"]
            tensors[f"{prefix}.lora_E"] = state[f"{p}.lora_lambda"].unsqueeze(1)
        fields = {"peft_type": "ADALORA", "init_r": o.r, "target_r": o.target_rank, "lora_alpha": o.alpha,
                  "lora_dropout": o.dropout, "target_modules": layout.target_modules(paths), "bias": "none",
                  "fan_in_fan_out": False, "tinit": tinit, "tfinal": tfinal, "total_step": steps, "deltaT": 1,
                  "beta1": o.beta1, "beta2": o.beta2, "orth_reg_weight": o.orth_reg, "rank_pattern": rank_pattern}
        return fields, tensors

    @staticmethod
    def import_(fields, tensors, layout, backbone, where):
        f = validated(AdaLoRAFields, fields, where)
        state, paths = {}, []
        for module, parts in sorted(group_by_module(tensors, ("lora_A", "lora_B", "lora_E"), "").items()):
            path = layout.backbone_module(module)
            layer = linear(backbone, path, layout)
            if parts["lora_E"].dim() != 2:
                raise SlimtuneError(f"{where}: {TUNER_PREFIX}{module}.lora_E must be [rank, 1], "
                                    f"got shape {tuple(parts['lora_E'].shape)}")
            k = parts["lora_E"].shape[0]
            if k > f.init_r:
                raise SlimtuneError(f"{where}: {module} has rank {k}, above init_r={f.init_r}")
            key = f"{TUNER_PREFIX}{module}"
            check_shape(parts["lora_A"], (k, layer.in_features), f"{key}.lora_A")
            check_shape(parts["lora_B"], (layer.out_features, k), f"{key}.lora_B")
            check_shape(parts["lora_E"], (k, 1), f"{key}.lora_E")
            state[f"{path}.lora_Q"], state[f"{path}.lora_P"] = parts["lora_A"], parts["lora_B"]
            state[f"{path}.lora_lambda"] = parts["lora_E"][:, 0]
            paths.append(path)
        options = {"r": str(f.init_r), "target_rank": str(min(f.target_r, f.init_r)), "alpha": repr(f.lora_alpha),
                   "dropout": repr(f.lora_dropout), "targets": target_option(backbone, paths)}
        return Imported(options, state)


class PromptFields(PeftFields):
    num_virtual_tokens: int = Field(gt=0)
    token_dim: int | None = None
    num_transformer_submodules: Literal[1, None] = 1


class PromptPeftMapping(PeftMapping):
    """slimtune's soft prompt [P, H] is peft's `prompt_embeddings`: both put it before the embedded input, with
    attention-mask ones and token-type zeros, numbering positions over prompt and input together.

    Not for SEQ_CLS (classify through the pooler): peft's sequence classifier pools the first prompt position,
    slimtune's the first real token."""

    peft_type = "PROMPT_TUNING"
    prompt_learning = True
    KEY = "soft_prompt.embeddings"
    POOLER_DIFFERS = ("peft's sequence classifier pools the first prompt vector, slimtune the first real token, "
                      "so prompt tuning through the pooler has no peft form")

    @staticmethod
    def export(method, state, layout, total_steps=None):
        refuse_unmapped(method.name, method.options_dict(), _defaults(method), {"length", "init"})
        if layout.task_type == "SEQ_CLS":
            raise SlimtuneError(PromptPeftMapping.POOLER_DIFFERS)
        prompt = state[PromptPeftMapping.KEY]
        config = layout.config
        fields = {"peft_type": "PROMPT_TUNING", "num_virtual_tokens": prompt.shape[0], "token_dim": prompt.shape[1],
                  "num_transformer_submodules": 1, "num_attention_heads": config.num_attention_heads,
                  "num_layers": config.num_hidden_layers, "prompt_tuning_init": "RANDOM"}
        return fields, {"prompt_embeddings": prompt}

    @staticmethod
    def import_(fields, tensors, layout, backbone, where):
        f = validated(PromptFields, fields, where)
        if layout.task_type == "SEQ_CLS":
            raise SlimtuneError(f"{where}: {PromptPeftMapping.POOLER_DIFFERS}")
        if set(tensors) != {"prompt_embeddings"}:
            raise SlimtuneError(f"a peft prompt-tuning adapter holds prompt_embeddings only, this one has "
                                f"{sorted(tensors)[:3]}")
        width = backbone.get_input_embeddings().embedding_dim
        check_shape(tensors["prompt_embeddings"], (f.num_virtual_tokens, width), "prompt_embeddings")
        return Imported({"length": str(f.num_virtual_tokens), "init": "random"},
                        {PromptPeftMapping.KEY: tensors["prompt_embeddings"]})
