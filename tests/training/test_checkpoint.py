"""Checkpoints hold no pickle, never run one planted in them, and belong to the settings they were written for."""

import json
import pickle
import re
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from slimtune.errors import SlimtuneError
from slimtune.ownership import work_dir_for
from slimtune.runs.train import TrainRequest, train
from slimtune.training.config import TrainConfig
from tests.conftest import Interrupt, interrupt_at, sentiment_rows, write_tsv

SRC = Path(__file__).resolve().parents[2] / "src"


def _request(tiny_model, toy_data, out, resume=False, overwrite=False, **config):
    cfg = TrainConfig(**{"epochs": 2, "batch_size": 8, "lr": 5e-3, "patience": 0, "seed": 7, "checkpoint_every": 5,
                         **config})
    return TrainRequest(task="classify", method="lora", train_path=toy_data["train"], dev_path=toy_data["dev"],
                        out_dir=str(out), model=tiny_model, options={"r": "4", "dropout": "0.1"}, config=cfg,
                        resume=resume, overwrite=overwrite, few_shot="supervised")  # the trainer's checkpoints


def _interrupted(tiny_model, toy_data, out, step=7) -> Path:
    """A run stopped at `step` (after its checkpoint at 5); returns its checkpoint directory."""
    with pytest.raises(Interrupt):
        train(_request(tiny_model, toy_data, out), step_callbacks=[interrupt_at(step)])
    return work_dir_for(out) / "checkpoint"


class CreatesFile:
    """Unpickling this creates `path`: the proof that a pickle was executed."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return open, (self.path, "w")


def test_a_checkpoint_is_safetensors_and_json_only(tiny_model, toy_data, tmp_path):
    checkpoint = _interrupted(tiny_model, toy_data, tmp_path / "run")
    for path in checkpoint.iterdir():
        if path.suffix == ".safetensors":
            load_file(path)
        else:
            json.loads(path.read_text())
    assert {p.suffix for p in checkpoint.iterdir()} == {".safetensors", ".json", ""}  # "" is the .slimtune marker
    tensors = load_file(checkpoint / "state.safetensors")
    assert tensors["torch_rng.0"].dtype == torch.uint8 and any(k.endswith(".exp_avg") for k in tensors)


def test_a_planted_pickle_is_never_executed_and_resume_still_equals_the_whole_run(tiny_model, toy_data, tmp_path):
    train(_request(tiny_model, toy_data, tmp_path / "whole"))
    checkpoint = _interrupted(tiny_model, toy_data, tmp_path / "run")
    proof = tmp_path / "pwned"
    for name in ("optimizer.pt", "trainable.pt", "rng.bin", "pytorch_model.bin"):
        (checkpoint / name).write_bytes(pickle.dumps(CreatesFile(proof)))
    (checkpoint / "progress.pkl").write_bytes(pickle.dumps(CreatesFile(proof)))
    train(_request(tiny_model, toy_data, tmp_path / "run", resume=True))
    assert not proof.exists()
    whole = load_file(tmp_path / "whole" / "adapter.safetensors")
    resumed = load_file(tmp_path / "run" / "adapter.safetensors")
    assert whole.keys() == resumed.keys() and all(torch.equal(whole[k], resumed[k]) for k in whole)


def test_a_checkpoint_file_replaced_by_a_pickle_is_refused_without_running_it(tiny_model, toy_data, tmp_path):
    checkpoint = _interrupted(tiny_model, toy_data, tmp_path / "run")
    proof = tmp_path / "pwned"
    (checkpoint / "state.safetensors").write_bytes(pickle.dumps(CreatesFile(proof)))
    with pytest.raises(SlimtuneError, match="damaged or incomplete checkpoint"):
        train(_request(tiny_model, toy_data, tmp_path / "run", resume=True))
    assert not proof.exists()


@pytest.mark.parametrize("name, content", [("progress.json", '{"step": "7"}'), ("progress.json", "[1]"),
                                           ("state.json", "{}"), ("trainable.safetensors", "\x00" * 9),
                                           ("settings.json", "null")])
def test_a_damaged_checkpoint_is_one_clear_error(tiny_model, toy_data, tmp_path, name, content):
    checkpoint = _interrupted(tiny_model, toy_data, tmp_path / "run")
    (checkpoint / name).write_text(content)
    with pytest.raises(SlimtuneError, match="damaged or incomplete checkpoint|does not record its settings"):
        train(_request(tiny_model, toy_data, tmp_path / "run", resume=True))


def test_no_source_file_unpickles():
    """No torch.load without weights_only=True, and no pickle module, anywhere in the package."""
    for path in SRC.rglob("*.py"):
        text = path.read_text()
        assert not re.search(r"^\s*(import|from)\s+(c?pickle|dill|joblib)\b", text, re.M), path
        for call in re.findall(r"torch\.load\([^)]*\)", text):
            assert "weights_only=True" in call, (path, call)


@pytest.mark.parametrize("change, key", [({"lr": 1e-3}, "lr"), ({"seed": 8}, "seed"),
                                         ({"batch_size": 16}, "batch_size")])
def test_resume_with_other_settings_is_refused_naming_them(tiny_model, toy_data, tmp_path, change, key):
    _interrupted(tiny_model, toy_data, tmp_path / "run")
    with pytest.raises(SlimtuneError, match=rf"other settings than the checkpoint's \({key}: "):
        train(_request(tiny_model, toy_data, tmp_path / "run", resume=True, **change))
    train(_request(tiny_model, toy_data, tmp_path / "run", resume=True, checkpoint_every=3))  # not a setting


def test_resume_after_overwrite_with_other_settings_is_refused(tiny_model, toy_data, tmp_path):
    """The issue's case: --overwrite with other settings stopped before its first checkpoint, then --resume,
    silently continued the previous run's checkpoint."""
    train(_request(tiny_model, toy_data, tmp_path / "run"))
    previous = load_file(tmp_path / "run" / "adapter.safetensors")
    other = {**toy_data, "train": write_tsv(tmp_path / "other.tsv", sentiment_rows(96, 5))}
    with pytest.raises(Interrupt):
        train(_request(tiny_model, other, tmp_path / "run", overwrite=True, seed=9), step_callbacks=[interrupt_at(2)])
    with pytest.raises(SlimtuneError, match=r"\(seed: 7 then, 9 now; train_data: "):
        train(_request(tiny_model, other, tmp_path / "run", resume=True, seed=9))
    kept = load_file(tmp_path / "run" / "adapter.safetensors")  # the previous run, whole
    assert kept.keys() == previous.keys() and all(torch.equal(kept[k], previous[k]) for k in kept)


def test_a_torn_last_log_line_of_a_killed_run_is_dropped_on_resume(tiny_model, toy_data, tmp_path):
    train(_request(tiny_model, toy_data, tmp_path / "whole"))
    _interrupted(tiny_model, toy_data, tmp_path / "run")
    with open(work_dir_for(tmp_path / "run") / "metrics.jsonl", "a") as log:
        log.write('{"type": "train", "st')  # the append a kill -9 cut short
    train(_request(tiny_model, toy_data, tmp_path / "run", resume=True))
    strip = lambda run: [l.split('"lr"')[0] for l in (tmp_path / run / "metrics.jsonl").read_text().splitlines()]
    assert strip("run") == strip("whole")
