"""The artifact chain from audio to a trained embedder, shared by `make quality` and `make demo`.

Audio is the real-music corpus (`python -m training corpus`: manifest.csv + audio/, splits from its
``split`` column) plus generated tracks as distractors, or generated tracks alone where no corpus is
installed. The tokenizer is the trained one in models/moss-small, or the tiny RANDOM-weight preset where
that folder is missing. Every fallback is said on stdout and kept in ``DataSet.notes``. Artifacts that
depend on the tokenizer live under a folder named after it (and its weights' digest), and every step
is skipped when its output exists, so a rerun costs only what changed.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

from common.cli import run_module
from common.yaml_config import load_yaml, save_yaml
from training.corpus.build import MANIFEST
from training.corpus.config import CorpusConfig
from training.moss.config import PRESETS
from training.splits import SPLIT_NAMES, manifest_splits, write_splits
from training.train import TrainConfig, finished_epochs, resolve_device, views_meta

TRAINED_TOKENIZER = Path("models/moss-small")
# An embedder trained on a GPU on the corpus's train split, with the codes of one tokenizer (meta.json holds its tag).
SHIPPED_EMBEDDER = Path("models/embedder-music")
# The training config per audio source: real music with the trained tokenizer, or generated tracks.
TRAIN_CONFIGS = {"corpus": Path("configs/train_music.yaml"), "generated": Path("configs/train.yaml")}
CORPUS = Path(CorpusConfig.output_dir)


@dataclass
class PipelineConfig:
    work_dir: Path
    tracks: int  # generated tracks that are the whole data set where no corpus is installed
    seconds: float  # length of each generated track
    views_per_track: int | None  # None: the training config's views.per_track
    n_quantizers: int
    epochs: int | None
    val_ratio: float  # of the generated tracks, when they are the data set
    test_ratio: float
    train_config: Path | None = None  # None: TRAIN_CONFIGS of the audio source
    moss_config: str = str(TRAINED_TOKENIZER)  # a preset or a weights folder; a missing folder falls back to tiny
    device: str = "auto"
    seed: int = 42
    corpus: Path | None = CORPUS  # used when its manifest exists
    checkpoint: Path | None = None  # an embedder trained elsewhere (e.g. on a GPU): no views, no training
    distractors: int = 1000  # generated tracks added to the corpus's catalog
    # Tokenize and catalog only the corpus tracks of these splits (None: all): what makes a CPU demo minutes, not hours.
    corpus_splits: tuple[str, ...] | None = None
    # Tokenize (corpus and distractors) and stop: for a machine that receives the corpus in parts.
    prepare_only: bool = False


@dataclass
class DataSet:
    """What the chain produced: where everything is, and what was used in place of what was asked for."""

    audio_roots: list[Path]
    tokens_roots: list[Path]
    splits: Path
    checkpoint: Path | None  # None after a prepare_only run
    moss_config: str
    source: str  # "corpus" or "generated"
    tag: str  # names the folder of everything made with this tokenizer and level count
    corpus_tracks: int
    generated_tracks: int
    notes: list[str] = field(default_factory=list)

    @property
    def moss_args(self) -> list[str]:
        return ["--moss-config", self.moss_config]

    def describe(self) -> dict:
        return {"source": self.source, "tokenizer": self.moss_config, "corpus_tracks": self.corpus_tracks,
                "generated_tracks": self.generated_tracks, "fallbacks": self.notes}


def add_source_arguments(parser: argparse.ArgumentParser) -> None:
    """The audio and tokenizer options of every front end of this chain (quality, demo), with their fallbacks."""
    parser.add_argument("--corpus", type=Path, default=CORPUS, help="real-music corpus (manifest.csv + audio/); generated audio alone where it is missing")
    parser.add_argument("--moss-config", default=str(TRAINED_TOKENIZER), help="tokenizer: a weights folder or a preset; a missing folder falls back to tiny")


def run_step(name: str, module: str, argv: list[str], timings: dict[str, float]) -> None:
    started = time.perf_counter()
    print(f"== {name}", flush=True)
    if run_module(module, argv) != 0:
        raise SystemExit(f"step {name} failed")
    timings[name] = round(time.perf_counter() - started, 1)


def tokenizer_tag(moss_config: str) -> str:
    """A folder name for artifacts made with this tokenizer: the preset, or the weights folder's name and digest."""
    folder = Path(moss_config)
    if not folder.is_dir():
        return moss_config
    digest = hashlib.sha256()
    for path in sorted(folder.glob("*.safetensors")) + [folder / "config.json"]:
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return f"{folder.name}-{digest.hexdigest()[:10]}"


