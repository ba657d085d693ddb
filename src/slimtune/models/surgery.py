"""Replacing modules inside a model by dotted name, and finding target layers."""

import re

from torch import nn

from slimtune.errors import SlimtuneError


def replace_module(root: nn.Module, dotted_name: str, new: nn.Module) -> None:
    parent_name, _, child = dotted_name.rpartition(".")
    parent = root.get_submodule(parent_name) if parent_name else root
    setattr(parent, child, new)


def matches(name: str, patterns: tuple[str, ...]) -> bool:
    """A pattern matches a module's last name segment, or its full dotted name as a regex."""
    last = name.rsplit(".", 1)[-1]
    return any(last == p or re.fullmatch(p, name) for p in patterns)


def find_linear_targets(backbone: nn.Module, patterns: tuple[str, ...]) -> list[str]:
    """Names of the plain Linear layers matched by `patterns`; an error listing the model's names if none."""
    found = [n for n, m in backbone.named_modules() if isinstance(m, nn.Linear) and matches(n, patterns)]
    if not found:
        linear_names = sorted({n.rsplit(".", 1)[-1] for n, m in backbone.named_modules() if isinstance(m, nn.Linear)})
        raise SlimtuneError(
            f"target patterns {list(patterns)} match no linear layer; the model's linear layers are named: "
            + ", ".join(linear_names)
        )
    return found


def unwrap(backbone: nn.Module) -> None:
    """Replace every wrapper (a module holding `base_layer`) by its base layer, innermost last."""
    wrapped = [n for n, m in backbone.named_modules() if hasattr(m, "base_layer") and n]
    outermost = [n for n in wrapped if not any(n.startswith(other + ".") for other in wrapped)]
    for name in outermost:  # stacked wrappers inside go with their outer one
        replace_module(backbone, name, _unwrapped(backbone.get_submodule(name)))


def _unwrapped(module: nn.Module) -> nn.Module:
    while hasattr(module, "base_layer"):
        module = module.base_layer
    return module


def transformer_blocks(backbone: nn.Module) -> nn.ModuleList:
    """The stack of transformer blocks: a ModuleList of same-type layers, preferably `num_hidden_layers` long."""
    depth = getattr(backbone.config, "num_hidden_layers", None)
    stacks = [m for m in backbone.modules()
              if isinstance(m, nn.ModuleList) and len(m) and len({type(_unwrapped(b)) for b in m}) == 1]
    if not stacks:
        raise SlimtuneError(f"cannot find the transformer blocks of {type(backbone).__name__} "
                            "(an nn.ModuleList of identical layers)")
    return max(stacks, key=lambda s: (len(s) == depth, sum(p.numel() for p in s.parameters())))
