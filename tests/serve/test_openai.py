"""The OpenAI-compatible endpoints through the official `openai` client against the real server: chat and
completions, whole and streamed, `model` choosing between two adapters and the bare base; the model list;
OpenAI's error object; embeddings of the encoder base and of an adapter; and continuous batching: concurrent
greedy requests of mixed adapters share decoding steps and answer what each request gets alone."""

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch

from slimtune.runs.adapter_files import load_adapter
from slimtune.tasks.generation import GenerationOptions, generate_texts
from tests.serve.conftest import running_server

openai = pytest.importorskip("openai")

PROMPTS = ["is it good? great film", "hello", "name a colour", "is it good? dull play"]


@pytest.fixture(scope="module")
def served(adapter_dirs, chat_dir, chat_b_dir, tiny_lm):
    argv = ["--adapter", f"sst-qv={adapter_dirs['sst-qv']}", "--adapter", f"sst-prefix={adapter_dirs['sst-prefix']}",
            "--adapter", f"chat={chat_dir}", "--adapter", f"chat-b={chat_b_dir}", "--causal-model", tiny_lm,
            "--max-new-tokens", "16", "--max-wait-ms", "1"]
    with running_server(argv) as client:
        yield client, openai.OpenAI(base_url=f"{client.base_url}/v1", api_key="unused", max_retries=0)


def test_models_lists_bases_and_adapters(served, tiny_lm, tiny_model):
    _, api = served
    models = {m.id: m for m in api.models.list().data}
    assert set(models) == {tiny_model, tiny_lm, "sst-qv", "sst-prefix", "chat", "chat-b"}
    assert models["chat"].parent == tiny_lm and models[tiny_lm].parent is None


def test_chat_answers_equal_the_adapter_alone_and_model_picks_the_adapter(served, chat_dir, chat_b_dir):
    _, api = served
    answers = {}
    for name, directory in (("chat", chat_dir), ("chat-b", chat_b_dir)):
        reply = api.chat.completions.create(model=name, messages=[{"role": "user", "content": PROMPTS[0]}],
                                            max_tokens=8, temperature=0)
        alone = generate_texts(load_adapter(directory).model, PROMPTS[:1], GenerationOptions(max_new_tokens=8))
        assert reply.choices[0].message.content == alone[0] and alone[0]
        assert reply.choices[0].finish_reason in ("stop", "length") and reply.object == "chat.completion"
        assert reply.usage.completion_tokens <= 8 and reply.usage.prompt_tokens > 5
        assert reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens
        answers[name] = alone[0]
    assert answers["chat"] != answers["chat-b"]


def test_streamed_chat_is_the_same_answer_in_chunks(served):
    _, api = served
    messages = [{"role": "system", "content": "be brief"}, {"role": "user", "content": PROMPTS[1]}]
    whole = api.chat.completions.create(model="chat", messages=messages, max_tokens=12, temperature=0)
    chunks = list(api.chat.completions.create(model="chat", messages=messages, max_tokens=12, temperature=0,
                                              stream=True, stream_options={"include_usage": True}))
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == whole.choices[0].message.content
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == whole.choices[0].finish_reason
    assert chunks[-1].usage.completion_tokens == whole.usage.completion_tokens
    assert len([c for c in chunks if c.choices and c.choices[0].delta.content]) > 1


def test_sse_ends_with_done(served):
    client, _ = served
    with client.stream("POST", "/v1/completions", json={"model": "chat", "prompt": "hi", "max_tokens": 3,
                                                         "stream": True}) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        events = [line for line in response.iter_lines() if line]
    assert events[-1] == "data: [DONE]" and all(e.startswith("data: ") for e in events)


