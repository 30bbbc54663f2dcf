"""`python -m training train`: contrastive training of the TokenEmbedder on (clean catalog window, query view) pairs.

The stored views and their windows come from `python -m training views` with the same config (catalog
layout, tokenizer, levels); a mismatch is refused rather than trained on. With ``online.enabled`` the training
pairs are made afresh every step instead (training.online_views) and only the val views are read from disk.
"""
from __future__ import annotations

import argparse
import json
import math
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from common.yaml_config import from_dict, load_yaml, to_dict
from training.codebook_init import init_from_codebook, tokenizer_quantizer
from training.dataset import CatalogConfig, TrackViews, ViewPairDataset, collate_pairs, load_views
from training.embedder import EmbedderConfig, TokenEmbedder
from training.losses import nt_xent
from training.metrics import ranks_of_targets, recall_at_k
from training.online_views import OnlineViewsConfig, TorchEmbedFn, online_pairs
from training.retrieval import embed_sequences, rank_tracks_exact, torch_embed_fn
from training.splits import read_split
from training.view_synth import ViewConfig

VIEWS_META = "views.json"


@dataclass
class DataConfig:
    tokenizer: str = "tiny"  # MOSS preset or weights folder: encodes the views and windows, seeds init_from_codebook
    audio_root: str = "artifacts/audio"
    tokens_root: str = "artifacts/tokens"  # whole-track codes (catalog.tokenize whole cuts windows from them)
    splits_root: str = "artifacts/splits"
    views_root: str = "artifacts/views"
    pairs_per_track: int = 4


@dataclass
class OptimConfig:
    epochs: int = 10
    batch_size: int = 128
    lr: float = 2e-3
    weight_decay: float = 0.05
    warmup_steps: int = 30
    grad_clip: float = 1.0


@dataclass
class TrainConfig:
    output_dir: str = "artifacts/checkpoints"
    seed: int = 42
    temperature: float = 0.07
    learn_temperature: bool = True
    code_dropout: float = 0.1
    # An embedder checkpoint (best.pt or last.pt of an earlier run, same model config) whose weights and temperature
    # start this run, with a fresh optimizer and schedule: a longer or larger-batch run continues what one paid for.
    init_from: str = ""
    data: DataConfig = field(default_factory=DataConfig)
    model: EmbedderConfig = field(default_factory=EmbedderConfig)
    catalog: CatalogConfig = field(default_factory=CatalogConfig)
    views: ViewConfig = field(default_factory=ViewConfig)
    online: OnlineViewsConfig = field(default_factory=OnlineViewsConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)


def load_train_config(path: Path) -> TrainConfig:
    """The config at ``path``; a missing or invalid file is one line of error, not a traceback."""
    try:
        return load_yaml(TrainConfig, path)
    except (OSError, ValueError, TypeError) as error:
        raise SystemExit(f"training config {path}: {error}") from None


def views_meta(cfg: TrainConfig) -> dict:
    """What the views under ``data.views_root`` depend on; written by `views`, checked by `views` and `train`."""
    return {"tokenizer": cfg.data.tokenizer, "n_quantizers": cfg.model.n_levels, "catalog": to_dict(cfg.catalog), "views": to_dict(cfg.views), "seed": cfg.seed}


def views_mismatch(cfg: TrainConfig, keys: tuple[str, ...]) -> str | None:
    """Why the views on disk do not fit ``cfg`` in ``keys`` (None when they do, or when there are none yet)."""
    path = Path(cfg.data.views_root) / VIEWS_META
    if not path.exists():
        return None
    stored, wanted = json.loads(path.read_text(encoding="utf-8")), json.loads(json.dumps(views_meta(cfg)))
    differing = [f"{key}: views have {stored.get(key)!r}, config {wanted[key]!r}" for key in keys if stored.get(key) != wanted[key]]
    return f"the views under {path.parent} were made with another config ({'; '.join(differing)})" if differing else None


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def lr_factor(step: int, warmup: int, total: int) -> float:
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def validation_recall_at_1(model: TokenEmbedder, views: list[TrackViews], device: torch.device) -> float:
    """Catalog: every window of the val tracks; queries: all their views (excerpts anywhere, degraded)."""
    windows = [w for v in views for w in v.windows()]
    window_track = np.concatenate([np.full(len(v.window_lengths), t) for t, v in enumerate(views)])
    queries = [v.view(k) for v in views for k in range(len(v.lengths))]
    query_track = [t for t, v in enumerate(views) for _ in range(len(v.lengths))]
    model.eval()
    embed = torch_embed_fn(model, device)
    order, _ = rank_tracks_exact(embed_sequences(embed, queries), embed_sequences(embed, windows), window_track, len(views))
    return recall_at_k(ranks_of_targets([list(row) for row in order], query_track), 1)


