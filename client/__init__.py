"""Typed tritonclient wrapper for the audio_search service (sync and asyncio, gRPC and HTTP).

Names are imported on first use, so `python -m client --help` does not load tritonclient.
"""
from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "AudioSearchClient": "client.sync_client",
    "AsyncAudioSearchClient": "client.async_client",
    "SearchError": "client.errors",
    "ServerUnavailable": "client.errors",
    "ModelNotReady": "client.errors",
    "InvalidInput": "client.errors",
    "Hit": "client.transport",
    "default_url": "client.transport",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'client' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
