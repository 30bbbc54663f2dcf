"""What the GPU benchmark's parts share (`python -m benchmarks gpu`, benchmarks/gpu.py): timing by CUDA events,
code agreement, music-like test clips, the log line and the comma-list argument."""
from __future__ import annotations

import statistics
import time
from typing import Any, Callable

import numpy as np
import torch

SAMPLE_RATE = 24_000


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def cuda_time(fn: Callable[[], Any], *, min_iters: int = 3, min_seconds: float = 1.0, max_iters: int = 100,
              warmup: int = 1) -> dict[str, float]:
    """Median/min milliseconds of ``fn`` by CUDA events, repeated until ``min_iters`` and ``min_seconds``."""
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times: list[float] = []
    started = time.perf_counter()
    while len(times) < max_iters and (len(times) < min_iters or time.perf_counter() - started < min_seconds):
        begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        begin.record()
        fn()
        end.record()
        end.synchronize()
        times.append(begin.elapsed_time(end))
    return {"median_ms": statistics.median(times), "min_ms": min(times), "iters": len(times)}


def agreement(reference: torch.Tensor, other: torch.Tensor, counts: torch.Tensor) -> dict[str, float]:
    """Share of identical codes over valid frames: all levels and level 0."""
    valid = torch.arange(reference.shape[-1], device=reference.device)[None, :] < counts[:, None]
    same = reference == other
    return {"level0": float(same[:, 0][valid].float().mean()),
            "all_levels": float(same[valid[:, None, :].expand_as(same)].float().mean())}


def test_clips(count: int, seconds: float, seed: int = 0, unique: int = 16) -> np.ndarray:
    """Music-like test audio [count, 1, S]: harmonic notes with envelopes, a noise floor, some pure noise clips
    (``unique`` clips rendered, the others circular shifts of them with other gains)."""
    rng = np.random.default_rng(seed)
    samples = int(seconds * SAMPLE_RATE)
    t = np.arange(samples) / SAMPLE_RATE
    clips = np.zeros((count, 1, samples), np.float32)
    for i in range(count):
        if i >= unique:
            clips[i, 0] = np.roll(clips[i % unique, 0], int(rng.integers(1, samples))) * rng.uniform(0.3, 1.0)
            continue
        if i % 8 == 7:
            clips[i, 0] = 0.3 * rng.standard_normal(samples)
            continue
        signal = np.zeros(samples)
        for start in np.sort(rng.uniform(0, seconds, 10)):
            f0 = 55.0 * 2 ** (rng.integers(0, 48) / 12)
            length = rng.uniform(0.2, 1.5)
            envelope = np.clip((t - start) / 0.01, 0, 1) * np.exp(-np.clip(t - start, 0, None) / length) * (t >= start)
            for harmonic in range(1, 4):
                signal += envelope * np.sin(2 * np.pi * f0 * harmonic * t + rng.uniform(0, 6.28)) / harmonic
        signal += 0.02 * rng.standard_normal(samples)
        clips[i, 0] = 0.5 * signal / max(1e-6, np.abs(signal).max())
    return clips


def ints(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v.strip()]
