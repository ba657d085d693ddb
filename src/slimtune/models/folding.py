"""Wrappers whose learned update can be folded into the wrapped layer's weights and taken out again.

Merging is always an explicit call (never a side effect of `.eval()`); each
wrapper says in `_fold(sign)` how its update adds to `base_layer`.
"""

import torch
from torch import nn


class FoldableWrapper(nn.Module):
    merged: bool = False

    def _fold(self, sign: float) -> None:
        """Add (sign=1) or subtract (sign=-1) the update to the base layer's weights in place."""
        raise NotImplementedError

    @torch.no_grad()
    def merge(self) -> None:
        if not self.merged:
            self._fold(1.0)
            self.merged = True

    @torch.no_grad()
    def unmerge(self) -> None:
        if self.merged:
            self._fold(-1.0)
            self.merged = False


def set_merged(backbone: nn.Module, wrapper_type: type[FoldableWrapper], merged: bool) -> None:
    """Merge or unmerge every wrapper of one type inside `backbone`."""
    for module in backbone.modules():
        if isinstance(module, wrapper_type):
            module.merge() if merged else module.unmerge()
