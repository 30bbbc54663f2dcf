"""The PyTorch runners behind the `gpu` model configs (serving/torch_serving.py), and those configs served by
the real tritonserver on CPU instances (the torch_gpu backend falls back to the CPU without a GPU)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from serving.ragged import pad_concat
from serving.torch_serving import EmbedderRunner, EncoderRunner, ParityError, runner_options
from training.embedder import EmbedderConfig, EmbedderFromCounts, TokenEmbedder
from training.moss import build_encoder

HOP = 1920


def test_pad_concat_pads_every_axis_but_the_first() -> None:
    merged = pad_concat([np.ones((1, 1, 3), np.float32), np.full((2, 1, 5), 2, np.float32)])
    assert merged.shape == (3, 1, 5) and merged[0, 0].tolist() == [1, 1, 1, 0, 0] and (merged[1:] == 2).all()


def test_runner_options_from_parameters() -> None:
    options = runner_options({"PRECISION": "bf16", "BATCH_BUCKETS": "1,4", "FRAME_BUCKET": "5", "WARMUP_FRAMES": "",
                              "VERIFY_ONNX": "0", "OTHER": "x"})
    assert options == {"precision": "bf16", "batch_buckets": (1, 4), "frame_bucket": 5, "warmup_frames": (), "verify_onnx": False}


def test_encoder_runner_buckets_without_changing_codes(tmp_path: Path) -> None:
    (tmp_path / "moss_source.txt").write_text("tiny")
    runner = EncoderRunner(tmp_path, torch.device("cpu"), 8, batch_buckets=(4,), frame_bucket=7)
    rng = np.random.default_rng(0)
    waveform = (0.3 * rng.standard_normal((3, 1, 23 * HOP + 11))).astype(np.float32)
    lengths = np.array([23 * HOP + 11, 9 * HOP, 15 * HOP + 3], np.int64)
    codes, counts = runner.run(waveform, lengths)
    with torch.inference_mode():
        expected, expected_counts = build_encoder("tiny")(torch.from_numpy(waveform), torch.from_numpy(lengths), 8)
    assert codes.dtype == np.int32 and codes.shape == (3, 8, 24) and counts.tolist() == expected_counts.tolist()
    for row, count in enumerate(counts):
        assert np.array_equal(codes[row, :, :count], expected[row, :, :count].numpy())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="the encoder's GPU timing needs CUDA")
def test_execution_times_split_the_encoders_host_staging_from_its_gpu_time(tmp_path: Path) -> None:
    from serving.torch_serving import ExecutionTimes

    (tmp_path / "moss_source.txt").write_text("tiny")
    runner = EncoderRunner(tmp_path, torch.device("cuda"), 8)
    times = ExecutionTimes(2, runner.encoder_runner)
    waveform = np.zeros((3, 1, 10 * HOP), np.float32)
    reports = []
    for _ in range(2):
        runner.run(waveform, np.full(3, 10 * HOP, np.int64))
        reports.append(times.add(1, 3, 0.0, 0.001, 0.0))
    assert reports[0] == "" and "2 executions, 1.00 requests / 3.00 rows each" in reports[1]
    assert "encoder staging" in reports[1] and "encoder GPU" in reports[1]
    assert runner.timings == []  # reported, then cleared


def test_timing_every_reads_the_environment_and_refuses_what_is_no_count() -> None:
    from serving.torch_serving import timing_every

    assert timing_every({}) == 0 and timing_every({"TORCH_GPU_TIMING_EVERY": " "}) == 0
    assert timing_every({"TORCH_GPU_TIMING_EVERY": "40"}) == 40
    for bad in ("-1", "ten", "2.5"):
        with pytest.raises(ValueError, match="TORCH_GPU_TIMING_EVERY must be a whole number of executions"):
            timing_every({"TORCH_GPU_TIMING_EVERY": bad})


def test_encoder_runner_stages_requests_of_different_lengths_as_one_batch(tmp_path: Path) -> None:
    """run_requests copies each request into the reused staging buffer: codes as if each ran alone, nothing left over."""
    (tmp_path / "moss_source.txt").write_text("tiny")
    runner = EncoderRunner(tmp_path, torch.device("cpu"), 8, batch_buckets=(2, 4), frame_bucket=5)
    rng = np.random.default_rng(1)
    long_request = (0.3 * rng.standard_normal((2, 1, 17 * HOP + 5))).astype(np.float32)
    short_request = (0.3 * rng.standard_normal((1, 1, 6 * HOP))).astype(np.float32)
    lengths = [np.array([17 * HOP + 5, 12 * HOP], np.int64), np.array([6 * HOP], np.int64)]
    codes, counts = runner.run_requests([long_request, short_request], lengths)
    assert codes.shape == (3, 8, 18) and counts.tolist() == [17, 12, 6]
    reference = build_encoder("tiny")
    with torch.inference_mode():
        for row, (audio, length) in enumerate([(long_request[:1], lengths[0][:1]), (long_request[1:], lengths[0][1:]), (short_request, lengths[1])]):
            expected, _ = reference(torch.from_numpy(audio), torch.from_numpy(length), 8)
            assert np.array_equal(codes[row, :, :counts[row]], expected[0, :, :counts[row]].numpy())
    # A smaller batch next reuses the buffer that still holds the long request's samples: the same codes as a fresh runner.
    again, _ = runner.run_requests([short_request], [lengths[1]])
    fresh, _ = EncoderRunner(tmp_path, torch.device("cpu"), 8, batch_buckets=(2, 4), frame_bucket=5).run(short_request, lengths[1])
    assert np.array_equal(again, fresh) and np.array_equal(again[0], codes[2, :, :6])


def _embedder(seed: int) -> TokenEmbedder:
    torch.manual_seed(seed)
    return TokenEmbedder(EmbedderConfig(n_levels=4, d_model=32, n_heads=2, n_layers=1, embedding_dim=16)).eval()


def _export(model: TokenEmbedder, path: Path) -> None:
    import warnings

    warnings.simplefilter("ignore", DeprecationWarning)
    torch.onnx.export(EmbedderFromCounts(model), (torch.randint(0, 1024, (2, 4, 20), dtype=torch.int32), torch.tensor([20, 9])),
                      str(path), input_names=["CODES", "FRAME_COUNTS"], output_names=["EMBEDDING"], opset_version=17, dynamo=False,
                      dynamic_axes={"CODES": {0: "b", 2: "t"}, "FRAME_COUNTS": {0: "b"}, "EMBEDDING": {0: "b"}})


def test_embedder_runner_checks_its_checkpoint_against_the_onnx_model(tmp_path: Path) -> None:
    model = _embedder(0)
    torch.save({"model": model.state_dict(), "model_config": vars(model.cfg)}, tmp_path / "embedder.pt")
    _export(model, tmp_path / "model.onnx")
    runner = EmbedderRunner(tmp_path, torch.device("cpu"))
    assert runner.parity is not None and runner.parity["min_cosine"] > 0.999
    codes = np.random.default_rng(1).integers(0, 1024, (3, 4, 30), dtype=np.int32)
    embedding = runner.run(codes, np.array([30, 5, 12], np.int64))
    assert embedding.shape == (3, 16) and np.allclose(np.linalg.norm(embedding, axis=1), 1, atol=1e-5)
    _export(_embedder(1), tmp_path / "model.onnx")  # another model's ONNX: the catalog would not match
    with pytest.raises(ParityError, match="not the same model"):
        EmbedderRunner(tmp_path, torch.device("cpu"))


@pytest.mark.slow
@pytest.mark.parametrize("fused", [True, False], ids=["fused", "twostep"])
def test_gpu_configs_serve_audio_search_on_cpu_instances(tmp_path: Path, fused: bool) -> None:
    """The generated gpu configs, torch_gpu backend and catalog written without FAISS, on the real server: the
    encoder and the embedder as one model (window_embedder, as committed), or as two behind the window_embedder
    ensemble (`window_embedder.gpu_fused=false`), the same answer."""
    import tritonclient.grpc as grpcclient
    from test_triton_server import counts_since

    from serving.triton_runtime import TritonNotInstalled, find_triton_install

    try:
        find_triton_install()
    except TritonNotInstalled as error:
        pytest.skip(str(error))

    from benchmarks.gpu_e2e import build_gpu_repository
    from serving.catalog_index import load_catalog
    from serving.torch_serving import load_embedder_checkpoint
    from serving.triton_runtime import EmbeddedTriton

    overrides = ["*.gpu.kind=KIND_CPU", "moss_encoder.gpu_parameters.WARMUP_FRAMES=", *([] if fused else ["window_embedder.gpu_fused=false"])]
    repository = build_gpu_repository(tmp_path, "tiny", 500, 5, overrides=overrides)
    audio = (0.3 * np.random.default_rng(3).standard_normal(7 * 24000)).astype(np.float32)
    with EmbeddedTriton(repository, model_config_name="gpu", log_path=tmp_path / "triton.log") as server:
        with grpcclient.InferenceServerClient(server.grpc_url) as client:
            audio_input = grpcclient.InferInput("AUDIO", [audio.size], "FP32")
            audio_input.set_data_from_numpy(audio)
            k_input = grpcclient.InferInput("TOP_K", [1], "INT32")
            k_input.set_data_from_numpy(np.array([3], np.int32))
            result = client.infer("audio_search", [audio_input, k_input])
            expected_models = {"audio_search", "audio_windows", "window_embedder", "faiss_topk", *([] if fused else ["moss_encoder", "token_embedder"])}
            for model in expected_models:  # the last steps' statistics may lag the answer
                counts_since(client, model, np.zeros(2, np.int64), 1)
            stats = {model.name for model in client.get_inference_statistics().model_stats if model.inference_stats.success.count}
    assert stats == expected_models
    tracks = [t.decode() for t in result.as_numpy("TRACK_IDS")]
    # The same pipeline in process: one 7-s window, tiny MOSS (8 levels), the published embedder, the catalog.
    with torch.inference_mode():
        codes, counts = build_encoder("tiny")(torch.from_numpy(audio[None, None, :]), None, 8)
        embedder = EmbedderFromCounts(load_embedder_checkpoint(repository / "token_embedder" / "1" / "embedder.pt", torch.device("cpu")))
        embedding = embedder(codes.int(), counts).numpy()
    expected = load_catalog(repository / "faiss_topk" / "1" / "index").search(embedding, 3)
    assert tracks == expected.track_ids
    np.testing.assert_allclose(result.as_numpy("SCORES"), expected.scores, atol=1e-4)


def test_e2e_variants_run_one_server_each_with_their_overrides(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`benchmarks gpu --e2e-variant`: the base configs and a variant, each through the real server (CPU instances),
    the server's statistics per concurrency level, and the torch_gpu backend's timing log."""
    from serving.triton_runtime import TritonNotInstalled, find_triton_install

    try:
        find_triton_install()
    except TritonNotInstalled as error:
        pytest.skip(str(error))
    import argparse

    from benchmarks.gpu import add_arguments
    from benchmarks.gpu_e2e import section_e2e
    from benchmarks.gpu_report import plot, table

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(["--out", str(tmp_path / "out"), "--moss-config", "tiny", "--e2e-vectors", "500", "--e2e-segments-per-track", "5",
                              "--e2e-query-seconds", "3", "--e2e-concurrency", "1,2", "--e2e-seconds", "1", "--skip-perf-analyzer",
                              "--work-dir", str(tmp_path / "e2e"), "--e2e-override", "*.gpu.kind=KIND_CPU",
                              "--e2e-override", "moss_encoder.gpu_parameters.WARMUP_FRAMES=", "--e2e-variant", "topk1:faiss_topk.gpu.count=1"])
    (tmp_path / "out").mkdir()
    monkeypatch.setenv("TORCH_GPU_TIMING_EVERY", "2")
    results: dict = {}
    saved: list[int] = []
    section_e2e(args, results, tmp_path / "out", lambda: saved.append(len(results["e2e"].get("variants", []))))
    assert saved == [0, 1]  # after the base, after the variant
    e2e = results["e2e"]
    runs = {"base": e2e, **{variant["name"]: variant for variant in e2e["variants"]}}
    assert list(runs) == ["base", "topk1"] and "error" not in e2e and "error" not in runs["topk1"]
    for run in runs.values():
        assert [point["concurrency"] for point in run["python_client"]] == [1, 2]
        assert all(point["requests"] > 0 and not point["errors"] for point in run["python_client"])
        assert run["model_stats"]["faiss_topk"]["requests"] > 0
        per_level = [point["model_stats"]["faiss_topk"]["requests"] for point in run["python_client"]]
        assert all(count > 0 for count in per_level) and sum(per_level) <= run["model_stats"]["faiss_topk"]["requests"]
    log = (tmp_path / "out" / "tritonserver.log").read_text()
    assert "window_embedder timing: 2 executions" in log
    counts = {name: (tmp_path / "e2e" / name / "model_repository" / "faiss_topk" / "configs" / "gpu.pbtxt").read_text().count("count: 1")
              for name in runs}
    assert counts == {"base": 0, "topk1": 1}
    text = table(results)
    assert "variant topk1: faiss_topk.gpu.count=1" in text and "every run: *.gpu.kind=KIND_CPU" in text
    assert text.count("per step (requests per execution") == 4  # two levels, two runs
    plot(results, tmp_path / "out" / "gpu.png")
    assert (tmp_path / "out" / "gpu.png").stat().st_size > 0


