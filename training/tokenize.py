"""`python -m training tokenize`: audio files -> MOSS RVQ codes, one .npz per track (or per chunk).

Reruns skip files whose outputs exist; unreadable files are reported and skipped unless --fail-fast.
"""
from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import soundfile as sf
from tqdm import tqdm

from training.audio_io import SAMPLE_RATE, AudioError, list_audio_files, load_audio
from training.encode import HOP, batched, encode_batch
from training.moss.attention import blocked_windowed_causal_attention
from training.moss.weights import build_encoder
from training.token_files import TokenFile, save_token_file, token_file_name
from training.train import resolve_device


@dataclass
class PendingClip:
    track_id: str
    chunk_index: int | None
    source: Path
    waveform: np.ndarray


def add_moss_arguments(parser: argparse.ArgumentParser) -> None:
    """The encoder options shared by every command that tokenizes audio."""
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--moss-weights", type=Path, default=None, help="local folder with the official config.json + *.safetensors")
    source.add_argument("--moss-config", default="tiny", help="preset (tiny | official) when --moss-weights is not given; tiny has RANDOM weights")
    parser.add_argument("--n-quantizers", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda")


def moss_spec(args: argparse.Namespace) -> str:
    return str(args.moss_weights) if args.moss_weights is not None else args.moss_config


def chunk_count(path: Path, chunk_seconds: float | None) -> int | None:
    """Chunks a file yields; a tail shorter than one 1,920-sample frame gives no codes and no file."""
    if chunk_seconds is None:
        return None
    total = int(sf.info(str(path)).duration * SAMPLE_RATE)
    size = int(round(chunk_seconds * SAMPLE_RATE))
    return max(1, total // size + (total % size >= HOP))


def expected_outputs(path: Path, output_root: Path, chunk_seconds: float | None) -> list[Path]:
    n_chunks = chunk_count(path, chunk_seconds)
    if n_chunks is None:
        return [output_root / token_file_name(path.stem, None)]
    return [output_root / token_file_name(path.stem, i) for i in range(n_chunks)]


def split_clip(path: Path, waveform: np.ndarray, chunk_seconds: float | None) -> list[PendingClip]:
    if chunk_seconds is None:
        return [PendingClip(path.stem, None, path, waveform)]
    size = int(round(chunk_seconds * SAMPLE_RATE))
    return [PendingClip(path.stem, i, path, waveform[start : start + size]) for i, start in enumerate(range(0, len(waveform), size))]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--input-root", type=Path, required=True, help="an audio file or a folder (recursive)")
    parser.add_argument("--output-root", type=Path, required=True)
    add_moss_arguments(parser)
    parser.add_argument("--chunk-seconds", type=float, default=None, help="cut tracks into chunks of this length (one file each)")
    parser.add_argument("--max-files", type=int, default=None)
    parser.add_argument("--fail-fast", action="store_true", help="stop at the first unreadable file instead of skipping it")


def main(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    files = list_audio_files(args.input_root)[: args.max_files]
    device = resolve_device(args.device)
    encoder = build_encoder(moss_spec(args), device=device)
    # Whole tracks run for minutes: attention one window block at a time keeps memory linear in their length.
    encoder.set_attention(blocked_windowed_causal_attention)
    todo = [p for p in files if not all(o.exists() for o in expected_outputs(p, args.output_root, args.chunk_seconds))]
    failed: list[dict] = []
    written = 0
    frames_too_short = 0

    def clips() -> Iterator[PendingClip]:
        for path in todo:
            try:
                waveform = load_audio(path)
            except AudioError as exc:
                if args.fail_fast:
                    raise
                tqdm.write(f"warning: skipping {exc}")
                failed.append({"path": str(path), "error": str(exc)})
                continue
            yield from split_clip(path, waveform, args.chunk_seconds)

    with tqdm(total=len(todo), desc="tokenize", unit="file") as progress:
        for batch in batched(clips(), args.batch_size, lambda clip: len(clip.waveform)):
            usable = [c for c in batch if len(c.waveform) >= HOP]
            frames_too_short += len(batch) - len(usable)
            codes = encode_batch(encoder, [c.waveform for c in usable], args.n_quantizers, device) if usable else []
            for clip, clip_codes in zip(usable, codes):
                token_file = TokenFile(clip.track_id, clip.chunk_index or 0, clip_codes, str(clip.source), len(clip.waveform) / SAMPLE_RATE, args.n_quantizers)
                save_token_file(args.output_root / token_file_name(clip.track_id, clip.chunk_index), token_file, SAMPLE_RATE)
                written += 1
            progress.update(sum(1 for c in batch if c.chunk_index in (None, 0)))
    summary = {
        "files_found": len(files),
        "files_skipped_done": len(files) - len(todo),
        "files_failed": len(failed),
        "token_files_written": written,
        "clips_shorter_than_one_frame": frames_too_short,
        "moss": moss_spec(args),
        "n_quantizers": args.n_quantizers,
        "seconds": round(time.perf_counter() - started, 2),
        "failures": failed,
    }
    print(json.dumps(summary))
    return 1 if failed and args.fail_fast else 0
