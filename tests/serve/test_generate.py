"""POST /v1/generate over real HTTP: a causal-lm adapter (tiny Llama) served next to a classify one (tiny BERT)
answers what `generate_texts` answers with the adapter loaded alone; bad requests are 4xx naming the problem."""

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from slimtune.runs.adapter_files import load_adapter
from slimtune.tasks.generation import GenerationOptions, generate_texts
from tests.serve.conftest import running_server

TOKEN = "gen-token"
PROMPTS = ["is it good? great film", "is it good? dull play", "hello"]
MAX_BATCH = 32  # the server's --max-batch-size default: prompts per generate call


@pytest.fixture(scope="module")
def client(adapter_dirs, chat_dir):
    root = Path(chat_dir).parent
    argv = ["--adapter", f"sst-qv={adapter_dirs['sst-qv']}", "--adapter", f"chat={chat_dir}",
            "--admin-token", TOKEN, "--allowed-dir", str(root), "--max-inputs", "4", "--max-chars", "300",
            "--max-new-tokens", "16"]
    with running_server(argv) as client:
        yield client


def generate(client, body: dict) -> list[str]:
    response = client.post("/v1/generate", json=body)
    assert response.status_code == 200, response.text
    assert response.json()["adapter"] == body["adapter"]
    return [output["text"] for output in response.json()["outputs"]]


def test_greedy_answers_equal_the_adapter_alone_and_repeat(client, chat_dir):
    loaded = load_adapter(chat_dir)
    alone = generate_texts(loaded.model, PROMPTS, GenerationOptions(max_new_tokens=8), batch_size=MAX_BATCH)
    assert any(alone), "the adapter answers nothing: the comparison would prove little"
    body = {"adapter": "chat", "prompts": PROMPTS, "max_new_tokens": 8}
    assert generate(client, body) == alone
    with ThreadPoolExecutor(4) as pool:  # alongside predictions: same answers
        answers = list(pool.map(lambda i: generate(client, body) if i % 2 else
                                client.post("/v1/predict", json={"adapter": "sst-qv", "inputs": ["good"]}).json(),
                                range(6)))
    assert all(answer == alone for answer in answers[1::2])
    assert all(answer["outputs"][0]["label"] in ("neg", "pos") for answer in answers[::2])


def test_seeded_sampling_is_reproducible(client):
    settings = {"max_new_tokens": 6, "temperature": 0.7, "top_p": 0.9, "top_k": 50}
    body = {"adapter": "chat", "prompts": PROMPTS[:2], "sample": True, **settings}
    first = generate(client, {**body, "seed": 3})
    assert generate(client, {**body, "seed": 3}) == first
    assert generate(client, {**body, "seed": 4}) != first


def test_listing_and_metrics_show_the_causal_adapter(client, chat_dir, tiny_lm, tiny_model):
    adapters = {a["name"]: a for a in client.get("/v1/adapters").json()["adapters"]}
    assert adapters["chat"]["task"] == "causal-lm" and adapters["chat"]["serving"] == "shared"
    assert adapters["chat"]["base_model"] == tiny_lm and adapters["sst-qv"]["base_model"] == tiny_model
    assert adapters["sst-qv"]["serving"] == "shared" and adapters["chat"]["inference_int8"] is None
    generate(client, {"adapter": "chat", "prompts": ["hi"], "max_new_tokens": 2})
    text = client.get("/metrics").text
    assert 'slimtune_requests_total{route="/v1/generate",method="POST",status="200"}' in text
    counts = {line.split()[0]: float(line.split()[1]) for line in text.splitlines() if line.startswith("slimtune_gen")}
    assert counts["slimtune_generated_prompts_total"] >= 1 and counts["slimtune_generated_tokens_total"] >= 1


def test_causal_adapters_load_and_unload_at_run_time(client, chat_dir):
    auth = {"Authorization": f"Bearer {TOKEN}"}
    loaded = client.post("/v1/adapters", json={"name": "chat2", "path": "chat"}, headers=auth)
    assert loaded.status_code == 201 and loaded.json()["task"] == "causal-lm"
    body = {"prompts": PROMPTS[:1], "max_new_tokens": 4}
    assert generate(client, {"adapter": "chat2", **body}) == generate(client, {"adapter": "chat", **body})
    assert client.delete("/v1/adapters/chat2", headers=auth).status_code == 200
    assert client.post("/v1/generate", json={"adapter": "chat2", **body}).status_code == 404


@pytest.mark.parametrize("body,status,message", [
    ({"adapter": "nope", "prompts": ["hi"]}, 404, "unknown adapter 'nope'"),
    ({"adapter": "sst-qv", "prompts": ["hi"]}, 422, "classify adapter: POST /v1/generate serves causal-lm"),
    ({"adapter": "chat", "prompts": []}, 422, "at least 1 item"),
    ({"adapter": "chat", "prompts": ["hi"] * 5}, 422, "at most 4 items"),
    ({"adapter": "chat", "prompts": [" "]}, 422, "text is empty or only whitespace"),
    ({"adapter": "chat", "prompts": ["x" * 300]}, 422, "exceeds the model's window of 256 tokens"),
    ({"adapter": "chat", "prompts": ["hi"], "max_new_tokens": 0}, 422, "greater than or equal to 1"),
    ({"adapter": "chat", "prompts": ["hi"], "max_new_tokens": 17}, 422, "less than or equal to 16"),
    ({"adapter": "chat", "prompts": ["hi"], "max_new_tokens": "8"}, 422, "valid integer"),
    ({"adapter": "chat", "prompts": ["hi"], "sample": "yes"}, 422, "valid boolean"),
    ({"adapter": "chat", "prompts": ["hi"], "temperature": 0}, 422, "greater than or equal to 0.01"),
    ({"adapter": "chat", "prompts": ["hi"], "temperature": 1e9}, 422, "less than or equal to 100"),
    ({"adapter": "chat", "prompts": ["hi"], "top_p": 0}, 422, "greater than 0"),
    ({"adapter": "chat", "prompts": ["hi"], "top_p": 1.5}, 422, "less than or equal to 1"),
    ({"adapter": "chat", "prompts": ["hi"], "top_k": -1}, 422, "greater than or equal to 0"),
    ({"adapter": "chat", "prompts": ["hi"], "seed": -1}, 422, "greater than or equal to 0"),
    ({"adapter": "chat", "prompts": ["hi"], "seed": 2**64}, 422, "less than or equal to"),
    ({"adapter": "chat", "prompts": ["hi"], "stream": True}, 422, "Extra inputs are not permitted"),
])
def test_bad_generate_requests_are_4xx_with_a_clear_message(client, body, status, message):
    response = client.post("/v1/generate", content=json.dumps(body), headers={"content-type": "application/json"})
    assert response.status_code == status, response.text
    assert message in json.dumps(response.json()["detail"])


def test_predict_with_a_causal_adapter_points_to_generate(client):
    response = client.post("/v1/predict", json={"adapter": "chat", "inputs": ["hi"]})
    assert response.status_code == 422 and "send its prompts to POST /v1/generate" in response.json()["detail"]
