"""Why dynamic batching helps the embedder as much as it does on CPU: ONNX Runtime's own batch scaling.

Triton can only win by batching what the model runs faster per item in a batch, plus the per-request
overhead of the Python backend it saves. This times the served token_embedder ONNX in-process over
the benchmark's windows, grouped into batches padded as onnx_cpu pads them, for batch sizes and
intra-op thread counts, twice: the mix's windows as they come (ragged: short queries' windows are
padded to the longest in the batch) and full windows only (no padding). If a batch of 8 costs ~8x
a batch of 1 per item, the CPU is already busy at batch 1 and no batcher can give much more.
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np


def _batches(codes: list[np.ndarray], size: int) -> list[dict[str, np.ndarray]]:
    """Consecutive groups of ``size`` windows (wrapping around), each zero-padded to its longest window."""
    groups = [[codes[(start + i) % len(codes)] for i in range(size)] for start in range(0, len(codes), size)]
    feeds = []
    for group in groups:
        batch = np.zeros((size, group[0].shape[0], max(c.shape[1] for c in group)), dtype=np.int32)
        for row, c in enumerate(group):
            batch[row, :, : c.shape[1]] = c
        feeds.append({"CODES": batch, "FRAME_COUNTS": np.array([c.shape[1] for c in group], dtype=np.int64)})
    return feeds


def _ms_per_item(session: object, feeds: list[dict[str, np.ndarray]], repeats: int) -> float:
    """Best of ``repeats`` passes over all batches (the shared CPU only ever adds time)."""
    items = sum(len(feed["FRAME_COUNTS"]) for feed in feeds)
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        for feed in feeds:
            session.run(None, feed)  # type: ignore[attr-defined]
        best = min(best, (time.perf_counter() - started) * 1000 / items)
    return best


def ort_batch_scaling(onnx_path: Path, codes: list[np.ndarray], batch_sizes: tuple[int, ...] = (1, 8),
                      threads: tuple[int, ...] = (1, 2), repeats: int = 3) -> list[dict[str, float | int | str]]:
    """Rows of (windows "mixed"/"full", intra-op threads, batch size, ms per item)."""
    import onnxruntime as ort

    longest = max(c.shape[1] for c in codes)
    sets = {"mixed": codes, "full": [c for c in codes if c.shape[1] == longest]}
    rows: list[dict[str, float | int | str]] = []
    for thread_count in threads:
        options = ort.SessionOptions()
        options.intra_op_num_threads = thread_count
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")  # as the served backend
        session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
        for label, windows in sets.items():
            for size in batch_sizes:
                feeds = _batches(windows, size)
                session.run(None, feeds[0])  # warm-up
                rows.append({"windows": label, "intra_op_threads": thread_count, "batch": size,
                             "ms_per_item": _ms_per_item(session, feeds, repeats)})
    return rows
