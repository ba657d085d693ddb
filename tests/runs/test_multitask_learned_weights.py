"""Uncertainty weighting on a synthetic pair: the task with random labels ends up weighed down."""

import json
import random

from slimtune.runs.multitask import MultiTrainRequest, train_multitask
from slimtune.tasks.multitask.specs import TaskSpec
from slimtune.training.config import TrainConfig
from tests.conftest import sentiment_rows, write_tsv


def test_learned_weights_down_weight_the_noisy_task(tiny_model, tmp_path):
    clean = sentiment_rows(96, 0)
    rng = random.Random(3)
    noisy = [(text, rng.choice(["pos", "neg"])) for text, _ in sentiment_rows(96, 5)]  # labels unrelated to text
    specs = [TaskSpec("clean", "classify", write_tsv(tmp_path / "clean.tsv", clean)),
             TaskSpec("noisy", "classify", write_tsv(tmp_path / "noisy.tsv", noisy))]
    config = TrainConfig(epochs=4, batch_size=8, lr=3e-3, patience=0, seed=1)
    summary = train_multitask(MultiTrainRequest(tasks=specs, method="full", out_dir=str(tmp_path / "run"),
                                                model=tiny_model, loss_weights_lr=0.05, config=config))
    weights, log_vars = summary["final_task_weights"], None
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    logged = [r for r in records if r["type"] == "task_weights"]
    assert [r["step"] for r in logged] == list(range(1, summary["steps"] + 1))  # every step
    log_vars = logged[-1]["log_vars"]
    assert log_vars["noisy"] > log_vars["clean"] + 0.3, log_vars
    assert weights["noisy"] < weights["clean"]
    losses = {name: [r["task_loss"][name] for r in logged[-20:] if name in r["task_loss"]] for name in weights}
    assert sum(losses["noisy"]) / len(losses["noisy"]) > sum(losses["clean"]) / len(losses["clean"])
    assert (tmp_path / "run" / "task_weights.png").stat().st_size > 10_000
