"""Small generated data sets for the training tests: audio, its tiny-tokenizer codes and a track split."""
from __future__ import annotations

from pathlib import Path

from common.cli import run_module


def generated_set(root: Path, tracks: int, seconds: float, seed: int, levels: int = 8, held_out: float | None = 0.25, tokenizer: str = "tiny") -> Path:
    """``root``/audio (``tracks`` generated tracks of ``seconds``), ``root``/tokens (``tokenizer``'s codes, the tiny
    random-weight one unless said, ``levels`` RVQ levels) and, unless ``held_out`` is None, ``root``/splits with that
    share each for val and test."""
    assert run_module("training.synth", ["--out", str(root / "audio"), "--tracks", str(tracks), "--seconds", str(seconds), "--seed", str(seed), "--workers", "1"]) == 0
    assert run_module("training.tokenize", ["--input-root", str(root / "audio"), "--output-root", str(root / "tokens"), "--moss-config", tokenizer,
                                            "--n-quantizers", str(levels), "--device", "cpu"]) == 0
    if held_out is not None:
        assert run_module("training.splits", ["--tokens-root", str(root / "tokens"), "--output-root", str(root / "splits"),
                                              "--val-ratio", str(held_out), "--test-ratio", str(held_out)]) == 0
    return root
