"""The HTTP API: predictions with classify/ner adapters and their explanations, generation with causal-LM adapters
and bases, the OpenAI-compatible endpoints, adapter management behind a bearer token, health, metrics, offline docs
and a playground page.

Every route group is added by its own function over one `Server`; predictions
and generation each have their own engine, and share the registry, the adapter
store, the one model thread and the metrics. Errors a client can fix are 4xx
with a `detail` saying what is wrong (OpenAI's error object on its routes).
"""

import asyncio
import secrets
import time
from dataclasses import dataclass, field
from importlib.resources import files
from pathlib import Path

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, PlainTextResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi_offline import FastAPIOffline

from slimtune.errors import SlimtuneError
from slimtune.serve import schemas
from slimtune.serve.batcher import MicroBatcher
from slimtune.serve.decoding import ContinuousBatcher, Sampling
from slimtune.serve.engine import Engine, Job
from slimtune.serve.explaining import check_explainable, explain_served
from slimtune.serve.generator import Answering
from slimtune.serve.guards import BodyGuard
from slimtune.serve.metrics import CONTENT_TYPE, ServerMetrics
from slimtune.serve.middleware import OfflinePages, RequestMetrics, SafeJSONResponse
from slimtune.serve.openai_api import OPENAI_PATHS, ModelNotFound, add_openai_routes, openai_error
from slimtune.serve.paths import allowed_base, allowed_path
from slimtune.serve.registry import AdapterRegistry
from slimtune.serve.served import AdapterConflict, AdapterRefused, PathRefused, UnknownAdapter
from slimtune.serve.store import AdapterStore
from slimtune.tasks.generation import chat_prompt_ids


class WrongEndpoint(SlimtuneError):
    """A causal-LM adapter sent to /v1/predict, or a classify/ner one to /v1/generate."""


STATUS = {UnknownAdapter: 404, ModelNotFound: 404, AdapterConflict: 409, PathRefused: 403, AdapterRefused: 422}


@dataclass
class ServeSettings:
    limits: schemas.Limits = field(default_factory=schemas.Limits)
    admin_token: str | None = None
    allowed_dir: Path = field(default_factory=Path.cwd)
    max_batch_size: int = 32
    max_wait_ms: float = 5.0
    mixed_batches: bool = True
    body_timeout: float = 30.0  # seconds a client has to send a request body
    adapter_dir: Path | None = None  # the adapter store: adapters loaded by name on first use
    max_loaded_adapters: int | None = None  # most store adapters kept loaded (LRU eviction)
    access_log: bool = False


@dataclass
class Server:
    registry: AdapterRegistry
    settings: ServeSettings
    metrics: ServerMetrics
    batcher: MicroBatcher
    answering: Answering
    store: AdapterStore
    started: float = field(default_factory=time.time)


def build_app(registry: AdapterRegistry, settings: ServeSettings) -> FastAPI:
    metrics = ServerMetrics()
    engine = Engine(registry, settings.max_batch_size, mixed=settings.mixed_batches, on_pass=metrics.observe_pass)
    batcher = MicroBatcher(engine.run, settings.max_batch_size, settings.max_wait_ms / 1000)
    decoder = ContinuousBatcher(batcher.exclusive, settings.max_batch_size, on_step=metrics.observe_decode_step)
    answering = Answering(decoder, batcher.exclusive)
    store = AdapterStore(registry, batcher.exclusive, settings.adapter_dir, settings.max_loaded_adapters,
                         confine=lambda spec: allowed_base(settings.allowed_dir, spec, registry))
    server = Server(registry, settings, metrics, batcher, answering, store)
    metrics.store_stats = store.stats

    async def lifespan(_):
        batcher.start()
        yield
        await batcher.stop()

    app = FastAPIOffline(title="slimtune serve", version="1", lifespan=lifespan,
                         default_response_class=SafeJSONResponse,
                         description="Many fine-tuned adapters: predictions micro-batched across those sharing a "
                                     "base, text generation batched across requests, OpenAI-compatible endpoints.")
    app.state.server = server
    _add_error_handlers(app)
    require_admin = _admin_check(settings)
    _add_predict_routes(app, server)
    _add_explain_routes(app, server)
    _add_generate_routes(app, server)
    _add_admin_routes(app, server, require_admin)
    add_openai_routes(app, server, require_admin)
    _add_status_routes(app, server)
    app.add_middleware(BodyGuard, max_bytes=settings.limits.max_body_bytes, body_timeout=settings.body_timeout)
    app.add_middleware(OfflinePages)
    app.add_middleware(RequestMetrics, metrics=metrics, log=settings.access_log)  # outermost: counts rejects too
    return app


