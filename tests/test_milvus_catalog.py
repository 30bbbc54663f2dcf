"""The catalog in Milvus (issue #16), against a real Milvus Lite server and a real tritonserver whose faiss_topk
searches it (configs generated with `--catalog-backend milvus`): build, query through the served ensemble, add,
upsert, delete (the deleted track never returns), embedder mismatch refused, Milvus down -> a clear error while the
server stays ready, and back when Milvus is.
"""
from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from common.cli import run_module
from export.repo_configs import render_repository, with_catalog, write_repository
from export.repo_layout import lay_out_repository
from serving import milvus_catalog
from serving.catalog_index import CatalogMismatch
from serving.milvus_lite_server import MilvusLiteServer, free_port
from serving.triton_runtime import EmbeddedTriton
from test_triton_server import search

COLLECTION = "catalog_test"


@pytest.fixture(scope="module")
def milvus_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MilvusLiteServer]:
    folder = tmp_path_factory.mktemp("milvus")
    with MilvusLiteServer(folder / "catalog.db", free_port()) as server:
        yield server


def catalog_rows(serving_artifacts: Any) -> tuple[np.ndarray, np.ndarray, list[dict[str, str]]]:
    catalog = serving_artifacts.catalog
    vectors = catalog.index.reconstruct_n(0, catalog.index.ntotal)
    return vectors, catalog.segment_track_ids, catalog.tracks


@pytest.fixture(scope="module")
def milvus(milvus_server: MilvusLiteServer, serving_artifacts: Any) -> milvus_catalog.Milvus:
    """The stand-in catalog of the shared FAISS server, built into Milvus through the CLI's library call."""
    client = milvus_catalog.Milvus(milvus_server.uri, timeout_s=5)
    summary = milvus_catalog.build_collection(client, COLLECTION, *catalog_rows(serving_artifacts),
                                              serving_artifacts.catalog.manifest["embedder_sha256"], "hnsw")
    assert (summary["n_vectors"], summary["n_tracks"]) == (serving_artifacts.catalog.index.ntotal, 12)
    return client


def test_search_agrees_with_faiss_flat(milvus: milvus_catalog.Milvus, serving_artifacts: Any) -> None:
    catalog = milvus_catalog.load_milvus_catalog(milvus.uri, COLLECTION, 256, serving_artifacts.catalog.manifest["embedder_sha256"])
    queries = [serving_artifacts.reference.embed(clip[: 24000 * 4]) for clip in serving_artifacts.track_audio.values()]
    for got, want in zip(catalog.search(queries, 5), serving_artifacts.catalog.search(queries, 5)):
        assert got.track_ids == want.track_ids
        np.testing.assert_allclose(got.scores, want.scores, atol=1e-4)


def test_a_rebuild_moves_the_alias_and_drops_the_old_collection(milvus: milvus_catalog.Milvus, serving_artifacts: Any) -> None:
    before = milvus_catalog.describe(milvus, COLLECTION).collection
    milvus_catalog.build_collection(milvus, COLLECTION, *catalog_rows(serving_artifacts),
                                    serving_artifacts.catalog.manifest["embedder_sha256"], "hnsw")
    after = milvus_catalog.describe(milvus, COLLECTION).collection
    assert after != before and not milvus("has_collection", before)


def test_another_embedders_vectors_are_refused(milvus: milvus_catalog.Milvus, serving_artifacts: Any) -> None:
    vectors, _, _ = catalog_rows(serving_artifacts)
    with pytest.raises(CatalogMismatch, match="was built with embedder sha256 .* but the deployed embedder has sha256 0{64}"):
        milvus_catalog.upsert_tracks(milvus, COLLECTION, vectors[:2], np.zeros(2), [{"track_id": "new"}], "0" * 64)
    with pytest.raises(CatalogMismatch, match="has dim 256, but the model expects EMBEDDING dim 8"):
        milvus_catalog.load_milvus_catalog(milvus.uri, COLLECTION, 8, None)


def test_cli_checks_its_flags() -> None:
    with pytest.raises(SystemExit, match="--backend milvus needs --uri"):
        run_module("export.index", ["--backend", "milvus", "--delete", "track-00"])
    with pytest.raises(SystemExit, match="need --backend milvus"):
        run_module("export.index", ["--delete", "track-00"])
    with pytest.raises(SystemExit, match="--checkpoint and one of --tokens-root/--audio-root are required"):
        run_module("export.index", ["--backend", "milvus", "--uri", "http://127.0.0.1:1"])


