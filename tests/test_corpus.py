"""The real-music corpus builder and packer on generated audio laid out like installed packages (no apt)."""
from __future__ import annotations

import csv
import json
import os
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from common.cli import run_module
from training.audio_io import SAMPLE_RATE
from training.corpus.build import _known_similarities, build_corpus
from training.corpus.config import CorpusConfig, NearDuplicateConfig, load_corpus_config
from training.corpus.fingerprint import FingerprintConfig, fingerprint, similarity
from training.corpus.licence import licence_for
from training.corpus.pack import folder_bytes, pack_order
from training.corpus.sources import Source, list_package, track_ids
from training.music import synthesize_track

GAME = "testgame-music"
COPYRIGHT = """Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: testgame

Files: *
Copyright: someone
License: GPL-2+

Files: music/loops/*
Copyright: someone else
License: CC-BY-SA-3.0
 The text of the licence.
"""
CFG = CorpusConfig(
    packages=(GAME,),
    min_seconds=10.0,
    near_duplicate=NearDuplicateConfig(threshold=0.6, window_seconds=6.0),
)
SECONDS = 16.0


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


@pytest.fixture(scope="module")
def music() -> dict[str, np.ndarray]:
    return {"a": synthesize_track(0, SECONDS, seed=5), "b": synthesize_track(1, SECONDS, seed=5)}


@pytest.fixture(scope="module")
def package(tmp_path_factory: pytest.TempPathFactory, music: dict[str, np.ndarray]) -> tuple[Path, Path]:
    """A fake installed package: files under root/usr/share/games/testgame, its copyright under docs."""
    tmp_path = tmp_path_factory.mktemp("package")
    root = tmp_path / "root" / "usr" / "share" / "games" / "testgame"
    (root / "music" / "loops").mkdir(parents=True)
    (root / "sounds").mkdir()
    a, b = music["a"], music["b"]
    sf.write(root / "music" / "Theme A.ogg", _resample(a, 44_100), 44_100, format="OGG", subtype="VORBIS")
    sf.write(root / "music" / "other.mp3", b, SAMPLE_RATE, format="MP3", subtype="MPEG_LAYER_III")
    # The same piece again: a 6-s excerpt looped twice, 8 dB quieter, at 32 kHz in another folder.
    loop = 0.4 * np.tile(a[int(3.3 * SAMPLE_RATE) : int(9.3 * SAMPLE_RATE)], 2)
    sf.write(root / "music" / "loops" / "theme_a_loop.ogg", _resample(loop, 32_000), 32_000, format="OGG", subtype="VORBIS")
    sf.write(root / "sounds" / "click.ogg", a[: 2 * SAMPLE_RATE], SAMPLE_RATE, format="OGG", subtype="VORBIS")
    # A 4-s fanfare padded with silence to 16 s: long as a file, short as music.
    fanfare = np.concatenate((b[: 4 * SAMPLE_RATE], np.zeros(12 * SAMPLE_RATE, np.float32)))
    sf.write(root / "sounds" / "fanfare.ogg", fanfare, SAMPLE_RATE, format="OGG", subtype="VORBIS")
    dither = 1e-5 * np.random.default_rng(1).standard_normal(12 * SAMPLE_RATE).astype(np.float32)  # -100 dBFS
    sf.write(root / "sounds" / "silence.ogg", dither, SAMPLE_RATE, format="OGG", subtype="VORBIS")
    (root / "sounds" / "other_copy.mp3").write_bytes((root / "music" / "other.mp3").read_bytes())
    (root / "music" / "broken.ogg").write_bytes(np.random.default_rng(0).bytes(5000))
    os.symlink("../music/other.mp3", root / "sounds" / "link.mp3")
    docs = tmp_path / "doc"
    (docs / GAME).mkdir(parents=True)
    (docs / GAME / "copyright").write_text(COPYRIGHT, encoding="utf-8")
    return root, docs


def _resample(x: np.ndarray, rate: int) -> np.ndarray:
    import soxr

    return soxr.resample(x, SAMPLE_RATE, rate).astype(np.float32)


def _listing(root: Path):
    return list_package(GAME, sorted(p for p in root.rglob("*") if p.is_file() or p.is_symlink()))


