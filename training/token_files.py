"""Reading and writing the per-track (or per-chunk) token files of `python -m training tokenize`."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class TokenFile:
    track_id: str
    chunk_index: int
    codes: np.ndarray  # [Q, T], valid frames only
    source_path: str
    duration_s: float
    n_quantizers: int


def token_file_name(track_id: str, chunk_index: int | None) -> str:
    return f"{track_id}.npz" if chunk_index is None else f"{track_id}__chunk{chunk_index:03d}.npz"


def save_token_file(path: Path, token_file: TokenFile, sample_rate: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npz")
    # int16 holds codes up to 1023 at half the size of int32.
    np.savez(
        tmp,
        codes=token_file.codes.astype(np.int16),
        track_id=token_file.track_id,
        source_path=token_file.source_path,
        sample_rate=sample_rate,
        duration_s=token_file.duration_s,
        n_quantizers=token_file.n_quantizers,
        chunk_index=token_file.chunk_index,
    )
    tmp.replace(path)  # atomic: an interrupted run never leaves a half-written file that a rerun would skip


def load_token_file(path: Path) -> TokenFile:
    with np.load(path) as data:
        return TokenFile(
            track_id=str(data["track_id"]),
            chunk_index=int(data["chunk_index"]),
            codes=data["codes"].astype(np.int64),
            source_path=str(data["source_path"]),
            duration_s=float(data["duration_s"]),
            n_quantizers=int(data["n_quantizers"]),
        )


def list_token_paths(tokens_root: Path) -> list[Path]:
    return sorted(p for p in Path(tokens_root).rglob("*.npz") if not p.name.endswith(".tmp.npz"))


def track_id_of(path: Path) -> str:
    return path.stem.split("__chunk")[0]


def list_track_ids(tokens_root: Path) -> list[str]:
    return sorted({track_id_of(p) for p in list_token_paths(tokens_root)})


def load_tracks(tokens_root: Path, track_ids: list[str] | None = None) -> dict[str, list[TokenFile]]:
    """Token files grouped by track id (chunks in order), optionally restricted to ``track_ids``."""
    wanted = None if track_ids is None else set(track_ids)
    grouped: dict[str, list[TokenFile]] = {}
    for path in list_token_paths(tokens_root):
        if wanted is not None and track_id_of(path) not in wanted:
            continue
        token_file = load_token_file(path)
        grouped.setdefault(token_file.track_id, []).append(token_file)
    for files in grouped.values():
        files.sort(key=lambda f: f.chunk_index)
    return grouped
