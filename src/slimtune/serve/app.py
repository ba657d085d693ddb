"""The HTTP API: predictions with classify/ner adapters, generation with causal-LM adapters, adapter management
behind a bearer token, health, metrics.

Every route group is added by its own function over one `Server`; predictions
and generation each have their own job type and engine, and share the registry,
the one model thread and the metrics. Errors a client can fix are 4xx with a
`detail` saying what is wrong.
"""

import asyncio
import json
import math
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path

from fastapi import Depends, FastAPI, HTTPException
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from slimtune.errors import SlimtuneError
from slimtune.generation import GenerationOptions, chat_prompt_ids
from slimtune.models.loading import DEFAULT_MODEL
from slimtune.serve import schemas
from slimtune.serve.batcher import MicroBatcher
from slimtune.serve.engine import Engine, Job
from slimtune.serve.generator import GenerateJob, Generator
from slimtune.serve.guards import CLIENT_CLOSED, BodyGuard
from slimtune.serve.metrics import CONTENT_TYPE, ServerMetrics
from slimtune.serve.registry import AdapterConflict, AdapterRefused, AdapterRegistry, PathRefused, UnknownAdapter


class WrongEndpoint(SlimtuneError):
    """A causal-LM adapter sent to /v1/predict, or a classify/ner one to /v1/generate."""


STATUS = {UnknownAdapter: 404, AdapterConflict: 409, PathRefused: 403, AdapterRefused: 422}


@dataclass
class ServeSettings:
    limits: schemas.Limits = field(default_factory=schemas.Limits)
    admin_token: str | None = None
    allowed_dir: Path = field(default_factory=Path.cwd)
    max_batch_size: int = 32
    max_wait_ms: float = 5.0
    mixed_batches: bool = True
    body_timeout: float = 30.0  # seconds a client has to send a request body


@dataclass
class Server:
    registry: AdapterRegistry
    settings: ServeSettings
    metrics: ServerMetrics
    batcher: MicroBatcher
    generator: Generator


class SafeJSONResponse(JSONResponse):
    """JSON with non-ASCII escaped, so an echoed lone surrogate cannot break the encoding of an error, and never
    a bare NaN or Infinity (which JSON lacks and strict parsers refuse): a non-finite number is written null."""

    def render(self, content) -> bytes:
        try:
            text = json.dumps(content, ensure_ascii=True, separators=(",", ":"), allow_nan=False)
        except ValueError:
            text = json.dumps(finite_or_null(content), ensure_ascii=True, separators=(",", ":"), allow_nan=False)
        return text.encode("ascii")


