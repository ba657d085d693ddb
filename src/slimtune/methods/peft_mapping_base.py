"""How a method's adapter is written in, and read from, Hugging Face PEFT's format: the interface and helpers.

A method that peft can represent names its mapping in `Method.peft_mapping`; the exporter and importer
(slimtune.formats) ask for it and never compare method names. A mapping converts both ways between

- slimtune: the method's options and its exported state, keyed by module path in the backbone
  ("encoder.layer.0.attention.self.query.lora_A"), and
- peft: the method's fields of `adapter_config.json` and the tensors of `adapter_model.safetensors`
  ("base_model.model.bert.encoder.layer.0.attention.self.query.lora_A.weight").

`layout` (slimtune.runs.formats.peft_layout.PeftLayout) places the backbone in the transformers model peft wraps.
Options a mapping does not know (added to a method later, such as a new LoRA variant) are refused on export
unless they keep their defaults, so nothing is exported that peft would compute differently.
"""

import re
from dataclasses import dataclass
from typing import ClassVar

import torch
from pydantic import BaseModel, ConfigDict, ValidationError
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


def group_by_module(tensors: dict[str, torch.Tensor], parts: tuple[str, ...], suffix: str,
                    optional: tuple[str, ...] = ()) -> dict[str, dict]:
    """{peft module name: {part: tensor}} for keys TUNER_PREFIX + module + "." + part + suffix; any other key is
    refused, and so is a module without every one of `parts` (`optional` parts may be there or not)."""
    names = "|".join(re.escape(p) for p in (*parts, *optional))
    pattern = re.compile(rf"{re.escape(TUNER_PREFIX)}(.+)\.({names}){re.escape(suffix)}")
    grouped: dict[str, dict] = {}
    for key, tensor in tensors.items():
        found = pattern.fullmatch(key)
        if not found:
            raise SlimtuneError(f"unexpected tensor {key} in the peft adapter (expected "
                                f"{TUNER_PREFIX}<module>.{{{','.join((*parts, *optional))}}}{suffix})")
        grouped.setdefault(found.group(1), {})[found.group(2)] = tensor
    for module, found in grouped.items():
        if not set(parts) <= set(found):
            raise SlimtuneError(f"the peft adapter has {sorted(found)} for {module} but needs {list(parts)}")
    if not grouped:
        raise SlimtuneError("the peft adapter holds no adapter tensors")
    return grouped


@dataclass
class Imported:
    """What an importer hands back: the slimtune method's option pairs (as `--set` gives them) and its state."""

    options: dict[str, str]
    state: dict[str, torch.Tensor]


def refuse_patterns(rank: int, alpha: float, rank_pattern: dict | None, alpha_pattern: dict | None, where: str) -> None:
    """Per-module ranks or alphas other than the common ones have no slimtune form."""
    if any(v != rank for v in (rank_pattern or {}).values()) or any(v != alpha for v in (alpha_pattern or {}).values()):
        raise SlimtuneError(f"{where}: per-module ranks or alphas (rank_pattern, alpha_pattern) have no slimtune "
                            "form; one r and alpha for every layer are needed")


class PeftMapping:
    peft_type: ClassVar[str]
    prompt_learning: ClassVar[bool] = False  # head tensors sit under PROMPT_PREFIX rather than TUNER_PREFIX

    @classmethod
    def accepts(cls, fields: dict) -> bool:
        """Whether this mapping reads an adapter_config.json (several methods may share one peft_type)."""
        return fields.get("peft_type") == cls.peft_type

    @staticmethod
    def export(method, state: dict[str, torch.Tensor], layout, backbone: nn.Module, total_steps: int | None = None
               ) -> tuple[dict, dict[str, torch.Tensor]]:
        """(the method's adapter_config.json fields, its tensors by peft key) from `method`, its exported state
        and the backbone it is attached to (for what the state does not hold: frozen factors, layer kinds);
        `total_steps`, the run's optimizer steps when known, for fields that describe a training schedule."""
        raise NotImplementedError

    @staticmethod
    def import_(fields: dict, tensors: dict[str, torch.Tensor], layout, backbone: nn.Module, where: str) -> Imported:
        """The slimtune form of a peft adapter's fields and method tensors (the head's are taken out already)."""
        raise NotImplementedError
