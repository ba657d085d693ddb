"""peft mappings of the LyCORIS products: LoHa → LOHA, LoKr → LOKR (interface: peft_mapping_base.py).

Both keep peft's tensor names and shapes (hada_w1_a [out, r], ...; lokr_w1 [a, c], lokr_w2 or lokr_w2_a/b) and
its scale α/r, so the tensors travel as they are. peft's rank_dropout and module_dropout act in training only.
"""

from typing import Literal

from pydantic import Field

from slimtune.errors import SlimtuneError
from slimtune.methods.peft_mapping_base import (TUNER_PREFIX, Imported, PeftFields, PeftMapping, check_shape,
                                                group_by_module, linear, refuse_patterns, refuse_unmapped,
                                                target_option, validated)

LOHA_FACTORS = ("hada_w1_a", "hada_w1_b", "hada_w2_a", "hada_w2_b")
LOKR_FULL, LOKR_LOW_RANK = ("lokr_w2",), ("lokr_w2_a", "lokr_w2_b")


class LycorisFields(PeftFields):
    r: int = Field(gt=0)
    alpha: float = Field(gt=0)
    rank_pattern: dict[str, int] | None = None
    alpha_pattern: dict[str, float] | None = None


class LoKrFields(LycorisFields):
    decompose_factor: int = -1
    decompose_both: Literal[False] = False


def _fields(peft_type: str, method, paths: list[str], layout) -> dict:
    o = method.options
    return {"peft_type": peft_type, "r": o.r, "alpha": o.alpha, "target_modules": layout.target_modules(paths),
            "rank_dropout": 0.0, "module_dropout": 0.0, "use_effective_conv2d": False, "init_weights": True,
            "rank_pattern": {}, "alpha_pattern": {}}


def _tensors(state: dict, layout) -> dict:
    return {f"{TUNER_PREFIX}{layout.peft_module(key.rsplit('.', 1)[0])}.{key.rsplit('.', 1)[1]}": value
            for key, value in state.items()}


def _paths(state: dict) -> list[str]:
    return sorted({key.rsplit(".", 1)[0] for key in state})


class LoHaPeftMapping(PeftMapping):
    peft_type = "LOHA"

    @staticmethod
    def export(method, state, layout, backbone, total_steps=None):
        refuse_unmapped(method.name, method.options_dict(), method.Options().__dict__, {"r", "alpha", "targets"})
        return _fields("LOHA", method, _paths(state), layout), _tensors(state, layout)

    @staticmethod
    def import_(fields, tensors, layout, backbone, where):
        f = validated(LycorisFields, fields, where)
        refuse_patterns(f.r, f.alpha, f.rank_pattern, f.alpha_pattern, where)
        state, paths = {}, []
        for module, found in sorted(group_by_module(tensors, LOHA_FACTORS, "").items()):
            path = layout.backbone_module(module)
            layer = linear(backbone, path, layout)
            for part in LOHA_FACTORS:
                shape = (layer.out_features, f.r) if part.endswith("_a") else (f.r, layer.in_features)
                check_shape(found[part], shape, f"{TUNER_PREFIX}{module}.{part}")
                state[f"{path}.{part}"] = found[part]
            paths.append(path)
        return Imported({"r": str(f.r), "alpha": repr(f.alpha), "targets": target_option(backbone, paths)}, state)


class LoKrPeftMapping(PeftMapping):
    peft_type = "LOKR"

    @staticmethod
    def export(method, state, layout, backbone, total_steps=None):
        refuse_unmapped(method.name, method.options_dict(), method.Options().__dict__,
                        {"r", "alpha", "decompose_factor", "targets"})
        fields = {**_fields("LOKR", method, _paths(state), layout),
                  "decompose_factor": method.options.decompose_factor, "decompose_both": False,
                  "rank_dropout_scale": False}
        return fields, _tensors(state, layout)

    @staticmethod
    def import_(fields, tensors, layout, backbone, where):
        from slimtune.methods.lokr import kronecker_shape

        f = validated(LoKrFields, fields, where)
        refuse_patterns(f.r, f.alpha, f.rank_pattern, f.alpha_pattern, where)
        state, paths = {}, []
        for module, found in sorted(group_by_module(tensors, ("lokr_w1",), "", LOKR_FULL + LOKR_LOW_RANK).items()):
            path = layout.backbone_module(module)
            layer = linear(backbone, path, layout)
            (a, c), (b, d), low_rank = kronecker_shape(layer, f.r, f.decompose_factor)
            second = LOKR_LOW_RANK if low_rank else LOKR_FULL
            if set(found) != {"lokr_w1", *second}:
                raise SlimtuneError(f"{where}: {module} has {sorted(found)}; with r={f.r} this layer needs "
                                    f"{['lokr_w1', *second]}")
            shapes = {"lokr_w1": (a, c), "lokr_w2": (b, d), "lokr_w2_a": (b, f.r), "lokr_w2_b": (f.r, d)}
            for part, tensor in found.items():
                check_shape(tensor, shapes[part], f"{TUNER_PREFIX}{module}.{part}")
                state[f"{path}.{part}"] = tensor
            paths.append(path)
        options = {"r": str(f.r), "alpha": repr(f.alpha), "decompose_factor": str(f.decompose_factor),
                   "targets": target_option(backbone, paths)}
        return Imported(options, state)
