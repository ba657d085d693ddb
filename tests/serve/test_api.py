"""The real server over HTTP: predictions equal each adapter alone, however requests are batched; adapter
management behind the admin token; every kind of bad input is a 4xx that says what is wrong."""

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from slimtune.runs.adapter_files import load_adapter
from slimtune.cli import main
from tests.serve.conftest import running_server

TOKEN = "s3cret-token"
TEXTS = ["the film was good", "dull plot and weak acting", "bob marley is of new york , and anna of paris",
         "Anna went to Rome."]


@pytest.fixture(scope="module")
def client(adapter_dirs):
    root = Path(next(iter(adapter_dirs.values()))).parent
    argv = [a for name, d in adapter_dirs.items() for a in ("--adapter", f"{name}={d}")]
    argv += ["--admin-token", TOKEN, "--allowed-dir", str(root), "--max-inputs", "8", "--max-chars", "200",
             "--max-wait-ms", "50", "--max-batch-size", "64"]
    with running_server(argv) as client:
        yield client


def predict(client, adapter: str, texts: list[str]) -> list[dict]:
    response = client.post("/v1/predict", json={"adapter": adapter, "inputs": texts})
    assert response.status_code == 200, response.text
    assert response.json()["adapter"] == adapter
    return response.json()["outputs"]


def assert_same(got: list[dict], want: list[dict]) -> None:
    """Same labels and entity spans; every score within 1e-5."""
    for g, w in zip(got, want, strict=True):
        if "scores" in w:
            assert g["label"] == w["label"]
            assert max(abs(g["scores"][k] - w["scores"][k]) for k in w["scores"]) < 1e-5
        else:
            assert [(e["type"], e["start"], e["end"]) for e in g["entities"]] == \
                   [(e["type"], e["start"], e["end"]) for e in w["entities"]]
            assert all(abs(a["score"] - b["score"]) < 1e-5 for a, b in zip(g["entities"], w["entities"]))
            assert g["tags"] == w["tags"]


def test_each_adapter_predicts_what_it_predicts_alone(client, adapter_dirs):
    for name, directory in adapter_dirs.items():
        loaded = load_adapter(directory)
        assert_same(predict(client, name, TEXTS), loaded.task.predict(loaded, TEXTS, batch_size=8))


def test_concurrent_mixed_requests_batch_together_and_equal_single_requests(client, adapter_dirs):
    names = list(adapter_dirs)
    single = {(name, text): predict(client, name, [text])[0] for name in names for text in TEXTS}
    before = batch_adapter_counts(client)
    requests = [(names[i % len(names)], TEXTS[i % len(TEXTS) :][:1 + i % 3]) for i in range(48)]
    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(lambda r: predict(client, *r), requests))
    for (name, texts), outputs in zip(requests, answers):
        assert_same(outputs, [single[name, text] for text in texts])
    after = batch_adapter_counts(client)
    assert after["passes"] > before["passes"]
    assert after["multi"] > before["multi"], "no forward pass ran rows of more than one adapter"


def batch_adapter_counts(client) -> dict[str, int]:
    """From /metrics: forward passes in all, and those holding rows of several adapters."""
    lines = client.get("/metrics").text.splitlines()
    value = {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1]) for line in lines if not line.startswith("#")}
    passes = value["slimtune_batch_adapters_count"]
    return {"passes": passes, "multi": passes - value['slimtune_batch_adapters_bucket{le="1"}']}


def test_listing_health_and_metrics(client, adapter_dirs):
    listing = client.get("/v1/adapters").json()
    assert [a["name"] for a in listing["adapters"]] == list(adapter_dirs)
    assert {a["name"]: a["serving"] for a in listing["adapters"]} == {
        "sst-qv": "shared", "sst-dense": "shared", "ner-qv": "shared", "sst-prefix": "own copy"}
    assert client.get("/health").json() == {"status": "ok", "adapters": 4}
    metrics = client.get("/metrics")
    assert metrics.headers["content-type"].startswith("text/plain; version=0.0.4")
    text = metrics.text
    assert 'slimtune_requests_total{route="/v1/predict",method="POST",status="200"}' in text
    assert 'slimtune_request_duration_seconds_bucket{route="/v1/predict",le="+Inf"}' in text
    assert "# TYPE slimtune_batch_rows histogram" in text and "slimtune_request_errors_total" in text


