"""A saved multi-task adapter, read one task at a time as a plain single-task adapter.

adapter_config.json has `task: "multi"`, the shared method and options, and
`tasks: {NAME: {task, labels, ...task settings}}`. adapter.safetensors holds the
method's tensors under `backbone.` (shared) or `backbone.NAME.` (per-task), each
head under `task_models.NAME.` and the learned `loss_weights.log_vars`. One
task's view renames its tensors to the single-task layout, so evaluation,
prediction, merging, quantization and serving treat it like any other adapter.
"""

import torch

from slimtune.errors import SlimtuneError

MULTI = "multi"
VIEW_DROPPED = ("tasks", "sharing", "loss_weights", "task_weights", "sampling")


def is_multi(config: dict) -> bool:
    return config.get("task") == MULTI


def check_task_name(config: dict, task_name: str | None, where) -> None:
    """A multi-task adapter needs one of its task names; a single-task adapter takes none."""
    if not is_multi(config):
        if task_name is not None:
            raise SlimtuneError(f"{where} is a single-task adapter ({config['task']}); a task name applies "
                                f"only to multi-task adapters")
        return
    names = ", ".join(config["tasks"])
    if task_name is None:
        raise SlimtuneError(f"{where} is a multi-task adapter; choose one of its tasks with --task-name: {names}")
    if task_name not in config["tasks"]:
        raise SlimtuneError(f"{where} has no task {task_name!r}; its tasks: {names}")


def task_config(config: dict, task_name: str) -> dict:
    """The single-task config of one task: its type, labels and settings over the shared base and method."""
    shared = {k: v for k, v in config.items() if k not in VIEW_DROPPED}
    return {**shared, **config["tasks"][task_name], "task_name": task_name, "sharing": config["sharing"]}


def task_state(state: dict[str, torch.Tensor], config: dict, task_name: str) -> dict[str, torch.Tensor]:
    """One task's tensors in the single-task layout: `backbone.*` for the method, `head.*` for the head."""
    method_prefix = "backbone." if config["sharing"] == "shared" else f"backbone.{task_name}."
    head_prefix = f"task_models.{task_name}."
    out = {}
    for key, value in state.items():
        if key.startswith(head_prefix):
            out[key.removeprefix(head_prefix)] = value
        elif key.startswith(method_prefix):
            out["backbone." + key.removeprefix(method_prefix)] = value
    return out
