from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import soundfile as sf

from common.cli import dispatch
from training.__main__ import COMMANDS
from training.audio_io import SAMPLE_RATE
from training.synth import synthesize_track


def test_same_seed_is_bit_identical_and_tracks_differ() -> None:
    a = synthesize_track(3, 2.0, seed=7)
    assert a.dtype == np.float32 and a.shape == (2 * SAMPLE_RATE,)
    np.testing.assert_array_equal(a, synthesize_track(3, 2.0, seed=7))
    assert not np.array_equal(a, synthesize_track(4, 2.0, seed=7))
    assert not np.array_equal(a, synthesize_track(3, 2.0, seed=8))
    peak_db = 20 * np.log10(np.max(np.abs(a)))
    assert -1.1 < peak_db < -0.9


def test_synth_cli_writes_manifest_and_skips_existing(tmp_path: Path, capsys) -> None:
    argv = ["synth", "--out", str(tmp_path), "--tracks", "3", "--seconds", "2", "--seed", "1", "--workers", "2"]
    assert dispatch("python -m training", "", COMMANDS, argv) == 0
    with open(tmp_path / "manifest.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["track_id"] for r in rows] == ["track_00000", "track_00001", "track_00002"]
    for row in rows:
        info = sf.info(str(tmp_path / row["path"]))
        assert info.samplerate == SAMPLE_RATE and info.channels == 1
        assert abs(float(row["duration_s"]) - 2.0) < 1e-3
    stamp = (tmp_path / rows[0]["path"]).stat().st_mtime_ns
    capsys.readouterr()
    assert dispatch("python -m training", "", COMMANDS, argv) == 0
    assert "0 tracks rendered" in capsys.readouterr().out
    assert (tmp_path / rows[0]["path"]).stat().st_mtime_ns == stamp