def _add_error_handlers(app: FastAPI) -> None:
    def answer(request: Request, status: int, detail, headers=None, code=None, param=None):
        if request.url.path in OPENAI_PATHS:
            message = detail if isinstance(detail, str) else "; ".join(f"{'.'.join(p['loc'])}: {p['msg']}"
                                                                       for p in detail)
            return SafeJSONResponse(openai_error(status, message, code, param), status_code=status, headers=headers)
        return SafeJSONResponse({"detail": detail}, status_code=status, headers=headers)

    @app.exception_handler(SlimtuneError)
    async def user_error(request: Request, exc: SlimtuneError):
        status = STATUS.get(type(exc), 422)
        if request.url.path in OPENAI_PATHS and status == 422:
            status = 400  # OpenAI answers a bad request 400
        code = "model_not_found" if isinstance(exc, ModelNotFound) else None
        return answer(request, status, str(exc), code=code)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException):
        return answer(request, exc.status_code, exc.detail, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError):
        """Each problem with its place and message; the offending input is not echoed back."""
        problems = []
        for error in exc.errors():
            message = error["msg"]
            if error["type"] == "string_unicode":  # what pydantic says of a lone surrogate such as \ud800
                message = "text is not valid Unicode (it holds a lone surrogate)"
            elif isinstance(error.get("ctx", {}).get("error"), str):
                message += f": {error['ctx']['error']}"
            problems.append({"loc": [str(part) for part in error["loc"]], "msg": message, "type": error["type"]})
        if request.url.path in OPENAI_PATHS:
            param = ".".join(problems[0]["loc"][1:]) if problems else None
            return answer(request, 400, problems, param=param or None)
        return SafeJSONResponse({"detail": problems}, status_code=422)


def _admin_check(settings: ServeSettings):
    bearer = HTTPBearer(auto_error=False, description="the admin token given at start-up")

    def require_admin(credentials: HTTPAuthorizationCredentials | None = Depends(bearer)) -> None:
        if not settings.admin_token:
            raise HTTPException(403, "adapter management is off: start the server with --admin-token, "
                                     "--admin-token-file or SLIMTUNE_ADMIN_TOKEN")
        if credentials is None:
            raise HTTPException(401, "missing admin token: send 'Authorization: Bearer <token>'",
                                headers={"WWW-Authenticate": "Bearer"})
        if not secrets.compare_digest(credentials.credentials.encode(), settings.admin_token.encode()):
            raise HTTPException(403, "wrong admin token")

    return require_admin


def _add_predict_routes(app: FastAPI, server: Server) -> None:
    PredictRequest = schemas.predict_request_model(server.settings.limits)

    @app.post("/v1/predict", response_model=schemas.PredictResponse, responses=schemas.ERRORS,
              summary="Labels and scores (classify) or entities with character spans (ner), one per input")
    async def predict(body: PredictRequest, request: Request):
        request.state.adapter = body.adapter
        adapter = await server.store.resolve(body.adapter)
        if adapter.generates:
            raise WrongEndpoint(f"adapter {adapter.name!r} is a causal-lm adapter: send its prompts to "
                                "POST /v1/generate or /v1/chat/completions")
        features = adapter.task.encode_texts(body.inputs, adapter.tokenizer, adapter.max_length)
        async with server.store.held(adapter):
            outputs = await server.batcher.submit(Job(adapter, features), len(features))
        predictions = adapter.task.decode(body.inputs, features, outputs, adapter.labels, adapter.config)
        return {"adapter": adapter.name, "task": adapter.task.name, "outputs": predictions}


