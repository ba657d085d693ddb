"""The adapter store: more adapters in --adapter-dir than --max-loaded-adapters, requests cycling through them
answer what each adapter answers alone while at most that many stay loaded; hits, misses and evictions are counted
in /metrics and /v1/models; vLLM's load/unload endpoints need the admin token."""

from pathlib import Path

import pytest

from slimtune.runs.adapter_files import load_adapter
from tests.serve.conftest import make_adapter, running_server

TOKEN = "store-token"
TEXTS = ["the film was good", "dull plot and weak acting"]
NAMES = [f"s{i}" for i in range(4)]


@pytest.fixture(scope="module")
def store(tiny_model, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("store")
    for i, name in enumerate(NAMES):
        make_adapter(root / name, tiny_model, "classify", "lora", {"r": str(2 + i)}, seed=20 + i)
    return root


@pytest.fixture(scope="module")
def client(store, tiny_model):
    argv = ["--model", tiny_model, "--adapter-dir", str(store), "--max-loaded-adapters", "2",
            "--admin-token", TOKEN, "--allowed-dir", str(store), "--quiet"]
    with running_server(argv) as client:
        yield client


def counts(client) -> dict[str, float]:
    return {line.split()[0]: float(line.split()[1]) for line in client.get("/metrics").text.splitlines()
            if line.startswith("slimtune_store_")}


def test_cycling_through_more_adapters_than_fit_answers_right_with_memory_bounded(client, store):
    alone = {}
    for name in NAMES:
        loaded = load_adapter(store / name)
        alone[name] = loaded.task.predict(loaded, TEXTS, batch_size=8)
    for name in NAMES * 2:
        response = client.post("/v1/predict", json={"adapter": name, "inputs": TEXTS})
        assert response.status_code == 200, response.text
        for got, want in zip(response.json()["outputs"], alone[name], strict=True):
            assert got["label"] == want["label"]
            assert max(abs(got["scores"][k] - want["scores"][k]) for k in want["scores"]) < 1e-5
        assert len(client.get("/v1/adapters").json()["adapters"]) <= 2
    client.post("/v1/predict", json={"adapter": NAMES[-1], "inputs": TEXTS})  # loaded: a hit
    stats = counts(client)
    assert stats["slimtune_store_misses_total"] == 8 and stats["slimtune_store_evictions_total"] == 6
    assert stats["slimtune_store_hits_total"] >= 1 and stats["slimtune_store_adapters_loaded"] == 2
    listed = client.get("/v1/models").json()
    assert listed["adapter_store"]["evictions"] == 6 and listed["adapter_store"]["max_loaded"] == 2
    assert {m["id"] for m in listed["data"] if m.get("loaded") is False} == set(NAMES) - {"s2", "s3"}


def test_unknown_names_and_escapes_are_404(client):
    for name in ("nope", "..", "s0/../s1"):
        response = client.post("/v1/predict", json={"adapter": name, "inputs": ["good"]})
        assert response.status_code in (404, 422), response.text
    for name in ("../s0", "/etc", "s0\x00", "s0/../s1", "s0/../../s1"):  # OpenAI's `model` is any string
        response = client.post("/v1/embeddings", json={"model": name, "input": "good"})
        assert response.status_code == 404 and response.json()["error"]["code"] == "model_not_found", name


def test_vllm_load_and_unload_endpoints(client, store):
    body = {"lora_name": "pinned", "lora_path": "s1"}
    assert client.post("/v1/load_lora_adapter", json=body).status_code == 401
    loaded = client.post("/v1/load_lora_adapter", json=body, headers={"Authorization": f"Bearer {TOKEN}"})
    assert loaded.status_code == 200 and "added successfully" in loaded.text
    assert client.post("/v1/predict", json={"adapter": "pinned", "inputs": TEXTS}).status_code == 200
    for name in NAMES:  # store traffic does not evict an adapter loaded by an admin
        client.post("/v1/predict", json={"adapter": name, "inputs": TEXTS})
    assert "pinned" in {a["name"] for a in client.get("/v1/adapters").json()["adapters"]}
    gone = client.post("/v1/unload_lora_adapter", json={"lora_name": "pinned"},
                       headers={"Authorization": f"Bearer {TOKEN}"})
    assert gone.status_code == 200 and "removed successfully" in gone.text
    missing = client.post("/v1/unload_lora_adapter", json={"lora_name": "pinned"},
                          headers={"Authorization": f"Bearer {TOKEN}"})
    assert missing.status_code == 404 and "error" in missing.json()
    outside = client.post("/v1/load_lora_adapter", json={"lora_name": "x", "lora_path": "/etc"},
                          headers={"Authorization": f"Bearer {TOKEN}"})
    assert outside.status_code == 403 and "outside the allowed directory" in outside.json()["error"]["message"]