def test_adapters_load_and_unload_with_the_admin_token(client, adapter_dirs):
    auth = {"Authorization": f"Bearer {TOKEN}"}
    body = {"name": "extra", "path": "sst-dense"}  # relative to --allowed-dir
    assert client.post("/v1/adapters", json=body).status_code == 401
    wrong = client.post("/v1/adapters", json=body, headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 403 and wrong.json()["detail"] == "wrong admin token"
    loaded = client.post("/v1/adapters", json=body, headers=auth)
    assert loaded.status_code == 201 and loaded.json()["serving"] == "shared"
    assert_same(predict(client, "extra", TEXTS), predict(client, "sst-dense", TEXTS))
    again = client.post("/v1/adapters", json=body, headers=auth)
    assert again.status_code == 409 and "already loaded" in again.json()["detail"]
    assert client.delete("/v1/adapters/extra").status_code == 401
    assert client.delete("/v1/adapters/extra", headers=auth).json()["name"] == "extra"
    gone = client.post("/v1/predict", json={"adapter": "extra", "inputs": ["good"]})
    assert gone.status_code == 404 and "unknown adapter 'extra'" in gone.json()["detail"]
    assert client.delete("/v1/adapters/extra", headers=auth).status_code == 404
    assert_same(predict(client, "sst-qv", TEXTS[:2]), predict(client, "sst-qv", TEXTS[:2]))


@pytest.mark.parametrize("path,status,message", [
    ("../../etc", 403, "outside the allowed directory"),
    ("/etc", 403, "outside the allowed directory"),
    ("nowhere", 422, "no such adapter directory"),
    (".", 422, "not an adapter directory"),
    ("a\x00b", 403, "outside the allowed directory"),
])
def test_bad_adapter_paths_are_refused(client, path, status, message):
    response = client.post("/v1/adapters", json={"name": "bad", "path": path},
                           headers={"Authorization": f"Bearer {TOKEN}"})
    assert response.status_code == status and message in response.json()["detail"]


def test_a_link_out_of_the_allowed_directory_is_refused(client, adapter_dirs, tmp_path):
    root = Path(next(iter(adapter_dirs.values()))).parent
    (tmp_path / "outside").mkdir()
    (root / "escape").symlink_to(tmp_path / "outside")
    response = client.post("/v1/adapters", json={"name": "esc", "path": "escape"},
                           headers={"Authorization": f"Bearer {TOKEN}"})
    assert response.status_code == 403 and "outside the allowed directory" in response.json()["detail"]


def test_an_adapter_of_another_base_is_refused(client, adapter_dirs, other_tiny_model):
    from tests.serve.conftest import make_adapter

    root = Path(next(iter(adapter_dirs.values()))).parent
    make_adapter(root / "other-base", other_tiny_model, "classify", "lora", {}, seed=0)
    response = client.post("/v1/adapters", json={"name": "other", "path": "other-base"},
                           headers={"Authorization": f"Bearer {TOKEN}"})
    assert response.status_code == 422 and "trained on another base model" in response.json()["detail"]


@pytest.mark.parametrize("body,status,message", [
    ({"adapter": "nope", "inputs": ["good"]}, 404, "unknown adapter 'nope'; loaded: ner-qv, sst-dense"),
    ({"adapter": "sst-qv", "inputs": []}, 422, "at least 1 item"),
    ({"adapter": "sst-qv", "inputs": [""]}, 422, "at least 1 character"),
    ({"adapter": "sst-qv", "inputs": ["  \n"]}, 422, "text is empty or only whitespace"),
    ({"adapter": "sst-qv", "inputs": ["x" * 201]}, 422, "at most 200 characters"),
    ({"adapter": "sst-qv", "inputs": ["good"] * 9}, 422, "at most 8 items"),
    ({"adapter": "sst-qv", "inputs": "good"}, 422, "valid list"),
    ({"adapter": "sst-qv", "inputs": [1]}, 422, "valid string"),
    ({"adapter": 3, "inputs": ["good"]}, 422, "valid string"),
    ({"inputs": ["good"]}, 422, "Field required"),
    ({"adapter": "sst-qv", "inputs": ["good"], "extra": 1}, 422, "Extra inputs are not permitted"),
    ({"adapter": "sst-qv", "inputs": ["bad \ud800"]}, 422, "lone surrogate"),
    ([1, 2], 422, "valid dictionary"),
])
def test_bad_predict_requests_are_4xx_with_a_clear_message(client, body, status, message):
    response = client.post("/v1/predict", content=json.dumps(body), headers={"content-type": "application/json"})
    assert response.status_code == status
    assert message in json.dumps(response.json()["detail"])


@pytest.mark.parametrize("content,status,message", [
    (b'{"adapter": "sst-qv", "inputs": ["caf\xe9"]}', 400, "not valid UTF-8 (byte 37"),
    (b'{"adapter": "sst-qv", "inputs": [', 422, "JSON decode error"),
    (b"x" * 200_000, 413, "exceeds"),
])
def test_malformed_bodies(client, content, status, message):
    response = client.post("/v1/predict", content=content, headers={"content-type": "application/json"})
    assert response.status_code == status and message in json.dumps(response.json()["detail"])


def test_the_worker_survives_bad_requests(client):
    for body in ({"adapter": "sst-qv", "inputs": ["\ud800"]}, {"adapter": "sst-qv", "inputs": ["\x00\x01\u200b"]},
                 {"adapter": "ner-qv", "inputs": ["\u200b\u200b \ufeff"]}):
        assert client.post("/v1/predict", content=json.dumps(body),
                           headers={"content-type": "application/json"}).status_code in (200, 422)
    assert len(predict(client, "ner-qv", TEXTS)) == len(TEXTS)
    assert "status=\"5" not in client.get("/metrics").text


def test_management_is_off_without_a_token(tiny_model, monkeypatch):
    monkeypatch.delenv("SLIMTUNE_ADMIN_TOKEN", raising=False)
    with running_server(["--model", tiny_model]) as client:
        assert client.get("/v1/adapters").json()["adapters"] == []
        response = client.post("/v1/adapters", json={"name": "x", "path": "y"},
                               headers={"Authorization": "Bearer anything"})
        assert response.status_code == 403 and "--admin-token" in response.json()["detail"]


@pytest.mark.parametrize("argv,message", [
    (["--adapter", "noequals"], "--adapter expects NAME=DIR"),
    (["--adapter", "a b=x"], "adapter name 'a b'"),
    (["--adapter", "a=x", "--adapter", "a=y"], "adapter names must differ"),
    (["--adapter", "a=x", "--adapter", "b=y", "--merge"], "--merge serves exactly one adapter"),
    (["--max-batch-size", "0"], "--max-batch-size must be at least 1"),
    (["--max-new-tokens", "0"], "--max-new-tokens must be at least 1"),
    (["--adapter", "a=/no/such/dir"], "no such adapter directory"),
])
def test_bad_start_up_arguments(capsys, argv, message):
    assert main(["serve", *argv]) == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize("quiet", [False, True])
def test_one_access_log_line_per_request_unless_quiet(adapter_dirs, quiet):
    import logging

    records = []
    handler = logging.Handler()
    handler.emit = records.append
    logger = logging.getLogger("slimtune.serve.access")
    logger.addHandler(handler)
    try:
        argv = ["--adapter", f"sst-qv={adapter_dirs['sst-qv']}"] + (["--quiet"] if quiet else [])
        with running_server(argv) as client:
            predict(client, "sst-qv", ["good"])
            client.get("/health")
    finally:
        logger.removeHandler(handler)
    lines = [r.getMessage() for r in records]
    if quiet:
        assert lines == []
    else:
        assert len(lines) == 2 and lines[0].startswith("POST /v1/predict 200 ") and 'adapter="sst-qv"' in lines[0]
        assert lines[1].startswith("GET /health 200 ") and lines[1].endswith("adapter=-")