def test_bad_e2e_variants_stop_before_any_server() -> None:
    from benchmarks.gpu_e2e import parse_variants

    assert parse_variants(["wait20:moss_encoder.gpu_queue_delay_microseconds=20000;faiss_topk.gpu.count=1"]) == [
        ("wait20", ["moss_encoder.gpu_queue_delay_microseconds=20000", "faiss_topk.gpu.count=1"])]
    assert parse_variants(["twostep:window_embedder.gpu_fused=false"]) == [("twostep", ["window_embedder.gpu_fused=false"])]
    for item, message in (("nameless", "expected NAME:MODEL.FIELD=VALUE"), ("base:faiss_topk.gpu.count=1", "not base"),
                          ("a b:faiss_topk.gpu.count=1", "a name of letters"), ("x:faiss_topk.gpu.cuont=1", "--e2e-variant x: override"),
                          ("y:audio_search.gpu_fused=true", "--e2e-variant y: .*two described steps")):
        with pytest.raises(SystemExit, match=message):
            parse_variants([item])
    with pytest.raises(SystemExit, match="names must differ"):
        parse_variants(["x:faiss_topk.gpu.count=1", "x:faiss_topk.gpu.count=2"])


def test_the_gpu_report_sets_the_end_to_end_curve_against_the_encoder_alone(tmp_path: Path) -> None:
    """A committed H100 run (encoder and e2e sections): the table names the encoder-alone ceiling, the PNG draws it."""
    import json

    from benchmarks.gpu_report import encoder_ceiling, plot, table

    results = json.loads(Path("benchmarks/results/gpu-h100/full.json").read_text())
    fp16 = [row for row in results["encoder"]["rows"] if row["path"] == "fast" and row["precision"] == "fp16" and row.get("level0", 0) >= 0.99]
    ceiling = encoder_ceiling(results)
    assert ceiling is not None and ceiling["clips_per_s"] == max(row["clips_per_s"] for row in fp16)
    assert f"encoder alone, same run: {ceiling['clips_per_s']:.0f} clips/s (fast FP16, batch {ceiling['batch']})" in table(results)
    assert encoder_ceiling({"encoder": {"rows": [{**fp16[0], "level0": 0.98}]}}) is None  # below the 99 % bar: no ceiling
    plot(results, tmp_path / "gpu.png")
    assert (tmp_path / "gpu.png").stat().st_size > 0
