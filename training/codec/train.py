"""`python -m training codec-train`: train a MOSS-architecture codec from scratch, for reconstruction only.

Encoder + residual LFQ + decoder learn to reproduce random crops of real music: multi-resolution
STFT and multi-scale mel losses, the quantizer's commitment and codebook losses, quantizer dropout
(a random number of levels per item, so level 0 alone must already carry the most audible content,
as in variable-bitrate codecs). No retrieval or invariance loss: the codes stay a codec's codes.

Slices: GPU time comes in slices of at most 10 minutes, so the run stops itself after
``--max-minutes``, saves ``state.pt`` (weights, optimizer, step, code usage, history) and the next
call continues from it exactly: every step's batch, level counts and codebook re-seeding are drawn
from a generator seeded by (seed, step). ``history.json`` / ``history.png`` and the official-layout
export ``latest/`` are written at every checkpoint.
"""
from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from common.yaml_config import from_dict, load_yaml, to_dict
from training.codec.data import CropSampler, generator_for, list_audio
from training.codec.health import CodeUsage
from training.codec.losses import LossWeights, ReconstructionLoss
from training.moss.attention import causal_attention_within_context
from training.moss.codec import MossCodec, sample_levels
from training.moss.config import MossConfig, resolve_moss
from training.moss.weights import empty_codec, init_codec_weights, load_official_weights, save_official_layout
from training.train import lr_factor, resolve_device

STATE_FILE = "state.pt"
SPEED_PROBE_STEPS = (5, 30)  # steps timed to size an automatic schedule (after warm-up kernels)


@dataclass
class CodecDataConfig:
    audio_root: str = "artifacts/corpus"
    split: str | None = "train"
    crop_seconds: float = 3.0
    min_track_seconds: float = 5.0
    gain_db: tuple[float, float] = (-12.0, 0.0)


@dataclass
class CodecOptimConfig:
    lr: float = 6e-4
    betas: tuple[float, float] = (0.8, 0.99)
    weight_decay: float = 0.01
    warmup_steps: int = 300
    # 0: sized on the first run from the measured speed so that the schedule ends after planned_minutes.
    total_steps: int = 0
    planned_minutes: float = 17.2
    final_lr_ratio: float = 0.1
    grad_clip: float = 1.0


@dataclass
class CodebookConfig:
    reset_every: int = 200  # steps per usage window
    dead_below: int = 1  # codes picked fewer times than this in a window are re-seeded


@dataclass
class CodecTrainConfig:
    moss_config: str = "small"
    # A weights folder in the official layout (encoder, quantizer and decoder; e.g. models/moss-small) to continue
    # from instead of starting at random: a new run builds on a shipped codec. Its config must be moss_config's.
    init_from: str | None = None
    output_dir: str = "artifacts/codec"
    seed: int = 1234
    batch_size: int = 64
    quantizer_dropout: float = 0.5
    checkpoint_every: int = 500
    log_every: int = 25
    data: CodecDataConfig = field(default_factory=CodecDataConfig)
    loss: LossWeights = field(default_factory=LossWeights)
    optim: CodecOptimConfig = field(default_factory=CodecOptimConfig)
    codebook: CodebookConfig = field(default_factory=CodebookConfig)


def learning_rate(step: int, optim: CodecOptimConfig, total_steps: int) -> float:
    """The embedder's warm-up + cosine (``lr_factor``), with the cosine ending at ``lr * final_lr_ratio``."""
    factor = lr_factor(step, optim.warmup_steps, total_steps)
    if step < optim.warmup_steps:
        return optim.lr * factor
    return optim.lr * (optim.final_lr_ratio + (1 - optim.final_lr_ratio) * factor)


