"""OpenAI-compatible endpoints on the same server: `model` picks an adapter (or a base), as in vLLM and LoRAX.

GET /v1/models; POST /v1/completions and /v1/chat/completions for causal-LM
adapters and bases (streamed as Server-Sent Events in OpenAI's chunk format
with `stream: true`); POST /v1/embeddings for the encoder base and its
adapters (the mean-pooled sentence vector); vLLM's POST /v1/load_lora_adapter
and /v1/unload_lora_adapter behind the admin token. Errors on these routes are
OpenAI's error object (see `openai_error`).
"""

import base64
import json
import time
import uuid

import numpy as np
from fastapi import Depends, FastAPI, Request
from fastapi.responses import PlainTextResponse, StreamingResponse

from slimtune.data.instructions import encode_text, prompt_text
from slimtune.errors import SlimtuneError
from slimtune.serve import openai_schemas as oa
from slimtune.serve.decoding import Sampling
from slimtune.serve.engine import Job
from slimtune.serve.served import ONNX, UnknownAdapter

OPENAI_PATHS = frozenset({"/v1/models", "/v1/completions", "/v1/chat/completions", "/v1/embeddings",
                          "/v1/load_lora_adapter", "/v1/unload_lora_adapter"})
ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
               404: "invalid_request_error", 409: "invalid_request_error", 413: "invalid_request_error",
               422: "invalid_request_error"}
DEFAULT_COMPLETION_TOKENS = 16  # OpenAI's default max_tokens for /v1/completions


class ModelNotFound(UnknownAdapter):
    """No adapter or base by the name a request's `model` gives."""


def openai_error(status: int, message: str, code: str | None = None, param: str | None = None) -> dict:
    """OpenAI's error object."""
    return {"error": {"message": message, "type": ERROR_TYPES.get(status, "server_error"), "param": param,
                      "code": code}}


