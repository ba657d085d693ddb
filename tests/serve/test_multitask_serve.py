"""Each task of a multi-task adapter is served by name, NAME.TASK, and predicts what it predicts when loaded alone."""

import pytest

from slimtune.runs.adapter_files import load_adapter
from slimtune.runs.multitask import MultiTrainRequest, train_multitask
from slimtune.tasks.multitask.specs import TaskSpec
from slimtune.training.config import TrainConfig
from tests.conftest import ner_sentences, sentiment_rows, write_conll, write_tsv
from tests.serve.conftest import running_server
from tests.serve.test_api import assert_same

TEXTS = ["the film was good", "anna went to paris"]


@pytest.fixture(scope="module")
def multi_dirs(tiny_model, tmp_path_factory):
    """A shared LoRA run (served in the shared base pass) and a per-task adapter run (served on its own copy)."""
    root = tmp_path_factory.mktemp("served-multi")
    specs = [TaskSpec("sst", "classify", write_tsv(root / "sst.tsv", sentiment_rows(40, 0))),
             TaskSpec("conll", "ner", write_conll(root / "ner.conll", ner_sentences(40, 0)))]
    dirs = {}
    for name, method, sharing in (("mt", "lora", "shared"), ("mtx", "adapter", "per-task")):
        dirs[name] = str(root / name)
        train_multitask(MultiTrainRequest(tasks=specs, method=method, sharing=sharing, out_dir=dirs[name],
                                          model=tiny_model, config=TrainConfig(epochs=1, batch_size=8, lr=1e-2)))
    return dirs


def test_each_task_is_served_by_name(multi_dirs):
    argv = [a for name, d in multi_dirs.items() for a in ("--adapter", f"{name}={d}")]
    with running_server(argv) as client:
        served = {a["name"]: a for a in client.get("/v1/adapters").json()["adapters"]}
        assert set(served) == {"mt.sst", "mt.conll", "mtx.sst", "mtx.conll"}
        assert served["mt.sst"]["serving"] == "shared" and served["mtx.conll"]["serving"] == "own copy"
        for name, directory in multi_dirs.items():
            for task in ("sst", "conll"):
                response = client.post("/v1/predict", json={"adapter": f"{name}.{task}", "inputs": TEXTS})
                assert response.status_code == 200, response.text
                assert response.json()["task"] == ("classify" if task == "sst" else "ner")
                loaded = load_adapter(directory, task_name=task)
                assert_same(response.json()["outputs"], loaded.task.predict(loaded, TEXTS, batch_size=8))
        unknown = client.post("/v1/predict", json={"adapter": "mt", "inputs": TEXTS})
        assert unknown.status_code == 404 and "mt.sst" in unknown.json()["detail"]
