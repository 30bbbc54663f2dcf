"""Embedding many variable-length code sequences, and exact per-track search over catalog segments."""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from training.dataset import pad_batch
from training.embedder import TokenEmbedder

# (codes int [B, Q, T], frame counts int [B]) -> embeddings float32 [B, D]
EmbedFn = Callable[[np.ndarray, np.ndarray], np.ndarray]


def torch_embed_fn(model: TokenEmbedder, device: torch.device | str = "cpu") -> EmbedFn:
    @torch.no_grad()
    def embed(codes: np.ndarray, counts: np.ndarray) -> np.ndarray:
        codes_t = torch.as_tensor(codes, dtype=torch.long, device=device)
        mask = torch.arange(codes_t.shape[2], device=device)[None, :] < torch.as_tensor(counts, device=device)[:, None]
        return model(codes_t, mask).float().cpu().numpy()

    return embed


def embed_sequences(embed: EmbedFn, sequences: list[np.ndarray], batch_size: int = 64) -> np.ndarray:
    """Embed [Q, T_i] code arrays; batches are formed by length so little compute goes to padding."""
    if not sequences:
        raise ValueError("nothing to embed")
    order = np.argsort([s.shape[1] for s in sequences], kind="stable")
    out: np.ndarray | None = None
    for start in range(0, len(order), batch_size):
        chunk = [sequences[i] for i in order[start : start + batch_size]]
        codes, mask = pad_batch(chunk)
        emb = embed(codes.numpy(), mask.sum(dim=1).numpy())
        if out is None:
            out = np.empty((len(sequences), emb.shape[1]), dtype=np.float32)
        out[order[start : start + batch_size]] = emb
    assert out is not None
    return out


def rank_tracks(scores: np.ndarray, segment_track: np.ndarray, n_tracks: int, excluded: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Rank every track per query by its best segment score.

    scores [M, N] query-segment similarities (-inf where a segment was not returned);
    ``excluded`` [M, N] marks segments a query may not match (the cross_chunk protocol's own chunk).
    Returns (track indices [M, n_tracks] best first, their scores).
    """
    if excluded is not None:
        scores = np.where(excluded, -np.inf, scores)
    per_track = np.full((len(scores), n_tracks), -np.inf, dtype=np.float32)
    for track in range(n_tracks):
        columns = segment_track == track
        if columns.any():
            per_track[:, track] = scores[:, columns].max(axis=1)
    order = np.argsort(-per_track, axis=1, kind="stable")
    return order, np.take_along_axis(per_track, order, axis=1)


def rank_tracks_exact(queries: np.ndarray, segments: np.ndarray, segment_track: np.ndarray, n_tracks: int, excluded: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    return rank_tracks(queries @ segments.T, segment_track, n_tracks, excluded)


def rank_tracks_faiss(queries: np.ndarray, segments: np.ndarray, segment_track: np.ndarray, n_tracks: int, excluded: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The same ranking through a FAISS IndexFlatIP over all segments (must agree with the exact path)."""
    import faiss

    index = faiss.IndexFlatIP(segments.shape[1])
    index.add(np.ascontiguousarray(segments, dtype=np.float32))
    scores, ids = index.search(np.ascontiguousarray(queries, dtype=np.float32), len(segments))
    dense = np.full((len(queries), len(segments)), -np.inf, dtype=np.float32)
    np.put_along_axis(dense, ids, scores, axis=1)
    return rank_tracks(dense, segment_track, n_tracks, excluded)
