"""Checks on raw requests before FastAPI parses them: a body size bound, a deadline for the body, and JSON
bodies that are not UTF-8 answered with a 400 that says so (FastAPI's own answer is a vague "error parsing the
body"); and an HTTP protocol with a deadline for each request's head, so slow clients cannot hold connections."""

import asyncio
import json

from uvicorn.protocols.http.h11_impl import H11Protocol

CLIENT_CLOSED = 499  # what the metrics record for a request whose client went away before any answer (as nginx)


def timed_h11(header_timeout: float) -> type[H11Protocol]:
    """uvicorn's h11 protocol, closing a connection whose request line and headers are not complete within
    `header_timeout` seconds of its opening or of its first byte after a previous response (uvicorn's own
    keep-alive timeout covers the idle time in between)."""

    class TimedH11Protocol(H11Protocol):
        _head_deadline = None

        def connection_made(self, transport) -> None:
            super().connection_made(transport)
            self._arm()

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            if self.cycle is None or self.cycle.response_complete:  # still waiting for a whole head
                if self._head_deadline is None:
                    self._arm()
            elif self._head_deadline is not None:
                self._head_deadline.cancel()
                self._head_deadline = None

        def connection_lost(self, exc) -> None:
            if self._head_deadline is not None:
                self._head_deadline.cancel()
            super().connection_lost(exc)

        def _arm(self) -> None:
            self._head_deadline = self.loop.call_later(header_timeout, self._too_slow)

        def _too_slow(self) -> None:
            self._head_deadline = None
            if (self.cycle is None or self.cycle.response_complete) and not self.transport.is_closing():
                self.transport.close()

    return TimedH11Protocol


class BodyGuard:
    """Pure ASGI middleware: buffers request bodies up to `max_bytes`, then hands them on unchanged."""

    def __init__(self, app, max_bytes: int, body_timeout: float = 30.0):
        self.app = app
        self.max_bytes = max_bytes
        self.body_timeout = body_timeout  # seconds for the whole body, from the end of the head

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS", "DELETE"):
            return await self.app(scope, receive, send)
        headers = dict(scope["headers"])
        declared = headers.get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.max_bytes:
            return await _reject(send, 413, f"request body of {int(declared)} bytes exceeds {self.max_bytes}")
        chunks, size = [], 0
        deadline = asyncio.get_running_loop().time() + self.body_timeout
        while True:
            try:
                async with asyncio.timeout_at(deadline):
                    message = await receive()
            except TimeoutError:
                return await _reject(send, 408, f"request body not received within {self.body_timeout:g} s")
            if message["type"] == "http.disconnect":
                return
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > self.max_bytes:
                return await _reject(send, 413, f"request body exceeds {self.max_bytes} bytes")
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        if b"json" in headers.get(b"content-type", b"").lower():
            try:
                body.decode("utf-8")
            except UnicodeDecodeError as e:
                return await _reject(send, 400, f"request body is not valid UTF-8 (byte {e.start}: {e.reason})")
        replayed = False

        async def replay():
            nonlocal replayed
            if replayed:
                return await receive()  # only a disconnect can come after the body
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)


async def _reject(send, status: int, detail: str) -> None:
    payload = json.dumps({"detail": detail}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]
    if status == 408:
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": payload})