def shipped_embedder_for(moss_config: str, folder: Path = SHIPPED_EMBEDDER) -> Path | None:
    """The shipped embedder's checkpoint where it learnt the codes of this very tokenizer (same weights digest), else None:
    another tokenizer's codes, the official weights' included, mean nothing to it."""
    meta_path = folder / "meta.json"
    if not meta_path.is_file():
        return None
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    return folder / meta["checkpoint"] if tokenizer_tag(moss_config) == meta["tokenizer_tag"] else None


def resolve_tokenizer(spec: str) -> tuple[str, str | None]:
    """``spec`` if it is a preset or a weights folder, else the tiny preset and a note saying so."""
    if spec in PRESETS or (Path(spec) / "config.json").is_file():
        return spec, None
    return "tiny", f"tokenizer: {spec} has no trained weights (config.json missing); using the tiny RANDOM-weight preset, whose codes carry no audio content"


def resolve_sources(cfg: PipelineConfig) -> tuple[str, Path | None, list[str]]:
    """(tokenizer, corpus or None, notes on what fell back to what)."""
    moss, note = resolve_tokenizer(cfg.moss_config)
    notes = [note] if note else []
    corpus = cfg.corpus if cfg.corpus is not None and (cfg.corpus / MANIFEST).is_file() else None
    if cfg.corpus is not None and corpus is None:
        notes.append(f"audio: no real-music corpus at {cfg.corpus} (make corpus installs it); using {cfg.tracks} generated tracks of {cfg.seconds:g} s")
    for note in notes:
        print(f"NOTE {note}", flush=True)
    return moss, corpus, notes


def check_corpus_splits(cfg: PipelineConfig) -> None:
    unknown = sorted(set(cfg.corpus_splits or ()) - set(SPLIT_NAMES))
    if unknown:
        raise SystemExit(f"unknown corpus splits {unknown}; expected some of {list(SPLIT_NAMES)}")
    if cfg.corpus_splits and cfg.checkpoint is None and not cfg.prepare_only and not {"train", "val"} <= set(cfg.corpus_splits):
        raise SystemExit("training an embedder needs the corpus's train and val splits; give a checkpoint or take every split")


def prepare_data(cfg: PipelineConfig, timings: dict[str, float]) -> DataSet:
    check_corpus_splits(cfg)
    moss, corpus, notes = resolve_sources(cfg)
    moss_argv = ["--moss-config", moss, "--device", cfg.device, "--n-quantizers", str(cfg.n_quantizers)]
    source = "corpus" if corpus else "generated"
    # Named by count and length, so a set of another size never mixes its tracks or codes into this one.
    count = cfg.distractors if corpus else cfg.tracks
    name = f"generated-{count}x{cfg.seconds:g}s"
    generated = cfg.work_dir / name
    base = cfg.work_dir / f"{tokenizer_tag(moss)}-q{cfg.n_quantizers}"
    run_step("synth", "training.synth", ["--out", str(generated), "--tracks", str(count), "--seconds", str(cfg.seconds), "--seed", str(cfg.seed)], timings)
    run_step("tokenize", "training.tokenize", ["--input-root", str(generated), "--output-root", str(base / "tokens" / name), *moss_argv], timings)
    audio_roots, tokens_roots = [generated], [base / "tokens" / name]
    splits = base / f"splits-{source if corpus else name}"
    if corpus is not None:
        try:
            corpus_ids = manifest_splits(corpus / MANIFEST)
        except ValueError as error:
            raise SystemExit(str(error)) from error
        audio, tokens_name = corpus / "audio", "corpus"
        chosen = [t for ids in corpus_ids.values() for t in ids]
        if cfg.corpus_splits:
            tokens_name = "corpus-" + "-".join(cfg.corpus_splits)
            chosen = [t for split in cfg.corpus_splits for t in corpus_ids[split]]
            audio = linked_audio(corpus / "audio", chosen, base / f"{tokens_name}-audio")
        run_step("tokenize-corpus", "training.tokenize", ["--input-root", str(audio), "--output-root", str(base / "tokens" / tokens_name), *moss_argv], timings)
        audio_roots.insert(0, audio)
        tokens_roots.insert(0, base / "tokens" / tokens_name)
        write_splits(corpus_ids, splits, cfg.seed)
        corpus_tracks = len(chosen)
    else:
        run_step("splits", "training.splits", ["--tokens-root", str(tokens_roots[0]), "--output-root", str(splits), "--val-ratio", str(cfg.val_ratio),
                                               "--test-ratio", str(cfg.test_ratio), "--seed", str(cfg.seed)], timings)
        corpus_tracks = 0
    checkpoint = None if cfg.prepare_only else cfg.checkpoint or train_embedder(
        cfg, source, moss, audio_roots[0], tokens_roots[0], splits, base / f"embedder-{source if corpus else name}", timings, notes)
    return DataSet(audio_roots, tokens_roots, splits, checkpoint, moss, source, base.name, corpus_tracks, count, notes)


