"""What differs between tritonclient's gRPC and HTTP modules, and the request/response shapes of audio_search.

The sync and async clients share this; each protocol is one ``Protocol`` value.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from types import ModuleType
from typing import Any, Literal

import numpy as np
from tritonclient.utils import np_to_triton_dtype

ProtocolName = Literal["grpc", "http"]
PROTOCOLS: tuple[ProtocolName, ...] = ("grpc", "http")
DEFAULT_PORTS = {"grpc": 8001, "http": 8000}
AUDIO, TOP_K, TRACK_IDS, SCORES = "AUDIO", "TOP_K", "TRACK_IDS", "SCORES"

Hit = tuple[str, float]


def default_url(protocol: ProtocolName) -> str:
    return f"localhost:{DEFAULT_PORTS[protocol]}"


@dataclass(frozen=True)
class Protocol:
    name: ProtocolName
    module: ModuleType  # tritonclient.grpc / tritonclient.http (sync) or their .aio variants

    @property
    def json_kwargs(self) -> dict[str, Any]:
        # gRPC returns protobuf messages unless asked for JSON; HTTP always returns JSON.
        return {"as_json": True} if self.name == "grpc" else {}


def load_protocol(name: str, asynchronous: bool = False) -> Protocol:
    if name not in PROTOCOLS:
        raise ValueError(f"protocol must be one of {PROTOCOLS}, got {name!r}")
    module = importlib.import_module(f"tritonclient.{name}{'.aio' if asynchronous else ''}")
    return Protocol(name, module)  # type: ignore[arg-type]


def grpc_tls(protocol: ProtocolName, root_certificates: str | None) -> dict[str, object]:
    """tritonclient's gRPC arguments for TLS checked against the CA file ``root_certificates`` (None: plaintext)."""
    if root_certificates is None:
        return {}
    if protocol != "grpc":
        raise ValueError("TLS (a root certificate) is supported for gRPC only")
    return {"ssl": True, "root_certificates": root_certificates}


def grpc_channel_args(module: ModuleType, own_connection: bool = False) -> list[tuple[str, int]]:
    """tritonclient's own gRPC channel options, plus a reconnect backoff short enough to follow a server restart.

    gRPC waits up to 120 s between reconnection attempts by default: a long-lived client would keep failing
    for minutes after the server came back. ``own_connection`` keeps channels to one address from sharing a
    connection (gRPC pools them per process otherwise).
    """
    keepalive = module.KeepAliveOptions()
    args = [
        ("grpc.max_send_message_length", module.MAX_GRPC_MESSAGE_SIZE),
        ("grpc.max_receive_message_length", module.MAX_GRPC_MESSAGE_SIZE),
        ("grpc.keepalive_time_ms", keepalive.keepalive_time_ms),
        ("grpc.keepalive_timeout_ms", keepalive.keepalive_timeout_ms),
        ("grpc.keepalive_permit_without_calls", keepalive.keepalive_permit_without_calls),
        ("grpc.http2.max_pings_without_data", keepalive.http2_max_pings_without_data),
        ("grpc.initial_reconnect_backoff_ms", 250),
        ("grpc.max_reconnect_backoff_ms", 2000),
    ]
    if own_connection:
        args.append(("grpc.use_local_subchannel_pool", 1))
    return args


def search_inputs(protocol: Protocol, audio: np.ndarray, top_k: int) -> list[Any]:
    audio_input = protocol.module.InferInput(AUDIO, list(audio.shape), _wire_dtype(audio.dtype))
    audio_input.set_data_from_numpy(audio)
    top_k_input = protocol.module.InferInput(TOP_K, [1], "INT32")
    top_k_input.set_data_from_numpy(np.array([top_k], dtype=np.int32))
    return [audio_input, top_k_input]


def search_outputs(protocol: Protocol) -> list[Any]:
    return [protocol.module.InferRequestedOutput(TRACK_IDS), protocol.module.InferRequestedOutput(SCORES)]


def _wire_dtype(dtype: np.dtype) -> str:
    # Sent as is: a wrong dtype is the server's to reject, with its own message.
    return np_to_triton_dtype(dtype) or str(dtype)


def parse_hits(result: Any) -> list[Hit]:
    ids = result.as_numpy(TRACK_IDS)
    scores = result.as_numpy(SCORES)
    return [(_text(track_id), float(score)) for track_id, score in zip(ids.reshape(-1), scores.reshape(-1))]


def _text(value: bytes | str) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def repository_models(index: Any) -> list[dict[str, Any]]:
    """The repository index as a list of {name, version, state, reason} (gRPC wraps it in {"models": ...})."""
    return list(index.get("models", [])) if isinstance(index, dict) else list(index)


def health_report(live: bool, ready: bool, model: str, model_ready: bool, index: list[dict[str, Any]]) -> dict[str, Any]:
    """{"live", "ready", "model", "model_ready", "models": {name: {"ready", "versions", "states", "reason"}}}."""
    models: dict[str, dict[str, Any]] = {}
    for row in index:
        entry = models.setdefault(row["name"], {"ready": False, "versions": [], "states": {}, "reason": ""})
        version = str(row.get("version", ""))
        state = row.get("state", "UNKNOWN")
        if version:
            entry["versions"].append(version)
            entry["states"][version] = state
        entry["ready"] = entry["ready"] or state == "READY"
        if row.get("reason"):
            entry["reason"] = row["reason"]
    return {"live": live, "ready": ready, "model": model, "model_ready": model_ready, "models": models}
