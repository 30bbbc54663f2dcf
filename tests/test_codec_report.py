"""codec-report and the code-stability core it shares: metrics, the Ogg round trip, probes, held-out
selection and the report's JSON layout on tiny random models and generated audio."""
from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from common.cli import run_module
from training.audio_io import SAMPLE_RATE, write_wav
from training.code_stability import compare, excerpt_probe, measure_probes, noise_probe
from training.codec.losses import log_mel_distance, si_sdr
from training.codec_report import load_held_out, stability_probes
from training.encode import HOP, encode_clips
from training.moss.weights import build_encoder, save_official_layout
from training.reencode import ogg_roundtrip
from training.synth import synthesize_track

TRACKS, SECONDS, EXCERPT_START = 2, 4.0, 1.0


def _clip(seconds: float = 2.0, index: int = 0) -> np.ndarray:
    return synthesize_track(index, seconds, 11)


def test_reconstruction_metrics_are_sane() -> None:
    x = torch.from_numpy(_clip())[None]
    noise = torch.from_numpy(np.random.default_rng(0).standard_normal(x.shape[1]).astype(np.float32))[None]
    assert float(si_sdr(x, x)[0]) > 60.0
    assert float(si_sdr(noise, x)[0]) < -20.0
    assert float(si_sdr(0.5 * x + 0.05 * noise, x)[0]) > float(si_sdr(0.5 * x + 0.5 * noise, x)[0])
    assert log_mel_distance(x, x) == 0.0
    assert log_mel_distance(x + 0.1 * noise, x) > 0.1


def test_ogg_roundtrip_keeps_length_and_changes_the_signal() -> None:
    x = _clip(1.37)
    y = ogg_roundtrip(x, 0.0)
    assert y.dtype == np.float32 and y.shape == x.shape
    assert float(np.max(np.abs(y - x))) > 1e-3
    # Lossy, but the same music on the same time axis (no codec delay).
    assert float(si_sdr(torch.from_numpy(y)[None], torch.from_numpy(x)[None])[0]) > 5.0
    with pytest.raises(ValueError, match="quality"):
        ogg_roundtrip(x, 1.5)


def test_frame_agreement_per_distance() -> None:
    reference = [np.arange(20).reshape(2, 10), np.zeros((2, 8), dtype=np.int64)]
    changed = reference[0][:, 3:].copy()
    changed[1, 0] = -1
    result = compare(reference, [changed, reference[1][:, 2:]], [3, 2])
    assert result.counts.tolist() == [2] * 6 + [1]
    curve = result.curve()
    assert curve.shape == (2, 7) and curve[0].tolist() == [1.0] * 7
    assert curve[1, 0] == 0.5 and curve[1, 1:].tolist() == [1.0] * 6
    assert result.by_level() == [1.0, 12 / 13]
    assert result.by_level(from_frame=1) == [1.0, 1.0]
    with pytest.raises(ValueError, match="no compared frames"):
        result.by_level(from_frame=7)


def test_excerpt_probes_start_on_or_off_the_frame_grid() -> None:
    x = np.arange(10 * HOP, dtype=np.float32)
    aligned, start = excerpt_probe("a", 4).make(x, np.random.default_rng(0))
    assert start == 4 and aligned[0] == 4 * HOP
    for seed in range(20):
        offset, start = excerpt_probe("o", 4, sample_offset=True).make(x, np.random.default_rng(seed))
        first = int(offset[0])
        assert 4 * HOP < first < 5 * HOP and start == round(first / HOP)


def test_probe_measurement_is_deterministic_per_seed() -> None:
    encoder = build_encoder("tiny")
    clips = [_clip(2.0, i) for i in range(2)]
    reference = encode_clips(encoder, clips, 4)
    probes = [noise_probe("pink", 10), *stability_probes(5)[4:6]]

    def run(seed: int) -> list[np.ndarray]:
        return [r.matches for r in measure_probes(encoder, clips, reference, probes, 4, 4, "cpu", seed).values()]

    first = run(1)
    assert all(np.array_equal(a, b) for a, b in zip(first, run(1)))
    assert not np.array_equal(first[0], run(2)[0])


def _write_corpus(root: Path) -> None:
    rows = [("t_a", "test"), ("t_b", "train"), ("t_c", "test"), ("t_missing", "test")]
    with open(root / "manifest.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(("track_id", "package", "source_path", "duration_s", "licence", "split"))
        for track_id, split in rows:
            writer.writerow((track_id, "pkg", f"/src/{track_id}.ogg", "3.0", "GPL", split))
    for index, (track_id, _) in enumerate(rows[:3]):
        write_wav(root / "audio" / f"{track_id}.wav", _clip(3.0, index))


def test_held_out_tracks_come_from_the_split_and_skip_unreadable_files(tmp_path: Path) -> None:
    _write_corpus(tmp_path)
    held_out = load_held_out(tmp_path, "test", 5, 2.0, seed=1)
    assert held_out.source == "corpus" and sorted(held_out.track_ids) == ["t_a", "t_c"]
    assert [s["track_id"] for s in held_out.skipped] == ["t_missing"]
    samples = 2 * SAMPLE_RATE // HOP * HOP
    whole = {i: _clip(3.0, i) for i in (0, 2)}
    for track_id, clip in zip(held_out.track_ids, held_out.clips):
        source = whole[0 if track_id == "t_a" else 2]
        start = (source.size - samples) // 2
        assert clip.shape == (samples,)
        np.testing.assert_allclose(clip, source[start : start + samples], atol=1e-4)  # 16-bit WAV
    assert load_held_out(tmp_path, "test", 1, 2.0, seed=1).track_ids == load_held_out(tmp_path, "test", 1, 2.0, seed=1).track_ids
    with pytest.raises(ValueError, match="no tracks in split 'val'"):
        load_held_out(tmp_path, "val", 2, 2.0, seed=1)
    with pytest.raises(ValueError, match="expected one of"):
        load_held_out(tmp_path, "tset", 2, 2.0, seed=1)
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "manifest.csv").write_text("id,part\nx,test\n")
    with pytest.raises(ValueError, match="has split None"):
        load_held_out(tmp_path / "bad", "test", 2, 2.0, seed=1)
    generated = load_held_out(tmp_path / "nowhere", "test", 2, 2.0, seed=1)
    assert generated.source == "generated" and "GENERATED" in generated.note and len(generated.clips) == 2