def save_checkpoint(path: Path, model: TokenEmbedder, cfg: TrainConfig, epoch: int, extra: dict) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save({"model": model.state_dict(), "model_config": to_dict(cfg.model), "train_config": to_dict(cfg), "epoch": epoch, **extra}, tmp)
    tmp.replace(path)  # atomic: a run killed at a GPU call's time limit leaves the previous epoch's file whole


def finished_epochs(output_dir: Path) -> int:
    """Epochs a training run in ``output_dir`` has completed (0 where none has started); its last.pt resumes it."""
    path = Path(output_dir) / "history.json"
    return len(json.loads(path.read_text(encoding="utf-8"))) if path.is_file() and (Path(output_dir) / "last.pt").is_file() else 0


def load_initial_weights(model: TokenEmbedder, checkpoint: Path, expected: EmbedderConfig) -> float:
    """Load ``checkpoint``'s weights into ``model`` (``init_from``) and return its learnt temperature; another model
    config or a missing file is one line of error."""
    if not checkpoint.is_file():
        raise SystemExit(f"init_from {checkpoint}: no such file")
    state = torch.load(checkpoint, map_location="cpu", weights_only=False)
    if state.get("model_config") != to_dict(expected):
        raise SystemExit(f"init_from {checkpoint}: its model config {state.get('model_config')} is not this run's {to_dict(expected)}")
    model.load_state_dict(state["model"])
    return math.exp(state["log_temperature"]) if "log_temperature" in state else state["history"][-1]["temperature"]


def trained_layout(checkpoint: str | Path) -> CatalogConfig:
    """The catalog layout the embedder was trained with (its windows were the positives), else the default."""
    state = torch.load(checkpoint, map_location="cpu", weights_only=False)
    return from_dict(CatalogConfig, state.get("train_config", {}).get("catalog"))


def load_embedder(checkpoint: str | Path, device: torch.device | str = "cpu") -> TokenEmbedder:
    state = torch.load(checkpoint, map_location=device, weights_only=False)
    model = TokenEmbedder(EmbedderConfig(**state["model_config"]))
    model.load_state_dict(state["model"])
    return model.to(device).eval()


