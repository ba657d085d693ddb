"""The one interface every PEFT method implements.

A method is configured from a dataclass of options, injected into a frozen
backbone (wrapping layers, never subclassing them), and then answers which
parameters it trains and what goes into its adapter file. Training-time needs
(a per-step hook, an extra loss) are declared here and called openly by the
trainer. Merging is an explicit call, never a side effect of `.eval()`.
"""

from collections.abc import Callable
from dataclasses import dataclass, fields
from pathlib import Path
from typing import ClassVar, Protocol

import torch
from torch import nn

from slimtune.errors import SlimtuneError
from slimtune.models.folding import foldable_wrappers


class RowUpdate(Protocol):
    """One adapter's update of one wrapped layer, applied to that adapter's rows over a shared frozen base.

    `x` [n, ..., in] are the layer inputs of the adapter's rows, `base_out` [n, ..., out] the shared base layer's
    output for them; the result is the adapted layer's output for those rows. The server groups a batch's rows by
    adapter and calls each adapter's update on its own rows, so every method whose update is per row and cheap
    (low-rank deltas, scaling vectors) serves many adapters over one base.
    """

    def __call__(self, x: torch.Tensor, base_out: torch.Tensor, base_layer: nn.Module) -> torch.Tensor: ...


@dataclass
class InspectView:
    """A method's own part of `slimtune inspect`: text printed under the summary, and optionally a figure.

    `write_figure(path)` draws it as a PNG; `figure` names it in the CLI's message (e.g. "heatmap").
    """

    text: str
    write_figure: Callable[[Path], None] | None = None
    figure: str = "figure"
    figure_file: str = "figure.png"


@dataclass
class NoOptions:
    """A method without options."""


