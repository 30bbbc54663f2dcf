"""`python -m training code-stability`: how stable are the tokenizer's codes under each listening condition?

Per RVQ level, the share of frames whose code is unchanged when the audio is degraded (on the same
frame grid), cut into an excerpt (same samples, less causal context) or shifted by a few samples,
against the chance agreement of two unrelated frames.
This is what bounds retrieval: an embedder cannot recover a track from codes that carry no trace of it.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from training.augment import CONDITIONS, degrade
from training.encode import HOP, encode_clips
from training.moss.weights import build_encoder
from training.synth import synthesize_track
from training.tokenize import add_moss_arguments, moss_spec
from training.train import resolve_device

SHIFTS = (15, 60, 240, 960)
CONTEXT_CUT_FRAMES = 25  # 2 s


def chance_agreement(codes: list[np.ndarray]) -> list[float]:
    """Per level, the probability that two random frames share a code (sum of squared code frequencies)."""
    stacked = np.concatenate(codes, axis=1)
    return [float(np.sum((np.bincount(level) / level.size) ** 2)) for level in stacked]


def agreement(reference: list[np.ndarray], other: list[np.ndarray]) -> list[float]:
    pairs = [(r[:, : min(r.shape[1], o.shape[1])], o[:, : min(r.shape[1], o.shape[1])]) for r, o in zip(reference, other)]
    return [float(v) for v in np.mean(np.concatenate([r == o for r, o in pairs], axis=1), axis=1)]


def measure(encoder, clips: list[np.ndarray], n_quantizers: int, batch_size: int, device, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    reference = encode_clips(encoder, clips, n_quantizers, batch_size, device)
    rows = {"chance": chance_agreement(reference)}
    for condition in CONDITIONS[1:]:
        rows[condition] = agreement(reference, encode_clips(encoder, [degrade(c, condition, rng) for c in clips], n_quantizers, batch_size, device))
    # The same audio tokenized as an excerpt that starts CONTEXT_CUT_FRAMES frames in, on the frame grid:
    # what differs is only the causal context the encoder had (a query never has the track's past).
    rows["excerpt"] = agreement([r[:, CONTEXT_CUT_FRAMES:] for r in reference], encode_clips(encoder, [c[CONTEXT_CUT_FRAMES * HOP :] for c in clips], n_quantizers, batch_size, device))
    for shift in SHIFTS:
        # Frame i of the shifted clip starts `shift` samples later than frame i of the reference.
        rows[f"shift{shift}"] = agreement(reference, encode_clips(encoder, [c[shift:] for c in clips], n_quantizers, batch_size, device))
    return rows


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
