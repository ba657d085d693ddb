"""Data-parallel training: 2 CPU ranks (gloo, started by torchrun) reproduce a one-process run with the same global batch.

The tiny model has no dropout, so a rank's share of a batch computes exactly what
the same rows compute in one process; what remains is float summation order.
Training data of 57 rows in batches of 8 ends each epoch on a 1-row batch, so one
rank has an empty share there; 21 dev rows split unevenly.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from slimtune.cli import main
from slimtune.cli.train import without_nproc
from slimtune.errors import SlimtuneError
from slimtune.methods.registry import available_methods
from slimtune.runs.train import TrainRequest, train
from slimtune.tasks import get_task
from slimtune.training.config import TrainConfig
from slimtune.training.distributed import Ranks
from tests.conftest import (TASK_LABELS, build_classifier, make_tiny_bert, ner_sentences, sentiment_rows, write_conll,
                            write_tsv)

TOLERANCE = 1e-5
# Adam turns summation-order noise in near-zero gradients into steps of up to lr: a modest lr keeps it small
CONFIG = {"epochs": 1, "batch_size": 8, "lr": 1e-3, "patience": 0, "seed": 3}
# every registered method with its defaults, plus the options whose set-up or state is rank-sensitive
VARIANTS = [(name, {}) for name in sorted(available_methods())] + [
    ("subnetwork", {"selection": "fisher", "fisher_batches": "2"}),  # data-dependent mask from prepare()
    ("layers", {"layers": "1", "cache": "true"}),  # per-rank cache of the frozen block's outputs
    ("prefix", {"reparam": "true", "reparam_hidden": "16"}),  # trained through an MLP folded away on export
]


def _env() -> dict:
    return {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p), "OMP_NUM_THREADS": "1"}


def _max_difference(a_dir: Path, b_dir: Path) -> float:
    a, b = load_file(a_dir / "adapter.safetensors"), load_file(b_dir / "adapter.safetensors")
    assert a.keys() == b.keys()
    return max((a[k].float() - b[k].float()).abs().max().item() for k in a)


def _one_process(case: dict, out: Path) -> Path:
    """The case trained by this one process."""
    # trainer mechanics on toy data: the standard recipe (few_shot="off"), as the ranks run it
    train(TrainRequest(task=case["task"], method=case["method"], train_path=case["train"], dev_path=case["dev"],
                       out_dir=str(out), model=case["model"], options=case["options"],
                       config=TrainConfig(**case["config"]), few_shot="off"))
    return out


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("ddp")
    return {
        "root": root,
        "model": make_tiny_bert(root / "model", dropout=0.0),
        "classify": (write_tsv(root / "train.tsv", sentiment_rows(57, 0)), write_tsv(root / "dev.tsv", sentiment_rows(21, 1))),
        "ner": (write_conll(root / "train.conll", ner_sentences(57, 0)), write_conll(root / "dev.conll", ner_sentences(21, 1))),
    }


def _case(data, name: str, task: str, method: str, options: dict, **config) -> dict:
    train_path, dev_path = data[task]
    return {"name": name, "task": task, "method": method, "options": options, "train": train_path, "dev": dev_path,
            "model": data["model"], "out": str(data["root"] / "ddp" / name), "config": {**CONFIG, **config}}


def _cli_args(data) -> list[str]:
    train_path, dev_path = data["classify"]
    return ["train", "--method", "lora", "--train", train_path, "--dev", dev_path, "--model", data["model"],
            "--epochs", "2", "--batch-size", "8", "--lr", "5e-3", "--seed", "3", "--set", "r=4", "--few-shot", "off"]


@pytest.fixture(scope="module")
def two_ranks(data) -> dict:
    """Every case trained by 2 torchrun ranks in one launch (start-up is the slow part), run dirs by name."""
    cases = [_case(data, f"{name}-{i}", "classify", name, options) for i, (name, options) in enumerate(VARIANTS)]
    cases.append(_case(data, "ner-lora", "ner", "lora", {}, epochs=2))
    cases.append(_case(data, "adv-fgm", "classify", "lora", {}, adversarial="fgm", adv_epsilon=0.5))
    cases.append(_case(data, "adv-pgd-ner", "ner", "lora", {}, adversarial="pgd", adv_steps=2))
    # stopped at step 5 of 16 after a checkpoint at step 4; LoRA dropout checks that each rank's RNG comes back
    resume = {"epochs": 2, "checkpoint_every": 4}
    cases.append(_case(data, "whole", "classify", "lora", {"dropout": "0.1"}, **resume))
    cases.append({**_case(data, "resumed", "classify", "lora", {"dropout": "0.1"}, **resume), "interrupt_at": 5})
    spec = data["root"] / "spec.json"
    cli_out = data["root"] / "ddp" / "cli"
    spec.write_text(json.dumps({"model": data["model"], "cases": cases, "cli": _cli_args(data) + ["--out", str(cli_out)]}))
    # what `slimtune train --nproc 2` launches, with this worker for `slimtune` (see test_nproc_relaunches...)
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
                           "-m", "tests.training.ddp_worker", str(spec)], env=_env(), capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-4000:]
    return {case["name"]: case for case in cases}


def test_two_processes_train_the_adapter_one_process_trains(two_ranks, data, tmp_path):
    """`torchrun --nproc-per-node 2 -m slimtune train ...` against `slimtune train ...`, same global batch."""
    assert main(_cli_args(data) + ["--out", str(tmp_path / "one")]) == 0
    two = data["root"] / "ddp" / "cli"
    assert _max_difference(tmp_path / "one", two) < TOLERANCE
    one_log = (tmp_path / "one" / "metrics.jsonl").read_text().splitlines()
    two_log = (two / "metrics.jsonl").read_text().splitlines()
    assert len(two_log) == len(one_log) == 2  # written once (rank 0), one eval per epoch
    for a, b in zip(one_log, two_log):  # dev metrics from both ranks' shares equal the whole set's
        assert json.loads(a)["dev_accuracy"] == json.loads(b)["dev_accuracy"]
        assert json.loads(a)["dev_loss"] == pytest.approx(json.loads(b)["dev_loss"], abs=1e-5)
    assert json.loads((two / "metrics.json").read_text())["processes"] == 2


def test_nproc_relaunches_the_command_under_torchrun(monkeypatch):
    import torch.distributed.launcher.api as launcher

    launched = {}

    def fake_launch(config, entrypoint):
        def run(*args):
            launched.update(config=config, command=[entrypoint, *args], threads=os.environ["OMP_NUM_THREADS"])
        return run

    monkeypatch.setattr(launcher, "elastic_launch", fake_launch)
    monkeypatch.setenv("OMP_NUM_THREADS", "")  # so that the launcher's own setting is undone after the test
    monkeypatch.delenv("OMP_NUM_THREADS")
    assert main(["train", "--method", "lora", "--train", "t.tsv", "--nproc", "2", "--out", "x"]) == 0
    assert launched["command"] == [sys.executable, "-u", "-m", "slimtune", "train", "--method", "lora", "--train",
                                   "t.tsv", "--out", "x"]
    assert (launched["config"].nproc_per_node, launched["config"].max_nodes) == (2, 1)
    assert int(launched["threads"]) == max(1, len(os.sched_getaffinity(0)) // 2)


@pytest.mark.parametrize("index", range(len(VARIANTS)), ids=[f"{n}-{i}" for i, (n, _) in enumerate(VARIANTS)])
def test_every_method_trains_under_ddp_as_in_one_process(two_ranks, tmp_path, index):
    case = two_ranks[f"{VARIANTS[index][0]}-{index}"]
    assert _max_difference(_one_process(case, tmp_path / "one"), Path(case["out"])) < TOLERANCE


def test_ner_loss_is_weighted_by_labelled_tokens_across_ranks(two_ranks, tmp_path):
    case = two_ranks["ner-lora"]
    assert _max_difference(_one_process(case, tmp_path / "one"), Path(case["out"])) < TOLERANCE
    f1 = [json.loads(l)["dev_f1"] for l in (Path(case["out"]) / "metrics.jsonl").read_text().splitlines()]
    expected = [json.loads(l)["dev_f1"] for l in (tmp_path / "one" / "metrics.jsonl").read_text().splitlines()]
    assert f1 == expected


@pytest.mark.parametrize("name", ["adv-fgm", "adv-pgd-ner"])
def test_adversarial_training_under_ddp_as_in_one_process(two_ranks, tmp_path, name):
    """Each example's perturbation is normalised on its own, so sharding the batch leaves the step as it was."""
    case = two_ranks[name]
    assert _max_difference(_one_process(case, tmp_path / "one"), Path(case["out"])) < TOLERANCE


