"""peft mappings of the methods that train scaling vectors: IA3 → IA3, VeRA → VERA (interface: peft_mapping_base.py)."""

from typing import Literal

import torch
from pydantic import Field

from slimtune.errors import SlimtuneError
from slimtune.methods.peft_mapping_base import (TUNER_PREFIX, Imported, PeftFields, PeftMapping, check_shape,
                                                group_by_module, linear, refuse_unmapped, target_option, validated)


def _defaults(method) -> dict:
    return method.Options().__dict__


class IA3Fields(PeftFields):
    fan_in_fan_out: Literal[False] = False


class IA3PeftMapping(PeftMapping):
    """slimtune's `ia3_l` is peft's: [out] on a key or value projection is peft's [out, 1], [in] on a
    feed-forward input is peft's [1, in] with the layer among `feedforward_modules`.

    On import the orientation of each vector says which it is. slimtune's IA3 wraps its default layers for an
    empty `targets` or `feedforward`; when peft's adapter has none of one kind, those defaults get vectors of
    ones (scaling by one: the same outputs)."""

    peft_type = "IA3"

    @staticmethod
    def export(method, state, layout, backbone, total_steps=None):
        refuse_unmapped(method.name, method.options_dict(), _defaults(method), {"targets", "feedforward"})
        paths = sorted(k.removesuffix(".ia3_l") for k in state)
        inputs = [p for p in paths if backbone.get_submodule(p).on_input]
        tensors = {f"{TUNER_PREFIX}{layout.peft_module(p)}.ia3_l":
                   state[f"{p}.ia3_l"].reshape((1, -1) if p in inputs else (-1, 1)) for p in paths}
        fields = {"peft_type": "IA3", "target_modules": layout.target_modules(paths),
                  "feedforward_modules": layout.target_modules(inputs) if inputs else [], "fan_in_fan_out": False,
                  "init_ia3_weights": True}
        return fields, tensors

    @staticmethod
    def import_(fields, tensors, layout, backbone, where):
        from slimtune.methods.ia3 import default_key_value_targets, feedforward_inputs
        from slimtune.models.surgery import find_linear_targets

        validated(IA3Fields, fields, where)
        state, outputs, inputs = {}, [], []
        for module, found in sorted(group_by_module(tensors, ("ia3_l",), "").items()):
            path, vector = layout.backbone_module(module), found["ia3_l"]
            layer = linear(backbone, path, layout)
            on_input = tuple(vector.shape) == (1, layer.in_features)
            if not on_input:
                check_shape(vector, (layer.out_features, 1), f"{TUNER_PREFIX}{module}.ia3_l")
            (inputs if on_input else outputs).append(path)
            state[f"{path}.ia3_l"] = vector.reshape(-1)
        implied_inputs = inputs or feedforward_inputs(backbone)
        implied_outputs = outputs or [n for n in find_linear_targets(backbone, default_key_value_targets(backbone))
                                      if n not in implied_inputs]
        both = set(outputs) & set(implied_inputs)
        if both:
            raise SlimtuneError(f"{where}: the adapter scales the output of {layout.peft_module(sorted(both)[0])}, "
                                "which slimtune's IA3 without feedforward layers scales at its input")
        for path in (*implied_inputs, *implied_outputs):
            layer = backbone.get_submodule(path)
            state.setdefault(f"{path}.ia3_l", torch.ones(layer.in_features if path in implied_inputs
                                                         else layer.out_features))
        options = {"targets": target_option(backbone, implied_outputs),
                   "feedforward": target_option(backbone, implied_inputs)}
        return Imported(options, state)


class VeRAFields(PeftFields):
    r: int = Field(gt=0)
    projection_prng_key: int = 0
    save_projection: bool = True
    vera_dropout: float = Field(default=0.0, ge=0, lt=1)
    d_initial: float = 0.1
    bias: Literal["none"] = "none"
    fan_in_fan_out: Literal[False] = False


class VeRAPeftMapping(PeftMapping):
    """slimtune's vectors vera_lambda_b [out] and vera_lambda_d [r] are peft's; slimtune's `seed` is peft's
    `projection_prng_key`, from which both draw the same shared A [r, max in] and B [max out, r]. Exported with
    `save_projection` (base_model.vera_A, base_model.vera_B), so the file holds the projections it was trained
    with; read back, projections that are not the ones the key draws are refused, as slimtune rebuilds them."""

    peft_type = "VERA"
    PROJECTIONS = {"vera_A": "base_model.vera_A", "vera_B": "base_model.vera_B"}

    @staticmethod
    def export(method, state, layout, backbone, total_steps=None):
        o = method.options
        refuse_unmapped(method.name, method.options_dict(), _defaults(method),
                        {"r", "d_initial", "dropout", "seed", "targets"})
        paths = sorted(k.removesuffix(".vera_lambda_b") for k in state if k.endswith(".vera_lambda_b"))
        tensors = {f"{TUNER_PREFIX}{layout.peft_module(p)}.{part}": state[f"{p}.{part}"]
                   for p in paths for part in ("vera_lambda_b", "vera_lambda_d")}
        layer = backbone.get_submodule(paths[0])
        tensors.update({key: getattr(layer, name) for name, key in VeRAPeftMapping.PROJECTIONS.items()})
        fields = {"peft_type": "VERA", "r": o.r, "target_modules": layout.target_modules(paths),
                  "projection_prng_key": o.seed, "save_projection": True, "vera_dropout": o.dropout,
                  "d_initial": o.d_initial, "bias": "none", "fan_in_fan_out": False}
        return fields, tensors

    @staticmethod
    def import_(fields, tensors, layout, backbone, where):
        from slimtune.methods.vera import shared_projections

        f = validated(VeRAFields, fields, where)
        tensors = dict(tensors)
        saved = {name: tensors.pop(key) for name, key in VeRAPeftMapping.PROJECTIONS.items() if key in tensors}
        if f.save_projection and len(saved) != 2:
            raise SlimtuneError(f"{where}: save_projection is set but the adapter lacks base_model.vera_A or vera_B")
        state, layers = {}, []
        for module, found in sorted(group_by_module(tensors, ("vera_lambda_b", "vera_lambda_d"), "").items()):
            path = layout.backbone_module(module)
            layer = linear(backbone, path, layout)
            check_shape(found["vera_lambda_b"], (layer.out_features,), f"{TUNER_PREFIX}{module}.vera_lambda_b")
            check_shape(found["vera_lambda_d"], (f.r,), f"{TUNER_PREFIX}{module}.vera_lambda_d")
            state.update({f"{path}.{part}": found[part] for part in found})
            layers.append((path, layer))
        drawn = dict(zip(("vera_A", "vera_B"), shared_projections(
            f.projection_prng_key, f.r, max(l.in_features for _, l in layers), max(l.out_features for _, l in layers))))
        for name, tensor in saved.items():
            if tensor.shape != drawn[name].shape or not torch.equal(tensor.to(drawn[name].dtype), drawn[name]):
                raise SlimtuneError(f"{where}: {VeRAPeftMapping.PROJECTIONS[name]} is not the projection "
                                    f"projection_prng_key={f.projection_prng_key} draws; slimtune rebuilds VeRA's "
                                    "projections from the key and cannot hold others")
        options = {"r": str(f.r), "d_initial": repr(f.d_initial), "dropout": repr(f.vera_dropout),
                   "seed": str(f.projection_prng_key), "targets": target_option(backbone, [p for p, _ in layers])}
        return Imported(options, state)
