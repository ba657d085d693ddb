"""`slimtune serve` with peft adapter directories: given at start and loaded over POST /v1/adapters, a peft LoRA
adapter is served in the shared-base LoRA batches like slimtune's own, predicting what it predicts alone."""

import pytest

pytest.importorskip("peft")

from tests.runs.formats.test_peft_import import make_peft_adapter  # noqa: E402
from tests.serve.conftest import make_adapter, running_server  # noqa: E402

TOKEN = "peft-token"
TEXTS = ["anna went to rome", "bob marley is of new york , and carla of paris"]


def test_served_peft_adapters_batch_with_slimtune_ones(tmp_path, tiny_model, tiny_lm, monkeypatch):
    from slimtune.runs.adapter_files import load_adapter

    monkeypatch.setenv("SLIMTUNE_CACHE", str(tmp_path / "cache"))
    own = make_adapter(tmp_path / "own", tiny_model, "ner", "lora", {"r": "3"}, seed=2)
    make_peft_adapter(tiny_model, "ner", "lora", tmp_path / "peft")  # its logits equal peft's: test_peft_import
    make_peft_adapter(tiny_model, "ner", "prompt", tmp_path / "peft-prompt")
    make_peft_adapter(tiny_lm, "causal-lm", "lora", tmp_path / "peft-chat")
    argv = ["--adapter", f"own={own}", "--adapter", f"peft={tmp_path / 'peft'}", "--adapter",
            f"chat={tmp_path / 'peft-chat'}", "--admin-token", TOKEN, "--allowed-dir", str(tmp_path)]
    with running_server(argv) as client:
        response = client.post("/v1/adapters", json={"name": "prompt", "path": str(tmp_path / "peft-prompt")},
                               headers={"Authorization": f"Bearer {TOKEN}"})
        assert response.status_code == 201, response.text
        serving = {a["name"]: a["serving"] for a in client.get("/v1/adapters").json()["adapters"]}
        assert serving["peft"] == serving["own"] == "shared" and serving["prompt"] != "shared"
        served = client.post("/v1/predict", json={"adapter": "peft", "inputs": TEXTS}).json()["outputs"]
        generated = client.post("/v1/generate", json={"adapter": "chat", "prompts": ["is it good?"],
                                                      "max_new_tokens": 4})
        assert generated.status_code == 200, generated.text
    loaded = load_adapter(tmp_path / "peft")
    assert [o["tags"] for o in served] == [p["tags"] for p in loaded.task.predict(loaded, TEXTS, batch_size=8)]


def test_the_adapter_store_serves_a_peft_directory_on_first_use(tmp_path, tiny_model, monkeypatch):
    from slimtune.runs.adapter_files import load_adapter

    monkeypatch.setenv("SLIMTUNE_CACHE", str(tmp_path / "cache"))
    store = tmp_path / "store"
    make_adapter(store / "own", tiny_model, "ner", "lora", {"r": "3"}, seed=2)
    make_peft_adapter(tiny_model, "ner", "lora", store / "peft")
    argv = ["--model", tiny_model, "--adapter-dir", str(store), "--max-loaded-adapters", "1",
            "--allowed-dir", str(tmp_path)]
    with running_server(argv) as client:
        for name in ("peft", "own", "peft"):  # one slot: each request evicts the other adapter
            response = client.post("/v1/predict", json={"adapter": name, "inputs": TEXTS})
            assert response.status_code == 200, response.text
            loaded = load_adapter(store / name)
            assert [o["tags"] for o in response.json()["outputs"]] == [
                p["tags"] for p in loaded.task.predict(loaded, TEXTS, batch_size=8)]
    assert (store / "own" / "adapter.safetensors").is_file()  # eviction unloads, never deletes
