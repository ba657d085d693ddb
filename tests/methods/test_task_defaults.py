"""Per-task defaults: a method configured for a task takes that task's measured options and learning rate, unless
the user gives them."""

from slimtune.methods.lora import ALL_BLOCK_LINEARS
from slimtune.methods.registry import create_method


def test_encoder_lora_adapts_every_block_linear():
    assert create_method("lora", {}, "ner").options.targets == (ALL_BLOCK_LINEARS,)
    assert create_method("lora", {}, "classify").options.targets == (ALL_BLOCK_LINEARS,)
    assert create_method("lora", {}, "causal-lm").options.targets == ()  # every projection, found by structure
    assert create_method("lora", {"targets": "query"}, "ner").options.targets == ("query",)  # --set wins


def test_full_fine_tuning_takes_its_ner_learning_rate():
    assert create_method("full", {}, "ner").learning_rate() == 1e-4
    assert create_method("full", {}, "classify").learning_rate() == create_method("full").learning_rate() == 3e-5


def test_a_ner_run_without_lr_trains_at_the_task_default(tiny_model, toy_ner_data, tmp_path):
    from slimtune.runs.train import TrainRequest, train
    from slimtune.training.config import TrainConfig

    summary = train(TrainRequest(task="ner", method="full", train_path=toy_ner_data["train"],
                                 dev_path=toy_ner_data["dev"], out_dir=str(tmp_path / "run"), model=tiny_model,
                                 config=TrainConfig(epochs=1, batch_size=8)))
    assert summary["lr"] == 1e-4


def test_block_linears_match_bert_and_llama_layer_names():
    import re

    for name in ("encoder.layer.0.attention.self.query", "encoder.layer.11.output.dense",
                 "layers.3.self_attn.q_proj", "layers.0.mlp.down_proj"):
        assert re.fullmatch(ALL_BLOCK_LINEARS, name)
    assert not re.fullmatch(ALL_BLOCK_LINEARS, "pooler.dense")


def test_the_cli_takes_the_task_batch_size_unless_given(tiny_model, toy_ner_data, toy_data, tmp_path):
    import yaml

    from slimtune.cli import main

    common = ["--method", "lora", "--model", tiny_model, "--epochs", "1", "--few-shot", "off"]
    runs = {"ner": ["--task", "ner", "--train", toy_ner_data["train"], "--dev", toy_ner_data["dev"]],
            "classify": ["--task", "classify", "--train", toy_data["train"], "--dev", toy_data["dev"]],
            "given": ["--task", "ner", "--train", toy_ner_data["train"], "--dev", toy_ner_data["dev"],
                      "--batch-size", "8"]}
    for name, flags in runs.items():
        assert main(["train", *common, *flags, "--out", str(tmp_path / name)]) == 0
    batch = {name: yaml.safe_load((tmp_path / name / "train_config.yaml").read_text())["batch-size"] for name in runs}
    assert batch == {"ner": 16, "classify": 32, "given": 8}


def test_small_data_defaults_apply_on_top_of_the_task_defaults():
    small = create_method("lora", {}, "classify", small_data=True)
    assert small.options.targets == ()  # query/value, the option's own default, found by structure
    assert create_method("lora", {"targets": "query"}, "classify", small_data=True).options.targets == ("query",)
    assert create_method("lora", {}, "ner", small_data=True).options.targets == (ALL_BLOCK_LINEARS,)  # none measured
    assert small.learning_rate() == create_method("lora", {}, "classify").learning_rate()


def test_a_small_classify_run_takes_the_small_data_targets_unless_the_recipe_is_off(tiny_model, toy_data, tmp_path):
    import json

    from slimtune.cli import main

    common = ["train", "--task", "classify", "--method", "lora", "--model", tiny_model, "--train", toy_data["train"],
              "--epochs", "1", "--batch-size", "8"]
    assert main([*common, "--few-shot", "supervised", "--out", str(tmp_path / "small")]) == 0
    assert main([*common, "--few-shot", "off", "--dev", toy_data["dev"], "--out", str(tmp_path / "off")]) == 0
    targets = {name: json.loads((tmp_path / name / "adapter_config.json").read_text())["options"]["targets"]
               for name in ("small", "off")}
    assert targets == {"small": [], "off": [ALL_BLOCK_LINEARS]}
