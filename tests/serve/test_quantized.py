"""`serve --inference-int8 int8`: the shared base runs in dynamic int8 under fp32 LoRA deltas (mixed batches still
work), own copies are quantized as `load_adapter(..., quantize="int8")` does; scores stay within the int8
tolerance of tests/compression of the fp32 adapter alone."""

from concurrent.futures import ThreadPoolExecutor

import pytest

from slimtune.runs.adapter_files import load_adapter
from slimtune.tasks.generation import GenerationOptions, generate_texts
from tests.compression.test_dynamic_int8 import INT8_TOLERANCE
from tests.serve.conftest import running_server
from tests.serve.test_api import TEXTS, batch_adapter_counts, predict

CLASSIFIERS = ("sst-qv", "sst-dense", "sst-prefix")


@pytest.fixture(scope="module")
def client(adapter_dirs, chat_dir):
    argv = [a for name in CLASSIFIERS for a in ("--adapter", f"{name}={adapter_dirs[name]}")]
    with running_server(argv + ["--adapter", f"chat={chat_dir}", "--inference-int8", "int8", "--max-wait-ms", "50"]) as c:
        yield c


def test_int8_scores_stay_within_tolerance_of_fp32(client, adapter_dirs):
    adapters = {a["name"]: a for a in client.get("/v1/adapters").json()["adapters"]}
    assert {name: (a["serving"], a["inference_int8"]) for name, a in adapters.items()} == {
        "sst-qv": ("shared", "int8"), "sst-dense": ("shared", "int8"), "sst-prefix": ("own copy", "int8"),
        "chat": ("own copy", "int8")}
    for name in CLASSIFIERS:
        loaded = load_adapter(adapter_dirs[name])
        fp32 = loaded.task.predict(loaded, TEXTS, batch_size=8)
        gaps = [abs(g["scores"][k] - w["scores"][k]) for g, w in zip(predict(client, name, TEXTS), fp32, strict=True)
                for k in w["scores"]]
        assert 0 < max(gaps) < INT8_TOLERANCE, name  # not 0: the int8 layers really ran


def test_mixed_batches_run_on_the_int8_base(client):
    """Dynamic int8 scales activations per pass, so a row's scores shift a little with the rows batched with it:
    within the int8 tolerance, not bit for bit as in fp32."""
    single = {name: predict(client, name, TEXTS[:2]) for name in ("sst-qv", "sst-dense")}
    before = batch_adapter_counts(client)
    requests = [("sst-qv", "sst-dense")[i % 2] for i in range(16)]
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda name: predict(client, name, TEXTS[:2]), requests))
    for name, outputs in zip(requests, answers):
        assert max(abs(o["scores"][k] - s["scores"][k]) for o, s in zip(outputs, single[name])
                   for k in s["scores"]) < INT8_TOLERANCE
    assert batch_adapter_counts(client)["multi"] > before["multi"], "no pass ran rows of both adapters"


def test_int8_generation_equals_the_adapter_loaded_int8(client, chat_dir):
    prompts = ["is it good? great film", "hello"]
    response = client.post("/v1/generate", json={"adapter": "chat", "prompts": prompts, "max_new_tokens": 6})
    assert response.status_code == 200, response.text
    # an own copy answers one prompt at a time (dynamic int8 scales per pass, so batch size matters)
    alone = generate_texts(load_adapter(chat_dir, quantize="int8").model, prompts, GenerationOptions(max_new_tokens=6),
                           batch_size=1)
    assert [o["text"] for o in response.json()["outputs"]] == alone