def _run_report(out: Path, moss: list[str]) -> dict:
    argv = [
        "--output-json", str(out / "codec.json"), "--corpus", str(out / "no-corpus"), "--tracks", str(TRACKS),
        "--seconds", str(SECONDS), "--excerpt-start", str(EXCERPT_START), "--seed", "3", "--device", "cpu", *moss,
    ]
    assert run_module("training.codec_report", argv) == 0
    return json.loads((out / "codec.json").read_text())


@pytest.fixture(scope="module")
def encoder_only_report(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, Path]:
    out = tmp_path_factory.mktemp("codec_report")
    weights = save_official_layout(build_encoder("tiny"), out / "tiny-encoder")
    return _run_report(out, ["--moss-weights", str(weights), "--n-quantizers", "8"]), out


def test_report_layout_covers_every_condition_and_level(encoder_only_report: tuple[dict, Path]) -> None:
    report, out = encoder_only_report
    assert report["data"]["source"] == "generated" and report["data"]["tracks"] == TRACKS
    assert report["data"]["total_seconds"] == pytest.approx(TRACKS * SECONDS)
    assert set(report["tokenizers"]) == {"tokenizer", "random"}
    frames = int(SECONDS * SAMPLE_RATE) // HOP
    start = report["excerpt"]["start_frame"]
    assert start == round(EXCERPT_START * SAMPLE_RATE / HOP)
    for entry in report["tokenizers"].values():
        levels = entry["levels"]
        assert levels == 8
        assert set(entry["agreement"]) == set(report["conditions"]) == {
            "shift1", "shift15", "shift480", "shift960", "excerpt_aligned", "excerpt_offset", "pink20", "pink10", "pink0", "reverb", "eq", "ogg"}
        for values in entry["agreement"].values():
            assert len(values) == levels and all(0.0 <= v <= 1.0 for v in values)
        assert len(entry["chance"]) == levels and all(0.0 < c < 1.0 for c in entry["chance"])
        assert all(1 <= n <= entry["codebook_size"] for n in entry["codes_in_use"])
        assert all(0.0 <= e <= math.log2(entry["codebook_size"]) + 1e-9 for e in entry["entropy_bits"])
        aligned, offset = entry["excerpt_curve"]["excerpt_aligned"], entry["excerpt_curve"]["excerpt_offset"]
        assert len(aligned) == len(offset) == levels
        assert len(aligned[0]) == frames - start and frames - start - 1 <= len(offset[0]) <= frames - start
    assert report["tokenizers"]["tokenizer"]["reconstruction"] is None
    assert "no decoder" in report["tokenizers"]["tokenizer"]["reconstruction_note"]
    assert set(report["tokenizers"]["random"]["reconstruction"]) == {"levels_8", "levels_all"}
    assert (out / "codec.png").stat().st_size > 0
    assert not (out / "codec_spectrograms.png").exists()


def test_reconstruction_metrics_appear_for_a_tiny_codec(tmp_path: Path) -> None:
    report = _run_report(tmp_path, ["--moss-config", "tiny"])
    assert set(report["tokenizers"]) == {"tokenizer"}
    entry = report["tokenizers"]["tokenizer"]
    assert entry["random_weights"] and entry["parameters"]["decoder"] > 0
    recon = entry["reconstruction"]
    assert (recon["levels_8"]["levels"], recon["levels_all"]["levels"]) == (8, entry["levels"])
    for depth in recon.values():
        assert depth["mel_distance"] > 0 and math.isfinite(depth["si_sdr_db"])
    assert (tmp_path / "codec_spectrograms.png").stat().st_size > 0


def test_report_refuses_an_excerpt_that_leaves_too_little_audio(tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match="--excerpt-start"):
        run_module("training.codec_report", ["--output-json", str(tmp_path / "c.json"), "--seconds", "4", "--excerpt-start", "2.5"])


def test_code_stability_still_reports_its_conditions(tmp_path: Path) -> None:
    out = tmp_path / "cs.json"
    assert run_module("training.code_stability", ["--output-json", str(out), "--tracks", "2", "--seconds", "4", "--n-quantizers", "4", "--device", "cpu"]) == 0
    rows = json.loads(out.read_text())["agreement_by_level"]
    assert set(rows) == {"chance", "snr20", "snr10", "snr5", "snr0", "reverb", "eq", "excerpt", "shift15", "shift60", "shift240", "shift960"}
    assert all(len(v) == 4 and all(0.0 <= x <= 1.0 for x in v) for v in rows.values())