def finite_or_null(value):
    """`value` (JSON-like) with every NaN or infinite float replaced by None."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite_or_null(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [finite_or_null(v) for v in value]
    return value


def build_app(registry: AdapterRegistry, settings: ServeSettings) -> FastAPI:
    metrics = ServerMetrics()
    engine = Engine(registry, settings.max_batch_size, mixed=settings.mixed_batches, on_pass=metrics.observe_pass)
    batcher = MicroBatcher(engine.run, settings.max_batch_size, settings.max_wait_ms / 1000)
    generator = Generator(settings.max_batch_size, on_tokens=metrics.observe_generation)
    server = Server(registry, settings, metrics, batcher, generator)

    async def lifespan(_):
        batcher.start()
        yield
        await batcher.stop()

    app = FastAPI(title="slimtune serve", version="1", lifespan=lifespan, default_response_class=SafeJSONResponse,
                  description="Many fine-tuned adapters: predictions micro-batched across those sharing a base, "
                              "text generation with causal-LM adapters.")
    app.state.server = server
    _add_error_handlers(app)
    _add_predict_routes(app, server)
    _add_generate_routes(app, server)
    _add_admin_routes(app, server)
    _add_status_routes(app, server)
    app.add_middleware(BodyGuard, max_bytes=settings.limits.max_body_bytes, body_timeout=settings.body_timeout)
    app.add_middleware(RequestMetrics, metrics=metrics)  # outermost: it also counts what the guard rejects
    return app


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(SlimtuneError)
    async def user_error(_, exc: SlimtuneError):
        return SafeJSONResponse({"detail": str(exc)}, status_code=STATUS.get(type(exc), 422))

    @app.exception_handler(HTTPException)
    async def http_error(_, exc: HTTPException):
        return SafeJSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(_, exc: RequestValidationError):
        """Each problem with its place and message; the offending input is not echoed back."""
        problems = []
        for error in exc.errors():
            message = error["msg"]
            if error["type"] == "string_unicode":  # what pydantic says of a lone surrogate such as \ud800
                message = "text is not valid Unicode (it holds a lone surrogate)"
            elif isinstance(error.get("ctx", {}).get("error"), str):
                message += f": {error['ctx']['error']}"
            problems.append({"loc": [str(part) for part in error["loc"]], "msg": message, "type": error["type"]})
        return SafeJSONResponse({"detail": problems}, status_code=422)


def _add_predict_routes(app: FastAPI, server: Server) -> None:
    PredictRequest = schemas.predict_request_model(server.settings.limits)
    registry = server.registry

    @app.post("/v1/predict", response_model=schemas.PredictResponse, responses=schemas.ERRORS,
              summary="Labels and scores (classify) or entities with character spans (ner), one per input")
    async def predict(body: PredictRequest):
        adapter = registry.get(body.adapter)
        if adapter.generates:
            raise WrongEndpoint(f"adapter {adapter.name!r} is a causal-lm adapter: send its prompts to "
                                "POST /v1/generate")
        features = adapter.task.encode_texts(body.inputs, adapter.tokenizer, adapter.max_length)
        outputs = await server.batcher.submit(Job(adapter, features), len(features))
        predictions = adapter.task.decode(body.inputs, features, outputs, adapter.labels, adapter.config)
        return {"adapter": adapter.name, "task": adapter.task.name, "outputs": predictions}


def _add_generate_routes(app: FastAPI, server: Server) -> None:
    GenerateRequest = schemas.generate_request_model(server.settings.limits)
    registry = server.registry

    @app.post("/v1/generate", response_model=schemas.GenerateResponse, responses=schemas.ERRORS,
              summary="Answers of a causal-lm adapter, one per prompt (greedy unless sample is true)")
    async def generate(body: GenerateRequest):
        adapter = registry.get(body.adapter)
        if not adapter.generates:
            raise WrongEndpoint(f"adapter {adapter.name!r} is a {adapter.task.name} adapter: POST /v1/generate "
                                "serves causal-lm adapters; use POST /v1/predict")
        prompts = [chat_prompt_ids(adapter.tokenizer, text) for text in body.prompts]
        for i, ids in enumerate(prompts):
            if len(ids) + body.max_new_tokens > adapter.max_length:
                raise SlimtuneError(f"prompts[{i}] is {len(ids)} tokens; with max_new_tokens {body.max_new_tokens} "
                                    f"it exceeds the model's window of {adapter.max_length} tokens")
        options = GenerationOptions(max_new_tokens=body.max_new_tokens, sample=body.sample,
                                    temperature=body.temperature, top_p=body.top_p, top_k=body.top_k, seed=body.seed)
        options.validate()
        texts = await server.batcher.exclusive(server.generator.run, GenerateJob(adapter, prompts, options))
        return {"adapter": adapter.name, "outputs": [{"text": text} for text in texts]}


def _add_admin_routes(app: FastAPI, server: Server) -> None:
    registry, settings = server.registry, server.settings
    bearer = HTTPBearer(auto_error=False, description="the admin token given at start-up")

    def require_admin(credentials: HTTPAuthorizationCredentials | None = Depends(bearer)) -> None:
        if not settings.admin_token:
            raise HTTPException(403, "adapter management is off: start the server with --admin-token "
                                     "or SLIMTUNE_ADMIN_TOKEN")
        if credentials is None:
            raise HTTPException(401, "missing admin token: send 'Authorization: Bearer <token>'",
                                headers={"WWW-Authenticate": "Bearer"})
        if not secrets.compare_digest(credentials.credentials.encode(), settings.admin_token.encode()):
            raise HTTPException(403, "wrong admin token")

    @app.get("/v1/adapters", response_model=schemas.AdapterList, summary="The loaded adapters")
    async def list_adapters():
        return {"base_model": registry.base_spec, "adapters": [a.info() for a in registry.adapters.values()]}

    @app.post("/v1/adapters", status_code=201, response_model=schemas.AdapterInfo, responses=schemas.ERRORS,
              dependencies=[Depends(require_admin)], summary="Load an adapter from a directory")
    async def load_adapter(body: schemas.LoadAdapterRequest):
        path = allowed_path(settings.allowed_dir, body.path)
        registry.reserve(body.name)
        try:
            adapter = await asyncio.to_thread(registry.prepare, body.name, path,
                                              confine=lambda spec: allowed_base(settings.allowed_dir, spec, registry))
            await server.batcher.exclusive(registry.install, adapter)
            registry.register(adapter)
        finally:
            registry.release(body.name)
        return adapter.info()

    @app.delete("/v1/adapters/{name}", response_model=schemas.AdapterInfo, responses=schemas.ERRORS,
                dependencies=[Depends(require_admin)], summary="Unload an adapter")
    async def unload_adapter(name: str = PathParam(pattern=schemas.NAME_PATTERN)):
        adapter = registry.unregister(name)
        await server.batcher.exclusive(registry.uninstall, adapter)
        return adapter.info()


def _add_status_routes(app: FastAPI, server: Server) -> None:
    @app.get("/health", response_model=schemas.Health, summary="Liveness, and how many adapters are loaded")
    async def health():
        return {"status": "ok", "adapters": len(server.registry.adapters)}

    @app.get("/metrics", response_class=PlainTextResponse, summary="Prometheus text format")
    async def metrics():
        return PlainTextResponse(server.metrics.render(), media_type=CONTENT_TYPE)


def allowed_path(allowed_dir: Path, given: str) -> Path:
    """`given` (relative to `allowed_dir` unless absolute) resolved, links included; refused outside it."""
    root = Path(allowed_dir).resolve()
    path = _inside(root, root, given)
    if path is None:
        raise PathRefused(f"adapter path {given!r} is outside the allowed directory {root}")
    return path


def allowed_base(allowed_dir: Path, spec: str, registry: AdapterRegistry) -> None:
    """Refuse a base model that an adapter loaded at run time names, unless the server holds it already or it lies
    inside `allowed_dir` (relative names taken from the working directory, where loading looks for them). The
    answer is the same whether or not such a path exists."""
    held = {registry.base_spec, DEFAULT_MODEL, *(a.base_model for a in registry.adapters.values())}
    if spec in held:
        return
    root = Path(allowed_dir).resolve()
    if _inside(root, Path.cwd(), spec) is None:
        raise PathRefused(f"the adapter's base model {spec!r} is outside the allowed directory {root}")


def _inside(root: Path, start: Path, given: str) -> Path | None:
    """`given` resolved from `start` (links included) if it lies inside `root`, else None; whether it exists or not
    makes no difference to the answer."""
    try:
        path = (start / Path(given).expanduser()).resolve()
    except (OSError, ValueError, RuntimeError):
        return None
    return path if path.is_relative_to(root) else None


class RequestMetrics:
    """Pure ASGI middleware counting every answer by route template, method and status, with its latency."""

    def __init__(self, app, metrics: ServerMetrics):
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started, status = time.perf_counter(), 500

        answered = gone = False

        async def receive_and_note():
            nonlocal gone
            message = await receive()
            gone = gone or message["type"] == "http.disconnect"
            return message

        async def send_and_note(message):
            nonlocal status, answered
            if message["type"] == "http.response.start":
                status, answered = message["status"], True
            await send(message)

        try:
            await self.app(scope, receive_and_note, send_and_note)
        finally:
            if gone and not answered:
                status = CLIENT_CLOSED  # the client went away (mid-body, say): not a server error
            route = getattr(scope.get("route"), "path", "unmatched")
            self.metrics.observe_request(route, scope["method"], status, time.perf_counter() - started)
