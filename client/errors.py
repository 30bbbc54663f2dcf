"""The client's exceptions, and the translation of tritonclient / transport failures into them.

Both protocols report failures differently (gRPC status codes, HTTP status strings, plain socket
errors from geventhttpclient, aiohttp errors); callers only see these four classes.
"""
from __future__ import annotations

import asyncio

from tritonclient.utils import InferenceServerException

# Status strings as InferenceServerException.status() gives them: gRPC "StatusCode.X", HTTP "400".
_INVALID = {"StatusCode.INVALID_ARGUMENT", "400"}
_UNAVAILABLE = {"StatusCode.UNAVAILABLE", "StatusCode.DEADLINE_EXCEEDED", "503", "504"}
_NOT_FOUND = {"StatusCode.NOT_FOUND", "404"}
# Triton words a request for a model that is not loaded (or has no ready version) like this.
_MODEL_MISSING_PHRASES = ("unknown model", "no available versions", "is not ready")


class SearchError(RuntimeError):
    """Base of every error the client raises; the message is the server's (or the client's) reason."""


class ServerUnavailable(SearchError):
    """No answer from the server: connection refused or reset, or timed out (after the retries)."""


class ModelNotReady(SearchError):
    """The server answers but the model is unknown, not loaded or not ready."""


class InvalidInput(SearchError):
    """The request was rejected as invalid (gRPC INVALID_ARGUMENT / HTTP 400); retrying cannot help."""


def translate(error: BaseException, model: str) -> SearchError | None:
    """The SearchError for a failure of a call about ``model``; None for errors that are bugs, not failures."""
    if isinstance(error, SearchError):
        return error
    if isinstance(error, InferenceServerException):
        return _from_server(error, model)
    # geventhttpclient and aiohttp raise OSError subclasses (refused, reset, timed out);
    # asyncio.wait_for raises asyncio.TimeoutError, which is not an OSError before Python 3.11.
    if isinstance(error, (OSError, asyncio.TimeoutError)):
        return ServerUnavailable(f"no answer from the server: {type(error).__name__}: {error}".rstrip(": "))
    return None


def _from_server(error: InferenceServerException, model: str) -> SearchError:
    status = str(error.status())
    message = error.message() or str(error)
    if status in _NOT_FOUND or (status not in _INVALID and any(p in message.lower() for p in _MODEL_MISSING_PHRASES)):
        return ModelNotReady(f"model {model!r} is not ready: {message}")
    if status in _INVALID:
        return InvalidInput(message)
    if status in _UNAVAILABLE:
        return ServerUnavailable(f"server unavailable ({status}): {message}")
    return SearchError(f"server error ({status}): {message}")
