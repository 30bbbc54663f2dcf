"""The ASGI middleware in front of every route: request ids, the access log and metrics, and for searches every
check that must happen before any work: the declared size, the API key, the caller's rate, the Content-Type, a
place among the uploads being received, the upload itself (size and time bounded), then a place among the searches.

Only then does FastAPI see the request, with the body already in memory: its multipart parsing and the route
run on an upload known to be small and complete.
"""
from __future__ import annotations

import asyncio
import contextvars
import logging
import re
import time
import uuid
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import Any

from api.admission import Full, Gate
from api.config import ApiConfig
from api.errors import Refusal
from api.keys import ApiKey, KeyStore
from api.metrics import ApiMetrics, route_label
from api.ratelimit import RateLimiter

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

SEARCH_PATH = "/v1/search"
REQUEST_ID = contextvars.ContextVar("request_id", default="-")
_VALID_REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")
_SECURITY_HEADERS = [(b"x-content-type-options", b"nosniff"), (b"referrer-policy", b"no-referrer")]
access_log = logging.getLogger("api.access")


class ClientGone(Exception):
    """The client disconnected before its upload arrived: nobody to answer."""


class RequestIdFilter(logging.Filter):
    """Puts the current request's id on every log record (``%(request_id)s``)."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = REQUEST_ID.get()
        return True


@dataclass
class Caller:
    name: str
    requests_per_minute: float | None = None


class Guard:
    def __init__(self, app: ASGIApp, config: ApiConfig, keys: KeyStore | None, uploads: Gate, work: Gate, metrics: ApiMetrics) -> None:
        self.app = app
        self.config = config
        self.keys = keys  # None: no authentication (loopback-only deployments, api/serve.py enforces that)
        self.limiter = RateLimiter(config.rate_limit.requests_per_minute, config.rate_limit.burst)
        self.uploads = uploads
        self.work = work
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = _headers(scope)
        incoming = headers.get("x-request-id", "")
        request_id = incoming if _VALID_REQUEST_ID.fullmatch(incoming) else uuid.uuid4().hex
        token = REQUEST_ID.set(request_id)
        state = scope.setdefault("state", {})
        started = time.perf_counter()
        answered: dict[str, int] = {}

        async def send_with_ids(message: Message) -> None:
            if message["type"] == "http.response.start":
                answered["status"] = message["status"]
                message["headers"] = [*message.get("headers", []), (b"x-request-id", request_id.encode()), *_SECURITY_HEADERS]
            await send(message)

        try:
            if scope["method"] == "POST" and scope["path"] == SEARCH_PATH:
                await self._search(scope, receive, send_with_ids, headers, request_id)
            else:
                await self.app(scope, receive, send_with_ids)
        finally:
            status = answered.get("status", 499)  # 499: the client left before an answer (nginx's convention)
            route = route_label(scope["path"])
            seconds = time.perf_counter() - started
            self.metrics.requests.labels(route, str(status)).inc()
            self.metrics.latency.labels(route).observe(seconds)
            reason = state.get("refusal")
            if reason:
                self.metrics.refusals.labels(reason).inc()
            access_log.info("%s %s %d %.1f ms caller=%s%s", scope["method"], scope["path"], status, seconds * 1000,
                            state.get("caller", "-"), f" refused={reason}" if reason else "")
            REQUEST_ID.reset(token)

    async def _search(self, scope: Scope, receive: Receive, send: Send, headers: dict[str, str], request_id: str) -> None:
        state = scope["state"]
        try:
            self._check_length(headers)  # first: a body over the limit is never read, whoever sends it
            caller = self._authenticate(headers, scope.get("client"))
            state["caller"] = caller.name
            wait_s = self.limiter.acquire(caller.name, caller.requests_per_minute)
            if wait_s:
                raise Refusal(429, "rate_limited", f"rate limit of {caller.requests_per_minute or self.limiter.requests_per_minute:g} requests "
                              f"per minute reached for {caller.name}", retry_after_s=wait_s)
            self._check_content_type(headers)
            try:
                async with self.uploads.place():
                    body = await self._read_body(receive)
                async with self.work.place():
                    await self.app(scope, _replay(body, receive), send)
            except Full as full:
                raise Refusal(503, "busy", f"the service is busy ({full}); retry later",
                              retry_after_s=self.config.queue.retry_after_s) from full
        except Refusal as refusal:
            state["refusal"] = refusal.reason
            await _respond(send, refusal, request_id)
        except ClientGone:
            state["refusal"] = "client_gone"

    def _authenticate(self, headers: dict[str, str], client: tuple[str, int] | None) -> Caller:
        if self.keys is None:
            return Caller(f"anonymous@{client[0] if client else '-'}")
        presented = headers.get("x-api-key", "")
        scheme, _, token = headers.get("authorization", "").partition(" ")
        if not presented and scheme.lower() == "bearer":
            presented = token.strip()
        if not presented:
            raise Refusal(401, "unauthenticated", "an API key is required: send it in the X-API-Key header")
        key: ApiKey | None = self.keys.identify(presented)
        if key is None:
            raise Refusal(401, "unauthenticated", "the API key is not valid")
        return Caller(key.name, key.requests_per_minute)

    def _check_length(self, headers: dict[str, str]) -> None:
        limit = self.config.limits.max_upload_bytes
        length = headers.get("content-length")
        if length is None and "chunked" not in headers.get("transfer-encoding", "").lower():
            raise Refusal(411, "no_length", "a Content-Length header (or chunked transfer encoding) is required")
        if length is not None and (not length.isdigit() or int(length) > limit):
            raise Refusal(413, "too_large", f"the upload is larger than {limit} bytes")

    @staticmethod
    def _check_content_type(headers: dict[str, str]) -> None:
        content_type = headers.get("content-type", "")
        if not content_type.lower().startswith("multipart/form-data"):
            raise Refusal(415, "wrong_content_type", "send the recording as multipart/form-data with the field 'file' "
                          f"(got Content-Type {content_type or 'none'!r})")

    async def _read_body(self, receive: Receive) -> bytes:
        """The whole body, or a refusal once it exceeds the size limit or has not arrived by the deadline."""
        limits = self.config.limits
        loop = asyncio.get_running_loop()
        deadline = loop.time() + limits.body_timeout_s
        chunks: list[bytes] = []
        size = 0
        while True:
            try:
                message = await asyncio.wait_for(receive(), max(0.0, deadline - loop.time()))
            except asyncio.TimeoutError:
                raise Refusal(408, "slow_upload", f"the upload did not arrive within {limits.body_timeout_s:g} s") from None
            if message["type"] == "http.disconnect":
                raise ClientGone
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limits.max_upload_bytes:
                raise Refusal(413, "too_large", f"the upload is larger than {limits.max_upload_bytes} bytes")
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)


def _headers(scope: Scope) -> dict[str, str]:
    return {name.decode("latin-1").lower(): value.decode("latin-1") for name, value in scope["headers"]}


def _replay(body: bytes, receive: Receive) -> Receive:
    """A receive() that hands over the buffered body once, then waits on the connection (for a disconnect)."""
    pending = [{"type": "http.request", "body": body, "more_body": False}]

    async def receive_again() -> Message:
        return pending.pop() if pending else await receive()

    return receive_again


async def _respond(send: Send, refusal: Refusal, request_id: str) -> None:
    body = refusal.body(request_id)
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
               *((name.encode(), value.encode()) for name, value in refusal.headers().items())]
    await send({"type": "http.response.start", "status": refusal.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
