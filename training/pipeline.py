"""The artifact chain from generated audio to a trained embedder, shared by `make quality` and `make demo`.

Every step is skipped when its output exists, so a rerun costs only what changed.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from common.cli import run_module
from common.yaml_config import load_yaml, save_yaml
from training.train import TrainConfig


@dataclass
class PipelineConfig:
    work_dir: Path
    tracks: int
    seconds: float
    views_per_track: int
    n_quantizers: int
    epochs: int | None
    val_ratio: float
    test_ratio: float
    train_config: Path = Path("configs/train.yaml")
    moss_config: str = "tiny"
    device: str = "auto"
    seed: int = 42


@dataclass(frozen=True)
class PipelinePaths:
    audio: Path
    tokens: Path
    splits: Path
    views: Path
    checkpoints: Path

    @property
    def best_checkpoint(self) -> Path:
        return self.checkpoints / "best.pt"


def paths_of(work_dir: Path) -> PipelinePaths:
    return PipelinePaths(*(work_dir / n for n in ("audio", "tokens", "splits", "views", "checkpoints")))


def moss_args(cfg: PipelineConfig) -> list[str]:
    return ["--moss-config", cfg.moss_config, "--device", cfg.device, "--n-quantizers", str(cfg.n_quantizers)]


def run_step(name: str, module: str, argv: list[str], timings: dict[str, float]) -> None:
    started = time.perf_counter()
    print(f"== {name}", flush=True)
    if run_module(module, argv) != 0:
        raise SystemExit(f"step {name} failed")
    timings[name] = round(time.perf_counter() - started, 1)


def run_training_pipeline(cfg: PipelineConfig, timings: dict[str, float]) -> PipelinePaths:
    paths = paths_of(cfg.work_dir)
    moss = moss_args(cfg)
    run_step("synth", "training.synth", ["--out", str(paths.audio), "--tracks", str(cfg.tracks), "--seconds", str(cfg.seconds), "--seed", str(cfg.seed)], timings)
    run_step("tokenize", "training.tokenize", ["--input-root", str(paths.audio), "--output-root", str(paths.tokens), *moss], timings)
    run_step("splits", "training.splits", ["--tokens-root", str(paths.tokens), "--output-root", str(paths.splits), "--val-ratio", str(cfg.val_ratio), "--test-ratio", str(cfg.test_ratio), "--seed", str(cfg.seed)], timings)
    train_cfg = load_yaml(TrainConfig, cfg.train_config)
    train_cfg.output_dir, train_cfg.seed, train_cfg.views.per_track = str(paths.checkpoints), cfg.seed, cfg.views_per_track
    train_cfg.data.tokenizer, train_cfg.data.audio_root, train_cfg.data.tokens_root = cfg.moss_config, str(paths.audio), str(paths.tokens)
    train_cfg.data.splits_root, train_cfg.data.views_root = str(paths.splits), str(paths.views)
    if cfg.epochs is not None:
        train_cfg.optim.epochs = cfg.epochs
    paths.checkpoints.mkdir(parents=True, exist_ok=True)
    config_path = paths.checkpoints / "train.yaml"
    save_yaml(train_cfg, config_path)
    run_step("views", "training.views", ["--config", str(config_path), "--device", cfg.device], timings)
    if not paths.best_checkpoint.exists():
        run_step("train", "training.train", ["--config", str(config_path), "--device", cfg.device], timings)
    return paths