class CodecTrainer:
    def __init__(self, config: CodecTrainConfig, device: torch.device) -> None:
        self.config = config
        self.device = device
        self.output = Path(config.output_dir)
        source = resolve_moss(config.moss_config)
        self.model: MossCodec = empty_codec(source.config, "cpu")
        if config.init_from:
            self._load_start(Path(config.init_from), source.config)
        else:
            init_codec_weights(self.model, config.seed)
        self.model.to(device).train()
        self.model.set_attention(causal_attention_within_context)
        self.loss = ReconstructionLoss().to(device)
        quantizer = source.config.quantizer
        self.usage = CodeUsage(quantizer.num_quantizers, quantizer.codebook_size)
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=config.optim.lr, betas=config.optim.betas,
                                           weight_decay=config.optim.weight_decay)
        self.step = 0
        self.total_steps = config.optim.total_steps
        self.history: list[dict] = []

    def _load_start(self, folder: Path, config: MossConfig) -> None:
        try:
            start = resolve_moss(str(folder))
        except ValueError as error:
            raise SystemExit(f"codec-train: init_from: {error}") from None
        if start.weights_dir is None:
            raise SystemExit(f"codec-train: init_from {folder} is a preset: it needs a folder of trained weights")
        if start.config.to_official_dict() != config.to_official_dict():
            raise SystemExit(f"codec-train: init_from {folder} is another architecture than moss_config {self.config.moss_config}")
        load_official_weights(self.model, start.weights_dir)  # strict: every encoder, quantizer and decoder tensor

    # -- state -------------------------------------------------------------------------------
    def save(self) -> None:
        self.output.mkdir(parents=True, exist_ok=True)
        state = {
            "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(), "step": self.step,
            "total_steps": self.total_steps, "usage": self.usage.state(), "history": self.history,
            "config": to_dict(self.config),
        }
        temporary = self.output / (STATE_FILE + ".tmp")
        torch.save(state, temporary)
        temporary.replace(self.output / STATE_FILE)  # a slice killed mid-save keeps the previous state
        save_official_layout(self.model, self.output / "latest")
        (self.output / "history.json").write_text(json.dumps(self.history, indent=1))
        plot_history(self.history, self.output / "history.png")

    def resume(self) -> bool:
        path = self.output / STATE_FILE
        if not path.is_file():
            return False
        state = torch.load(path, map_location=self.device, weights_only=False)
        if state["config"] != to_dict(self.config):
            raise SystemExit(f"{path} was written with another config; use a new --output-dir or --fresh")
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.step, self.total_steps, self.history = state["step"], state["total_steps"], state["history"]
        self.usage.load(state["usage"])
        return True

    # -- one step ----------------------------------------------------------------------------
    def losses(self, audio: torch.Tensor, levels: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor], torch.Tensor]:
        """The weighted training loss of a batch, its terms, and the codes it used."""
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.device.type == "cuda"):
            out = self.model.train_forward(audio, levels)
        recon = self.loss(out.reconstruction, audio)
        weights = self.config.loss
        total = (weights.mel * recon["mel"] + weights.stft * recon["stft"]
                 + weights.commitment * out.commitment + weights.codebook * out.codebook)
        terms = {"mel": recon["mel"], "stft": recon["stft"], "commitment": out.commitment, "codebook": out.codebook}
        return total, terms, out.codes

    def train_on(self, audio: torch.Tensor, levels: torch.Tensor, lr: float) -> dict[str, float]:
        """One optimizer step on a batch; returns the loss terms before the step."""
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        total, terms, codes = self.losses(audio, levels)
        self.optimizer.zero_grad(set_to_none=True)
        total.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.config.optim.grad_clip)
        self.optimizer.step()
        self.usage.add(codes, levels)
        scalars = {"total": total, **terms, "grad_norm": grad_norm}
        return {k: float(v.detach()) for k, v in scalars.items()}

    def train_step(self, sampler: CropSampler) -> dict[str, float]:
        """The step-th batch (drawn from the (seed, step) generator), one update, codebook upkeep."""
        config = self.config
        generator = generator_for(config.seed, self.step)
        hop = self.model.config.hop
        crop = int(round(config.data.crop_seconds * self.model.config.sampling_rate / hop)) * hop
        audio = sampler.crops(config.batch_size, crop, config.data.gain_db, generator)
        levels = sample_levels(config.batch_size, self.model.config.quantizer.num_quantizers,
                               config.quantizer_dropout, generator, self.device)
        lr = learning_rate(self.step, config.optim, max(self.total_steps, config.optim.warmup_steps + 1))
        row = {"step": self.step + 1, "lr": lr, **self.train_on(audio, levels, lr)}
        self.step += 1
        if self.step % config.codebook.reset_every == 0:
            row.update(self.usage.reseed_dead(self.model.quantizer, config.codebook.dead_below, generator))
        return row

    # -- the slice ---------------------------------------------------------------------------
    def run(self, sampler: CropSampler, max_minutes: float | None, max_steps: int | None) -> None:
        started = time.monotonic()
        probe_start: float | None = None
        rows: list[dict[str, float]] = []
        stop_step = self.step + max_steps if max_steps else None
        progress = tqdm(initial=self.step, total=self.total_steps or None, desc="codec", unit="step", mininterval=15)
        while True:
            if self.total_steps and self.step >= self.total_steps:
                break
            if stop_step is not None and self.step >= stop_step:
                break
            if max_minutes is not None and time.monotonic() - started > max_minutes * 60:
                break
            rows.append(self.train_step(sampler))
            progress.update(1)
            if not self.total_steps:
                probe_start = self._size_schedule(probe_start, progress)
            if self.step % self.config.log_every == 0:
                self._log(rows, started)
                rows = []
            if self.step % self.config.checkpoint_every == 0:
                self.save()
        progress.close()
        if rows:
            self._log(rows, started)
        self.save()

    def _size_schedule(self, probe_start: float | None, progress: tqdm) -> float | None:
        first, last = SPEED_PROBE_STEPS
        if self.device.type == "cuda":
            torch.cuda.synchronize()
        if self.step == first:
            return time.monotonic()
        if self.step == last and probe_start is not None:
            per_step = (time.monotonic() - probe_start) / (last - first)
            self.total_steps = max(last + 1, int(self.config.optim.planned_minutes * 60 / per_step))
            progress.total = self.total_steps
            tqdm.write(f"schedule: {1 / per_step:.2f} steps/s -> {self.total_steps} steps in {self.config.optim.planned_minutes} min")
        return probe_start

    def _log(self, rows: list[dict[str, float]], started: float) -> None:
        merged: dict[str, float] = {}
        for key in rows[-1]:
            values = [r[key] for r in rows if key in r]
            merged[key] = values[-1] if key in ("step", "lr") or key.startswith("codes_") or key.startswith("entropy_") else float(np.mean(values))
        merged["elapsed_s"] = time.monotonic() - started
        self.history.append(merged)
        tqdm.write(" ".join(f"{k}={v:.4g}" for k, v in merged.items()))


