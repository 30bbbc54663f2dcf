"""Embedding catalog windows and queries, and exact (or FAISS) per-track search over catalog segments."""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from common.windowing import WindowParams, make_windows
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


def embed_queries(encoder: torch.nn.Module, embed: EmbedFn, waveforms: list[np.ndarray], n_quantizers: int,
                  params: WindowParams | None = None, batch_size: int = 16, device: torch.device | str = "cpu") -> tuple[np.ndarray, np.ndarray]:
    """Each query as `audio_search` serves it: cut into the encoder's windows by the served windowing
    (common.windowing), each window tokenized on its own and embedded.

    Returns the window embeddings [R, D] and the query each row belongs to [R] (a query's rows are
    contiguous and in order). Windows of equal padded length share a batch, so no row is padded
    beyond what the server pads it to.
    """
    params = params or WindowParams()
    rows: list[np.ndarray] = []
    lengths: list[int] = []
    owner: list[int] = []
    for query, audio in enumerate(waveforms):
        windows, valid = make_windows(np.ascontiguousarray(audio, dtype=np.float32), params)
        rows.extend(windows[:, 0])
        lengths.extend(int(n) for n in valid)
        owner.extend([query] * len(valid))
    out: np.ndarray | None = None
    by_size: dict[int, list[int]] = {}
    for i, row in enumerate(rows):
        by_size.setdefault(row.size, []).append(i)
    for index in by_size.values():
        for start in range(0, len(index), batch_size):
            batch = index[start : start + batch_size]
            waveform = torch.from_numpy(np.stack([rows[i] for i in batch])[:, None, :]).to(device)
            with torch.inference_mode():
                codes, counts = encoder(waveform, torch.tensor([lengths[i] for i in batch], device=device), n_quantizers=n_quantizers)
            emb = embed(codes.cpu().numpy(), counts.cpu().numpy())
            if out is None:
                out = np.empty((len(rows), emb.shape[1]), dtype=np.float32)
            out[batch] = emb
    if out is None:
        raise ValueError("nothing to embed")
    return out, np.asarray(owner, dtype=np.int64)


def rank_tracks(scores: np.ndarray, segment_track: np.ndarray, n_tracks: int, excluded: np.ndarray | None = None,
                row_query: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Rank every track per query by its best segment score.

    scores [R, N] row-segment similarities (-inf where a segment was not returned); ``row_query`` [R]
    names the query of each row when a query has several rows (its windows; contiguous), whose scores
    are fused by max like the served search does. ``excluded`` [M, N] marks segments a query may not
    match (the cross_chunk protocol's own chunk). Returns (track indices [M, n_tracks] best first, their scores).
    """
    if row_query is not None:
        starts = np.flatnonzero(np.r_[True, row_query[1:] != row_query[:-1]])
        scores = np.maximum.reduceat(scores, starts, axis=0)
    if excluded is not None:
        scores = np.where(excluded, -np.inf, scores)
    per_track = np.full((len(scores), n_tracks), -np.inf, dtype=np.float32)
    by_track = np.argsort(segment_track, kind="stable")
    tracks, first = np.unique(segment_track[by_track], return_index=True)
    if len(tracks):
        per_track[:, tracks] = np.maximum.reduceat(scores[:, by_track], first, axis=1)
    order = np.argsort(-per_track, axis=1, kind="stable")
    return order, np.take_along_axis(per_track, order, axis=1)


def rank_tracks_exact(queries: np.ndarray, segments: np.ndarray, segment_track: np.ndarray, n_tracks: int,
                      excluded: np.ndarray | None = None, row_query: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    return rank_tracks(queries @ segments.T, segment_track, n_tracks, excluded, row_query)


def rank_tracks_faiss(queries: np.ndarray, segments: np.ndarray, segment_track: np.ndarray, n_tracks: int,
                      excluded: np.ndarray | None = None, row_query: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The same ranking through a FAISS IndexFlatIP over all segments (must agree with the exact path)."""
    import faiss

    index = faiss.IndexFlatIP(segments.shape[1])
    index.add(np.ascontiguousarray(segments, dtype=np.float32))
    scores, ids = index.search(np.ascontiguousarray(queries, dtype=np.float32), len(segments))
    dense = np.full((len(queries), len(segments)), -np.inf, dtype=np.float32)
    np.put_along_axis(dense, ids, scores, axis=1)
    return rank_tracks(dense, segment_track, n_tracks, excluded, row_query)