def linked_audio(audio_root: Path, track_ids: list[str], folder: Path) -> Path:
    """``folder`` holding a link to each of ``track_ids``' WAVs under ``audio_root``: a subset tokenized as a folder."""
    missing = [t for t in track_ids if not (audio_root / f"{t}.wav").is_file()]
    if missing:
        raise SystemExit(f"{len(missing)} corpus tracks have no audio under {audio_root}, e.g. {missing[:3]}; rerun make corpus")
    folder.mkdir(parents=True, exist_ok=True)
    for track_id in track_ids:
        link = folder / f"{track_id}.wav"
        if not link.exists():
            link.symlink_to((audio_root / f"{track_id}.wav").resolve())
    return folder


def train_embedder(cfg: PipelineConfig, source: str, moss: str, audio: Path, tokens: Path, splits: Path, work: Path, timings: dict[str, float],
                   notes: list[str], shared_views: Path | None = None) -> Path:
    """Views of the train and val tracks (training.views; val only where training makes its pairs online),
    then training (training.train), both from one config written next to the checkpoints; each skipped
    where its output exists. With ``shared_views``, the views live in a subfolder named after what they
    depend on (``views_meta``), so runs whose views would be identical make them once."""
    checkpoints = work / "checkpoints"
    train_cfg = load_yaml(TrainConfig, cfg.train_config or TRAIN_CONFIGS[source])
    train_cfg.output_dir, train_cfg.seed = str(checkpoints), cfg.seed
    if cfg.views_per_track is not None:
        train_cfg.views.per_track = cfg.views_per_track
    data = train_cfg.data
    data.tokenizer, data.audio_root, data.tokens_root, data.splits_root, data.views_root = moss, str(audio), str(tokens), str(splits), str(work / "views")
    if cfg.epochs is not None:
        train_cfg.optim.epochs = cfg.epochs
    if train_cfg.online.enabled and resolve_device(cfg.device).type == "cpu":
        # Online pairs tokenize every step's views: hours per epoch on a CPU, where stored views are made once.
        train_cfg.online.enabled = False
        hard = f"; and without them no hard-track batches (online.hard_tracks {train_cfg.online.hard_tracks} -> 0)" if train_cfg.online.hard_tracks else ""
        train_cfg.online.hard_tracks = 0
        notes.append("training: no GPU, so the training views are made once and stored (online.enabled off); the GPU run trains on fresh views every step" + hard)
        print(f"NOTE {notes[-1]}", flush=True)
    if shared_views is not None:
        # Stored training views follow online.enabled too (val only when online): part of the folder's key.
        key = json.dumps({**views_meta(train_cfg), "online": train_cfg.online.enabled}, sort_keys=True)
        data.views_root = str(shared_views / hashlib.sha256(key.encode()).hexdigest()[:12])
    checkpoints.mkdir(parents=True, exist_ok=True)
    config_path = checkpoints / "train.yaml"
    save_yaml(train_cfg, config_path)
    # Online training makes its training pairs as it goes: only the val views, its yardstick, are stored.
    splits_argv = ["--splits", "val"] if train_cfg.online.enabled else []
    run_step("views", "training.views", ["--config", str(config_path), "--device", cfg.device, *splits_argv], timings)
    done = finished_epochs(checkpoints)
    # A run cut off (a GPU call's time limit) continues from its last epoch instead of starting over.
    if done < train_cfg.optim.epochs:
        resume = ["--resume", str(checkpoints / "last.pt")] if done else []
        run_step("train", "training.train", ["--config", str(config_path), "--device", cfg.device, *resume], timings)
    return checkpoints / "best.pt"