@pytest.fixture(scope="module")
def built(package: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    root, docs = package
    out = tmp_path_factory.mktemp("built") / "corpus"
    return out, build_corpus([_listing(root)], out, CFG, workers=1, doc_root=docs)


def test_build_keeps_music_and_reports_every_drop(package: tuple[Path, Path], built: tuple[Path, dict]) -> None:
    root, _ = package
    out, summary = built
    kept = {row["track_id"]: row for row in _rows(out / "manifest.csv")}
    assert sorted(kept) == ["testgame-other", "testgame-theme-a"]
    theme = kept["testgame-theme-a"]
    assert theme["source_path"] == str(root / "music" / "Theme A.ogg") and theme["licence"] == "GPL-2+"
    assert float(theme["duration_s"]) == pytest.approx(SECONDS, abs=0.05)
    assert {row["split"] for row in kept.values()} <= {"train", "val", "test"}
    for track_id, row in kept.items():
        info = sf.info(str(out / row["path"]))
        assert (info.samplerate, info.channels, info.subtype) == (SAMPLE_RATE, 1, "PCM_16")
        assert row["path"] == f"audio/{track_id}.wav"
    assert sorted(p.name for p in (out / "audio").iterdir()) == ["testgame-other.wav", "testgame-theme-a.wav"]

    dropped = {Path(row["source_path"]).name: row for row in _rows(out / "dropped.csv")}
    assert set(dropped) == {"theme_a_loop.ogg", "click.ogg", "fanfare.ogg", "silence.ogg", "other_copy.mp3", "link.mp3", "broken.ogg"}
    assert dropped["click.ogg"]["reason"] == "short" and float(dropped["click.ogg"]["duration_s"]) == pytest.approx(2.0, abs=0.01)
    fanfare = dropped["fanfare.ogg"]
    assert fanfare["reason"] == "short" and float(fanfare["duration_s"]) == pytest.approx(16.0, abs=0.01)
    assert float(fanfare["audible_s"]) == pytest.approx(4.0, abs=0.3)
    assert dropped["silence.ogg"]["reason"] == "short" and float(dropped["silence.ogg"]["audible_s"]) == 0.0
    assert dropped["other_copy.mp3"]["reason"] == "duplicate-of testgame-other"
    assert dropped["link.mp3"]["reason"] == "duplicate-of testgame-other"
    assert dropped["broken.ogg"]["reason"].startswith("unreadable: ") and "broken.ogg" in dropped["broken.ogg"]["reason"]
    loop_reason = dropped["theme_a_loop.ogg"]["reason"]
    assert loop_reason.startswith("near-duplicate-of testgame-theme-a (similarity ")
    assert float(loop_reason.rsplit(" ", 1)[1].rstrip(")")) >= 0.8

    assert summary["tracks"] == 2 and summary["dropped"] == {"short": 3, "duplicate": 2, "near-duplicate": 1, "unreadable": 1}
    assert summary["per_package"][GAME]["minutes"] == pytest.approx(2 * SECONDS / 60, abs=0.01)
    assert json.loads((out / "summary.json").read_text()) == summary
    assert (out / "similarity.png").stat().st_size > 0


def test_rerun_resumes_without_decoding_again(package: tuple[Path, Path], built: tuple[Path, dict], tmp_path: Path) -> None:
    root, docs = package
    out = tmp_path / "corpus"
    shutil.copytree(built[0], out)
    manifest = (out / "manifest.csv").read_text()
    kept_wav, removed_wav = out / "audio" / "testgame-theme-a.wav", out / "audio" / "testgame-other.wav"
    stamp = kept_wav.stat().st_mtime_ns
    removed_wav.unlink()
    (out / "audio" / ".testgame-x.wav.123.tmp").write_bytes(b"half a file")  # left by a killed run

    build_corpus([_listing(root)], out, CFG, workers=1, doc_root=docs)
    assert kept_wav.stat().st_mtime_ns == stamp
    assert removed_wav.is_file() and sf.info(str(removed_wav)).frames > 0
    assert not list((out / "audio").glob(".*.tmp"))
    assert (out / "manifest.csv").read_text() == manifest
    with np.load(out / "similarity.npz") as data:  # every pair's score is there for the next rerun
        known = _known_similarities(out / "similarity.npz", data["keys"], str(data["params"]))
    assert known is not None and np.isfinite(known[0]).all()


def test_pk3_members_are_sources_with_the_copyright_of_their_unpacked_path(tmp_path: Path, music: dict[str, np.ndarray]) -> None:
    base = tmp_path / "usr" / "share" / "games" / "testgame"
    base.mkdir(parents=True)
    member = tmp_path / "member.ogg"
    sf.write(member, music["b"][: 3 * SAMPLE_RATE], SAMPLE_RATE, format="OGG", subtype="VORBIS")
    with zipfile.ZipFile(base / "0music.pk3", "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.write(member, "music/loops/Intro_1.ogg")
        archive.writestr("music/readme.txt", "not audio")
    listing = list_package(GAME, [base / "0music.pk3"])
    (track_id, source), = listing.sources.items()
    assert track_id == "testgame-intro-1"
    assert source.source_path == f"{base / '0music.pk3'}!music/loops/Intro_1.ogg"
    assert source.decode().size == 3 * SAMPLE_RATE
    assert licence_for(COPYRIGHT, source.installed_path) == "CC-BY-SA-3.0"


def test_colliding_names_take_their_folder() -> None:
    paths = [Path("/nonexistent/a/track1.ogg"), Path("/nonexistent/b/track1.ogg"), Path("/nonexistent/b/Track 2.ogg")]
    ids = track_ids("drascula-music", [Source("drascula-music", p) for p in paths])
    assert sorted(ids.values()) == ["drascula-a-track1", "drascula-b-track1", "drascula-track-2"]


def test_licence_of_free_form_copyright() -> None:
    text = "Upstream: x\n\nLicense:\n    This program is free software; you can redistribute it\n    under the terms of the GNU General Public License version 2\n"
    assert licence_for(text, "/x.ogg") == "under the terms of the GNU General Public License version 2"


def test_similarity_finds_shifted_excerpts_and_separates_different_music(music: dict[str, np.ndarray]) -> None:
    cfg = FingerprintConfig()
    a, b = music["a"], music["b"]
    fp_a = fingerprint(a, cfg)
    excerpt = fingerprint(0.5 * a[int(4.1 * SAMPLE_RATE) : int(13.1 * SAMPLE_RATE)], cfg)
    score, shift = similarity(fp_a, excerpt, window_frames=24)
    assert score > 0.85 and abs(shift / cfg.frames_per_second + 4.1) <= 0.25
    assert similarity(fp_a, fingerprint(b, cfg), window_frames=24)[0] < 0.5


def _small_corpus(tmp_path: Path, music: dict[str, np.ndarray]) -> tuple[Path, list[tuple[str, ...]]]:
    """Six 10-s tracks over three packages, five train and one test."""
    corpus = tmp_path / "corpus"
    (corpus / "audio").mkdir(parents=True)
    rows = []
    for index in range(6):
        track_id = f"game{index % 3}-t{index}"
        sf.write(corpus / "audio" / f"{track_id}.wav", music["ab"[index % 2]][: 10 * SAMPLE_RATE], SAMPLE_RATE, subtype="PCM_16")
        rows.append((track_id, f"game{index % 3}-music", f"/x/{index}.ogg", "10.000", "GPL-2+", "train" if index < 5 else "test", f"audio/{track_id}.wav"))
    with open(corpus / "manifest.csv", "w", newline="", encoding="utf-8") as handle:
        csv.writer(handle).writerows([("track_id", "package", "source_path", "duration_s", "licence", "split", "path"), *rows])
    return corpus, rows


def test_pack_respects_its_budget_and_spreads_over_packages(tmp_path: Path, music: dict[str, np.ndarray]) -> None:
    corpus, rows = _small_corpus(tmp_path, music)
    order = [row["track_id"] for row in pack_order([dict(zip(("track_id", "package"), r)) for r in rows[:5]], seed=3)]
    assert len({track_id.split("-")[0] for track_id in order[:3]}) == 3  # one of each package first

    out = tmp_path / "pack"
    budget_mib = 0.12
    argv = ["--corpus", str(corpus), "--split", "train", "--out", str(out), "--max-mb", str(budget_mib), "--seed", "3"]
    assert run_module("training.corpus.pack", argv) == 0
    packed = _rows(out / "manifest.csv")
    assert 0 < len(packed) < 5 and folder_bytes(out) <= budget_mib * (1 << 20)
    assert {row["track_id"] for row in packed} == set(order[: len(packed)])
    info = sf.info(str(out / packed[0]["path"]))
    assert (info.format, info.subtype, info.samplerate, info.channels) == ("OGG", "VORBIS", SAMPLE_RATE, 1)
    assert run_module("training.corpus.pack", argv) == 0  # packing again replaces the earlier pack
    assert _rows(out / "manifest.csv") == packed


def test_cli_refuses_a_package_outside_the_config(capsys: pytest.CaptureFixture[str]) -> None:
    assert "wesnoth-1.16-music" in load_corpus_config().packages
    assert set(load_corpus_config().music_folder_only) <= set(load_corpus_config().packages)
    with pytest.raises(SystemExit, match="not-a-music-package not in the config's packages"):
        run_module("training.corpus.build", ["--packages", "not-a-music-package", "--no-install"])


def test_packs_after_packs_carry_the_whole_corpus_and_unpack_into_one(tmp_path: Path, music: dict[str, np.ndarray]) -> None:
    corpus, rows = _small_corpus(tmp_path, music)
    packs: list[Path] = []
    while len(packs) < 10:
        out = tmp_path / f"pack{len(packs)}"
        argv = ["--corpus", str(corpus), "--split", "all", "--codec", "opus", "--compression-level", "0.94", "--out", str(out), "--max-mb", "0.06",
                "--after", *map(str, packs)]
        try:
            assert run_module("training.corpus.pack", argv) == 0
        except SystemExit as stop:
            assert "already" in str(stop)
            break
        packs.append(out)
    assert len(packs) > 1  # the budget holds fewer than all six tracks
    in_packs = [row["track_id"] for pack in packs for row in _rows(pack / "manifest.csv")]
    assert sorted(in_packs) == sorted(r[0] for r in rows)  # every track in exactly one pack, the test one too
    info = sf.info(str(packs[0] / _rows(packs[0] / "manifest.csv")[0]["path"]))
    assert (info.format, info.subtype, info.samplerate, info.channels) == ("OGG", "OPUS", SAMPLE_RATE, 1)

    merged = tmp_path / "merged"
    assert run_module("training.corpus.unpack", [*map(str, packs), "--corpus", str(merged)]) == 0
    assert run_module("training.corpus.unpack", [str(packs[0]), "--corpus", str(merged)]) == 0  # again: nothing changes
    manifest = _rows(merged / "manifest.csv")
    assert [row["track_id"] for row in manifest] == sorted(r[0] for r in rows)
    assert {row["track_id"]: row["split"] for row in manifest} == {r[0]: r[5] for r in rows}
    for row in manifest:
        decoded, rate = sf.read(merged / row["path"])
        assert rate == SAMPLE_RATE and abs(decoded.size - 10 * SAMPLE_RATE) <= 1920

    clash = tmp_path / "clash"
    shutil.copytree(packs[0], clash)
    first = _rows(clash / "manifest.csv")[0]
    (clash / first["path"]).rename(clash / "audio" / "renamed.ogg")
    with open(clash / "manifest.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(first))
        writer.writeheader()
        writer.writerow({**first, "path": "audio/renamed.ogg"})
    with pytest.raises(SystemExit, match="already in .* from other files"):
        run_module("training.corpus.unpack", [str(clash), "--corpus", str(merged)])


def test_a_game_data_package_contributes_only_its_music_folder(tmp_path: Path, music: dict[str, np.ndarray]) -> None:
    base = tmp_path / "usr" / "share" / "games" / "kart" / "data"
    for folder in ("Music", "sfx", "tracks/cave"):
        (base / folder).mkdir(parents=True)
        sf.write(base / folder / "theme.ogg", music["b"][: 2 * SAMPLE_RATE], SAMPLE_RATE, format="OGG", subtype="VORBIS")
    paths = sorted(base.rglob("*.ogg"))
    assert set(list_package("kart-data", paths).sources) == {"kart-music-theme", "kart-sfx-theme", "kart-cave-theme"}
    (track_id, source), = list_package("kart-data", paths, music_only=True).sources.items()
    assert track_id == "kart-theme" and source.file == base / "Music" / "theme.ogg"


def test_a_music_folder_rule_for_an_unlisted_package_is_refused(tmp_path: Path) -> None:
    (tmp_path / "corpus.yaml").write_text("packages: [asc-music]\nmusic_folder_only: [asc-mus1c]\n", encoding="utf-8")
    with pytest.raises(SystemExit, match="music_folder_only names packages not in packages: asc-mus1c"):
        load_corpus_config(tmp_path / "corpus.yaml")