def plot_history(history: list[dict], path: Path) -> None:
    if not history:
        return
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [row["step"] for row in history]
    fig, (losses, health) = plt.subplots(1, 2, figsize=(12, 4.5))
    for key in ("mel", "stft", "commitment", "codebook"):
        losses.plot(steps, [row[key] for row in history], label=key)
    losses.set_yscale("log")
    losses.set_xlabel("step")
    losses.set_title("codec training losses")
    losses.legend()
    checked = [row for row in history if "entropy_level0" in row]
    if checked:
        health.plot([r["step"] for r in checked], [r["entropy_level0"] for r in checked], label="level 0 entropy (bits)")
        health.plot([r["step"] for r in checked], [r["entropy_mean"] for r in checked], label="mean entropy over levels (bits)")
        health.set_xlabel("step")
        health.set_title("codebook health")
        health.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, default=Path("configs/codec.yaml"))
    parser.add_argument("--output-dir", help="override the config's output_dir")
    parser.add_argument("--audio-root", help="override data.audio_root (a corpus folder or a corpus-pack folder)")
    parser.add_argument("--split", help="override data.split ('none': every file under the audio root)")
    parser.add_argument("--device", default="auto", help="auto (CUDA where present), cpu, cuda")
    parser.add_argument("--max-minutes", type=float, help="stop (and save) after this much wall time: one GPU slice")
    parser.add_argument("--max-steps", type=int, help="stop (and save) after this many steps in this call")
    parser.add_argument("--fresh", action="store_true", help="ignore an existing state.pt and start from step 0")
    parser.add_argument("--init-from", help="override init_from: start from this official-layout codec (e.g. models/moss-small), not at random")


def load_config(args: argparse.Namespace) -> CodecTrainConfig:
    try:
        config = load_yaml(CodecTrainConfig, args.config)
    except (OSError, ValueError, TypeError) as error:
        raise SystemExit(f"codec-train: cannot read config {args.config}: {error}") from None
    data = to_dict(config)
    if args.output_dir:
        data["output_dir"] = args.output_dir
    if args.audio_root:
        data["data"]["audio_root"] = args.audio_root
    if args.split:
        data["data"]["split"] = None if args.split == "none" else args.split
    if args.init_from:
        data["init_from"] = args.init_from
    return from_dict(CodecTrainConfig, data)


def main(args: argparse.Namespace) -> int:
    config = load_config(args)
    device = resolve_device(args.device)
    torch.manual_seed(config.seed)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
    trainer = CodecTrainer(config, device)
    if not args.fresh and trainer.resume():
        print(f"resuming {config.output_dir} at step {trainer.step} of {trainer.total_steps or 'auto'}")
    try:
        files = list_audio(Path(config.data.audio_root), config.data.split)
        sampler = CropSampler(files, device, config.data.min_track_seconds)
    except ValueError as error:
        raise SystemExit(f"codec-train: {error}") from None
    counts = trainer.model.parameter_counts()
    print(f"codec {config.moss_config}: encoder {counts.encoder:,} + quantizer {counts.quantizer:,} + decoder "
          f"{trainer.model.decoder_parameter_count():,} parameters; {len(files)} tracks, {sampler.seconds / 60:.1f} min of audio on {device}")
    trainer.run(sampler, args.max_minutes, args.max_steps)
    print(json.dumps({"step": trainer.step, "total_steps": trainer.total_steps, **(trainer.history[-1] if trainer.history else {})}))
    return 0
