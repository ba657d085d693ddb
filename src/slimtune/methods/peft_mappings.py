"""How a method's adapter is written in, and read from, Hugging Face PEFT's format.

A method that peft can represent names its mapping in `Method.peft_mapping`; the exporter and importer
(slimtune.formats) ask for it and never compare method names. A mapping converts both ways between

- slimtune: the method's options and its exported state, keyed by module path in the backbone
  ("encoder.layer.0.attention.self.query.lora_A"), and
- peft: the method's fields of `adapter_config.json` and the tensors of `adapter_model.safetensors`
  ("base_model.model.bert.encoder.layer.0.attention.self.query.lora_A.weight").

`layout` (slimtune.formats.peft_layout.PeftLayout) places the backbone in the transformers model peft wraps.
Options a mapping does not know (added to a method later, such as a new LoRA variant) are refused on export
unless they keep their defaults, so nothing is exported that peft would compute differently.
"""

import math
import re
from dataclasses import dataclass
from typing import ClassVar, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from torch import nn

from slimtune.errors import SlimtuneError

TUNER_PREFIX = "base_model.model."  # tensor keys of tuners that wrap layers (LoRA, AdaLoRA, ...)
PROMPT_PREFIX = "base_model."  # the task head's keys next to a prompt-learning method's tensors


class PeftFields(BaseModel):
    """The fields of adapter_config.json a mapping reads; peft writes many more, which are ignored."""

    model_config = ConfigDict(extra="ignore")


def validated(model: type[PeftFields], fields: dict, where: str):
    """`fields` checked against `model`; the first problem as one line."""
    try:
        return model.model_validate(fields)
    except ValidationError as e:
        first = e.errors()[0]
        location = ".".join(map(str, first["loc"])) or "config"
        raise SlimtuneError(f"{where}: {location}: {first['msg']} (got {first.get('input')!r})") from None


def refuse_unmapped(method: str, options: dict, defaults: dict, known: set[str]) -> None:
    """Options this mapping does not translate must keep their defaults."""
    changed = sorted(k for k in options if k not in known and options[k] != defaults.get(k))
    if changed:
        raise SlimtuneError(f"{method} option {changed[0]}={options[changed[0]]!r} has no peft form here; "
                            "use `slimtune export --format merged` instead")


def linear(backbone: nn.Module, path: str, layout) -> nn.Linear:
    """The backbone's linear layer at `path`; a missing or non-linear module means the adapter is for another model."""
    try:
        module = backbone.get_submodule(path)
    except AttributeError:
        module = None
    if not isinstance(module, nn.Linear):
        raise SlimtuneError(f"the adapter adapts {layout.peft_module(path)}, which is not a linear layer of this "
                            "base model; it was made for another model")
    return module


def check_shape(tensor: torch.Tensor, shape: tuple, key: str) -> None:
    if tuple(tensor.shape) != shape:
        raise SlimtuneError(f"tensor {key} has shape {tuple(tensor.shape)}, this base model needs {shape}; "
                            "the adapter was made for another model")


def target_option(backbone: nn.Module, paths: list[str]) -> str:
    """slimtune's `targets` for exactly `paths`: short layer names when they select just these, else full paths."""
    short = sorted({p.rsplit(".", 1)[-1] for p in paths})
    selected = {n for n, m in backbone.named_modules() if isinstance(m, nn.Linear) and n.rsplit(".", 1)[-1] in short}
    return ",".join(short if selected == set(paths) else (re.escape(p) for p in sorted(paths)))


def group_by_module(tensors: dict[str, torch.Tensor], parts: tuple[str, ...], suffix: str) -> dict[str, dict]:
    """{peft module name: {part: tensor}} for keys TUNER_PREFIX + module + "." + part + suffix; any other key is refused."""
    pattern = re.compile(rf"{re.escape(TUNER_PREFIX)}(.+)\.({'|'.join(parts)}){re.escape(suffix)}")
    grouped: dict[str, dict] = {}
    for key, tensor in tensors.items():
        found = pattern.fullmatch(key)
        if not found:
            raise SlimtuneError(f"unexpected tensor {key} in the peft adapter (expected "
                                f"{TUNER_PREFIX}<module>.{{{','.join(parts)}}}{suffix})")
        grouped.setdefault(found.group(1), {})[found.group(2)] = tensor
    for module, found in grouped.items():
        if set(found) != set(parts):
            raise SlimtuneError(f"the peft adapter has {sorted(found)} for {module} but needs {list(parts)}")
    if not grouped:
        raise SlimtuneError("the peft adapter holds no adapter tensors")
    return grouped


@dataclass
class Imported:
    """What an importer hands back: the slimtune method's option pairs (as `--set` gives them) and its state."""

    options: dict[str, str]
    state: dict[str, torch.Tensor]


class PeftMapping:
    peft_type: ClassVar[str]
    prompt_learning: ClassVar[bool] = False  # head tensors sit under PROMPT_PREFIX rather than TUNER_PREFIX

    @staticmethod
    def export(method, state: dict[str, torch.Tensor], layout, total_steps: int | None = None
               ) -> tuple[dict, dict[str, torch.Tensor]]:
        """(the method's adapter_config.json fields, its tensors by peft key) from `method` and its exported state;
        `total_steps`, the run's optimizer steps when known, for fields that describe a training schedule."""
        raise NotImplementedError

    @staticmethod
    def import_(fields: dict, tensors: dict[str, torch.Tensor], layout, backbone: nn.Module, where: str) -> Imported:
        """The slimtune form of a peft adapter's fields and method tensors (the head's are taken out already)."""
        raise NotImplementedError


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
