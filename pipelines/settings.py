"""The pipeline's settings (configs/pipeline.yaml): where artifacts live, what to train and evaluate, the
quality gate, the server to publish to. Relative paths are relative to the repository root."""
from __future__ import annotations

import functools
from dataclasses import dataclass, field
from pathlib import Path

from common.yaml_config import load_yaml


@dataclass
class SplitSettings:
    val_ratio: float = 0.1
    test_ratio: float = 0.2
    seed: int = 42


@dataclass
class EvaluateSettings:
    split: str = "test"
    protocol: str = "same_file_aug"
    # Excerpts at random sample offsets of the split's tracks, against a catalog of every track (training.evaluate).
    query_seconds: list[float] = field(default_factory=lambda: [5.0, 10.0])
    conditions: list[str] = field(default_factory=lambda: ["clean", "snr20"])
    max_tracks: int | None = None
    seed: int = 1234


@dataclass
class GateSettings:
    """A run is published only if its pooled recall@1 is at least max(min_recall, last published - max_recall_drop)."""

    max_recall_drop: float = 0.05
    min_recall: float = 0.0


@dataclass
class ServingSettings:
    model_repository: str = "model_repository"
    http_url: str = "http://127.0.0.1:8000"
    grpc_url: str = "127.0.0.1:8001"
    admin_header: str = "triton-admin-key"
    admin_key_file: str = "secrets/triton_admin_key"
    keep_versions: int = 2
    load_timeout_s: float = 900.0


@dataclass
class SmokeSettings:
    """Queries through the served ensemble after a publish: noisy excerpts of catalog tracks."""

    queries: int = 8
    seconds: float = 5.0
    condition: str = "snr20"
    min_top1_rate: float = 0.5
    seed: int = 7


@dataclass
class PipelineSettings:
    work_root: str = "artifacts/pipeline"
    audio_root: str = "artifacts/pipeline/incoming"
    metrics_db: str = "sqlite:///artifacts/pipeline/metrics.sqlite"
    moss_config: str = "models/moss-small"  # a weights folder or a preset; a missing folder falls back to tiny
    n_quantizers: int = 8
    device: str = "auto"
    train_config: str = "configs/train.yaml"
    epochs: int | None = None
    views_per_track: int = 4
    splits: SplitSettings = field(default_factory=SplitSettings)
    evaluate: EvaluateSettings = field(default_factory=EvaluateSettings)
    gate: GateSettings = field(default_factory=GateSettings)
    serving: ServingSettings = field(default_factory=ServingSettings)
    smoke: SmokeSettings = field(default_factory=SmokeSettings)

    @property
    def tokens_root(self) -> Path:
        """Shared by every run: tokenizing is incremental (only new audio is encoded). One folder per
        tokenizer (its weights' digest), so codes of another tokenizer are never mixed in."""
        return Path(self.work_root) / "tokens" / self.tokenizer_tag

    @property
    def views_root(self) -> Path:
        return Path(self.work_root) / "views" / self.tokenizer_tag

    def run_dir(self, run_id: str) -> Path:
        return Path(self.work_root) / "runs" / run_id

    @functools.cached_property
    def _resolved_tokenizer(self) -> str:
        from training.pipeline import resolve_tokenizer  # loads torch: only the steps that tokenize need it

        moss, note = resolve_tokenizer(self.moss_config)
        if note:
            print(f"NOTE {note}", flush=True)
        return moss

    @functools.cached_property
    def tokenizer_tag(self) -> str:
        """Names what depends on the tokenizer: the preset, or the weights folder and its digest."""
        from training.pipeline import tokenizer_tag

        return tokenizer_tag(self._resolved_tokenizer)

    def tokenizer(self) -> str:
        """``moss_config``, or the tiny preset (said on stdout once) where that weights folder is missing."""
        return self._resolved_tokenizer

    def moss_argv(self) -> list[str]:
        return ["--moss-config", self.tokenizer(), "--n-quantizers", str(self.n_quantizers), "--device", self.device]


def load_settings(path: str | Path) -> PipelineSettings:
    try:
        return load_yaml(PipelineSettings, path)
    except OSError as error:
        raise SystemExit(f"cannot read the pipeline settings: {error}") from error
    except (ValueError, TypeError) as error:
        raise SystemExit(f"{path}: {error}") from error
