"""POST /v1/explain over HTTP: the same attributions as `slimtune explain` (the library, and the CLI's --json) for
shared-base LoRA adapters and an own-copy one; every bad body is a 4xx with one message."""

import json
import sys

import pytest

pytest.importorskip("captum")

from slimtune.cli import main
from slimtune.explain.attributions import explain
from slimtune.runs.adapter_files import load_adapter
from tests.serve.conftest import make_adapter, running_server
from tests.serve.test_multitask_serve import multi_dirs  # noqa: F401  (fixture: multi-task runs)

TEXT = "bob marley is of new york , and anna of paris"


@pytest.fixture(scope="module")
def multilabel_dir(tiny_model, adapter_dirs):
    from pathlib import Path

    return make_adapter(Path(adapter_dirs["sst-qv"]).parent / "tags", tiny_model, "multilabel", "lora", {"r": "2"},
                        seed=5)


@pytest.fixture(scope="module")
def client(adapter_dirs, chat_dir, multilabel_dir):
    argv = [a for name, d in adapter_dirs.items() for a in ("--adapter", f"{name}={d}")]
    argv += ["--adapter", f"chat={chat_dir}", "--adapter", f"tags={multilabel_dir}", "--quiet"]
    with running_server(argv) as client:
        yield client


def explain_over_http(client, body: dict) -> dict:
    response = client.post("/v1/explain", json=body)
    assert response.status_code == 200, response.text
    return response.json()


def assert_same_explanations(got: list[dict], want: list[dict]) -> None:
    for g, w in zip(got, want, strict=True):
        assert g["text"] == w["text"]
        assert [e["target"] for e in g["explanations"]] == [e["target"] for e in w["explanations"]]
        for ge, we in zip(g["explanations"], w["explanations"]):
            assert ge["tokens"] == we["tokens"]
            assert ge["attributions"] == pytest.approx(we["attributions"], abs=1e-5)
            assert (ge["score"], ge["baseline_score"]) == pytest.approx((we["score"], we["baseline_score"]), abs=1e-5)


@pytest.mark.parametrize("name", ["sst-qv", "ner-qv", "sst-prefix", "tags"])
def test_attributions_equal_the_library_for_shared_and_own_copy_adapters(client, adapter_dirs, multilabel_dir, name):
    texts = ["the film was good", TEXT]
    body = explain_over_http(client, {"adapter": name, "inputs": texts, "n_steps": 16})
    directory = multilabel_dir if name == "tags" else adapter_dirs[name]
    want = [{**r, "explanations": [e.as_dict() for e in r["explanations"]]}
            for r in explain(load_adapter(directory), texts, 16)]
    assert body["adapter"] == name and body["n_steps"] == 16
    assert sum(len(o["explanations"]) for o in body["outputs"]) > 0, "nothing explained: the check proves little"
    assert_same_explanations(body["outputs"], want)
    if name == "ner-qv":
        predicted = client.post("/v1/predict", json={"adapter": name, "inputs": texts}).json()["outputs"]
        for output, prediction in zip(body["outputs"], predicted, strict=True):
            got, want = output["prediction"]["entities"], prediction["entities"]
            assert [(e["type"], e["start"], e["end"]) for e in got] == [(e["type"], e["start"], e["end"]) for e in want]
            assert [e["score"] for e in got] == pytest.approx([e["score"] for e in want], abs=1e-5)


def test_equal_to_the_cli_json_and_a_chosen_target(client, adapter_dirs, capsys):
    assert main(["explain", "--adapter", adapter_dirs["sst-qv"], "--steps", "12", "--json", "--target", "neg",
                 "the film was good"]) == 0
    cli = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    body = explain_over_http(client, {"adapter": "sst-qv", "inputs": ["the film was good"], "n_steps": 12,
                                      "target": "neg"})
    assert body["outputs"][0]["explanations"][0]["target"] == "neg"
    assert_same_explanations(body["outputs"], cli)


def test_each_call_is_deterministic_and_matches_its_sum(client):
    body = {"adapter": "sst-dense", "inputs": ["dull plot and weak acting"], "n_steps": 64}
    first, second = explain_over_http(client, body), explain_over_http(client, body)
    assert first == second
    [e] = first["outputs"][0]["explanations"]
    assert sum(e["attributions"]) == pytest.approx(e["score"] - e["baseline_score"] + e["delta"], abs=1e-5)


@pytest.mark.parametrize("body, status, words", [
    ({"adapter": "chat", "inputs": ["hello"]}, 422, "serves classify, multilabel and ner"),
    ({"adapter": "nope", "inputs": ["x"]}, 404, "unknown adapter"),
    ({"adapter": "sst-qv", "inputs": ["x"] * 9}, 422, "at most 8"),
    ({"adapter": "sst-qv", "inputs": ["x"], "n_steps": 201}, 422, "less than or equal to 200"),
    ({"adapter": "sst-qv", "inputs": ["x"], "n_steps": 0}, 422, "greater than or equal to 1"),
    ({"adapter": "sst-qv", "inputs": ["x"], "n_steps": "10"}, 422, "valid integer"),
    ({"adapter": "sst-qv", "inputs": ["x"], "target": "joy"}, 422, "not a label of this adapter"),
    ({"adapter": "ner-qv", "inputs": ["x"], "target": "PER"}, 422, "ner explains each entity"),
    ({"adapter": "sst-qv", "inputs": [" "]}, 422, "empty or only whitespace"),
    ({"adapter": "sst-qv", "inputs": []}, 422, "at least 1"),
    ({"adapter": "sst-qv", "texts": ["x"]}, 422, "Field required"),
    ({"adapter": "ner-qv", "inputs": ["word " * 400]}, 422, "too long to explain"),
])
def test_bad_bodies_are_4xx_with_a_message(client, body, status, words):
    response = client.post("/v1/explain", json=body)
    assert response.status_code == status, response.text
    assert words in json.dumps(response.json())


def test_not_json_is_a_4xx(client):
    response = client.post("/v1/explain", content=b"{", headers={"content-type": "application/json"})
    assert 400 <= response.status_code < 500


def test_a_server_without_captum_says_so_with_a_4xx(client, monkeypatch):
    monkeypatch.setitem(sys.modules, "captum", None)  # `import captum` now raises ImportError
    response = client.post("/v1/explain", json={"adapter": "sst-qv", "inputs": ["x"]})
    assert response.status_code == 422 and "captum is not installed" in response.json()["detail"]


def test_an_int8_served_adapter_is_refused_with_a_4xx(adapter_dirs):
    with running_server(["--adapter", f"sst-qv={adapter_dirs['sst-qv']}", "--inference-int8", "int8",
                         "--quiet"]) as int8_client:
        response = int8_client.post("/v1/explain", json={"adapter": "sst-qv", "inputs": ["x"]})
    assert response.status_code == 422 and "int8" in response.json()["detail"]


def test_each_task_of_a_multi_task_adapter_explains_as_loaded_alone(multi_dirs):  # noqa: F811
    argv = [a for name, d in multi_dirs.items() for a in ("--adapter", f"{name}={d}")] + ["--quiet"]
    texts = ["the film was good", "anna went to paris"]
    with running_server(argv) as multi_client:
        for name, directory in multi_dirs.items():
            for task in ("sst", "conll"):
                body = explain_over_http(multi_client, {"adapter": f"{name}.{task}", "inputs": texts, "n_steps": 8})
                want = [{**r, "explanations": [e.as_dict() for e in r["explanations"]]}
                        for r in explain(load_adapter(directory, task_name=task), texts, 8)]
                assert_same_explanations(body["outputs"], want)
