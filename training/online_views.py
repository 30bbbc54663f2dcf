"""Fresh training pairs every step, made on the training device: excerpt, degradation, tokenization, positive.

A fixed set of views per track (`python -m training views`) is memorised: on the real-music corpus the
embedder's training loss went to 0.01 while validation recall stopped improving after 5 of 50 epochs
(docs/retrieval-quality.md). Here every pair is new: an excerpt at a random sample offset of a random
training track, degraded by training.torch_augment (other training tracks as one kind of background),
tokenized alone by the MOSS encoder on the same device, and paired with a clean catalog window that
holds it, cut by ``build_catalog`` as evaluation and the served index cut theirs. Each step's draws come
from (seed, step), so a run resumed at any epoch makes the very pairs an uninterrupted one would have.
All views of one step share a length (drawn per step from the views' range): one encoder batch without
padding; over the steps the lengths cover the range as the offline views' do.

With ``hard_tracks`` k > 0 a batch is made of groups: a uniformly drawn track and the k tracks most like it
under the embedder as it stood at the start of the epoch, so that in-batch negatives are confusable music
instead of mostly easy ones. Only the choice of tracks uses those (stale) embeddings; every negative in the
loss is embedded by the current model, which is what a memory of earlier embeddings did not do (and why it
collapsed, training/losses.py).
"""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from training.audio_io import SAMPLE_RATE, list_audio_files, load_audio
from training.dataset import CatalogConfig, SegmentCatalog, build_catalog, holding_windows
from training.embedder import frame_mask
from training.encode import HOP, clip_encoder
from training.moss.weights import build_encoder
from training.token_files import load_tracks
from training.torch_augment import BankSizes, DegradationBank, degrade_batch, rms
from training.view_synth import ViewConfig

# codes [B, Q, T], mask [B, T] -> L2-normalised [B, D]: the embedder, without dropout or gradients.
TorchEmbedFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass
class OnlineViewsConfig:
    """``enabled``: train on fresh pairs made every step (a GPU's work: every view is tokenized) instead of
    the stored views; the stored val views still measure each epoch."""

    enabled: bool = False
    bank: BankSizes = field(default_factory=BankSizes)
    hard_tracks: int = 0  # each drawn track comes with its k nearest tracks (refreshed every epoch); 0: uniform draws


def nearest_tracks(window_embeddings: torch.Tensor, window_track: torch.Tensor, n_tracks: int, k: int) -> torch.Tensor:
    """[n_tracks, k]: each track's k most similar other tracks, a track being the mean of its windows' embeddings."""
    sums = torch.zeros(n_tracks, window_embeddings.shape[1], device=window_embeddings.device).index_add_(0, window_track, window_embeddings.float())
    tracks = F.normalize(sums, dim=1)
    similarity = tracks @ tracks.T
    similarity.fill_diagonal_(float("-inf"))
    return similarity.topk(k, dim=1).indices


@dataclass
class AudioBank:
    """Tracks' audio back to back on one device, in the catalog's track order."""

    audio: torch.Tensor  # [total samples] float32
    starts: list[int]
    lengths: list[int]

    @classmethod
    def load(cls, paths: list[Path], device: torch.device) -> AudioBank:
        # Decoding (Opus on a GPU machine) and resampling release the GIL: threads cut the start of every
        # training call from minutes to seconds on a many-core machine; map keeps the track order.
        with ThreadPoolExecutor(os.cpu_count() or 1) as pool:
            clips = list(tqdm(pool.map(load_audio, paths), total=len(paths), desc="audio to device", unit="track"))
        lengths = [c.size for c in clips]
        starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64).tolist()
        return cls(torch.from_numpy(np.concatenate(clips).astype(np.float32)).to(device), starts, lengths)

    def excerpts(self, tracks: list[int], offsets: list[int], samples: int) -> torch.Tensor:
        """[B, samples]: ``samples`` of track ``tracks[b]`` from sample ``offsets[b]`` on."""
        return torch.stack([self.audio[self.starts[t] + o : self.starts[t] + o + samples] for t, o in zip(tracks, offsets)])


