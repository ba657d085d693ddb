"""Building a model from a run directory's description (`slimtune.runs.run_directory`): base, method, head, weights.

The description is read and checked once; the loader takes one task view of it, checks the
base model's fingerprint and the size the method's options ask for, and only then allocates.
"""

from dataclasses import dataclass
from pathlib import Path

import torch

from slimtune.errors import SlimtuneError
from slimtune.methods.adaptation import attach, load_adapter_state
from slimtune.methods.registry import create_method
from slimtune.models.int8_base import quantize_frozen_linears
from slimtune.models.loading import Backbone, fingerprint
from slimtune.runs.int8_keys import BASE_INT8
from slimtune.runs.run_directory import RunDirectory, TaskView, from_config, read_run
from slimtune.tasks import get_task
from slimtune.tasks.multitask.files import task_state


@dataclass
class LoadedAdapter:
    model: torch.nn.Module
    method: object  # None for a base model without adapter
    task: object
    backbone: Backbone
    config: dict
    run: RunDirectory | None = None  # the description it was built from; None for a base model

    @property
    def labels(self) -> list[str]:
        return self.config["labels"]


def load_adapter(run_dir, model_spec: str | None = None, quantize: str | None = None,
                 task_name: str | None = None) -> LoadedAdapter:
    """Rebuild a trained model from its run directory; `model_spec` overrides the recorded base.

    `quantize` ("int8"), or an "inference_int8" entry in the config (written by `slimtune quantize`),
    merges the adapter where it can and quantizes the encoder for CPU inference.
    `task_name` picks one task of a multi-task adapter, loaded as a single-task one.
    """
    from slimtune.runs.formats.peft_import import resolve_adapter_dir

    run = read_run(resolve_adapter_dir(run_dir, model_spec))  # a peft adapter directory becomes a run directory
    view = run.view(task_name)
    config = view.config
    scheme = quantize or config.inference_int8_scheme
    if scheme and config.base_int8_scheme:
        raise SlimtuneError(f"{run.path} was trained on an {config.base_int8_scheme} base already; "
                            "drop --inference-int8")
    spec = model_spec or config.base_model
    backbone = get_task(config.task).load_backbone(spec, pooling=config.pooling, max_length=config.max_length)
    if fingerprint(backbone.model) != config.base_fingerprint:
        raise SlimtuneError(
            f"{run.path} was trained on a different base model (fingerprint {config.base_fingerprint}); "
            f"{spec or 'the default model'} does not match it"
        )
    model, method, task = build_view_model(run, view, backbone)
    loaded = LoadedAdapter(model, method, task, backbone, view.data, run)
    if scheme:
        from slimtune.models.int8_inference import quantize_loaded

        quantize_loaded(loaded, scheme)
    return loaded


def build_adapter_model(run_dir, config: dict | RunDirectory, backbone: Backbone,
                        task_name: str | None = None) -> tuple[torch.nn.Module, object, object]:
    """(task model, method, task): the adapter of `run_dir` attached to `backbone.model` and loaded, in eval mode.

    The caller has checked that `backbone` is the base the adapter was trained on. `config` is the run's
    description, or its adapter_config.json as a dict (checked here). For a multi-task adapter,
    `task_name` picks the task (see `slimtune.tasks.multitask.files`).
    """
    run = config if isinstance(config, RunDirectory) else from_config(run_dir, config)
    return build_view_model(run, run.view(task_name), backbone)


def build_view_model(run: RunDirectory, view: TaskView, backbone: Backbone) -> tuple[torch.nn.Module, object, object]:
    """One task view of `run` built on `backbone`: method options and size checked before any allocation."""
    config = view.config
    task = get_task(config.task)
    task.use_settings(view.data)
    method = create_method(config.method, run.method_options())
    task.check_method(method)
    check_size(run, method, backbone.model)
    model = task.build_model(backbone, config.labels)
    attach(model, method)
    if config.base_int8_scheme:  # the adapter was trained on (and is used with) the int8 base
        quantize_frozen_linears(model.backbone)
    state = run.load_tensors()
    if view.task_name is not None:
        state = task_state(state, run.data, view.task_name)
    try:
        load_adapter_state(model, method, state)
    except SlimtuneError as e:
        raise SlimtuneError(f"{run.adapter_path}: {e}") from None
    model.eval()
    return model, method, task


def check_size(run: RunDirectory, method, base: torch.nn.Module) -> None:
    """Refuse options that ask for more trainable weights than the base model has (a LoRA rank of 100000),
    by the method's own count over the base's shapes, before anything is allocated."""
    try:
        wanted = method.count_parameters(base)
    except NotImplementedError:
        return
    available = sum(p.numel() for p in base.parameters())
    if wanted > available:
        raise SlimtuneError(f"{run.path / 'adapter_config.json'}: options {run.method_options()} ask for "
                            f"{wanted:,} trainable parameters, more than the base model's {available:,}")


def load_base_model(task_name: str, model_spec: str | None, max_length: int | None = None,
                    quantize: str | None = None) -> LoadedAdapter:
    """A pretrained model as it is, no adapter: zero-shot scores and generation for tasks that need no new head."""
    task = get_task(task_name)
    if task.name != "causal-lm":
        raise SlimtuneError(f"task {task.name} needs a trained head; pass --adapter")
    backbone = task.load_backbone(model_spec, max_length=max_length)
    model = task.build_model(backbone, [])
    model.requires_grad_(False)
    if quantize:
        quantize_frozen_linears(model.backbone)
    config = {"task": task.name, "base_model": model_spec, "labels": [], BASE_INT8: quantize}
    return LoadedAdapter(model.eval(), None, task, backbone, config)


def read_config(run_dir) -> dict:
    """adapter_config.json of a run directory as a dict, checked (see `read_run`)."""
    return read_run(Path(run_dir)).data
