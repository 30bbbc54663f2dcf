"""The pictures of `python -m training codec-report`: code stability per condition and original vs decoded spectrograms."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from training.audio_io import SAMPLE_RATE
import torch

from training.codec.losses import magnitude, mel_filterbank

SPECTROGRAM_FFT = 1024
SPECTROGRAM_MELS = 80  # the scale of the report's mel distance (training.codec.losses.log_mel_distance)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def log_mel(x: np.ndarray) -> np.ndarray:
    """``[mels, frames]`` log10 mel magnitudes, as the codec's mel loss sees them."""
    spectrum = magnitude(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))[None], SPECTROGRAM_FFT)[0]
    return torch.log10((mel_filterbank(SPECTROGRAM_FFT, SPECTROGRAM_MELS) @ spectrum).clamp_min(1e-5)).numpy()


def plot_stability(report: dict, path: Path) -> None:
    """Level-0 and mean-over-levels agreement per condition (one bar per tokenizer, its chance dashed), and the
    level-0 excerpt curve over the distance from the excerpt's start."""
    plt = _pyplot()
    tokenizers = report["tokenizers"]
    conditions = report["conditions"]
    fig, axes = plt.subplots(3, 1, figsize=(11, 11))
    width = 0.8 / len(tokenizers)
    x = np.arange(len(conditions))
    for ax, title, pick in (
        (axes[0], "RVQ level 0", lambda values: values[0]),
        (axes[1], "mean over levels", lambda values: float(np.mean(values))),
    ):
        for i, (role, entry) in enumerate(tokenizers.items()):
            ax.bar(x + (i - (len(tokenizers) - 1) / 2) * width, [pick(entry["agreement"][c]) for c in conditions], width, color=f"C{i}", label=f"{role}: {entry['moss']}")
            ax.axhline(pick(entry["chance"]), color=f"C{i}", linestyle="--", linewidth=1, label=f"chance ({role})")
        ax.set_xticks(x, conditions, rotation=20, fontsize=8)
        ax.set_ylim(0, 1.02)
        ax.set_ylabel("unchanged codes")
        ax.set_title(f"Code stability, {title} (excerpts: frames >= {report['excerpt']['stable_from_s']:g} s after their start)")
        ax.grid(axis="y", alpha=0.3)
        ax.legend(fontsize=7, ncol=2)
    ax = axes[2]
    # Per-frame values of a few tracks jump between a handful of levels: half-second means read better.
    bin_frames = max(1, round(report["frame_rate_hz"] / 2))
    for i, (role, entry) in enumerate(tokenizers.items()):
        for name, curve in entry["excerpt_curve"].items():
            level0 = np.asarray(curve[0])
            starts = np.arange(0, level0.size, bin_frames)
            means = np.add.reduceat(level0, starts) / np.diff(np.append(starts, level0.size))
            ax.step(starts / report["frame_rate_hz"], means, where="post", color=f"C{i}", label=f"{role} {name}",
                    linestyle="-" if name.endswith("aligned") else ":")
    ax.axvline(report["excerpt"]["stable_from_s"], color="grey", linewidth=1)
    ax.set_xlabel("distance of the frame from the excerpt's start (s)")
    ax.set_ylabel("unchanged level-0 codes (0.5-s means)")
    ax.set_ylim(0, 1.02)
    ax.set_title("Excerpt tokenized alone vs the same frames inside the whole segment")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.suptitle(f"{report['data']['tracks']} {report['data']['source']} tracks x {report['data']['seconds_per_track']:g} s, seed {report['seed']}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_spectrograms(originals: list[np.ndarray], names: list[str], decoded: dict[str, list[np.ndarray]], path: Path) -> None:
    """One row per clip: the original's log-mel spectrogram, then each decoding's."""
    plt = _pyplot()
    columns = {"original": originals, **{f"decoded, {label}": clips for label, clips in decoded.items()}}
    fig, axes = plt.subplots(len(originals), len(columns), figsize=(4.2 * len(columns), 2.6 * len(originals)), squeeze=False)
    for row, name in enumerate(names[: len(originals)]):
        spectra = {label: log_mel(clips[row]) for label, clips in columns.items()}
        low, high = float(spectra["original"].min()), float(spectra["original"].max())
        for col, (label, spectrum) in enumerate(spectra.items()):
            ax = axes[row, col]
            seconds = spectrum.shape[1] * (SPECTROGRAM_FFT // 4) / SAMPLE_RATE
            ax.imshow(spectrum, origin="lower", aspect="auto", vmin=low, vmax=high, extent=(0, seconds, 0, spectrum.shape[0]), cmap="magma")
            ax.set_title(f"{name}: {label}", fontsize=8)
            ax.set_xlabel("s", fontsize=7)
            ax.set_ylabel("mel band", fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
