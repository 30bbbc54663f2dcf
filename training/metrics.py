"""Retrieval metrics from the rank of the correct track in each query's ranked list."""
from __future__ import annotations

import numpy as np


def ranks_of_targets(ranked_track_ids: list[list[str]], targets: list[str]) -> np.ndarray:
    """1-based rank of each target in its ranked list; 0 where it is absent."""
    ranks = np.zeros(len(targets), dtype=np.int64)
    for i, (ranked, target) in enumerate(zip(ranked_track_ids, targets)):
        if target in ranked:
            ranks[i] = ranked.index(target) + 1
    return ranks


def recall_at_k(ranks: np.ndarray, k: int) -> float:
    return float(np.mean((ranks >= 1) & (ranks <= k))) if len(ranks) else 0.0


def mean_reciprocal_rank(ranks: np.ndarray) -> float:
    if not len(ranks):
        return 0.0
    return float(np.mean(np.where(ranks >= 1, 1.0 / np.maximum(ranks, 1), 0.0)))


def retrieval_metrics(ranks: np.ndarray, ks: tuple[int, ...] = (1, 10, 100)) -> dict[str, float]:
    out = {f"recall@{k}": recall_at_k(ranks, k) for k in ks}
    out["mrr"] = mean_reciprocal_rank(ranks)
    out["queries"] = int(len(ranks))
    return out


def ranks_in_order(order: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """``ranks_of_targets`` for index arrays: order [M, N] (best first), targets [M]; 1-based, 0 where absent."""
    hits = order == np.asarray(targets)[:, None]
    return np.where(hits.any(axis=1), hits.argmax(axis=1) + 1, 0).astype(np.int64)