def test_a_resumed_distributed_run_equals_an_uninterrupted_one(two_ranks):
    resumed, whole = Path(two_ranks["resumed"]["out"]), Path(two_ranks["whole"]["out"])
    assert _max_difference(whole, resumed) < 1e-6
    assert (whole / "metrics.jsonl").read_text() == (resumed / "metrics.jsonl").read_text()


def test_ddp_sends_trainable_weights_and_leaves_frozen_ones_alone(two_ranks, data):
    rank0, rank1 = json.loads((data["root"] / "broadcast.json").read_text())
    assert rank1["trainable"] == rank0["trainable"]  # rank 0's value broadcast over rank 1's
    assert rank1["frozen"] != rank0["frozen"]  # never sent: every rank loads the same base


def test_shares_weighted_by_labelled_tokens_average_to_the_global_batch_gradient(tiny_model):
    """What DDP's averaging of the ranks' scaled losses amounts to, on a ner batch with uneven token counts."""
    from slimtune.data.batching import pad_batch
    from slimtune.data.word_windows import encode_words

    model, _, params, backbone = build_classifier(tiny_model, "lora", task="ner")
    model.eval()
    task = get_task("ner")
    index = {name: i for i, name in enumerate(TASK_LABELS["ner"])}
    sentences = ner_sentences(5, 0)
    features = encode_words([[w for w, _ in s] for s in sentences], backbone.tokenizer, backbone.max_length,
                            [[index[t] for _, t in s] for s in sentences])
    rows = list(range(len(features)))

    def gradients(loss):
        return torch.autograd.grad(loss, params, allow_unused=True)

    batch = pad_batch(features, 0)
    whole = gradients(task.loss(model(**batch), batch["labels"]))
    averaged = None
    for rank in range(2):
        ranks = Ranks(rank, 2)
        share = [features[i] for i in ranks.share(rows)]
        part = pad_batch(share, 0)
        scale = ranks.loss_scale(task.loss_units(share), task.loss_units(features))
        grads = gradients(task.loss(model(**part), part["labels"]) * scale)
        averaged = grads if averaged is None else [a + g for a, g in zip(averaged, grads)]
    for w, a in zip(whole, averaged):
        assert torch.allclose(w, a / 2, atol=1e-6)


