"""The corpus settings, read from configs/corpus.yaml (the one place that lists the packages)."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from common.yaml_config import load_yaml
from training.corpus.fingerprint import FingerprintConfig

DEFAULT_CONFIG = Path("configs/corpus.yaml")


@dataclass(frozen=True)
class SplitConfig:
    val_ratio: float = 0.1
    test_ratio: float = 0.2
    seed: int = 42


@dataclass(frozen=True)
class NearDuplicateConfig:
    threshold: float = 0.5
    window_seconds: float = 20.0
    candidate_shifts: int = 16


@dataclass(frozen=True)
class CorpusConfig:
    packages: tuple[str, ...] = ()
    # Game-data packages that ship sound effects, ambience and speech beside their music: only their files
    # under a folder named "music" (any case) are sources.
    music_folder_only: tuple[str, ...] = ()
    output_dir: str = "artifacts/corpus"
    min_seconds: float = 30.0
    splits: SplitConfig = field(default_factory=SplitConfig)
    fingerprint: FingerprintConfig = field(default_factory=FingerprintConfig)
    near_duplicate: NearDuplicateConfig = field(default_factory=NearDuplicateConfig)


def load_corpus_config(path: Path = DEFAULT_CONFIG) -> CorpusConfig:
    try:
        cfg = load_yaml(CorpusConfig, path)
    except (OSError, ValueError, TypeError) as exc:
        raise SystemExit(f"{path}: {exc}") from exc
    unknown = [name for name in cfg.music_folder_only if name not in cfg.packages]
    if unknown:
        raise SystemExit(f"{path}: music_folder_only names packages not in packages: {', '.join(unknown)}")
    return cfg