class OnlinePairs:
    """(catalog window codes, window mask, view codes, view mask, track) batches, as ``collate_pairs`` gives."""

    def __init__(self, audio: AudioBank, catalog: SegmentCatalog, encoder: torch.nn.Module, n_levels: int, views: ViewConfig, online: OnlineViewsConfig,
                 batch_size: int, seed: int, device: torch.device) -> None:
        if len(audio.lengths) != len(catalog.track_ids):
            raise ValueError(f"the audio bank holds {len(audio.lengths)} tracks, the catalog {len(catalog.track_ids)}")
        self.audio, self.encoder, self.n_levels, self.views = audio, encoder, n_levels, views
        self.batch_size, self.seed, self.device = batch_size, seed, device
        if not 0 <= online.hard_tracks < len(audio.lengths):
            raise ValueError(f"online.hard_tracks must be in 0..{len(audio.lengths) - 1} (training tracks less one), got {online.hard_tracks}")
        self.hard_tracks = online.hard_tracks
        self.neighbours: torch.Tensor | None = None  # [tracks, hard_tracks] on the CPU, from refresh_neighbours
        self.bank = DegradationBank.draw(views.augment, np.random.default_rng([seed, 1]), device, online.bank)
        width = max(s.shape[1] for s in catalog.segments)
        self.windows = torch.zeros(len(catalog.segments), n_levels, width, dtype=torch.long)
        for i, segment in enumerate(catalog.segments):
            self.windows[i, :, : segment.shape[1]] = torch.from_numpy(np.asarray(segment[:n_levels], dtype=np.int64))
        frames = np.array([s.shape[1] for s in catalog.segments])
        self.windows, self.window_frames = self.windows.to(device), torch.from_numpy(frames).to(device)
        # Where each window lies in its track, for choosing the windows that hold a view (holding_windows).
        self.window_track, self.window_start, self.window_samples = catalog.segment_track, catalog.segment_start, frames * HOP
        self.track_windows = [np.flatnonzero(catalog.segment_track == t) for t in range(len(catalog.track_ids))]

    def window_batch(self, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Catalog windows ``rows`` as codes [B, Q, T] and frame mask [B, T], T the longest of them."""
        frames = self.window_frames[rows]
        width = int(frames.max())
        return self.windows[rows][:, :, :width], frame_mask(frames, width)

    def refresh_neighbours(self, embed: TorchEmbedFn, chunk: int = 1024) -> None:
        """Each track's ``hard_tracks`` nearest tracks under ``embed`` (every catalog window embedded); nothing with 0."""
        if not self.hard_tracks:
            return
        everything = torch.arange(len(self.windows), device=self.device)
        rows = [embed(*self.window_batch(part)).float() for part in everything.split(chunk)]
        window_track = torch.as_tensor(self.window_track, device=self.device)
        self.neighbours = nearest_tracks(torch.cat(rows), window_track, len(self.audio.lengths), self.hard_tracks).cpu()

    def generator(self, step: int) -> torch.Generator:
        return torch.Generator().manual_seed(int(np.random.SeedSequence([self.seed, step]).generate_state(1)[0]))

    def draw(self, gen: torch.Generator) -> tuple[list[int], list[int], int]:
        """(tracks, offsets, samples): one length for the step, each view a uniform track (or, once neighbours are
        known, groups of a uniform track and its nearest ones) and a uniform sample offset."""
        shortest = min(self.audio.lengths)
        low, high = self.views.min_s * SAMPLE_RATE, self.views.max_s * SAMPLE_RATE
        samples = min(int(low + (high - low) * float(torch.rand((), generator=gen))), shortest)
        if self.neighbours is None:
            tracks = torch.randint(len(self.audio.lengths), (self.batch_size,), generator=gen).tolist()
        else:
            groups = -(-self.batch_size // (1 + self.hard_tracks))
            anchors = torch.randint(len(self.audio.lengths), (groups,), generator=gen)
            tracks = torch.cat([anchors[:, None], self.neighbours[anchors]], dim=1).flatten()[: self.batch_size].tolist()
        spans = torch.tensor([self.audio.lengths[t] - samples + 1 for t in tracks])
        offsets = (torch.rand(self.batch_size, generator=gen, dtype=torch.float64) * spans).long().clamp_max(spans - 1).tolist()
        return tracks, offsets, samples

    def babble(self, tracks: list[int], samples: int, gen: torch.Generator) -> torch.Tensor | None:
        """Each view's mix of ``views.babble_tracks`` other tracks at random offsets, levels within 6 dB, unit RMS
        (training.view_synth.track_babble); None with a single track."""
        n_tracks = len(self.audio.lengths)
        if n_tracks < 2:
            return None
        low, high = self.views.babble_tracks
        most = min(high, n_tracks - 1)
        count = torch.randint(low, high + 1, (self.batch_size,), generator=gen).clamp_max(most)
        total = torch.zeros(self.batch_size, samples, device=self.device)
        for slot in range(most):
            # Another track than the view's own: draw among n - 1 and step over it.
            drawn = torch.randint(n_tracks - 1, (self.batch_size,), generator=gen)
            others = (drawn + (drawn >= torch.tensor(tracks)).long()).tolist()
            offsets = [int(float(torch.rand((), generator=gen)) * (self.audio.lengths[o] - samples + 1)) for o in others]
            gain = 10.0 ** (-6.0 * torch.rand(self.batch_size, 1, generator=gen) / 20.0)
            excerpt = self.audio.excerpts(others, offsets, samples)
            level = rms(excerpt)
            used = (slot < count)[:, None].to(self.device)
            total += torch.where(used & (level > 0), excerpt / level.clamp_min(1e-30) * gain.to(self.device), torch.zeros_like(excerpt))
        return total / rms(total).clamp_min(1e-30)

    def positives(self, tracks: list[int], offsets: list[int], samples: int, gen: torch.Generator) -> torch.Tensor:
        """For each view, one of its track's catalog windows holding all of it (else the most of it), ties at random:
        the pairing rule of the stored views (``holding_windows``)."""
        picked = []
        for track, offset in zip(tracks, offsets):
            rows = self.track_windows[track]
            holding = rows[holding_windows(self.window_start[rows], self.window_samples[rows], offset, samples)]
            picked.append(int(holding[int(torch.randint(len(holding), (), generator=gen))]))
        return torch.tensor(picked, device=self.device)

    def batch(self, step: int) -> tuple[torch.Tensor, ...]:
        gen = self.generator(step)
        tracks, offsets, samples = self.draw(gen)
        clean = self.audio.excerpts(tracks, offsets, samples)
        views, _ = degrade_batch(clean, gen, self.bank, self.views.augment, self.babble(tracks, samples, gen))
        with torch.no_grad():
            codes, counts = self.encoder(views[:, None, :], torch.full((self.batch_size,), samples, device=self.device), n_quantizers=self.n_levels)
        frames = int(counts[0])
        window = self.positives(tracks, offsets, samples, gen)
        window_codes, window_mask = self.window_batch(window)
        view_mask = torch.ones(self.batch_size, frames, dtype=torch.bool, device=self.device)
        return window_codes, window_mask, codes[:, :, :frames], view_mask, torch.tensor(tracks, device=self.device)


def online_pairs(track_ids: list[str], audio_root: Path, tokens_root: Path, tokenizer: str, layout: CatalogConfig, n_levels: int, views: ViewConfig,
                 online: OnlineViewsConfig, batch_size: int, seed: int, device: torch.device) -> OnlinePairs:
    """``OnlinePairs`` over ``track_ids``: their audio on ``device``, their catalog windows under ``layout``, the tokenizer on ``device``."""
    audio_paths = {p.stem: p for p in list_audio_files(audio_root)}
    missing = [t for t in track_ids if t not in audio_paths]
    if missing:
        raise SystemExit(f"{len(missing)} training tracks have no audio under {audio_root}, e.g. {missing[:5]}")
    encoder = build_encoder(tokenizer, device=device)
    catalog = build_catalog(load_tracks(tokens_root, track_ids), layout, clip_encoder(encoder, n_levels, 16, device), audio_paths)
    audio = AudioBank.load([audio_paths[t] for t in catalog.track_ids], device)
    return OnlinePairs(audio, catalog, encoder, n_levels, views, online, batch_size, seed, device)