def test_nproc_is_taken_out_of_the_relaunched_command():
    assert without_nproc(["train", "--nproc", "2", "--out", "x"]) == ["train", "--out", "x"]
    assert without_nproc(["train", "--nproc=2", "--npr", "3", "--out", "x"]) == ["train", "--out", "x"]


def test_a_global_batch_smaller_than_the_processes_is_refused(capsys):
    assert main(["train", "--method", "lora", "--train", "x.tsv", "--out", "x", "--batch-size", "2",
                 "--nproc", "4"]) == 2
    assert "global batch" in capsys.readouterr().err


def test_nproc_under_torchrun_is_refused(capsys, monkeypatch):
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    assert main(["train", "--method", "lora", "--train", "x.tsv", "--out", "x", "--nproc", "2"]) == 2
    assert "--nproc-per-node" in capsys.readouterr().err


def test_ranks_share_every_wth_row():
    assert [Ranks(r, 3).share(list(range(7))) for r in range(3)] == [[0, 3, 6], [1, 4], [2, 5]]
    assert Ranks(1, 2).share([9]) == []
    assert Ranks().share([4, 5]) == [4, 5]


def test_the_trainer_refuses_a_global_batch_smaller_than_the_world():
    from slimtune.training.trainer import Trainer

    with pytest.raises(SlimtuneError, match="global batch"):
        Trainer(None, None, None, [], TrainConfig(batch_size=1), Path("x"), 0, [], Ranks(0, 2))
