"""Which methods `compare` runs for a task: `all` skips what the task cannot take, a named one is refused."""

import pytest

from slimtune.compare.settings import parse_methods
from slimtune.errors import SlimtuneError
from slimtune.methods.registry import available_methods
from slimtune.tasks import get_task


def test_all_is_every_registered_method_for_classify():
    methods, left_out = parse_methods("all", get_task("classify"))
    assert methods == list(available_methods()) and left_out == {}


def test_all_leaves_out_what_ner_cannot_take_and_says_why():
    methods, left_out = parse_methods("all", get_task("ner"))
    assert "features" not in methods and "lora" in methods
    assert set(methods) | set(left_out) == set(available_methods())
    assert "serves only task classify" in left_out["features"]


def test_a_named_method_the_task_refuses_is_an_error():
    with pytest.raises(SlimtuneError, match="features serves only task classify, not ner"):
        parse_methods("lora,features", get_task("ner"))


def test_each_method_trains_at_its_own_batch_size_unless_one_is_given():
    from dataclasses import replace

    from slimtune.compare.settings import CompareSettings

    own = CompareSettings(task="ner", train="train.txt", methods=["lora"], seeds=[42])
    assert "--batch-size" not in own.train_command("lora", 42, "out")  # train takes lora's ner batch (16)
    given = replace(own, batch_size=8).train_command("lora", 42, "out")
    assert given[given.index("--batch-size") + 1] == "8"
