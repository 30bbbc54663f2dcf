"""Running the MOSS encoder over many clips of different lengths, batched."""
from __future__ import annotations

from typing import Callable, Iterable, Iterator, TypeVar

import numpy as np
import torch

HOP = 1920
# Padded samples per encoder batch (batch size x longest clip): 16 clips of 30 s. Encoder memory grows with
# it, so a batch closes before passing it and a longer clip (a whole track of minutes) is encoded alone.
MAX_BATCH_SAMPLES = 16 * 30 * 24_000
T = TypeVar("T")


def encode_batch(encoder: torch.nn.Module, clips: list[np.ndarray], n_quantizers: int, device: torch.device | str = "cpu") -> list[np.ndarray]:
    """Right-pad clips into one batch; each result is that clip's codes [Q, valid frames]."""
    lengths = torch.tensor([len(c) for c in clips], dtype=torch.long)
    batch = torch.zeros(len(clips), 1, int(lengths.max()), dtype=torch.float32)
    for i, clip in enumerate(clips):
        batch[i, 0, : len(clip)] = torch.from_numpy(np.ascontiguousarray(clip, dtype=np.float32))
    with torch.inference_mode():
        codes, counts = encoder(batch.to(device), lengths.to(device), n_quantizers=n_quantizers)
    codes, counts = codes.cpu().numpy(), counts.cpu().numpy()
    return [codes[i, :, : counts[i]] for i in range(len(clips))]


def encode_clips(encoder: torch.nn.Module, clips: list[np.ndarray], n_quantizers: int, batch_size: int = 16, device: torch.device | str = "cpu") -> list[np.ndarray]:
    """Like encode_batch over any number of clips; batches group similar lengths to waste little on padding."""
    order = np.argsort([len(c) for c in clips], kind="stable")
    out: list[np.ndarray] = [np.empty(0)] * len(clips)
    for index in batched(order, batch_size, lambda i: len(clips[i])):
        for i, codes in zip(index, encode_batch(encoder, [clips[j] for j in index], n_quantizers, device)):
            out[i] = codes
    return out


def batched(items: Iterable[T], size: int, samples: Callable[[T], int] | None = None, max_samples: int = MAX_BATCH_SAMPLES) -> Iterator[list[T]]:
    """Lists of up to ``size`` items; with ``samples``, a list also closes before its padded size (items x
    longest) would pass ``max_samples``, so an item longer than that is a batch of its own."""
    batch: list[T] = []
    longest = 0
    for item in items:
        n = samples(item) if samples else 0
        if batch and samples and (len(batch) + 1) * max(longest, n) > max_samples:
            yield batch
            batch, longest = [], 0
        batch.append(item)
        longest = max(longest, n)
        if len(batch) == size:
            yield batch
            batch, longest = [], 0
    if batch:
        yield batch


def clip_encoder(encoder: torch.nn.Module, n_quantizers: int, batch_size: int = 16, device: torch.device | str = "cpu") -> Callable[[list[np.ndarray]], list[np.ndarray]]:
    """``encode_clips`` with the encoder settings bound: what ``training.dataset.build_catalog`` calls for ``alone`` windows."""

    def encode(clips: list[np.ndarray]) -> list[np.ndarray]:
        return encode_clips(encoder, clips, n_quantizers, batch_size, device)

    return encode
