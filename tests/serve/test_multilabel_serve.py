"""A multilabel adapter is served by POST /v1/predict and answers what `predict` answers."""

from slimtune.runs.adapter_files import load_adapter
from tests.serve.conftest import make_adapter, running_server


def test_label_sets_are_served(tiny_model, tmp_path):
    import json

    directory = make_adapter(tmp_path / "tags", tiny_model, "multilabel", "lora", {"r": "2"}, seed=5)
    config_path = tmp_path / "tags" / "adapter_config.json"
    config = json.loads(config_path.read_text())
    config_path.write_text(json.dumps({**config, "threshold": 0.45}))
    texts = ["the film was good", "dull plot"]
    loaded = load_adapter(directory)
    expected = loaded.task.predict(loaded, texts, 8)
    with running_server(["--adapter", f"tags={directory}"]) as client:
        response = client.post("/v1/predict", json={"adapter": "tags", "inputs": texts})
    assert response.status_code == 200, response.text
    outputs = response.json()["outputs"]
    assert [o["labels"] for o in outputs] == [e["labels"] for e in expected]
    assert all(set(o["scores"]) == {"a", "b", "c"} for o in outputs)