def test_generated_configs_carry_the_backend(tmp_path: Path, serving_config: Any) -> None:
    config = with_catalog(serving_config, "milvus", "http://milvus:19530", "music")
    text = render_repository(config)[Path("faiss_topk", "config.pbtxt")]
    for key, value in {"CATALOG_BACKEND": "milvus", "MILVUS_URI": "http://milvus:19530", "MILVUS_COLLECTION": "music",
                       "MILVUS_TIMEOUT_S": "5"}.items():
        assert re.search(rf'key: "{key}"\s+value \{{\s+string_value: "{re.escape(value)}"', text), key
    assert "MILVUS_URI" not in render_repository(serving_config)[Path("faiss_topk", "config.pbtxt")]
    with pytest.raises(ValueError, match="catalog.backend must be one of"):
        with_catalog(serving_config, "annoy")


@pytest.fixture(scope="module")
def milvus_triton(tmp_path_factory: pytest.TempPathFactory, serving_artifacts: Any, serving_config: Any,
                  milvus: milvus_catalog.Milvus) -> Iterator[EmbeddedTriton]:
    """The stand-in repository with faiss_topk configured for the Milvus catalog (no index folder in it)."""
    repository = lay_out_repository(tmp_path_factory.mktemp("milvus-serving"), moss_onnx=serving_artifacts.moss_onnx,
                                    embedder_onnx=serving_artifacts.embedder_onnx, catalog_dir=serving_artifacts.catalog_dir)
    write_repository(repository, render_repository(with_catalog(serving_config, "milvus", milvus.uri, COLLECTION)))
    with EmbeddedTriton(repository, extra_args=["--model-control-mode=explicit", "--load-model=audio_search"],
                        log_path=repository.parent / "tritonserver.log") as server:
        yield server


@pytest.fixture(scope="module")
def grpc(milvus_triton: EmbeddedTriton) -> Iterator[grpcclient.InferenceServerClient]:
    with grpcclient.InferenceServerClient(milvus_triton.grpc_url) as client:
        yield client


def excerpt(audio: np.ndarray) -> np.ndarray:
    """A track's whole recording: its windows are the catalog's rows, so it is its own best match (stand-in models
    do not tell excerpts apart)."""
    return audio


def test_served_ensemble_agrees_with_the_faiss_catalog(grpc: grpcclient.InferenceServerClient, serving_artifacts: Any) -> None:
    for track_id, audio in serving_artifacts.track_audio.items():
        ids, scores = search(grpc, excerpt(audio), top_k=3)
        want = serving_artifacts.catalog.search(serving_artifacts.reference.embed(excerpt(audio)), 3)
        assert ids == want.track_ids and ids[0] == track_id
        np.testing.assert_allclose(scores, want.scores, atol=1e-3)


def test_deleted_track_never_returns_and_an_added_one_does(
    grpc: grpcclient.InferenceServerClient, milvus: milvus_catalog.Milvus, serving_artifacts: Any, capsys: Any,
) -> None:
    gone = "track-03"
    capsys.readouterr()
    assert run_module("export.index", ["--backend", "milvus", "--uri", milvus.uri, "--collection", COLLECTION,
                                       "--delete", gone, "no-such-track"]) == 0
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert (line["deleted_tracks"], line["missing_tracks"], line["n_tracks"]) == ([gone], ["no-such-track"], 11)
    for audio in serving_artifacts.track_audio.values():
        ids, _ = search(grpc, excerpt(audio), top_k=12)
        assert gone not in ids and len(ids) == 11
    # Back in with its own vectors (an incremental add), with no reload of the server.
    vectors, segments, tracks = catalog_rows(serving_artifacts)
    index = [t["track_id"] for t in tracks].index(gone)
    rows = vectors[segments == index]
    milvus_catalog.upsert_tracks(milvus, COLLECTION, rows, np.zeros(len(rows)), [{"track_id": gone}],
                                 serving_artifacts.catalog.manifest["embedder_sha256"])
    assert search(grpc, excerpt(serving_artifacts.track_audio[gone]), top_k=1)[0] == [gone]


