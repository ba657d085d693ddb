"""Tasks: how rows are read, encoded, scored and predicted for one kind of problem."""

from slimtune.errors import SlimtuneError
from slimtune.tasks.base import Task


def get_task(name: str) -> Task:
    from slimtune.tasks.causal_lm import CausalLMTask
    from slimtune.tasks.classify import ClassificationTask
    from slimtune.tasks.ner import NerTask

    tasks = {"classify": ClassificationTask, "ner": NerTask, "causal-lm": CausalLMTask}
    if name not in tasks:
        raise SlimtuneError(f"unknown task {name!r}; available: {', '.join(tasks)}")
    return tasks[name]()
