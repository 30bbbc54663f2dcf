"""`python -m demo`: what it refuses before doing any work, and which index it serves."""
from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from common.cli import run_module
from demo.run import add_arguments, catalog_digest, served_checkpoint
from training.pipeline import SHIPPED_EMBEDDER


@pytest.mark.parametrize("argv, message", [(["--queries", "0"], "--queries must be at least 1"),
                                           (["--corpus-splits", "val"], "--corpus-splits must include test")])
def test_the_demo_refuses_what_it_cannot_show(tmp_path: Path, argv: list[str], message: str) -> None:
    with pytest.raises(SystemExit, match=message):
        run_module("demo.run", ["--work-dir", str(tmp_path / "work"), "--model-repository", str(tmp_path / "repo"), *argv])
    assert not (tmp_path / "work").exists()


def test_a_catalog_with_other_tracks_gets_another_index(tmp_path: Path) -> None:
    generated, corpus = tmp_path / "generated-200x20s", tmp_path / "corpus-test"
    for folder, names in ((generated, ["track_00000", "track_00001"]), (corpus, ["a", "b"])):
        folder.mkdir()
        for name in names:
            (folder / f"{name}.npz").write_bytes(b"")
    only_generated = catalog_digest([generated])
    with_corpus = catalog_digest([corpus, generated])
    assert only_generated != with_corpus and catalog_digest([corpus, generated]) == with_corpus
    (corpus / "c.npz").write_bytes(b"")
    assert catalog_digest([corpus, generated]) != with_corpus


def _args(**given: object) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args([f"--{k.replace('_', '-')}={v}" for k, v in given.items() if not isinstance(v, bool)]
                             + [f"--{k.replace('_', '-')}" for k, v in given.items() if v is True])


def test_the_served_embedder_is_the_shipped_one_only_for_its_tokenizer(capsys: pytest.CaptureFixture[str]) -> None:
    assert served_checkpoint(_args()) == SHIPPED_EMBEDDER / "embedder.pt"  # models/moss-small, the default tokenizer
    assert served_checkpoint(_args(moss_config="tiny")) is None
    assert "NOTE embedder: the shipped one (models/embedder-music) did not learn the codes of tiny" in capsys.readouterr().out
    assert served_checkpoint(_args(train_embedder=True)) is None
    assert "NOTE" not in capsys.readouterr().out
    assert served_checkpoint(_args(checkpoint="elsewhere.pt", moss_config="tiny")) == Path("elsewhere.pt")
