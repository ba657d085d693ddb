"""Task models over one frozen base, and one method instance per task when tasks keep their own adapters.

sharing="shared": every task model reads the same encoder, into which one method
is injected; only the heads are per task. sharing="per-task": each task gets its
own copy of the encoder's module tree whose frozen weights are the very same
tensors (no extra memory), and its own method instance is injected into that
copy. Each batch comes from one task and runs through that task's model, so no
switch routes adapters: a task's copy holds only its own.
"""

import copy
from dataclasses import replace

import torch
from torch import nn

from slimtune.errors import SlimtuneError
from slimtune.methods.adaptation import attach
from slimtune.methods.base import Method
from slimtune.models.loading import Backbone

SHARINGS = ("shared", "per-task")


def weight_sharing_copy(module: nn.Module) -> nn.Module:
    """A copy of `module`'s structure whose parameters and buffers are the original tensors, not copies."""
    memo = {id(t): t for t in [*module.parameters(), *module.buffers()]}
    return copy.deepcopy(module, memo)


class MultiTaskModel(nn.Module):
    """`task_models[name]` is the model the task itself builds (`Task.build_model`); `backbone` is the shared
    encoder, or (per-task) a ModuleDict of the tasks' encoder copies; `loss_weights` combines task losses."""

    def __init__(self, backbone: Backbone, tasks: dict, labels: dict[str, list[str]], sharing: str,
                 loss_weights: nn.Module):
        super().__init__()
        if sharing not in SHARINGS:
            raise SlimtuneError(f"unknown sharing {sharing!r}; choose from {', '.join(SHARINGS)}")
        if backbone.pooling == "pooler":
            raise SlimtuneError("--pooling pooler trains the base's pooler as part of a head, which tasks would "
                                "share; use mean or cls pooling for multi-task runs")
        if sharing == "shared":
            self.backbone = backbone.model
            encoders = dict.fromkeys(tasks, backbone.model)
        else:
            self.backbone = nn.ModuleDict({name: weight_sharing_copy(backbone.model) for name in tasks})
            encoders = dict(self.backbone.items())
        self.sharing = sharing
        self.task_models = nn.ModuleDict({
            name: task.build_model(replace(backbone, model=encoders[name]), labels[name])
            for name, task in tasks.items()
        })
        self.loss_weights = loss_weights

    def head_modules(self) -> list[nn.Module]:
        """Trained with every method: each task's head, and the learned loss weights."""
        return [m for model in self.task_models.values() for m in model.head_modules()] + [self.loss_weights]

    def forward(self, task: str, **batch) -> torch.Tensor:
        return self.task_models[task](**batch)


def attach_all(model: MultiTaskModel, method: Method, tasks: dict) -> list[nn.Parameter]:
    """`attach` for a MultiTaskModel, after checking the method serves every task; a method that replaces the
    whole encoder (features) is refused, as each task model keeps its own reference to the encoder."""
    for task in tasks.values():
        task.check_method(method)
    params = attach(model, method)
    if model.sharing == "shared" and any(m.backbone is not model.backbone for m in model.task_models.values()):
        raise SlimtuneError(_WRAPS_ENCODER.format(method.name))
    return params


_WRAPS_ENCODER = "method {} replaces the whole encoder; multi-task runs need a method that adapts it in place"


class PerTaskMethods(Method):
    """One instance of a method per task, each over its task's encoder copy in a ModuleDict `backbone`.

    Its state is the tasks' states under `TASK.` prefixes. Methods that train the
    base's own weights (full, bitfit, layers, ...) are refused: the copies share
    those tensors, so the tasks could not keep them apart.
    """

    def __init__(self, methods: dict[str, Method]):
        super().__init__(next(iter(methods.values())).options)
        self.methods = methods
        first = next(iter(methods.values()))
        self.name, self.default_lr = first.name, first.default_lr  # not mergeable: the tasks share one base

    def _each(self, backbone: nn.ModuleDict):
        return ((name, method, backbone[name]) for name, method in self.methods.items())

    def check_task(self, task_name: str) -> None:
        next(iter(self.methods.values())).check_task(task_name)

    def inject(self, backbone: nn.ModuleDict) -> None:
        owner = {}
        for name, method, encoder in self._each(backbone):
            if method.inject(encoder) is not None:
                raise SlimtuneError(_WRAPS_ENCODER.format(self.name))
            for p in method.trainable_parameters(encoder):
                if owner.setdefault(id(p), name) != name:
                    raise SlimtuneError(f"method {self.name} trains the base's own weights, which every task "
                                        f"shares; use --sharing shared, or a method that adds its own weights "
                                        f"(lora, adapter, prefix, prompt, ...) for --sharing per-task")

    def trainable_parameters(self, backbone: nn.ModuleDict) -> list[nn.Parameter]:
        return [p for _, method, encoder in self._each(backbone) for p in method.trainable_parameters(encoder)]

    def count_parameters(self, backbone: nn.ModuleDict) -> int:
        return sum(method.count_parameters(encoder) for _, method, encoder in self._each(backbone))

    def state_dict(self, backbone: nn.ModuleDict) -> dict[str, torch.Tensor]:
        return {f"{name}.{k}": v for name, method, encoder in self._each(backbone)
                for k, v in method.state_dict(encoder).items()}

    def export_state_dict(self, backbone: nn.ModuleDict) -> dict[str, torch.Tensor]:
        return {f"{name}.{k}": v for name, method, encoder in self._each(backbone)
                for k, v in method.export_state_dict(encoder).items()}

    def load_state_dict(self, backbone: nn.ModuleDict, state: dict[str, torch.Tensor]) -> None:
        for name, method, encoder in self._each(backbone):
            method.load_state_dict(encoder, {k.removeprefix(f"{name}."): v for k, v in state.items()
                                             if k.startswith(f"{name}.")})

    def on_step(self, backbone: nn.ModuleDict, step: int, total_steps: int) -> None:
        """Only the methods of tasks that had a batch in this step (their parameters hold gradients) step."""
        for _, method, encoder in self._each(backbone):
            if any(p.grad is not None for p in method.trainable_parameters(encoder)):
                method.on_step(encoder, step, total_steps)

    def extra_loss(self, backbone: nn.ModuleDict) -> torch.Tensor | None:
        losses = [method.extra_loss(encoder) for _, method, encoder in self._each(backbone)]
        losses = [loss for loss in losses if loss is not None]
        return sum(losses) if losses else None
