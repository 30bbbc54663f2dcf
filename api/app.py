"""The FastAPI application: POST /v1/search, GET /v1/health, the web page at /, OpenAPI docs at /docs.

api/guard.py has already authenticated, rate-limited, size-checked and received every search upload when a
route here runs; the routes decode it (libsndfile or FFmpeg, in a worker thread) and ask Triton.

No `from __future__ import annotations` here: FastAPI reads the routes' annotations at run time, and theirs refer
to the limits of create_app's scope.
"""

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib import resources
from typing import Annotated

from fastapi import FastAPI, File, Form, Request, Security, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.security import APIKeyHeader
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from api.admission import Gate
from api.audio_decode import ACCEPTED, AudioRefused, decode_upload
from api.config import ApiConfig
from api.errors import Refusal
from api.guard import REQUEST_ID, Guard
from api.keys import KeyStore
from api.metrics import ApiMetrics
from client import AsyncAudioSearchClient, InvalidInput, ModelNotReady, SearchError, ServerUnavailable

HEALTH_TIMEOUT_S = 3.0
# The page loads nothing from elsewhere; the microphone recording is played back from a blob: URL.
PAGE_POLICY = "default-src 'self'; media-src 'self' blob:; img-src 'self' data:; object-src 'none'; frame-ancestors 'none'; base-uri 'none'"
STATIC = resources.files("api") / "static"
log = logging.getLogger("api.search")


class Match(BaseModel):
    track_id: str
    score: float = Field(description="cosine similarity of the best matching segment, higher is closer")


class SearchResponse(BaseModel):
    matches: list[Match] = Field(description="best first")
    query_seconds: float = Field(description="duration of the decoded recording")
    latency_ms: float = Field(description="decoding and search time on the server, after the upload arrived")


class Health(BaseModel):
    ready: bool = Field(description="searches can be served now")
    triton_ready: bool
    model_ready: bool


class Problem(BaseModel):
    detail: str
    request_id: str


ERRORS = {status: {"model": Problem, "description": text} for status, text in {
    400: "empty, truncated or corrupt file", 401: "missing or unknown API key", 408: "the upload arrived too slowly",
    411: "no Content-Length", 413: "upload larger than the limit", 415: "not multipart/form-data, or not an accepted audio format",
    422: "recording too short or too long, or invalid top_k", 429: "rate limit of the key reached (see Retry-After)",
    502: "the search backend failed", 503: "busy, or the search backend is unavailable (see Retry-After)"}.items()}


def create_app(config: ApiConfig, keys: KeyStore | None, search: AsyncAudioSearchClient) -> tuple[FastAPI, ApiMetrics]:
    """The application with its guard; ``search`` is closed when the application shuts down."""
    limits = config.limits
    uploads = Gate(config.queue.max_uploads)
    work = Gate(config.queue.max_in_flight, config.queue.max_waiting, config.queue.wait_timeout_s)
    metrics = ApiMetrics(uploads, work)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        await search.close()

    app = FastAPI(
        title="CloudTune audio search",
        version="1",
        summary="Find the catalog tracks a recording sounds like.",
        description=f"Upload a recording ({ACCEPTED}; any rate, mono or stereo, {limits.min_seconds:g}-{limits.max_seconds:g} s, "
                    f"at most {limits.max_upload_bytes} bytes) and get the most similar catalog tracks with their scores.",
        lifespan=lifespan,
        redoc_url=None,
    )
    app.add_middleware(Guard, config=config, keys=keys, uploads=uploads, work=work, metrics=metrics)
    app.mount("/static", StaticFiles(directory=str(STATIC)), name="static")
    key_header = APIKeyHeader(name="X-API-Key", auto_error=False, description="required unless the server runs without keys")

    @app.exception_handler(Refusal)
    async def refused(request: Request, refusal: Refusal) -> JSONResponse:
        request.state.refusal = refusal.reason
        return JSONResponse({"detail": refusal.message, "request_id": REQUEST_ID.get()}, refusal.status, refusal.headers())

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, error: RequestValidationError) -> JSONResponse:
        request.state.refusal = "invalid_request"
        problems = "; ".join(f"{'.'.join(str(part) for part in e['loc'][1:]) or 'body'}: {e['msg']}" for e in error.errors())
        return JSONResponse({"detail": problems, "request_id": REQUEST_ID.get()}, 422)

    @app.post("/v1/search", response_model=SearchResponse, responses=ERRORS, summary="Search the catalog with a recording")
    async def search_recording(
        file: Annotated[UploadFile, File(description=f"the recording: {ACCEPTED}")],
        top_k: Annotated[int, Form(ge=1, le=limits.max_top_k, description="how many tracks to return")] = limits.default_top_k,
        _key: Annotated[str | None, Security(key_header)] = None,
    ) -> SearchResponse:
        started = time.perf_counter()
        data = await file.read()
        try:
            query = await run_in_threadpool(decode_upload, data, limits)
        except AudioRefused as refusal:
            raise Refusal(refusal.status, refusal.reason, str(refusal)) from refusal
        metrics.query_seconds.observe(query.seconds)
        log.debug("decoded %s: %d Hz, %d channels, %.2f s", query.format, query.source_rate, query.channels, query.seconds)
        asked = time.perf_counter()
        try:
            hits = await search.search(query.samples, top_k=top_k)
        except (ServerUnavailable, ModelNotReady) as error:
            raise Refusal(503, "backend_unavailable", f"the search backend is unavailable: {error}",
                          retry_after_s=config.queue.retry_after_s) from error
        except InvalidInput as error:
            raise Refusal(422, "rejected_by_model", f"the search model rejected the recording: {error}") from error
        except SearchError as error:
            raise Refusal(502, "backend_error", f"the search backend failed: {error}") from error
        metrics.triton_latency.observe(time.perf_counter() - asked)
        return SearchResponse(matches=[Match(track_id=t, score=round(s, 6)) for t, s in hits], query_seconds=round(query.seconds, 3),
                              latency_ms=round((time.perf_counter() - started) * 1000, 1))

    @app.get("/v1/health", response_model=Health, responses={503: {"model": Health, "description": "not ready"}},
             summary="Whether searches can be served (Triton and the audio_search model ready)")
    async def health() -> JSONResponse:
        try:
            server, model = await asyncio.wait_for(search.readiness(), HEALTH_TIMEOUT_S)
        except (SearchError, asyncio.TimeoutError):
            server = model = False
        report = Health(ready=server and model, triton_ready=server, model_ready=model)
        return JSONResponse(report.model_dump(), 200 if report.ready else 503,
                            None if report.ready else {"retry-after": str(config.queue.retry_after_s)})

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def page() -> Response:
        return HTMLResponse((STATIC / "index.html").read_text(encoding="utf-8"), headers={"content-security-policy": PAGE_POLICY})

    return app, metrics
