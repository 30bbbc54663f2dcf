"""The listening conditions a query is evaluated under, as a user's recording hears a track.

``clean``, ``snrN`` (coloured or synthetic-voice noise at exactly N dB), ``reverb`` and ``eq`` are
``training.augment.degrade``; ``babble5`` mixes other tracks' music (never a queried track's: its own
audio would leak into the match) at 5 dB, a bar or shop playing other music; ``ogg`` is a low-bitrate
Ogg Vorbis round trip (a recording sent through a messaging app).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from training.augment import CONDITIONS as AUGMENT_CONDITIONS
from training.augment import NoiseSource, degrade, mix_at_snr
from training.reencode import ogg_roundtrip
from training.view_synth import track_babble

QUERY_CONDITIONS = ("clean", "snr20", "snr10", "snr5", "snr0", "babble5", "reverb", "eq", "ogg")
BABBLE_TRACKS = 3
BABBLE_SNR_DB = 5.0
# Vorbis quality 0: about 30 kb/s for 24 kHz mono, the lowest libsndfile writes.
OGG_QUALITY = 0.0


def babble_source(paths: list[Path]) -> NoiseSource:
    """``babble5``'s background: ``BABBLE_TRACKS`` distinct tracks of ``paths`` at random offsets."""
    if len(paths) < BABBLE_TRACKS:
        raise ValueError(f"babble needs {BABBLE_TRACKS} tracks that are not queried, the pool has {len(paths)}")
    return track_babble(paths, (BABBLE_TRACKS, BABBLE_TRACKS))


def degrade_query(x: np.ndarray, condition: str, rng: np.random.Generator, babble: NoiseSource | None = None) -> np.ndarray:
    """``x`` as heard under ``condition`` (one of ``QUERY_CONDITIONS``); ``babble5`` needs a ``babble_source``."""
    if condition in AUGMENT_CONDITIONS:
        return degrade(x, condition, rng)
    if condition == "babble5":
        if babble is None:
            raise ValueError("condition babble5 needs a babble source of tracks that are not queried")
        return mix_at_snr(x, babble(np.asarray(x).size, rng), BABBLE_SNR_DB)
    if condition == "ogg":
        return ogg_roundtrip(x, OGG_QUALITY)
    raise ValueError(f"unknown condition {condition!r}; expected one of {QUERY_CONDITIONS}")