def test_completions_of_an_adapter_and_the_bare_base(served, tiny_lm):
    _, api = served
    texts = {}
    for model in ("chat", tiny_lm):
        whole = api.completions.create(model=model, prompt="the film was", max_tokens=6, temperature=0)
        streamed = "".join(c.choices[0].text for c in api.completions.create(
            model=model, prompt="the film was", max_tokens=6, temperature=0, stream=True))
        assert whole.object == "text_completion" and whole.choices[0].text == streamed
        texts[model] = whole.choices[0].text
    assert texts["chat"] != texts[tiny_lm]


def test_stop_strings_and_seeded_sampling(served):
    _, api = served
    full = api.completions.create(model="chat", prompt="once", max_tokens=10, temperature=0).choices[0].text
    assert len(full) > 3
    stop = full[2:4]
    cut = api.completions.create(model="chat", prompt="once", max_tokens=10, temperature=0, stop=[stop]).choices[0]
    assert cut.text == full[: full.index(stop)] and cut.finish_reason == "stop"
    sampled = [api.completions.create(model="chat", prompt="once", max_tokens=8, temperature=0.9, seed=seed)
               .choices[0].text for seed in (1, 1, 2)]
    assert sampled[0] == sampled[1] != sampled[2]


def test_a_prompt_of_token_ids_completes_as_its_text_does(served, tiny_lm):
    """OpenAI's API allows a prompt of token ids; some clients (evaluation harnesses) send prompts so."""
    from transformers import AutoTokenizer

    _, api = served
    ids = AutoTokenizer.from_pretrained(tiny_lm)("the film was")["input_ids"]
    as_text = api.completions.create(model="chat", prompt="the film was", max_tokens=6, temperature=0)
    for prompt in (ids, [ids]):
        as_ids = api.completions.create(model="chat", prompt=prompt, max_tokens=6, temperature=0)
        assert as_ids.choices[0].text == as_text.choices[0].text
        assert as_ids.usage.prompt_tokens == as_text.usage.prompt_tokens == len(ids)
    for asked in ({"logprobs": 2}, {"echo": True}):  # would change the answer's shape: refused, not ignored
        with pytest.raises(openai.BadRequestError) as refused:
            api.completions.create(model="chat", prompt="the film was", max_tokens=3, **asked)
        assert next(iter(asked)) in str(refused.value.body)
    with pytest.raises(openai.BadRequestError):
        api.chat.completions.create(model="chat", messages=[{"role": "user", "content": "hi"}], logprobs=True)
    for bad in ([10**9], [-1], [ids, ids], [], [[]]):
        with pytest.raises(openai.BadRequestError) as refused:
            api.completions.create(model="chat", prompt=bad, max_tokens=3)
        assert "prompt" in str(refused.value.body)


def test_errors_are_openai_error_objects(served):
    client, api = served
    with pytest.raises(openai.NotFoundError) as missing:
        api.chat.completions.create(model="nope", messages=[{"role": "user", "content": "hi"}])
    assert missing.value.status_code == 404 and missing.value.code == "model_not_found"
    body = client.post("/v1/chat/completions", json={"model": "nope", "messages": [{"role": "user",
                                                                                   "content": "hi"}]}).json()
    assert body["error"]["type"] == "invalid_request_error" and "nope" in body["error"]["message"]
    with pytest.raises(openai.BadRequestError) as wrong:
        api.chat.completions.create(model="sst-qv", messages=[{"role": "user", "content": "hi"}])
    assert "does not generate text" in wrong.value.message
    with pytest.raises(openai.BadRequestError) as too_many:
        api.chat.completions.create(model="chat", messages=[{"role": "user", "content": "hi"}], max_tokens=17)
    assert too_many.value.status_code == 400 and "max_tokens" in str(too_many.value.body)
    with pytest.raises(openai.BadRequestError):
        api.completions.create(model="chat", prompt="hi", n=2)


