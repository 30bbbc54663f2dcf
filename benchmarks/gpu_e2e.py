"""The GPU benchmark's end-to-end section (`python -m benchmarks gpu --sections e2e`): `audio_search` through the
real tritonserver (nvidia-pytriton wheel) with the `gpu` model configs, measured by a Python concurrency client
(throughput, p50/p95) and, where it runs, perf_analyzer. Skipped with a reason when the wheel is not installed.
"""
from __future__ import annotations

import argparse
import http.client
import json
import math
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmarks.gpu_common import ints, log, test_clips
from serving.cuda_mps import CUDA_MPS_CHOICES


def _export_embedder(model, path: Path, n_quantizers: int) -> None:
    import warnings

    from training.embedder import EmbedderFromCounts

    wrapper = EmbedderFromCounts(model.eval())
    codes = torch.randint(0, model.cfg.codebook_size, (2, n_quantizers, 40), dtype=torch.int32)
    counts = torch.tensor([40, 23], dtype=torch.int64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(wrapper, (codes, counts), str(path), input_names=["CODES", "FRAME_COUNTS"], output_names=["EMBEDDING"],
                          dynamic_axes={"CODES": {0: "batch", 2: "frames"}, "FRAME_COUNTS": {0: "batch"}, "EMBEDDING": {0: "batch"}},
                          opset_version=17, dynamo=False)


def build_gpu_repository(work: Path, moss_spec: str, n_vectors: int, segments_per_track: int, seed: int = 0, *,
                         overrides: Sequence[str] = ()) -> Path:
    """A runnable repository with the `gpu` configs: MOSS from ``moss_spec``, a seeded random TokenEmbedder
    (checkpoint + its ONNX export), and a flat catalog of random unit vectors written without FAISS.

    ``overrides`` (``apply_overrides``) change serving.yaml's models for this repository: a benchmark variant,
    or tests running the gpu configs on CPU instances."""
    import yaml

    from serving.catalog_index import sha256_file, write_catalog
    from serving.torch_topk import FlatVectors
    from training.embedder import EmbedderConfig, TokenEmbedder

    source = Path(__file__).resolve().parents[1] / "model_repository"
    serving = yaml.safe_load((source.parent / "configs" / "serving.yaml").read_text(encoding="utf-8"))["models"]
    repository = work / "model_repository"
    shutil.rmtree(repository, ignore_errors=True)
    if overrides:  # render configs with the overrides (needs tritonclient's protobufs)
        from export.repo_configs import load_serving_config, render_repository, write_repository

        write_repository(repository, render_repository(apply_overrides(load_serving_config(), overrides)))
    for model_dir in sorted(p for p in source.iterdir() if (p / "config.pbtxt").is_file()):
        # The committed configs (generated from serving.yaml), unless rendered above: then every config is (an
        # override can leave one out, e.g. window_embedder's fused gpu config).
        configs = [] if overrides else [model_dir / "config.pbtxt", *model_dir.glob("configs/*.pbtxt")]
        for path in [*configs, *model_dir.glob("[0-9]*/model.py")]:
            target = repository / path.relative_to(source)
            if not target.exists():
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(path, target)
        for version in model_dir.glob("[0-9]*"):
            (repository / model_dir.name / version.name).mkdir(parents=True, exist_ok=True)
    (repository / "moss_encoder" / "1").mkdir(parents=True, exist_ok=True)
    (repository / "moss_encoder" / "1" / "moss_source.txt").write_text(moss_spec, encoding="utf-8")
    n_quantizers = serving["moss_encoder"]["outputs"][0]["dims"][0]
    dim = serving["token_embedder"]["outputs"][0]["dims"][0]
    torch.manual_seed(seed)
    embedder = TokenEmbedder(EmbedderConfig(embedding_dim=dim)).eval()
    embedder_dir = repository / "token_embedder" / "1"
    embedder_dir.mkdir(parents=True, exist_ok=True)
    torch.save({"model": embedder.state_dict(), "model_config": vars(embedder.cfg)}, embedder_dir / "embedder.pt")
    _export_embedder(embedder, embedder_dir / "model.onnx", n_quantizers)
    onnx_sha = sha256_file(embedder_dir / "model.onnx")
    (embedder_dir / "embedder.json").write_text(json.dumps({"onnx_sha256": onnx_sha, "dim": dim}), encoding="utf-8")
    rng = np.random.default_rng(seed)
    vectors = rng.standard_normal((n_vectors, dim), dtype=np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    tracks = [{"track_id": f"track-{i:07d}"} for i in range(math.ceil(n_vectors / segments_per_track))]
    segments = np.arange(n_vectors) // segments_per_track
    write_catalog(repository / "faiss_topk" / "1" / "index", FlatVectors(vectors), segments, tracks, onnx_sha, "flat")
    return repository


class _HttpSearch:
    """A minimal KServe-v2 HTTP client (binary input data, JSON outputs): no tritonclient needed."""

    def __init__(self, url: str, audio: np.ndarray, top_k: int) -> None:
        host, port = url.split(":")
        self.connection = http.client.HTTPConnection(host, int(port), timeout=120)
        body = np.ascontiguousarray(audio, np.float32).tobytes() + np.array([top_k], np.int32).tobytes()
        header = json.dumps({
            "inputs": [
                {"name": "AUDIO", "shape": [audio.size], "datatype": "FP32", "parameters": {"binary_data_size": audio.size * 4}},
                {"name": "TOP_K", "shape": [1], "datatype": "INT32", "parameters": {"binary_data_size": 4}},
            ],
            "outputs": [{"name": "TRACK_IDS", "parameters": {"binary_data": False}},
                        {"name": "SCORES", "parameters": {"binary_data": False}}],
        }).encode()
        self.payload = header + body
        self.headers = {"Content-Type": "application/octet-stream", "Inference-Header-Content-Length": str(len(header))}

    def __call__(self) -> dict:
        self.connection.request("POST", "/v2/models/audio_search/infer", self.payload, self.headers)
        response = self.connection.getresponse()
        data = response.read()
        if response.status != 200:
            raise RuntimeError(f"HTTP {response.status}: {data[:300]!r}")
        return json.loads(data)


def concurrency_run(url: str, audio: list[np.ndarray], concurrency: int, seconds: float, top_k: int = 10) -> dict:
    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    stop = time.perf_counter() + seconds + 1.0
    measure_from = time.perf_counter() + 1.0  # one second of warm-up per level

    def worker(index: int) -> None:
        client = _HttpSearch(url, audio[index % len(audio)], top_k)
        while time.perf_counter() < stop:
            began = time.perf_counter()
            try:
                client()
            except Exception as error:  # noqa: BLE001
                with lock:
                    errors.append(repr(error)[:200])
                return
            if began >= measure_from:
                with lock:
                    latencies.append(time.perf_counter() - began)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    lat = np.array(latencies) * 1e3
    return {"concurrency": concurrency, "requests": len(latencies), "throughput": len(latencies) / seconds,
            "p50_ms": float(np.percentile(lat, 50)) if lat.size else None,
            "p95_ms": float(np.percentile(lat, 95)) if lat.size else None,
            "errors": errors[:3]}


def _perf_analyzer(server, work: Path, audio: np.ndarray, levels: list[int], seconds: float) -> list[dict] | str:
    try:
        from benchmarks.perf_analyzer import PerfSettings, run_perf_analyzer
        from benchmarks.perf_inputs import audio_entry, write_input_data
    except ImportError as error:
        return f"perf_analyzer helpers unavailable: {error}"

    data = write_input_data(work / "perf_input.json", [audio_entry(audio, 10)])
    settings = PerfSettings(url=server.grpc_url, protocol="grpc", measurement_interval_ms=int(seconds * 1000), max_trials=3)
    points = []
    for level in levels:
        try:
            point = run_perf_analyzer("audio_search", data, level, settings, work / "perf")
        except Exception as error:  # noqa: BLE001 - missing binary or library: reported, not fatal
            return f"perf_analyzer did not run: {error}"[:500]
        if point is not None:
            points.append(dict(vars(point)))
            log(f"perf_analyzer c={level}: {point.throughput:.1f} infer/s p50 {point.p50_ms:.1f} ms p95 {point.p95_ms:.1f} ms")
    return points


STAT_PHASES = ("queue", "compute_input", "compute_infer", "compute_output")


def _raw_stats(url: str) -> dict[str, dict[str, int]]:
    """Triton's cumulative counters per model: requests, executions and nanoseconds per phase."""
    connection = http.client.HTTPConnection(*url.split(":"), timeout=30)
    connection.request("GET", "/v2/models/stats")
    stats = json.loads(connection.getresponse().read())
    raw = {}
    for model in stats.get("model_stats", []):
        inference = model.get("inference_stats", {})
        raw[model["name"]] = {"requests": inference.get("success", {}).get("count", 0),
                              "executions": model.get("execution_count", 0),
                              **{key: inference.get(key, {}).get("ns", 0) for key in STAT_PHASES}}
    return raw


def stats_between(before: dict[str, dict[str, int]], after: dict[str, dict[str, int]]) -> dict[str, Any]:
    """Per-model averages of what the server did between two ``_raw_stats`` readings: where a request's time
    goes inside the server (Triton sums a batch's phase durations into each of its requests)."""
    summary = {}
    for name, now in after.items():
        then = before.get(name, {})
        count = now["requests"] - then.get("requests", 0)
        if count <= 0:
            continue
        executions = now["executions"] - then.get("executions", 0)
        summary[name] = {
            "requests": count, "executions": executions, "mean_batch_requests": round(count / max(1, executions), 2),
            **{f"{key}_ms_per_request": round((now[key] - then.get(key, 0)) / count / 1e6, 3) for key in STAT_PHASES},
        }
    return summary


def apply_overrides(config: Any, overrides: Sequence[str]) -> Any:
    """``config`` (a ServingConfig) with each override, ``MODEL.FIELD=VALUE`` (``export.repo_configs.with_override``;
    ``window_embedder.gpu_fused=false`` serves the encoder and the embedder as two models again)."""
    from export.repo_configs import with_override

    for override in overrides:
        config = with_override(config, override)
    return config


def checked_overrides(overrides: list[str], label: str) -> list[str]:
    """``overrides``, applied to serving.yaml once: a mistake stops before any server starts."""
    from export.repo_configs import load_serving_config

    try:
        apply_overrides(load_serving_config(), overrides)
    except ValueError as error:
        raise SystemExit(f"{label}: {error}") from None
    return overrides


def parse_variants(items: Sequence[str]) -> list[tuple[str, list[str]]]:
    """``NAME:OVERRIDE[;OVERRIDE...]`` -> (name, overrides), each checked against serving.yaml."""
    variants = []
    for item in items:
        name, sep, rest = item.partition(":")
        overrides = [o.strip() for o in rest.split(";") if o.strip()]
        if not sep or not overrides or name == "base" or not name.replace("-", "").replace("_", "").isalnum():
            raise SystemExit(f"--e2e-variant {item!r}: expected NAME:MODEL.FIELD=VALUE[;...] with a name of letters, digits, - or _ (not base)")
        variants.append((name, checked_overrides(overrides, f"--e2e-variant {name}")))
    names = [name for name, _ in variants]
    if len(set(names)) != len(names):
        raise SystemExit(f"--e2e-variant: names must differ, got {names}")
    return variants


def section_e2e(args: argparse.Namespace, results: dict, out: Path,
                save: Callable[[], None] = lambda: None) -> None:
    """serving.yaml's gpu configs as committed (the section's own keys), then each ``--e2e-variant`` (under
    ``variants``): one server each, the same catalog, queries and concurrency levels. ``--e2e-override``
    applies to every run (e.g. ``*.gpu.kind=KIND_CPU`` where there is no GPU). ``save`` runs after each server,
    so that a device call cut short by its time limit keeps the runs it finished."""
    from serving.triton_runtime import TritonNotInstalled, find_triton_install

    section: dict[str, Any] = {}
    results["e2e"] = section
    common = checked_overrides(list(args.e2e_override), "--e2e-override")
    variants = parse_variants(args.e2e_variant)
    try:
        find_triton_install()
    except TritonNotInstalled as error:
        section["skipped"] = str(error)
        log(f"e2e skipped: {error}")
        return
    work = Path(args.work_dir or tempfile.mkdtemp(prefix="gpu-e2e-"))
    audio = [test_clips(1, args.e2e_query_seconds, seed=100 + i)[0, 0] for i in range(8)]
    if common:
        section["overrides"] = common
    e2e_run(args, work / "base", common, audio, section, out / "tritonserver.log", perf_analyzer=not args.skip_perf_analyzer)
    save()
    for name, overrides in variants:
        run: dict[str, Any] = {"name": name, "overrides": overrides}
        section.setdefault("variants", []).append(run)
        log(f"e2e variant {name}: {'; '.join(overrides)}")
        e2e_run(args, work / name, common + overrides, audio, run, out / f"tritonserver-{name}.log", perf_analyzer=False)
        save()


def e2e_run(args: argparse.Namespace, work: Path, overrides: list[str], audio: list[np.ndarray], section: dict[str, Any],
            log_copy: Path, perf_analyzer: bool) -> None:
    """One repository (``overrides`` applied), one tritonserver, the concurrency curve and the server's statistics."""
    from serving.triton_runtime import EmbeddedTriton

    work.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    repository = build_gpu_repository(work, args.moss_config, args.e2e_vectors, args.e2e_segments_per_track, overrides=overrides)
    section.update({"moss": args.moss_config, "catalog_vectors": args.e2e_vectors, "query_seconds": args.e2e_query_seconds,
                    "setup_s": time.perf_counter() - started, "model_config_name": "gpu"})
    log(f"e2e repository at {repository} in {section['setup_s']:.1f} s; starting tritonserver ...")
    server = EmbeddedTriton(repository, model_config_name="gpu", startup_timeout_s=args.e2e_startup_timeout,
                            log_path=work / "tritonserver.log", python_env=args.python_env,
                            cuda_mps=CUDA_MPS_CHOICES[args.e2e_cuda_mps],
                            extra_args=["--cuda-memory-pool-byte-size=0:268435456",
                                        # a batch of 32 10-s windows is 31 MB: start the stubs' shared memory large
                                        "--backend-config=python,shm-default-byte-size=134217728"])
    try:
        started = time.perf_counter()
        server.start()
        section["startup_s"] = time.perf_counter() - started
        # The evidence that MPS is in effect: its daemon lists a server once the GPU models' processes connected.
        section["cuda_mps"] = {"note": server.cuda_mps_note, "servers": server.cuda_mps_servers()}
        log(f"tritonserver ready in {section['startup_s']:.1f} s; {section['cuda_mps']}")
        first = _HttpSearch(server.http_url, audio[0], 10)()
        section["example"] = {o["name"]: o["data"][:3] for o in first["outputs"]}
        section["python_client"] = []
        for level in ints(args.e2e_concurrency):
            before = _raw_stats(server.http_url)
            point = concurrency_run(server.http_url, audio, level, args.e2e_seconds)
            point["model_stats"] = stats_between(before, _raw_stats(server.http_url))
            section["python_client"].append(point)
            log(f"e2e python client c={level}: {point['throughput']:.1f} req/s p50 {point['p50_ms']} ms "
                f"p95 {point['p95_ms']} ms errors {point['errors']}")
        if perf_analyzer:
            section["perf_analyzer"] = _perf_analyzer(server, work, audio[0], ints(args.perf_concurrency), args.e2e_seconds)
        section["model_stats"] = stats_between({}, _raw_stats(server.http_url))
        for name, stats in section["model_stats"].items():
            log(f"e2e server stats {name}: {stats}")
    except Exception as error:  # noqa: BLE001 - the log tail explains
        section["error"] = repr(error)[:2000]
        log(f"e2e failed: {error!r}")
    finally:
        server.stop()
        log_path = work / "tritonserver.log"
        if log_path.is_file():
            shutil.copy2(log_path, log_copy)
            section["log_tail"] = log_path.read_text(errors="replace").splitlines()[-15:]