def plot_history(history: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [h["epoch"] for h in history]
    fig, ax_loss = plt.subplots(figsize=(7, 4))
    ax_loss.plot(epochs, [h["train_loss"] for h in history], color="tab:blue", label="train NT-Xent loss")
    ax_loss.set_xlabel("epoch")
    ax_loss.set_ylabel("loss", color="tab:blue")
    ax_recall = ax_loss.twinx()
    ax_recall.plot(epochs, [h["val_recall@1"] for h in history], color="tab:orange", label="val recall@1 (training-like views)")
    ax_recall.set_ylabel("val recall@1", color="tab:orange")
    ax_recall.set_ylim(0, 1)
    fig.legend(loc="lower center", ncol=2, fontsize=8)
    fig.tight_layout(rect=(0, 0.07, 1, 1))  # room below the axis label for the legend
    fig.savefig(path, dpi=120)
    plt.close(fig)


def train(cfg: TrainConfig, device: torch.device, resume: Path | None = None) -> dict:
    if cfg.online.hard_tracks and not cfg.online.enabled:
        raise SystemExit("online.hard_tracks groups the tracks of pairs made per step: it needs online.enabled")
    seed_everything(cfg.seed)
    out_dir = Path(cfg.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    views_root = Path(cfg.data.views_root)
    mismatch = views_mismatch(cfg, ("tokenizer", "n_quantizers", "catalog"))
    if mismatch:
        raise SystemExit(f"{mismatch}; rerun `python -m training views --config` with this config")
    train_ids, val_ids = (read_split(Path(cfg.data.splits_root) / f"{name}.txt") for name in ("train", "val"))
    val_views = [load_views(views_root, t) for t in val_ids]
    epoch_batches, steps_per_epoch, before_epoch = _batch_source(cfg, train_ids, views_root, device)
    model = TokenEmbedder(cfg.model)
    temperature = cfg.temperature
    if cfg.init_from and resume is None:
        temperature = load_initial_weights(model, Path(cfg.init_from), cfg.model)
    elif cfg.model.init_from_codebook and resume is None:
        init_from_codebook(model, tokenizer_quantizer(cfg.data.tokenizer), cfg.seed)
    model = model.to(device)
    log_temperature = torch.nn.Parameter(torch.tensor(math.log(temperature), device=device), requires_grad=cfg.learn_temperature)
    optimizer = torch.optim.AdamW([{"params": model.parameters()}, {"params": [log_temperature], "weight_decay": 0.0}], lr=cfg.optim.lr, weight_decay=cfg.optim.weight_decay)
    total_steps = cfg.optim.epochs * steps_per_epoch
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, cfg.optim.warmup_steps, total_steps))
    use_amp = device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    history: list[dict] = []
    start_epoch, best = 1, -1.0
    if resume is not None:
        state = torch.load(resume, map_location=device, weights_only=False)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        log_temperature.data.fill_(state["log_temperature"])
        history, best, start_epoch = state["history"], state["best_val_recall@1"], state["epoch"] + 1
    for epoch in range(start_epoch, cfg.optim.epochs + 1):
        started = time.perf_counter()
        model.eval()
        with torch.no_grad(), torch.autocast(device.type, dtype=torch.float16, enabled=use_amp):
            before_epoch(lambda codes, mask: model(codes, mask))
        model.train()
        losses = []
        for batch in tqdm(epoch_batches(epoch), total=steps_per_epoch, desc=f"epoch {epoch}/{cfg.optim.epochs}", leave=False):
            window, window_mask, view, view_mask, tracks = (t.to(device) for t in batch)
            with torch.autocast(device.type, dtype=torch.float16, enabled=use_amp):
                z1 = model(window, window_mask, cfg.code_dropout)
                z2 = model(view, view_mask, cfg.code_dropout)
            loss = nt_xent(z1.float(), z2.float(), log_temperature.exp(), tracks)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.optim.grad_clip)
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            losses.append(float(loss.detach()))
        seconds = time.perf_counter() - started
        val_recall = validation_recall_at_1(model, val_views, device) if val_views else float("nan")
        record = {"epoch": epoch, "train_loss": float(np.mean(losses)), "val_recall@1": val_recall, "temperature": float(log_temperature.detach().exp()), "lr": scheduler.get_last_lr()[0], "seconds": round(seconds, 1)}
        history.append(record)
        print(json.dumps(record), flush=True)
        extra = {"history": history, "best_val_recall@1": max(best, val_recall), "log_temperature": float(log_temperature.detach())}
        if val_recall > best:
            best = val_recall
            save_checkpoint(out_dir / "best.pt", model, cfg, epoch, extra)
        save_checkpoint(out_dir / "last.pt", model, cfg, epoch, {**extra, "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()})
        (out_dir / "history.json").write_text(json.dumps(history, indent=2), encoding="utf-8")
        plot_history(history, out_dir / "history.png")
    return {"best_val_recall@1": best, "epochs": len(history), "output_dir": str(out_dir)}


def _batch_source(cfg: TrainConfig, train_ids: list[str], views_root: Path,
                  device: torch.device) -> tuple[Callable[[int], Iterable[tuple[torch.Tensor, ...]]], int, Callable[[TorchEmbedFn], None]]:
    """(epoch -> its batches, steps per epoch, what to do with the embedder before an epoch): the stored views,
    or with ``online.enabled`` pairs made per step (their hard-track neighbours refreshed before each epoch)."""
    pairs = len(train_ids) * cfg.data.pairs_per_track
    if cfg.online.enabled:
        source = online_pairs(train_ids, Path(cfg.data.audio_root), Path(cfg.data.tokens_root), cfg.data.tokenizer, cfg.catalog, cfg.model.n_levels,
                              cfg.views, cfg.online, cfg.optim.batch_size, cfg.seed, device)
        steps = max(1, pairs // cfg.optim.batch_size)
        return (lambda epoch: (source.batch((epoch - 1) * steps + i) for i in range(steps))), steps, source.refresh_neighbours
    dataset = ViewPairDataset([load_views(views_root, t) for t in train_ids], cfg.seed, cfg.data.pairs_per_track)
    # drop_last keeps every batch's negatives count equal; a final tiny batch would make the loss noisy.
    loader = DataLoader(dataset, batch_size=min(cfg.optim.batch_size, len(dataset)), shuffle=True, collate_fn=collate_pairs, drop_last=True)
    return (lambda epoch: loader), len(loader), lambda embed: None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, default=Path("configs/train.yaml"))
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda")
    parser.add_argument("--resume", type=Path, default=None, help="a last.pt to continue from")


def main(args: argparse.Namespace) -> int:
    cfg = load_train_config(args.config)
    print(json.dumps(train(cfg, resolve_device(args.device), args.resume)))
    return 0