def test_upsert_replaces_a_tracks_segments(
    grpc: grpcclient.InferenceServerClient, milvus: milvus_catalog.Milvus, serving_artifacts: Any,
) -> None:
    """track-05's segments replaced by track-01's vectors: a track-01 excerpt now finds both at the same score."""
    vectors, segments, tracks = catalog_rows(serving_artifacts)
    ids = [t["track_id"] for t in tracks]
    sha = serving_artifacts.catalog.manifest["embedder_sha256"]
    donor = vectors[segments == ids.index("track-01")]
    summary = milvus_catalog.upsert_tracks(milvus, COLLECTION, donor, np.zeros(len(donor)), [{"track_id": "track-05"}], sha)
    assert summary["n_tracks"] == 12
    found, scores = search(grpc, excerpt(serving_artifacts.track_audio["track-01"]), top_k=2)
    assert sorted(found) == ["track-01", "track-05"] and scores[0] == pytest.approx(scores[1], abs=1e-5)
    own = vectors[segments == ids.index("track-05")]
    milvus_catalog.upsert_tracks(milvus, COLLECTION, own, np.zeros(len(own)), [{"track_id": "track-05"}], sha)
    assert milvus_catalog.describe(milvus, COLLECTION).n_vectors == len(vectors)


def test_one_upsert_of_several_tracks_trims_each_to_its_own_count(milvus: milvus_catalog.Milvus, serving_artifacts: Any) -> None:
    """Tracks upserted together keep exactly their new segments: two cut to one segment, a third kept whole (the
    trailing deletes are grouped by segment count)."""
    vectors, segments, tracks = catalog_rows(serving_artifacts)
    ids = [t["track_id"] for t in tracks]
    sha = serving_artifacts.catalog.manifest["embedder_sha256"]
    names = ("track-02", "track-03", "track-04")
    own = [vectors[segments == ids.index(t)] for t in names]
    assert all(len(rows) > 1 for rows in own)
    chosen = [own[0][:1], own[1][:1], own[2]]
    track_of_row = np.concatenate([np.full(len(rows), i) for i, rows in enumerate(chosen)])
    milvus_catalog.upsert_tracks(milvus, COLLECTION, np.concatenate(chosen), track_of_row, [{"track_id": t} for t in names], sha)
    assert milvus_catalog.describe(milvus, COLLECTION).n_vectors == len(vectors) - (len(own[0]) - 1) - (len(own[1]) - 1)
    whole = np.concatenate([np.full(len(rows), i) for i, rows in enumerate(own)])
    milvus_catalog.upsert_tracks(milvus, COLLECTION, np.concatenate(own), whole, [{"track_id": t} for t in names], sha)
    assert milvus_catalog.describe(milvus, COLLECTION).n_vectors == len(vectors)


def test_milvus_down_fails_requests_clearly_and_the_server_stays_ready(
    grpc: grpcclient.InferenceServerClient, milvus_server: MilvusLiteServer, serving_artifacts: Any,
) -> None:
    audio = excerpt(serving_artifacts.track_audio["track-07"])
    milvus_server.stop()
    try:
        with pytest.raises(InferenceServerException, match=re.escape(f"catalog search failed: Milvus at {milvus_server.uri} is unreachable")):
            search(grpc, audio, top_k=3)
        assert grpc.is_server_ready() and grpc.is_model_ready("audio_search") and grpc.is_model_ready("faiss_topk")
    finally:
        milvus_server.start()
    # A restarted Milvus Lite holds its collections unloaded: the catalog tools load before they count.
    assert milvus_catalog.describe(milvus_catalog.Milvus(milvus_server.uri), COLLECTION).n_tracks == 12
    assert search(grpc, audio, top_k=1)[0] == ["track-07"]


def test_a_catalog_of_another_embedder_is_refused_at_load(
    grpc: grpcclient.InferenceServerClient, milvus_triton: EmbeddedTriton, milvus: milvus_catalog.Milvus,
    serving_artifacts: Any,
) -> None:
    """Last: a model that failed to load leaves the server not ready."""
    other = "other_embedder"
    milvus_catalog.build_collection(milvus, other, *catalog_rows(serving_artifacts), "0" * 64)
    target = milvus_triton.model_repository / "faiss_topk_other"
    target.mkdir()
    (target / "1").symlink_to(milvus_triton.model_repository / "faiss_topk" / "1")
    (target / "configs").mkdir()
    for name in ("config.pbtxt", "configs/cpu.pbtxt"):
        text = (milvus_triton.model_repository / "faiss_topk" / name).read_text()
        (target / name).write_text(text.replace('name: "faiss_topk"', 'name: "faiss_topk_other"')
                                   .replace(f'string_value: "{COLLECTION}"', f'string_value: "{other}"'))
    sha = serving_artifacts.catalog.manifest["embedder_sha256"]
    with pytest.raises(InferenceServerException, match=re.escape(
            f"'{other}' was built with embedder sha256 {'0' * 64}, but the deployed embedder has sha256 {sha}")):
        grpc.load_model("faiss_topk_other")
    assert not grpc.is_model_ready("faiss_topk_other")
