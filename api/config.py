"""The API's settings (configs/api.yaml): where Triton is, the limits every upload is held to, the queue and the
rate limit. Unknown keys fail loudly (common.yaml_config)."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from common.yaml_config import load_yaml

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CONFIG = REPO_ROOT / "configs" / "api.yaml"


@dataclass
class TritonSettings:
    url: str = "localhost:8001"
    model: str = "audio_search"
    root_cert: str = ""
    connections: int = 2
    timeout_s: float = 30.0
    retries: int = 1


@dataclass
class Limits:
    max_upload_bytes: int = 8 * 1024 * 1024
    min_seconds: float = 1.0
    max_seconds: float = 30.0
    max_top_k: int = 100
    default_top_k: int = 10
    max_channels: int = 8
    max_sample_rate: int = 192_000
    header_timeout_s: float = 10.0
    body_timeout_s: float = 15.0


@dataclass
class QueueSettings:
    max_uploads: int = 32
    max_in_flight: int = 4
    max_waiting: int = 32
    wait_timeout_s: float = 10.0
    retry_after_s: int = 5
    max_connections: int = 512


@dataclass
class RateLimitSettings:
    requests_per_minute: float = 60.0
    burst: int = 10


@dataclass
class ApiConfig:
    triton: TritonSettings = field(default_factory=TritonSettings)
    limits: Limits = field(default_factory=Limits)
    queue: QueueSettings = field(default_factory=QueueSettings)
    rate_limit: RateLimitSettings = field(default_factory=RateLimitSettings)


def load_api_config(path: str | Path = DEFAULT_CONFIG) -> ApiConfig:
    """The settings of ``path``; a missing file or a bad key ends the program with one line."""
    try:
        return load_yaml(ApiConfig, path)
    except OSError as error:
        raise SystemExit(f"cannot read the API settings: {error}") from error
    except (ValueError, TypeError) as error:
        raise SystemExit(f"{path}: {error}") from error
