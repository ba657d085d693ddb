"""Every task implements the whole declared interface, and every kind of task has its printing and its export."""

import inspect

import pytest

from slimtune.cli.formatting import format_prediction, format_report
from slimtune.runs.export import EXPORTS
from slimtune.tasks import TASK_TYPES, get_task
from slimtune.tasks.base import CLASSIFICATION, GENERATION, MULTI_LABEL, TAGGING, LabellingTask, Objective, Task
from slimtune.tasks.multitask.objective import LossWeights, MultiTask

KINDS = {CLASSIFICATION, TAGGING, GENERATION, MULTI_LABEL}


@pytest.mark.parametrize("name", TASK_TYPES)
def test_each_task_is_a_whole_task_of_a_declared_kind(name):
    task = get_task(name)  # an abstract member left undefined would make this raise TypeError
    assert isinstance(task, Task) and task.name == name and task.kind in KINDS
    assert task.generates_text == (task.kind == GENERATION)
    assert isinstance(task, LabellingTask) != task.generates_text  # labels of the input, or generated text


def test_a_task_missing_part_of_the_interface_cannot_be_made():
    class Partial(LabellingTask):
        name, primary_metric, kind = "partial", "accuracy", CLASSIFICATION

    with pytest.raises(TypeError, match="abstract"):
        Partial()


def test_every_kind_is_printed_and_exported():
    assert set(EXPORTS) == KINDS
    examples = {"classify": ({"accuracy": 1.0, "macro_f1": 1.0, "loss": 0.1, "examples": 1, "per_class": {}},
                             {"label": "pos", "probability": 0.9, "scores": {"pos": 0.9}}),
                "ner": ({"f1": 1.0, "precision": 1.0, "recall": 1.0, "token_accuracy": 1.0, "loss": 0.1,
                         "sentences": 1, "words": 2, "per_type": {}}, {"entities": []}),
                "causal-lm": ({"loss": 1.0, "perplexity": 2.7, "token_accuracy": 0.5, "exact_match": 0.5,
                               "examples": 1, "response_tokens": 3}, {"response": "yes"}),
                "multilabel": ({"micro_f1": 1.0, "macro_f1": 1.0, "subset_accuracy": 1.0, "loss": 0.1,
                                "threshold": 0.5, "examples": 1, "per_label": {}},
                               {"labels": ["a"], "scores": {"a": 0.9, "b": 0.1}})}
    assert set(examples) == set(TASK_TYPES)
    for name, (metrics, prediction) in examples.items():
        task = get_task(name)
        assert format_report(task, metrics) and format_prediction(task, "a text", prediction)


def test_the_multi_task_mixture_is_an_objective_like_a_single_task():
    members = [name for name, _ in inspect.getmembers(Objective) if not name.startswith("_")]
    mixture = MultiTask({"sst": get_task("classify")}, LossWeights(["sst"], "learned"), 0.05)
    for objective in (get_task("classify"), mixture):
        assert all(hasattr(objective, name) for name in members + ["name", "primary_metric"])
    assert [lr for _, lr in mixture.own_learning_rates()] == [0.05]
    assert get_task("classify").own_learning_rates() == [] and get_task("classify").step_record(1) is None
