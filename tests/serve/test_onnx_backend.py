"""`serve --backend onnxruntime`: classify and ner adapters run merged in ONNX Runtime and answer as the PyTorch
adapter does (within ONNX's float tolerance); causal-lm adapters stay on PyTorch; what a merged graph cannot give
(sentence vectors) is a 400."""

import pytest

from slimtune.runs.adapter_files import load_adapter
from tests.serve.conftest import running_server
from tests.serve.test_api import TEXTS, predict

pytest.importorskip("onnxruntime")
SERVED = ("sst-qv", "ner-qv", "sst-prefix")


@pytest.fixture(scope="module")
def client(adapter_dirs, chat_dir):
    argv = [a for name in SERVED for a in ("--adapter", f"{name}={adapter_dirs[name]}")]
    with running_server(argv + ["--adapter", f"chat={chat_dir}", "--backend", "onnxruntime"]) as c:
        yield c


def test_adapters_answer_as_in_pytorch(client, adapter_dirs):
    adapters = {a["name"]: a["serving"] for a in client.get("/v1/adapters").json()["adapters"]}
    assert adapters == {"sst-qv": "merged, ONNX Runtime", "ner-qv": "merged, ONNX Runtime",
                        "sst-prefix": "merged, ONNX Runtime", "chat": "shared"}
    for name in SERVED:
        loaded = load_adapter(adapter_dirs[name])
        want = loaded.task.predict(loaded, TEXTS, batch_size=8)
        got = predict(client, name, TEXTS)
        assert [g["label"] if "label" in g else [e["type"] for e in g["entities"]] for g in got] == \
               [w["label"] if "label" in w else [e["type"] for e in w["entities"]] for w in want]
        scores = [(g["scores"][k], w["scores"][k]) for g, w in zip(got, want) for k in w.get("scores", {})]
        scores += [(a["score"], b["score"]) for g, w in zip(got, want) for a, b in
                   zip(g.get("entities", []), w.get("entities", []))]
        assert scores and max(abs(a - b) for a, b in scores) < 1e-4, name


def test_embeddings_of_an_onnx_adapter_are_refused(client):
    response = client.post("/v1/embeddings", json={"model": "sst-qv", "input": ["good"]})
    assert response.status_code == 400 and "ONNX Runtime" in response.text


def test_explaining_an_onnx_adapter_is_refused(client):
    pytest.importorskip("captum")
    response = client.post("/v1/explain", json={"adapter": "sst-qv", "inputs": ["good"]})
    assert response.status_code == 422 and "computes no gradients" in response.json()["detail"]


def test_backend_and_pytorch_int8_exclude_each_other(adapter_dirs):
    from slimtune.errors import SlimtuneError
    from slimtune.serve.registry import AdapterRegistry

    with pytest.raises(SlimtuneError, match="--backend onnxruntime-int8"):
        AdapterRegistry(None, "int8", "onnxruntime")
