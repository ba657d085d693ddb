"""The merge contract: a wrapper whose learned update can be written into its base layer's parameters.

A wrapper keeps the frozen layer as `base_layer` and says two things: how it computes
while unmerged (`adapted_forward`) and what the base layer's parameters become with
the update folded in (`folded_parameters`). Any kind of update fits: additive (LoRA's
W + ΔW), rescaled (IA3's diag(l)·W), or renormalised (DoRA's m·(W + ΔW)/‖W + ΔW‖).
Merging copies the folded values in and, unless told the base will never come back,
keeps the replaced tensors, so unmerging restores the base bit for bit (subtracting
ΔW again would not: (W + ΔW) − ΔW ≠ W in floating point, and a scaling may not invert).
Merging is always an explicit call, never a side effect of `.eval()`.
"""

import torch
from torch import nn


class FoldableWrapper(nn.Module):
    """A module holding `base_layer` plus an update that merging folds into `base_layer`'s own parameters."""

    merged: bool = False

    def adapted_forward(self, x: torch.Tensor) -> torch.Tensor:
        """The layer's output with the update applied on the fly (the unmerged path)."""
        raise NotImplementedError

    def folded_parameters(self) -> dict[str, torch.Tensor]:
        """The base layer's parameters that the update changes, with the update folded in.

        {'weight': [out, in]} and, when the update touches it, {'bias': [out]}; the merged base layer alone
        must then compute what `adapted_forward` computes.
        """
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base_layer(x) if self.merged else self.adapted_forward(x)

    @torch.no_grad()
    def merge(self, restorable: bool = True) -> None:
        """Write the update into the base layer; `restorable=False` keeps no copy (for merge-then-unwrap)."""
        if self.merged:
            return
        folded = self.folded_parameters()
        self._replaced = ({name: getattr(self.base_layer, name).detach().clone() for name in folded}
                          if restorable else None)
        for name, value in folded.items():
            getattr(self.base_layer, name).copy_(value)
        self.merged = True

    @torch.no_grad()
    def unmerge(self) -> None:
        """Put back exactly the base parameters that `merge` replaced."""
        if not self.merged:
            return
        if self._replaced is None:
            raise RuntimeError("this layer was merged with restorable=False; its base weights are gone")
        for name, value in self._replaced.items():
            getattr(self.base_layer, name).copy_(value)
        self._replaced, self.merged = None, False


class DenseDeltaWrapper(FoldableWrapper):
    """An additive update formed as a dense ΔW [out, in] (`delta_weight`) every forward: W x + b + ΔW x."""

    def delta_weight(self) -> torch.Tensor:
        raise NotImplementedError

    def adapted_forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base_layer(x) + x @ self.delta_weight().T

    def folded_parameters(self) -> dict[str, torch.Tensor]:
        return {"weight": self.base_layer.weight + self.delta_weight()}


def foldable_wrappers(backbone: nn.Module) -> list[FoldableWrapper]:
    return [m for m in backbone.modules() if isinstance(m, FoldableWrapper)]