def add_openai_routes(app: FastAPI, server, require_admin) -> None:
    limits = server.settings.limits
    ChatRequest = oa.chat_request_model(limits)
    CompletionRequest = oa.completion_request_model(limits)
    EmbeddingRequest = oa.embedding_request_model(limits)
    registry, store = server.registry, server.store

    @app.get("/v1/models", summary="The bases and adapters a request's `model` can name (OpenAI)")
    async def models():
        created = int(server.started)
        data = []
        if registry.base is not None:
            data.append(_model(registry.base_spec, created, None, kind="encoder base"))
        data += [_model(spec, created, None, kind="causal-lm base") for spec in registry.lm_bases.bases]
        for adapter in registry.adapters.values():
            data.append(_model(adapter.name, created, adapter.base_model, kind=f"{adapter.task.name} adapter",
                               serving=adapter.serving, loaded=True))
        loaded = set(registry.adapters)
        data += [_model(name, created, None, kind="adapter in the store", loaded=False)
                 for name in store.available() if name not in loaded]
        return {"object": "list", "data": data, "adapter_store": store.stats()}

    @app.post("/v1/completions", summary="Continue a prompt (OpenAI completions)")
    async def completions(body: CompletionRequest, request: Request):
        single = isinstance(body.prompt, str) or (body.prompt and isinstance(body.prompt[0], int))  # text or ids
        prompts = [body.prompt] if single else body.prompt
        if len(prompts) != 1:
            raise SlimtuneError("prompt: send one prompt per request (n=1)")
        target = await _generation_target(server, body.model, request)
        return await _answer(server, target, body, _prompt_ids(target.tokenizer, prompts[0]), chat=False)

    @app.post("/v1/chat/completions", summary="Answer a conversation through the chat template (OpenAI chat)")
    async def chat_completions(body: ChatRequest, request: Request):
        try:
            messages = [{"role": m.role, "content": m.text()} for m in body.messages]
        except ValueError as e:
            raise SlimtuneError(f"messages: {e}") from None
        target = await _generation_target(server, body.model, request)
        ids = encode_text(target.tokenizer, prompt_text(target.tokenizer, messages))["input_ids"]
        return await _answer(server, target, body, ids, chat=True)

    @app.post("/v1/embeddings", summary="Mean-pooled sentence vectors of the encoder base or an adapter (OpenAI)")
    async def embeddings(body: EmbeddingRequest, request: Request):
        texts = body.input if isinstance(body.input, list) else [body.input]
        if not 1 <= len(texts) <= limits.max_inputs:
            raise SlimtuneError(f"input: send 1 to {limits.max_inputs} texts")
        request.state.adapter = body.model
        if registry.base is not None and body.model == registry.base_spec:
            target = registry.encoder_base_target()
        else:
            target = await _resolve(store, body.model)
            if target.generates:
                raise SlimtuneError(f"model {body.model!r} is a causal-lm adapter: embeddings come from the encoder "
                                    "base and its adapters")
            if target.serving == ONNX:
                raise SlimtuneError(f"model {body.model!r} runs in ONNX Runtime as one merged graph that ends in its "
                                    "task head: it gives predictions, not sentence vectors (serve with --backend "
                                    "pytorch for those)")
        features = [_encoder_features(target.tokenizer, text, target.max_length) for text in texts]
        async with store.held(target):
            vectors = await server.batcher.submit(Job(target, features, pooled=True), len(features))
        if body.dimensions is not None and body.dimensions != vectors[0].shape[-1]:  # asked for, so not ignored
            raise SlimtuneError(f"dimensions: model {body.model!r} gives {vectors[0].shape[-1]}-dimensional vectors "
                                f"and does not shorten them; omit dimensions or send {vectors[0].shape[-1]}")
        data = [{"object": "embedding", "index": i, "embedding": _encoded(vector.float().numpy(), body.encoding_format)}
                for i, vector in enumerate(vectors)]
        tokens = sum(len(f["input_ids"]) for f in features)
        return {"object": "list", "data": data, "model": body.model,
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}

    @app.post("/v1/load_lora_adapter", dependencies=[Depends(require_admin)], response_class=PlainTextResponse,
              summary="Load an adapter at run time (vLLM's endpoint; admin token)")
    async def load_lora_adapter(body: oa.LoadLoRARequest):
        from slimtune.serve.app import allowed_path

        await store.load(body.lora_name, allowed_path(server.settings.allowed_dir, body.lora_path))
        return PlainTextResponse(f"Success: LoRA adapter '{body.lora_name}' added successfully.")

    @app.post("/v1/unload_lora_adapter", dependencies=[Depends(require_admin)], response_class=PlainTextResponse,
              summary="Unload an adapter (vLLM's endpoint; admin token)")
    async def unload_lora_adapter(body: oa.UnloadLoRARequest):
        await store.unload(body.lora_name)
        return PlainTextResponse(f"Success: LoRA adapter '{body.lora_name}' removed successfully.")


def _prompt_ids(tokenizer, prompt: str | list[int]) -> list[int]:
    """A completion prompt's token ids: the text tokenised, or the ids as sent (as OpenAI's API allows and some
    clients, evaluation harnesses among them, send them: already tokenised), each within the vocabulary."""
    if isinstance(prompt, str):
        return tokenizer(prompt)["input_ids"]
    vocabulary = len(tokenizer)  # once: a slow tokenizer's len() builds its whole vocabulary
    outside = [i for i in prompt if i >= vocabulary]
    if outside:
        raise SlimtuneError(f"prompt: token id {outside[0]} is outside the model's vocabulary of {vocabulary}")
    return list(prompt)


def _model(name: str, created: int, parent: str | None, **extra) -> dict:
    return {"id": name, "object": "model", "created": created, "owned_by": "slimtune", "root": parent or name,
            "parent": parent, **extra}


async def _resolve(store, name: str):
    try:
        return await store.resolve(name)
    except UnknownAdapter as e:
        raise ModelNotFound(f"The model '{name}' does not exist. {e}") from None


async def _generation_target(server, name: str, request: Request):
    """The causal-LM base or adapter called `name`."""
    request.state.adapter = name
    base = server.registry.lm_bases.bases.get(name)
    if base is not None:
        return base
    adapter = await _resolve(server.store, name)
    if not adapter.generates:
        raise SlimtuneError(f"model {name!r} is a {adapter.task.name} adapter: it does not generate text; use "
                            "POST /v1/predict (or /v1/embeddings for its sentence vectors)")
    return adapter