def _add_explain_routes(app: FastAPI, server: Server) -> None:
    ExplainRequest = schemas.explain_request_model(server.settings.limits)

    @app.post("/v1/explain", response_model=schemas.ExplainResponse, responses=schemas.ERRORS,
              summary="Per-token Integrated Gradients of the predicted label(s) (classify, multilabel) or of each "
                      "entity (ner), one per input: what `slimtune explain --json` prints")
    async def explain(body: ExplainRequest, request: Request):
        request.state.adapter = body.adapter
        adapter = await server.store.resolve(body.adapter)
        check_explainable(adapter)
        async with server.store.held(adapter):
            results = await server.batcher.exclusive(explain_served, adapter, body.inputs, body.n_steps, body.target)
        outputs = [{**result, "explanations": [e.as_dict() for e in result["explanations"]]} for result in results]
        return {"adapter": adapter.name, "task": adapter.task.name, "n_steps": body.n_steps, "outputs": outputs}


def _add_generate_routes(app: FastAPI, server: Server) -> None:
    GenerateRequest = schemas.generate_request_model(server.settings.limits)

    @app.post("/v1/generate", response_model=schemas.GenerateResponse, responses=schemas.ERRORS,
              summary="Answers of a causal-lm adapter, one per prompt (greedy unless sample is true)")
    async def generate(body: GenerateRequest, request: Request):
        request.state.adapter = body.adapter
        adapter = await server.store.resolve(body.adapter)
        if not adapter.generates:
            raise WrongEndpoint(f"adapter {adapter.name!r} is a {adapter.task.name} adapter: POST /v1/generate "
                                "serves causal-lm adapters; use POST /v1/predict")
        prompts = [chat_prompt_ids(adapter.tokenizer, text) for text in body.prompts]
        for i, ids in enumerate(prompts):
            if len(ids) + body.max_new_tokens > adapter.max_length:
                raise SlimtuneError(f"prompts[{i}] is {len(ids)} tokens; with max_new_tokens {body.max_new_tokens} "
                                    f"it exceeds the model's window of {adapter.max_length} tokens")
        sampling = Sampling(body.max_new_tokens, body.temperature if body.sample else 0.0, body.top_p, body.top_k,
                            body.seed)
        async with server.store.held(adapter):
            answers = [server.answering.start(adapter, ids, sampling) for ids in prompts]
            texts = await asyncio.gather(*(answer.whole() for answer in answers))
        for answer in answers:
            server.metrics.observe_generation(1, answer.completion_tokens)
        return {"adapter": adapter.name, "outputs": [{"text": text} for text in texts]}


def _add_admin_routes(app: FastAPI, server: Server, require_admin) -> None:
    registry, settings = server.registry, server.settings

    @app.get("/v1/adapters", response_model=schemas.AdapterList, summary="The loaded adapters")
    async def list_adapters():
        return {"base_model": registry.base_spec, "adapters": [a.info() for a in registry.adapters.values()]}

    @app.post("/v1/adapters", status_code=201, response_model=schemas.AdapterInfo, responses=schemas.ERRORS,
              dependencies=[Depends(require_admin)], summary="Load an adapter from a directory")
    async def load_adapter(body: schemas.LoadAdapterRequest):
        adapter = await server.store.load(body.name, allowed_path(settings.allowed_dir, body.path))
        return adapter.info()

    @app.delete("/v1/adapters/{name}", response_model=schemas.AdapterInfo, responses=schemas.ERRORS,
                dependencies=[Depends(require_admin)], summary="Unload an adapter")
    async def unload_adapter(name: str = PathParam(pattern=schemas.NAME_PATTERN)):
        return (await server.store.unload(name)).info()


def _add_status_routes(app: FastAPI, server: Server) -> None:
    @app.get("/health", response_model=schemas.Health, summary="Liveness, and how many adapters are loaded")
    async def health():
        return {"status": "ok", "adapters": len(server.registry.adapters)}

    @app.get("/metrics", response_class=PlainTextResponse, summary="Prometheus text format")
    async def metrics():
        return PlainTextResponse(server.metrics.render(), media_type=CONTENT_TYPE)

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def playground():
        return HTMLResponse(files("slimtune.serve").joinpath("static/playground.html").read_text(encoding="utf-8"))
