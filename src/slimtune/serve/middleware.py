"""ASGI middleware around the whole app: request metrics and the access log, and JSON that is always valid."""

import json
import logging
import math
import time

from fastapi.responses import JSONResponse

from slimtune.serve.guards import CLIENT_CLOSED
from slimtune.serve.metrics import ServerMetrics

access_log = logging.getLogger("slimtune.serve.access")


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


class RequestMetrics:
    """Pure ASGI middleware counting every answer by route template, method and status, with its latency; with
    `log`, one access-log line per request (method, path, status, latency, adapter)."""

    def __init__(self, app, metrics: ServerMetrics, log: bool = False):
        self.app = app
        self.metrics = metrics
        self.log = log

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
            seconds = time.perf_counter() - started
            route = getattr(scope.get("route"), "path", "unmatched")
            self.metrics.observe_request(route, scope["method"], status, seconds)
            if self.log:
                adapter = scope.get("state", {}).get("adapter")
                access_log.info('%s %s %d %.1fms adapter=%s', scope["method"], scope["path"], status, seconds * 1000,
                                json.dumps(adapter) if adapter else "-")


# What an HTML page of this server may load: only from the server itself (inline code and data: images allowed).
# Bundled third-party pages (ReDoc's footer logo) would otherwise reach a CDN; the browser now never asks.
OFFLINE_POLICY = ("default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
                  "img-src 'self' data:; font-src 'self' data:; worker-src 'self' blob:; connect-src 'self'")


class OfflinePages:
    """Pure ASGI middleware: every HTML answer carries a Content-Security-Policy that keeps the page offline."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def send_with_policy(message):
            if message["type"] == "http.response.start":
                headers = dict(message.get("headers", []))
                if headers.get(b"content-type", b"").startswith(b"text/html"):
                    message["headers"] = [*message.get("headers", []),
                                          (b"content-security-policy", OFFLINE_POLICY.encode())]
            await send(message)

        await self.app(scope, receive, send_with_policy)
