"""The peft mappings of slimtune's methods (the interface and helpers: peft_mapping_base.py).

LoRA (rsLoRA, PiSSA, OLoRA) → LORA, DoRA → LORA with use_dora, AdaLoRA → ADALORA, prompt tuning →
PROMPT_TUNING; a method names its mapping in `Method.peft_mapping`. IA3 and VeRA: peft_mappings_scaling.py;
LoHa and LoKr: peft_mappings_lycoris.py.
"""

import math
from typing import Literal

import torch
from pydantic import Field

from slimtune.errors import SlimtuneError
from slimtune.methods.peft_mapping_base import (TUNER_PREFIX, Imported, PeftFields, PeftMapping, check_shape,
                                                group_by_module, linear, refuse_patterns, refuse_unmapped, target_option,
                                                validated)


def _defaults(method) -> dict:
    return method.Options().__dict__


BASE_CHANGING_INITS = ("pissa", "olora", "corda", "loftq")  # peft inits that also rewrite the base weights


class LoRAFields(PeftFields):
    """Fields that change what a LoRA tensor means; target_modules, layers_to_transform and the like need no check,
    as the tensors themselves name the adapted layers."""

    r: int = Field(gt=0)
    lora_alpha: float = Field(gt=0)
    lora_dropout: float = Field(default=0.0, ge=0, lt=1)
    use_rslora: bool = False
    use_dora: bool = False
    init_lora_weights: bool | str = True
    bias: Literal["none"] = "none"
    fan_in_fan_out: Literal[False] = False
    lora_bias: Literal[False] = False
    rank_pattern: dict[str, int] | None = None
    alpha_pattern: dict[str, float] | None = None
    layer_replication: None = None
    trainable_token_indices: None = None


class LoRAPeftMapping(PeftMapping):
    """slimtune's lora_A [r, in] and lora_B [out, r], scale α/r (rsLoRA: α/√r), are peft's LoRA exactly.

    PiSSA and OLoRA keep the update s·(B A − B₀A₀) over the original base; peft users load them as a plain LoRA
    of rank 2r over that base, A' = [A; A₀] [2r, in], B' = [B, −B₀] [out, 2r], with α doubled (α·√2 for rsLoRA)
    so the scale stays s: what peft's `path_initial_model_for_weight_conversion` writes. Read back, that is a
    plain LoRA of rank 2r.
    """

    peft_type = "LORA"
    KNOWN = {"r", "alpha", "dropout", "targets", "use_rslora", "init"}
    MAGNITUDE = None  # DoRA's per-row magnitude: (slimtune's name, peft's)

    @classmethod
    def accepts(cls, fields):
        return fields.get("peft_type") == cls.peft_type and bool(fields.get("use_dora")) == (cls.MAGNITUDE is not None)

    @classmethod
    def export(cls, method, state, layout, backbone, total_steps=None):
        o = method.options
        refuse_unmapped(method.name, method.options_dict(), _defaults(method), cls.KNOWN)
        paths = sorted(k.removesuffix(".lora_A") for k in state if k.endswith(".lora_A"))
        principal = o.init in ("pissa", "olora")
        tensors = {}
        for p in paths:
            a, b, prefix = state[f"{p}.lora_A"], state[f"{p}.lora_B"], f"{TUNER_PREFIX}{layout.peft_module(p)}"
            if principal:  # the frozen factors, rebuilt from the base when the run was loaded
                layer = backbone.get_submodule(p)
                a, b = torch.cat([a, layer.init_A]), torch.cat([b, -layer.init_B], dim=1)
            tensors[f"{prefix}.lora_A.weight"], tensors[f"{prefix}.lora_B.weight"] = a, b
            if cls.MAGNITUDE:
                tensors[f"{prefix}.{cls.MAGNITUDE[1]}"] = state[f"{p}.{cls.MAGNITUDE[0]}"]
        r, alpha = o.r, o.alpha
        if principal:
            r, alpha = 2 * o.r, o.alpha * (math.sqrt(2) if o.use_rslora else 2)
        fields = {"peft_type": "LORA", "r": r, "lora_alpha": alpha, "lora_dropout": o.dropout,
                  "target_modules": layout.target_modules(paths), "bias": "none", "fan_in_fan_out": False,
                  "use_rslora": o.use_rslora, "use_dora": cls.MAGNITUDE is not None, "init_lora_weights": True,
                  "rank_pattern": {}, "alpha_pattern": {}}
        return fields, tensors

    @classmethod
    def import_(cls, fields, tensors, layout, backbone, where):
        f = validated(LoRAFields, fields, where)
        refuse_patterns(f.r, f.lora_alpha, f.rank_pattern, f.alpha_pattern, where)
        if isinstance(f.init_lora_weights, str) and f.init_lora_weights.lower().startswith(BASE_CHANGING_INITS):
            raise SlimtuneError(f"{where}: init_lora_weights={f.init_lora_weights!r} holds the update over a base peft "
                                "rewrote; save it with peft's path_initial_model_for_weight_conversion to get one "
                                "over the original base")
        parts = ("lora_A.weight", "lora_B.weight") + ((cls.MAGNITUDE[1],) if cls.MAGNITUDE else ())
        state, paths = {}, []
        for module, found in sorted(group_by_module(tensors, parts, "").items()):
            path = layout.backbone_module(module)
            layer = linear(backbone, path, layout)
            key = f"{TUNER_PREFIX}{module}"
            check_shape(found["lora_A.weight"], (f.r, layer.in_features), f"{key}.lora_A.weight")
            check_shape(found["lora_B.weight"], (layer.out_features, f.r), f"{key}.lora_B.weight")
            state[f"{path}.lora_A"], state[f"{path}.lora_B"] = found["lora_A.weight"], found["lora_B.weight"]
            if cls.MAGNITUDE:
                check_shape(found[cls.MAGNITUDE[1]], (layer.out_features,), f"{key}.{cls.MAGNITUDE[1]}")
                state[f"{path}.{cls.MAGNITUDE[0]}"] = found[cls.MAGNITUDE[1]]
            paths.append(path)
        options = {"r": str(f.r), "alpha": repr(f.lora_alpha), "dropout": repr(f.lora_dropout),
                   "use_rslora": str(f.use_rslora).lower(), "targets": target_option(backbone, paths)}
        return Imported(options, state)


class DoRAPeftMapping(LoRAPeftMapping):
    """DoRA is peft's LoRA with `use_dora`: the same factors plus the magnitude [out], `lora_magnitude_vector`."""

    MAGNITUDE = ("magnitude", "lora_magnitude_vector")


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
    def export(method, state, layout, backbone, total_steps=None):
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
    def export(method, state, layout, backbone, total_steps=None):
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