async def _answer(server, target, body, ids: list[int], chat: bool):
    """The completion, whole or streamed."""
    default = server.settings.limits.max_new_tokens if chat else DEFAULT_COMPLETION_TOKENS
    max_tokens = body.max_completion_tokens or body.max_tokens or min(default, server.settings.limits.max_new_tokens)
    if len(ids) + max_tokens > target.max_length:
        raise SlimtuneError(f"the prompt is {len(ids)} tokens; with max_tokens {max_tokens} it exceeds the model's "
                            f"context of {target.max_length} tokens")
    stops = [body.stop] if isinstance(body.stop, str) else list(body.stop or [])
    sampling = Sampling(max_tokens, body.temperature, body.top_p, 0, body.seed)
    kind = "chat.completion" if chat else "text_completion"
    head = {"id": f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex}", "created": int(time.time()),
            "model": body.model}
    held = server.store.held(target)
    await held.__aenter__()
    answer = server.answering.start(target, ids, sampling, stops)
    if not body.stream:
        try:
            text = await answer.whole()
        finally:
            await held.__aexit__(None, None, None)
        server.metrics.observe_generation(1, answer.completion_tokens)
        choice = ({"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": answer.finish_reason}
                  if chat else {"index": 0, "text": text, "finish_reason": answer.finish_reason, "logprobs": None})
        return {**head, "object": kind, "choices": [choice], "usage": _usage(answer)}
    include_usage = bool(body.stream_options and body.stream_options.include_usage)
    events = _events(server, answer, held, head, kind + ".chunk" if chat else kind, chat, include_usage)
    return StreamingResponse(events, media_type="text/event-stream", headers={"cache-control": "no-cache"})


async def _events(server, answer, held, head: dict, kind: str, chat: bool, include_usage: bool):
    """Server-Sent Events: OpenAI's chunks, then `data: [DONE]`."""

    def chunk(delta: str | None, finish: str | None, role: bool = False) -> str:
        if chat:
            content = {"role": "assistant", "content": ""} if role else ({} if delta is None else {"content": delta})
            choice = {"index": 0, "delta": content, "finish_reason": finish}
        else:
            choice = {"index": 0, "text": delta or "", "finish_reason": finish, "logprobs": None}
        return _sse({**head, "object": kind, "choices": [choice]})

    try:
        if chat:
            yield chunk(None, None, role=True)
        async for piece in answer.pieces():
            yield chunk(piece, None)
        yield chunk(None, answer.finish_reason)
        if include_usage:
            yield _sse({**head, "object": kind, "choices": [], "usage": _usage(answer)})
        server.metrics.observe_generation(1, answer.completion_tokens)
    except Exception as e:  # the status line is sent already: the error goes in the stream
        yield _sse(openai_error(500 if not isinstance(e, SlimtuneError) else 400, str(e)))
    finally:
        answer.seq.cancelled = True  # also when the client went away mid-stream: its row leaves the batch
        await held.__aexit__(None, None, None)
    yield "data: [DONE]\n\n"


def _sse(payload: dict) -> str:
    return f"data: {json.dumps(payload, ensure_ascii=True, separators=(',', ':'), allow_nan=False)}\n\n"


def _usage(answer) -> dict:
    return {"prompt_tokens": answer.prompt_tokens, "completion_tokens": answer.completion_tokens,
            "total_tokens": answer.prompt_tokens + answer.completion_tokens}


def _encoder_features(tokenizer, text: str, max_length: int) -> dict:
    encoded = tokenizer(text, truncation=True, max_length=max_length)
    return {k: list(v) for k, v in encoded.items() if k in ("input_ids", "attention_mask", "token_type_ids")}


def _encoded(vector: np.ndarray, encoding: str):
    if encoding == "base64":
        return base64.b64encode(vector.astype("<f4").tobytes()).decode("ascii")
    return [float(x) for x in vector]
