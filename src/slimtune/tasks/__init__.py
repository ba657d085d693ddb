"""Tasks: how rows are read, encoded, scored and predicted for one kind of problem."""

from slimtune.errors import SlimtuneError
from slimtune.tasks.base import Task


TASK_TYPES = ("classify", "ner", "causal-lm", "multilabel")


def get_task(name: str) -> Task:
    from slimtune.tasks.causal_lm import CausalLMTask
    from slimtune.tasks.classify import ClassificationTask
    from slimtune.tasks.multilabel import MultiLabelTask
    from slimtune.tasks.ner import NerTask

    tasks = {task.name: task for task in (ClassificationTask, NerTask, CausalLMTask, MultiLabelTask)}
    if name not in tasks:
        raise SlimtuneError(f"unknown task {name!r}; available: {', '.join(TASK_TYPES)}")
    return tasks[name]()