def test_embeddings_of_the_base_and_of_an_adapter(served, tiny_model, adapter_dirs):
    _, api = served
    texts = ["a gripping film", "a dull one"]
    base = api.embeddings.create(model=tiny_model, input=texts)  # the client asks for base64 and decodes it
    floats = api.embeddings.create(model=tiny_model, input=texts, encoding_format="float")
    assert len(base.data) == 2 and base.usage.prompt_tokens > 4
    assert torch.allclose(torch.tensor(base.data[0].embedding), torch.tensor(floats.data[0].embedding))
    loaded = load_adapter(adapter_dirs["sst-qv"])
    batch = loaded.backbone.tokenizer(texts[:1], return_tensors="pt")
    want = loaded.model.backbone(**batch).last_hidden_state.mean(1)[0]
    got = torch.tensor(api.embeddings.create(model="sst-qv", input=texts[0]).data[0].embedding)
    assert got.shape == want.shape == torch.Size([len(base.data[0].embedding)])
    assert (got - want).abs().max() < 1e-5
    assert (got - torch.tensor(base.data[0].embedding)).abs().max() > 1e-4  # the adapter's updates applied
    own = torch.tensor(api.embeddings.create(model="sst-prefix", input=texts[0]).data[0].embedding)
    assert own.shape == got.shape and torch.isfinite(own).all()
    with pytest.raises(openai.BadRequestError):
        api.embeddings.create(model="chat", input="hi")
    width = len(base.data[0].embedding)
    assert len(api.embeddings.create(model=tiny_model, input="hi", dimensions=width).data[0].embedding) == width
    for wrong in (width // 2, 0):  # a size the client relies on is refused, never silently ignored
        with pytest.raises(openai.BadRequestError) as refused:
            api.embeddings.create(model=tiny_model, input="hi", dimensions=wrong)
        assert "dimensions" in str(refused.value.body)


def test_concurrent_greedy_requests_share_decoding_steps_and_equal_sequential_ones(served, tiny_lm):
    client, api = served
    requests = [(("chat", "chat-b", tiny_lm)[i % 3], PROMPTS[i % len(PROMPTS)], 6 + i % 5) for i in range(12)]

    def ask(request):
        model, prompt, tokens = request
        return api.chat.completions.create(model=model, messages=[{"role": "user", "content": prompt}],
                                           max_tokens=tokens, temperature=0).choices[0].message.content

    sequential = [ask(r) for r in requests]
    before = _multi_row_steps(client)
    with ThreadPoolExecutor(8) as pool:
        concurrent = list(pool.map(ask, requests))
    assert concurrent == sequential
    assert _multi_row_steps(client) > before, "no decoding step ran rows of several requests"


def _multi_row_steps(client) -> float:
    """Decoding steps that ran more than one row of more than one adapter so far."""
    lines = client.get("/metrics").text.splitlines()
    count = {line.split()[0]: float(line.split()[1]) for line in lines if line.startswith("slimtune_decode_adapters")}
    return count["slimtune_decode_adapters_count"] - count['slimtune_decode_adapters_bucket{le="1"}']



def test_an_own_copy_causal_adapter_streams_the_answer_it_gives_alone(tiny_lm, chat_dir):
    from tests.serve.conftest import make_adapter

    run = make_adapter(Path(chat_dir).parent / "chat-houlsby", tiny_lm, "causal-lm", "adapter", {}, seed=13)
    with running_server(["--adapter", f"own={run}", "--quiet"]) as client:
        api = openai.OpenAI(base_url=f"{client.base_url}/v1", api_key="unused", max_retries=0)
        assert client.get("/v1/adapters").json()["adapters"][0]["serving"] == "own copy"
        messages = [{"role": "user", "content": PROMPTS[0]}]
        whole = api.chat.completions.create(model="own", messages=messages, max_tokens=8, temperature=0)
        streamed = "".join(c.choices[0].delta.content or "" for c in api.chat.completions.create(
            model="own", messages=messages, max_tokens=8, temperature=0, stream=True) if c.choices)
    alone = generate_texts(load_adapter(run).model, PROMPTS[:1], GenerationOptions(max_new_tokens=8))
    assert whole.choices[0].message.content == streamed == alone[0] and alone[0]
