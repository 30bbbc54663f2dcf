"""`python -m benchmarks milvus-agreement` end to end on the real tiny pipeline's 8 generated tracks: the real embedded
tritonserver serves the catalog from FAISS, then from Milvus Lite, and the report's numbers are the served answers'."""
from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import pytest

from common.cli import run_module

TEST_TRACKS = 2
CONDITIONS = ("clean", "snr10")


def corpus_of(real_artifacts: Any, root: Path) -> Path:
    """The generated tracks dressed as a corpus: a manifest whose test split is the first TEST_TRACKS, audio/ beside it."""
    corpus = root / "corpus"
    corpus.mkdir()
    (corpus / "audio").symlink_to(real_artifacts.audio_root)
    ids = sorted(p.stem for p in real_artifacts.audio_root.glob("*.wav"))
    with open(corpus / "manifest.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["track_id", "split"])
        writer.writerows([track_id, "test" if i < TEST_TRACKS else "train"] for i, track_id in enumerate(ids))
    return corpus


def test_both_backends_answer_every_query_and_the_report_counts_them(
    real_artifacts: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("BENCHMARK_RESULTS", str(tmp_path / "results"))
    assert run_module("benchmarks.milvus_agreement", [
        "--checkpoint", str(real_artifacts.checkpoint), "--tokens-root", str(real_artifacts.tokens_root),
        "--corpus", str(corpus_of(real_artifacts, tmp_path)), "--moss-config", "tiny", "--query-seconds", "5",
        "--conditions", *CONDITIONS, "--top-k", "3", "--work-dir", str(tmp_path / "work"), "--name", "run",
        "--note", "stand-in models",
    ]) == 0
    out_dir = tmp_path / "results" / "run"
    summary = json.loads((out_dir / "summary.json").read_text())
    per_query = summary["per_query"]
    assert len(per_query) == TEST_TRACKS * len(CONDITIONS) and summary["notes"] == ["stand-in models"]
    assert summary["catalog"]["tracks"] == 8 and summary["queries"]["tracks"] == TEST_TRACKS
    # Both flat indexes are exact: the served answers are the same track for every query.
    assert all(q["faiss_top1"] == q["milvus_top1"] for q in per_query)
    for condition in CONDITIONS:
        row = summary["by_condition_length"][condition]["5"]
        chosen = [q for q in per_query if q["condition"] == condition]
        assert row["queries"] == len(chosen) and row["top1_agreement"] == 1.0
        for backend in ("faiss", "milvus"):
            assert row[f"recall@1_{backend}"] == pytest.approx(sum(q[f"{backend}_top1"] == q["track"] for q in chosen) / len(chosen), abs=1e-4)
            assert row[f"p50_ms_{backend}"] > 0
    assert summary["overall"]["queries"] == len(per_query) and summary["overall"]["max_top1_score_diff"] < 1e-3
    table = (out_dir / "table.md").read_text()
    assert table in capsys.readouterr().out and all(f"| {c} | 5 |" in table for c in CONDITIONS)
    assert (out_dir / "agreement.png").stat().st_size > 0


def test_missing_inputs_are_named_in_one_line_before_any_work(tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match=r"--checkpoint .*no such file; --tokens-root .*no such folder; --corpus .*no manifest.csv"):
        run_module("benchmarks.milvus_agreement", ["--checkpoint", str(tmp_path / "none.pt"), "--tokens-root", str(tmp_path / "tokens"),
                                                   "--corpus", str(tmp_path / "corpus")])
