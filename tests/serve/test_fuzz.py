"""Schemathesis against the running server's own OpenAPI schema: whatever it sends, valid or not by the
schema, no 5xx comes back. Bounded: a few dozen cases per operation and mode."""

import json
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error

from tests.serve.conftest import running_server

TOKEN = "fuzz-token"


@pytest.fixture(scope="module")
def api_schema(adapter_dirs, chat_dir):
    root = Path(next(iter(adapter_dirs.values()))).parent
    argv = [a for name in ("sst-qv", "ner-qv", "sst-prefix") for a in ("--adapter", f"{name}={adapter_dirs[name]}")]
    with running_server(argv + ["--adapter", f"chat={chat_dir}", "--admin-token", TOKEN,
                                "--allowed-dir", str(root / "sst-qv"), "--max-inputs", "4", "--max-chars", "64",
                                "--max-new-tokens", "4", "--max-wait-ms", "1"]) as client:
        yield schemathesis.openapi.from_url(f"{client.base_url}/openapi.json"), client


@pytest.mark.parametrize("mode", [schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE])
def test_no_input_gives_a_server_error(api_schema, mode):
    operations = [result.ok() for result in api_schema[0].get_all_operations()]
    assert {op.label for op in operations} >= {"POST /v1/predict", "POST /v1/generate", "POST /v1/adapters",
                                               "DELETE /v1/adapters/{name}"}
    for operation in operations:
        if not mode.is_positive and not list(operation.iter_parameters()) and not operation.body:
            continue  # nothing in the request that could break the schema (GET /health, /metrics...)

        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(max_examples=15, deadline=None, database=None, suppress_health_check=list(HealthCheck))
        def call(case):
            case.call_and_validate(headers={"Authorization": f"Bearer {TOKEN}"}, checks=[not_a_server_error],
                                   timeout=30)

        call()


@pytest.mark.parametrize("adapter", ["sst-qv", "ner-qv", "sst-prefix"])
def test_any_unicode_text_is_predicted_or_refused_cleanly(api_schema, adapter):
    """The schema cannot name a loaded adapter, so the model path gets its own fuzz: arbitrary Unicode texts."""
    client = api_schema[1]

    @given(texts=st.lists(st.text(min_size=1, max_size=64), min_size=1, max_size=4))
    @settings(max_examples=15, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    def call(texts):
        response = client.post("/v1/predict", json={"adapter": adapter, "inputs": texts})
        assert response.status_code in (200, 422), response.text
        if response.status_code == 200:
            assert len(response.json()["outputs"]) == len(texts)

    call()


def test_any_generate_request_is_answered_or_refused_cleanly(api_schema):
    """The same for POST /v1/generate with the causal adapter: any Unicode prompts, any option values in or out
    of bounds (near-zero temperatures, huge seeds, a top-p of 1e-300, floats where integers go...)."""
    client = api_schema[1]
    number = st.one_of(st.integers(-2**70, 2**70), st.floats(allow_nan=True, allow_infinity=True), st.booleans())
    options = st.fixed_dictionaries({}, optional={
        "max_new_tokens": st.one_of(st.integers(0, 5), number), "sample": st.one_of(st.booleans(), number),
        "temperature": st.one_of(st.floats(0.01, 100), number), "top_p": st.one_of(st.floats(1e-300, 1), number),
        "top_k": st.one_of(st.integers(0, 100), number), "seed": st.one_of(st.integers(0, 2**63 - 1), number)})

    @given(prompts=st.lists(st.text(min_size=1, max_size=64), min_size=1, max_size=4), options=options)
    @settings(max_examples=25, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    def call(prompts, options):
        response = client.post("/v1/generate", content=json.dumps({"adapter": "chat", "prompts": prompts, **options}),
                               headers={"content-type": "application/json"})
        assert response.status_code in (200, 422), response.text
        if response.status_code == 200:
            assert len(response.json()["outputs"]) == len(prompts)

    call()
