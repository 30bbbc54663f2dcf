"""`python -m training code-stability`: how stable are the tokenizer's codes under each listening condition?

Per RVQ level, the share of frames whose code is unchanged when the audio is degraded (on the same
frame grid), cut into an excerpt (same samples, less causal context) or shifted by a few samples,
against the chance agreement of two unrelated frames.
This is what bounds retrieval: an embedder cannot recover a track from codes that carry no trace of it.

The measurement (``Probe``, ``measure_probes``, ``chance_agreement``) is shared with
`python -m training codec-report`, which runs a wider set of probes on real music.
"""
from __future__ import annotations

import argparse
import json
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from tqdm import tqdm

from training.augment import CONDITIONS, add_noise, degrade
from training.encode import HOP, encode_clips
from training.moss.weights import build_encoder
from training.synth import synthesize_track
from training.tokenize import add_moss_arguments, moss_spec
from training.train import resolve_device

SHIFTS = (15, 60, 240, 960)
CONTEXT_CUT_FRAMES = 25  # 2 s


@dataclass(frozen=True)
class Probe:
    """One way of hearing a clip again.

    ``make(clip, rng)`` returns the probe waveform and the reference frame that the probe's frame 0
    is compared with (its frame i with reference frame start + i).
    """

    name: str
    make: Callable[[np.ndarray, np.random.Generator], tuple[np.ndarray, int]]


@dataclass(frozen=True)
class FrameAgreement:
    """Unchanged codes summed over clips, per level and per distance (frames) from the probe's first frame."""

    matches: np.ndarray  # [Q, D]
    counts: np.ndarray  # [D] clips compared at each distance

    def by_level(self, from_frame: int = 0) -> list[float]:
        """Share of unchanged codes per level over every compared frame at least ``from_frame`` frames in."""
        frames = int(self.counts[from_frame:].sum())
        if frames == 0:
            raise ValueError(f"no compared frames {from_frame} or more frames after the probe's start (clips too short)")
        return [float(v) for v in self.matches[:, from_frame:].sum(axis=1) / frames]

    def curve(self) -> np.ndarray:
        """``[Q, D]``: share of unchanged codes at each distance from the probe's start."""
        return self.matches / self.counts


def degrade_probe(condition: str) -> Probe:
    """An ``augment.degrade`` evaluation condition, on the same frame grid."""
    return Probe(condition, lambda x, rng: (degrade(x, condition, rng), 0))


def noise_probe(kind: str, snr_db: float) -> Probe:
    return Probe(f"{kind}{snr_db:g}", lambda x, rng: (add_noise(x, snr_db, kind, rng), 0))


def shift_probe(samples: int) -> Probe:
    """Frame i of the shifted clip starts ``samples`` later than frame i of the reference."""
    return Probe(f"shift{samples}", lambda x, rng: (x[samples:], 0))


def excerpt_probe(name: str, start_frame: int, sample_offset: bool = False) -> Probe:
    """The clip from ``start_frame`` on, tokenized alone: the same samples with less causal context (a query never has
    the track's past). With ``sample_offset`` the excerpt starts 1..hop-1 samples later (drawn per clip, as a live query
    starts anywhere) and is compared with the nearest reference frames.
    """

    def make(x: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, int]:
        start = start_frame * HOP + (int(rng.integers(1, HOP)) if sample_offset else 0)
        return x[start:], int(round(start / HOP))

    return Probe(name, make)


def probe_rng(seed: int, probe: str, clip_index: int) -> np.random.Generator:
    """Randomness of one probe on one clip: the same whichever other probes or clips are measured."""
    return np.random.default_rng([seed, zlib.crc32(probe.encode()), clip_index])


def chance_agreement(codes: list[np.ndarray]) -> list[float]:
    """Per level, the probability that two random frames share a code (sum of squared code frequencies)."""
    stacked = np.concatenate(codes, axis=1)
    return [float(np.sum((np.bincount(level) / level.size) ** 2)) for level in stacked]


def compare(reference: list[np.ndarray], probes: list[np.ndarray], starts: list[int]) -> FrameAgreement:
    """Probe frame i against reference frame start + i, for every frame both have."""
    spans = [min(p.shape[1], r.shape[1] - s) for r, p, s in zip(reference, probes, starts)]
    matches = np.zeros((reference[0].shape[0], max(max(spans), 0)))
    counts = np.zeros(matches.shape[1], dtype=np.int64)
    for r, p, s, n in zip(reference, probes, starts, spans):
        if n > 0:
            matches[:, :n] += r[:, s : s + n] == p[:, :n]
            counts[:n] += 1
    return FrameAgreement(matches, counts)


def measure_probes(
    encoder: torch.nn.Module,
    clips: list[np.ndarray],
    reference: list[np.ndarray],
    probes: list[Probe],
    n_quantizers: int,
    batch_size: int,
    device: torch.device | str,
    seed: int,
    desc: str = "code stability",
) -> dict[str, FrameAgreement]:
    """Tokenize every probe of every clip and compare with ``reference`` (the clips' own codes)."""
    results: dict[str, FrameAgreement] = {}
    for probe in tqdm(probes, desc=desc, unit="condition"):
        made = [probe.make(clip, probe_rng(seed, probe.name, i)) for i, clip in enumerate(clips)]
        codes = encode_clips(encoder, [waveform for waveform, _ in made], n_quantizers, batch_size, device)
        results[probe.name] = compare(reference, codes, [start for _, start in made])
    return results


def measure(encoder: torch.nn.Module, clips: list[np.ndarray], n_quantizers: int, batch_size: int, device: torch.device | str, seed: int) -> dict:
    reference = encode_clips(encoder, clips, n_quantizers, batch_size, device)
    probes = [
        *(degrade_probe(c) for c in CONDITIONS[1:]),
        excerpt_probe("excerpt", CONTEXT_CUT_FRAMES),
        *(shift_probe(s) for s in SHIFTS),
    ]
    results = measure_probes(encoder, clips, reference, probes, n_quantizers, batch_size, device, seed)
    return {"chance": chance_agreement(reference), **{name: result.by_level() for name, result in results.items()}}


def plot(rows: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5))
    for name, values in rows.items():
        ax.plot(range(len(values)), values, marker="o", label=name, linestyle="--" if name == "chance" else "-", color="black" if name == "chance" else None)
    ax.set_xlabel("RVQ level")
    ax.set_ylabel("share of frames with an unchanged code")
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    ax.set_title("Code stability per RVQ level (same frame grid unless shifted)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--output-json", type=Path, required=True)
    parser.add_argument("--tracks", type=int, default=24, help="generated tracks to measure on")
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--seed", type=int, default=5)
    add_moss_arguments(parser)


def main(args: argparse.Namespace) -> int:
    device = resolve_device(args.device)
    clips = [synthesize_track(i, args.seconds, args.seed) for i in range(args.tracks)]
    rows = measure(build_encoder(moss_spec(args), device=device), clips, args.n_quantizers, args.batch_size, device, args.seed)
    result = {"moss": moss_spec(args), "n_quantizers": args.n_quantizers, "tracks": args.tracks, "seconds": args.seconds, "agreement_by_level": rows}
    args.output_json.parent.mkdir(parents=True, exist_ok=True)
    args.output_json.write_text(json.dumps(result, indent=2), encoding="utf-8")
    plot(rows, args.output_json.with_suffix(".png"))
    for name, values in rows.items():
        print(f"{name:>8}: " + " ".join(f"{v:.2f}" for v in values))
    return 0
