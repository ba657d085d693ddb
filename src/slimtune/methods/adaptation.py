"""Putting a method onto a task model, and reading or writing what it trains.

The task head is trained with every method; the backbone is frozen except for
what the method itself names, so "trainable" is decided by structure alone.
"""

import torch
from torch import nn

from slimtune.errors import SlimtuneError
from slimtune.methods.base import Method


def head_parameters(model: nn.Module) -> dict[str, nn.Parameter]:
    wanted = {id(p) for module in model.head_modules() for p in module.parameters()}
    return {n: p for n, p in model.named_parameters() if id(p) in wanted}


def attach(model: nn.Module, method: Method) -> list[nn.Parameter]:
    """Freeze the model, inject the method, and unfreeze exactly the method's and the head's parameters."""
    model.requires_grad_(False)
    wrapper = method.inject(model.backbone)
    if wrapper is not None:  # the method wraps the whole backbone (see Method.inject)
        model.backbone = wrapper
    params = method.trainable_parameters(model.backbone) + list(head_parameters(model).values())
    unique = list({id(p): p for p in params}.values())
    for p in unique:
        p.requires_grad_(True)
    return unique


def adapter_state(model: nn.Module, method: Method, export: bool = False) -> dict[str, torch.Tensor]:
    """Everything trained: the method's state under `backbone.` and the head's parameters.

    `export` asks for the form written to the adapter file (training-only parts folded
    away, see `Method.export_state_dict`); checkpoints keep the full training state.
    """
    backbone_state = method.export_state_dict(model.backbone) if export else method.state_dict(model.backbone)
    state = {f"backbone.{k}": v for k, v in backbone_state.items()}
    state.update({n: p.detach().clone() for n, p in head_parameters(model).items()})
    return state


def load_adapter_state(model: nn.Module, method: Method, state: dict[str, torch.Tensor]) -> None:
    """Load `state` (as `adapter_state` writes it) into the head and the method, after one check for every method:
    a tensor may hold integers only where the model holds an integer tensor (subnetwork's indices), since copying one
    into a float parameter would convert it without a word."""
    heads = head_parameters(model)
    backbone_state = {k.removeprefix("backbone."): v for k, v in state.items() if k not in heads}
    missing = [n for n in heads if n not in state]
    if missing:
        raise SlimtuneError(f"adapter lacks head weights {missing}")
    integer = {f"backbone.{n}" for n, t in [*model.backbone.named_parameters(), *model.backbone.named_buffers()]
               if not t.is_floating_point()}
    for name, value in state.items():
        if not value.is_floating_point() and name not in integer:
            raise SlimtuneError(f"adapter tensor {name} holds {value.dtype} values, not floating point")
    with torch.no_grad():
        for name, param in heads.items():
            if param.shape != state[name].shape:
                raise SlimtuneError(f"adapter head {name} has shape {tuple(state[name].shape)}, model {tuple(param.shape)}")
            param.copy_(state[name])
    try:
        method.load_state_dict(model.backbone, backbone_state)
    except (KeyError, RuntimeError) as e:
        raise SlimtuneError(f"adapter does not fit this model: {e}") from None