class Method:
    name: ClassVar[str]
    summary: ClassVar[str]
    Options: ClassVar[type] = NoOptions
    default_lr: ClassVar[float]
    # Whether `merge` can fold the method into the base: its update lives in FoldableWrappers
    # (models/folding.py) or in base parameters trained in place.
    mergeable: ClassVar[bool] = False
    # The tasks the method serves; None: every task. The one place compatibility is declared: tasks name no method.
    tasks: ClassVar[tuple[str, ...] | None] = None
    tasks_reason: ClassVar[str | None] = None  # why only those tasks (default: the summary)
    # Whether the method computes with the wrapped layers' fp32 weight matrices (rather than calling the layers),
    # which an int8 frozen base (`--quantize int8`) does not keep.
    needs_float_base_weights: ClassVar[bool] = False
    # How Hugging Face PEFT writes this method's adapter (a methods.peft_mappings.PeftMapping), None if it cannot.
    peft_mapping: ClassVar[type | None] = None
    # Where a task needs other defaults than `default_lr` and the Options' own, measured on that task's dev split:
    # {task name: {"lr": float, "batch_size": int, "options": {option: --set value}, "small_data": {the same keys,
    # taken on top by runs on the small-data recipes (training/small_data.py)}}}. `slimtune methods` lists them.
    task_defaults: ClassVar[dict[str, dict]] = {}
    # Whether examples packed into one row (`train --pack`) stay apart under the method: False where it adds
    # positions of its own to every row (a soft prompt, prefixes), which all of a row's examples would share.
    keeps_packed_examples_apart: ClassVar[bool] = True

    def __init__(self, options=None, task_name: str | None = None, small_data: bool = False):
        self.options = options if options is not None else self.Options()
        self.task_name = task_name  # the task it was configured for, whose measured defaults it took
        self.small_data = small_data  # configured for a small-data recipe: the task's `small_data` defaults on top

    @classmethod
    def defaults_for(cls, task_name: str | None, small_data: bool = False) -> dict:
        """The measured defaults on `task_name` (lr, batch_size, options), with its small-data ones on top."""
        chosen = cls.task_defaults.get(task_name, {})
        small = chosen.get("small_data", {}) if small_data else {}
        return {**chosen, **small, "options": {**chosen.get("options", {}), **small.get("options", {})}}

    @classmethod
    def option_defaults_for(cls, task_name: str | None, small_data: bool = False) -> dict[str, str]:
        """Option values (as `--set` strings) this method starts from on `task_name`, where they differ."""
        return dict(cls.defaults_for(task_name, small_data)["options"])

    @classmethod
    def batch_size_for(cls, task_name: str | None, fallback: int) -> int:
        """Examples per step when none is given: the task's measured one, else `fallback` (the CLI's default)."""
        return cls.task_defaults.get(task_name, {}).get("batch_size", fallback)

    def learning_rate(self) -> float:
        """The peak learning rate a run uses when none is given: the task's measured one, else `default_lr`."""
        return self.defaults_for(self.task_name, self.small_data).get("lr", self.default_lr)

    def check_task(self, task_name: str) -> None:
        """Refuse a task the method does not serve, saying why (`tasks_reason`, else its summary)."""
        if self.tasks is not None and task_name not in self.tasks:
            raise SlimtuneError(f"method {self.name} serves only task {', '.join(self.tasks)}, not {task_name}: "
                                f"{self.tasks_reason or self.summary}")

    def inject(self, backbone: nn.Module) -> nn.Module | None:
        """Prepare a frozen backbone in place: wrap layers or unfreeze the method's parameters.

        A method that decides whether the backbone runs at all (features serves cached sentence features) may
        instead return a module that wraps the whole backbone, keeping it as `base_layer`; `attach` puts that
        module in the backbone's place, and it must answer the task model's call the way the backbone did.
        """

    def trainable_parameters(self, backbone: nn.Module) -> list[nn.Parameter]:
        """The backbone parameters this method trains, found by module structure."""
        raise NotImplementedError

    def count_parameters(self, backbone: nn.Module) -> int:
        """Trainable backbone parameters by the method's own formula over the model's config and shapes.

        `slimtune plan` reports it before any layer is wrapped, and the contract
        test checks it against what injection really produced.
        """
        raise NotImplementedError

    def state_dict(self, backbone: nn.Module) -> dict[str, torch.Tensor]:
        """What the adapter file must hold to rebuild this method on a fresh base."""
        wanted = {id(p) for p in self.trainable_parameters(backbone)}
        return {n: p.detach().clone() for n, p in backbone.named_parameters() if id(p) in wanted}

    def export_state_dict(self, backbone: nn.Module) -> dict[str, torch.Tensor]:
        """What the saved adapter file holds: the training state, unless the method has training-only parts.

        Checkpoints keep `state_dict` so a resumed run continues exactly; a method
        that trains through scaffolding (prefix tuning's reparameterisation MLP)
        folds it away here, and its `load_state_dict` accepts both forms.
        """
        return self.state_dict(backbone)

    def load_state_dict(self, backbone: nn.Module, state: dict[str, torch.Tensor]) -> None:
        own = dict(backbone.named_parameters())
        missing = set(self.state_dict(backbone)) - set(state)
        if missing:
            raise KeyError(f"adapter lacks {sorted(missing)[:5]}")
        with torch.no_grad():
            for name, value in state.items():
                own[name].copy_(value)

    def merge(self, backbone: nn.Module, restorable: bool = True) -> None:
        """Fold the method into the base weights: every FoldableWrapper writes its `folded_parameters`.

        A method that trains base parameters in place (full, bitfit, layers) has nothing to fold. With
        `restorable` (the default) `unmerge` brings the base back bit for bit; a caller that unwraps
        afterwards and never unmerges passes False and keeps no copy of the replaced weights.
        """
        if not self.mergeable:
            raise NotImplementedError(f"{self.name} cannot be merged")
        for wrapper in foldable_wrappers(backbone):
            wrapper.merge(restorable)

    def unmerge(self, backbone: nn.Module) -> None:
        """Undo `merge` exactly: the base parameters it replaced are put back."""
        if not self.mergeable:
            raise NotImplementedError(f"{self.name} cannot be merged")
        for wrapper in foldable_wrappers(backbone):
            wrapper.unmerge()

    def reads_base_weights(self) -> bool:
        """Whether building this adapter reads the base's weight values, not only its shapes.

        A server builds shared-base adapters over a weightless (meta-device) copy of the base; an adapter
        whose parts come from the weights (PiSSA's principal factors, DoRA's norms) must be built over the real one.
        """
        return False

    def row_updates(self, backbone: nn.Module) -> dict[str, RowUpdate] | None:
        """Per-row updates for shared-base serving: {path of a wrapped layer in `backbone`: its update}.

        None (the default): the method changes the base in a way rows cannot share (new tokens, changed
        weights), and the server gives such an adapter its own model copy.
        """
        return None

    def low_rank_factors(self, state: dict[str, torch.Tensor]) -> dict[str, tuple[torch.Tensor, torch.Tensor]] | None:
        """The saved update as plain low-rank factors, for adapter arithmetic (`slimtune combine`).

        `state` is the method's exported state (`export_state_dict`, keys without `backbone.`); the answer is
        {path of an adapted layer: (B [out, r], A [r, in])} with ΔW = B A, the method's scale folded into B.
        None (the default): the update is not a sum of low-rank products alone.
        """
        return None

    def inspect(self, state: dict[str, torch.Tensor]) -> InspectView | None:
        """What `slimtune inspect` shows for a saved adapter beyond its generic summary; None: nothing more.

        `state` is the adapter file's tensors as saved (the method's under `backbone.`, the head's beside them).
        """
        return None

    def prepare(self, model: nn.Module, batches, loss_fn) -> None:
        """Data-dependent set-up, called by `train()` once after injection and before the first step.

        `batches` yields padded training batches, `loss_fn(logits, labels)` is the task loss;
        subnetwork's Fisher mask needs them. Most methods need nothing here.
        """

    def on_step(self, backbone: nn.Module, step: int, total_steps: int) -> None:
        """Called by the trainer after every optimizer step, before `zero_grad`: the step's gradients are still there."""

    def extra_loss(self, backbone: nn.Module) -> torch.Tensor | None:
        """A regulariser the trainer adds to the task loss, if the method has one."""
        return None

    def options_dict(self) -> dict:
        return {f.name: getattr(self.options, f.name) for f in fields(self.options)}
