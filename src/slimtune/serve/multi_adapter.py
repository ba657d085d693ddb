"""Many adapters over one frozen base, in one forward pass (in the spirit of S-LoRA / Punica).

Any method whose `row_updates` is not None (LoRA, and whichever others declare
the capability) joins. Each layer that some loaded adapter's `row_updates`
names is wrapped once by a `MultiAdapterLayer` holding every adapter's update
by slot. A batch's rows are grouped by adapter once per forward pass
(`RowGroups`); each wrapped layer computes the base output for the whole batch,
then hands each group its own rows (a slice when the group's rows are
contiguous, else an index_select) and writes the group's result back. Each
adapter's update runs at its own size on its own rows: nothing is padded to the
largest rank. Rows of a slot without an update on a layer keep the base output.
The base layer may be PyTorch's dynamic int8 Linear (`serve --inference-int8 int8`):
the updates receive its output and stay fp32.
"""

from contextlib import contextmanager

import torch
from torch import nn

from slimtune.errors import SlimtuneError
from slimtune.methods.base import RowUpdate

BASE_SLOT = -1  # rows of the bare base: no layer holds an update for it
Index = slice | torch.Tensor  # the rows of one group: a slice when contiguous, else a LongTensor


def group_rows(slots: list[int]) -> list[tuple[int, Index]]:
    """(slot, its rows) per distinct slot, in order of first appearance."""
    rows: dict[int, list[int]] = {}
    for position, slot in enumerate(slots):
        rows.setdefault(slot, []).append(position)
    groups = []
    for slot, positions in rows.items():
        contiguous = positions[-1] - positions[0] + 1 == len(positions)
        groups.append((slot, slice(positions[0], positions[-1] + 1) if contiguous else torch.tensor(positions)))
    return groups


class RowGroups:
    """The rows of each adapter slot in the batch now running, shared by every MultiAdapterLayer of one base."""

    def __init__(self):
        self.groups: list[tuple[int, Index]] | None = None
        self.count = 0

    @contextmanager
    def use(self, slots: list[int]):
        self.groups, self.count = group_rows(slots), len(slots)
        try:
            yield
        finally:
            self.groups, self.count = None, 0


class MultiAdapterLayer(nn.Module):
    """A frozen layer plus, for each row, the update of that row's adapter (if it has one here)."""

    def __init__(self, base_layer: nn.Module, rows: RowGroups):
        super().__init__()
        self.base_layer = base_layer
        self.rows = rows
        self.updates: dict[int, RowUpdate] = {}

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x [B, ..., in] → [B, ..., out]
        out = self.base_layer(x)
        groups = self.rows.groups
        if not self.updates or groups is None:
            return out
        if x.shape[0] != self.rows.count:
            raise RuntimeError(f"{x.shape[0]} rows reached a multi-adapter layer but {self.rows.count} were grouped")
        for slot, index in groups:
            update = self.updates.get(slot)
            if update is None:
                continue
            if isinstance(index, slice):
                if index.stop - index.start == x.shape[0]:
                    out = update(x, out, self.base_layer)
                else:
                    out[index] = update(x[index], out[index], self.base_layer)
            else:
                out.index_copy_(0, index, update(x.index_select(0, index), out.index_select(0, index),
                                                 self.base_layer))
        return out


class SharedBase(nn.Module):
    """One frozen backbone carrying the row updates of every loaded adapter, each in its own slot."""

    def __init__(self, backbone: nn.Module):
        super().__init__()
        self.backbone = backbone.requires_grad_(False).eval()
        self.rows = RowGroups()
        self.slots: set[int] = set()  # slots holding updates; only the model thread changes it

    def install(self, updates: dict[str, RowUpdate], adapted_backbone: nn.Module) -> int:
        """Put an adapter's updates into a free slot and return it; on failure nothing of them stays."""
        slot = next(slot for slot in range(len(self.slots) + 1) if slot not in self.slots)
        try:
            self.add(slot, updates, adapted_backbone)
        except Exception:
            self.remove(slot)
            raise
        self.slots.add(slot)
        return slot

    def add(self, slot: int, updates: dict[str, RowUpdate], adapted_backbone: nn.Module) -> None:
        """Put an adapter's updates (paths into `adapted_backbone`, the same architecture) into `slot`."""
        if not updates:
            raise SlimtuneError("the adapter updates no layer")
        targets = {path: self._wrapped(path, adapted_backbone) for path in updates}
        for path, update in updates.items():
            targets[path].updates[slot] = update

    def remove(self, slot: int) -> None:
        for module in self.backbone.modules():
            if isinstance(module, MultiAdapterLayer):
                module.updates.pop(slot, None)
        self.slots.discard(slot)

    def _wrapped(self, path: str, adapted_backbone: nn.Module) -> MultiAdapterLayer:
        """The MultiAdapterLayer at `path`, wrapping the base's layer there on first use."""
        try:
            current = self.backbone.get_submodule(path)
            theirs = getattr(adapted_backbone.get_submodule(path), "base_layer", None)
        except AttributeError:
            raise SlimtuneError(f"the adapter updates a layer {path!r} that the base model lacks") from None
        if isinstance(current, MultiAdapterLayer):
            current = current.base_layer
            wrapper = self.backbone.get_submodule(path)
        else:
            wrapper = None
        if theirs is not None and _shape(theirs) != _shape(current):
            raise SlimtuneError(f"the adapter's layer {path!r} does not fit the base model's {current}")
        if wrapper is None:
            wrapper = MultiAdapterLayer(current, self.rows)
            parent_name, _, child = path.rpartition(".")
            setattr(self.backbone.get_submodule(parent_name) if parent_name else self.backbone, child, wrapper)
        return wrapper

    @contextmanager
    def rows_of(self, slots: list[int]):
        """Run the backbone with row i of the batch under the adapter in `slots[i]`."""
        with self.rows.use(slots):
            yield

    @torch.no_grad()
    def forward(self, batch: dict[str, torch.Tensor], slots: list[int]) -> torch.Tensor:
        """Token states [B, T, H] for a padded encoder batch whose row i uses the adapter in `slots[i]`."""
        inputs = {k: v for k, v in batch.items() if k in ("input_ids", "attention_mask", "token_type_ids")}
        with self.rows.use(slots):
            return self.backbone(**inputs).last_hidden_state


def _shape(layer: nn.Module) -> tuple:
    """What must agree between an adapter's view of a layer and the shared one: its feature sizes, if it has them."""
    return (getattr(layer, "in_features", None), getattr(layer, "out_features", None))
