"""`python -m benchmarks gpu --out DIR`: the GPU benchmark of issue "GPU performance on one H100", in one run.

Sections (``--sections``, all by default):
- ``env``: device, versions, and the two ceilings measured here: device-to-device copy bandwidth (bytes read +
  written) and dense matmul rate per precision (8192^3).
- ``encoder``: MOSS encoder clips/s (10-s clips) for each batch size and precision, through the plain eager
  path (reference modules, dense boolean mask; FP16/BF16 by autocast) and the fast path
  (training/moss/gpu.py: fused kernels, CUDA graphs); share of identical codes vs eager FP32 (level 0, all
  levels, valid frames); TFLOP/s from the configuration's FLOP count and % of the measured matmul peak; an
  ablation of the fast path's steps at one batch size. The official configuration with SEEDED RANDOM WEIGHTS
  unless ``--moss-config`` names a checkpoint folder.
- ``topk``: exact inner-product top-K of 256 queries over N x 256 FP16 vectors: naive (matmul + topk),
  chunked, and serving/torch_topk.py's group-top scan (its kernel configurations tuned first, then also on a
  catalog of clustered rows); ms per batch and % of the memory and tensor-core rooflines.
- ``e2e``: `audio_search` end to end through the real tritonserver (nvidia-pytriton wheel) with the `gpu`
  model configs, measured by a Python concurrency client (throughput, p50/p95) and, where it runs,
  perf_analyzer. Skipped with a reason when the wheel is not installed.

Writes DIR/gpu.json (everything), DIR/gpu.png, DIR/gpu.txt (the table, also printed last).
"""
from __future__ import annotations

import argparse
import http.client
import json
import math
import platform
import shutil
import statistics
import sys
import tempfile
import threading
import time
import traceback
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

SECTIONS = ("env", "encoder", "profile", "topk", "e2e")
SAMPLE_RATE = 24_000


# -- helpers -------------------------------------------------------------------------------------------
def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def cuda_time(fn: Callable[[], Any], *, min_iters: int = 3, min_seconds: float = 1.0, max_iters: int = 100,
              warmup: int = 1) -> dict[str, float]:
    """Median/min milliseconds of ``fn`` by CUDA events, repeated until ``min_iters`` and ``min_seconds``."""
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times: list[float] = []
    started = time.perf_counter()
    while len(times) < max_iters and (len(times) < min_iters or time.perf_counter() - started < min_seconds):
        begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        begin.record()
        fn()
        end.record()
        end.synchronize()
        times.append(begin.elapsed_time(end))
    return {"median_ms": statistics.median(times), "min_ms": min(times), "iters": len(times)}


def agreement(reference: torch.Tensor, other: torch.Tensor, counts: torch.Tensor) -> dict[str, float]:
    """Share of identical codes over valid frames: all levels and level 0."""
    valid = torch.arange(reference.shape[-1], device=reference.device)[None, :] < counts[:, None]
    same = reference == other
    return {"level0": float(same[:, 0][valid].float().mean()),
            "all_levels": float(same[valid[:, None, :].expand_as(same)].float().mean())}


def test_clips(count: int, seconds: float, seed: int = 0, unique: int = 16) -> np.ndarray:
    """Music-like test audio [count, 1, S]: harmonic notes with envelopes, a noise floor, some pure noise clips
    (``unique`` clips rendered, the others circular shifts of them with other gains)."""
    rng = np.random.default_rng(seed)
    samples = int(seconds * SAMPLE_RATE)
    t = np.arange(samples) / SAMPLE_RATE
    clips = np.zeros((count, 1, samples), np.float32)
    for i in range(count):
        if i >= unique:
            clips[i, 0] = np.roll(clips[i % unique, 0], int(rng.integers(1, samples))) * rng.uniform(0.3, 1.0)
            continue
        if i % 8 == 7:
            clips[i, 0] = 0.3 * rng.standard_normal(samples)
            continue
        signal = np.zeros(samples)
        for start in np.sort(rng.uniform(0, seconds, 10)):
            f0 = 55.0 * 2 ** (rng.integers(0, 48) / 12)
            length = rng.uniform(0.2, 1.5)
            envelope = np.clip((t - start) / 0.01, 0, 1) * np.exp(-np.clip(t - start, 0, None) / length) * (t >= start)
            for harmonic in range(1, 4):
                signal += envelope * np.sin(2 * np.pi * f0 * harmonic * t + rng.uniform(0, 6.28)) / harmonic
        signal += 0.02 * rng.standard_normal(samples)
        clips[i, 0] = 0.5 * signal / max(1e-6, np.abs(signal).max())
    return clips


def _ints(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v.strip()]


# -- env -----------------------------------------------------------------------------------------------
def section_env(results: dict) -> None:
    props = torch.cuda.get_device_properties(0)
    env = {"device": torch.cuda.get_device_name(0), "sms": props.multi_processor_count,
           "memory_gib": round(props.total_memory / 2**30, 1), "torch": torch.__version__,
           "cuda": torch.version.cuda, "python": platform.python_version(), "numpy": np.__version__}
    try:
        import triton
        env["triton"] = triton.__version__
    except ImportError:
        env["triton"] = None
    src = torch.empty(1 << 30, dtype=torch.uint8, device="cuda").random_()
    dst = torch.empty_like(src)
    copy = cuda_time(lambda: dst.copy_(src), min_iters=10, min_seconds=0.3)
    env["copy_gb_s"] = 2 * src.numel() / (copy["median_ms"] / 1e3) / 1e9
    del src, dst
    peaks = {}
    for name, dtype, mode in (("fp32", torch.float32, "highest"), ("tf32", torch.float32, "high"),
                              ("fp16", torch.float16, "highest"), ("bf16", torch.bfloat16, "highest")):
        n = 8192 if dtype != torch.float32 or mode == "high" else 4096
        a = torch.randn(n, n, device="cuda", dtype=dtype)
        b = torch.randn(n, n, device="cuda", dtype=dtype)
        previous = torch.get_float32_matmul_precision()
        torch.set_float32_matmul_precision(mode)
        try:
            timing = cuda_time(lambda: a @ b, min_iters=5, min_seconds=0.3)
        finally:
            torch.set_float32_matmul_precision(previous)
        peaks[name] = 2 * n**3 / (timing["median_ms"] / 1e3) / 1e12
        del a, b
    env["matmul_tflops"] = peaks
    torch.cuda.empty_cache()
    results["env"] = env
    log(f"env: {env}")


# -- encoder -------------------------------------------------------------------------------------------
def _eager_runner(model, precision: str):
    from training.moss.gpu import float32_matmul_precision

    def run(waveform: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode(), float32_matmul_precision("high" if precision == "tf32" else "highest"):
            if precision in ("fp16", "bf16"):
                dtype = torch.float16 if precision == "fp16" else torch.bfloat16
                with torch.autocast("cuda", dtype=dtype):
                    return model.encode(waveform, lengths, model.config.quantizer.num_quantizers)[0]
            return model.encode(waveform, lengths, model.config.quantizer.num_quantizers)[0]

    return run


def section_encoder(args: argparse.Namespace, results: dict) -> None:
    from training.moss import MossEncoder, build_encoder, resolve_moss, windowed_causal_attention
    from training.moss.gpu import FastMossEncoder, flops_per_clip, windowed_attention

    source = resolve_moss(args.moss_config)
    log(f"building encoder {source.name} ({source.weights_label}) ...")
    started = time.perf_counter()
    model: MossEncoder = build_encoder(source, "cuda")
    log(f"built in {time.perf_counter() - started:.1f} s")
    flops = flops_per_clip(model.config, args.clip_seconds)
    batches = _ints(args.batches)
    top = max(batches)
    clips = torch.from_numpy(test_clips(top, args.clip_seconds)).cuda()
    lengths = torch.full((top,), clips.shape[-1], dtype=torch.int64, device="cuda")
    lengths[1::4] = clips.shape[-1] * 3 // 4 + 1234  # some clips shorter than the padded batch
    counts = lengths // model.config.hop
    nq = model.config.quantizer.num_quantizers
    peaks = results.get("env", {}).get("matmul_tflops", {})
    encoder: dict[str, Any] = {"moss": source.name, "weights": source.weights_label, "clip_seconds": args.clip_seconds,
                               "flop_per_clip": flops, "rows": [], "ablation": [],
                               "fast_path": f"FastMossEncoder, CUDA graphs, epilogues={args.epilogues}"}
    results["encoder"] = encoder

    log("reference codes: eager FP32 ...")
    reference_run = _eager_runner(model, "fp32")
    reference = reference_run(clips, lengths)
    # The noise floor of "identical codes": the same FP32 path in batches of 16 instead of one batch
    # (cuBLAS picks other kernels for other shapes, so sums round differently).
    rebatched = torch.cat([reference_run(clips[i:i + 16], lengths[i:i + 16]) for i in range(0, top, 16)])
    encoder["fp32_rebatched_agreement"] = agreement(reference, rebatched, counts)
    torch.cuda.synchronize()
    log(f"reference done; FP32 eager batch 16 vs batch {top}: {encoder['fp32_rebatched_agreement']}")

    def record(path: str, precision: str, batch: int, timing: dict, codes: torch.Tensor | None) -> None:
        clips_s = batch / (timing["median_ms"] / 1e3)
        tflops = clips_s * flops["total"] / 1e12
        row = {"path": path, "precision": precision, "batch": batch, **timing, "clips_per_s": clips_s,
               "tflops": tflops, "pct_of_fp16_peak": 100 * tflops / peaks["fp16"] if peaks.get("fp16") else None}
        if codes is not None:
            row.update(agreement(reference[: codes.shape[0]], codes, counts[: codes.shape[0]]))
        encoder["rows"].append(row)
        log(f"{path:>8} {precision:>4} B={batch:<3} {clips_s:8.1f} clips/s {tflops:6.1f} TFLOP/s "
            f"{'' if codes is None else 'L0 %.2f%% all %.2f%%' % (100 * row['level0'], 100 * row['all_levels'])}")

    precisions = args.precisions.split(",")
    if not args.skip_baseline:
        for precision in precisions:
            run = _eager_runner(model, precision)
            for batch in batches:
                w, l = clips[:batch], lengths[:batch]
                holder: dict[str, torch.Tensor] = {}
                timing = cuda_time(lambda: holder.__setitem__("codes", run(w, l)), min_iters=2, min_seconds=0.5, max_iters=10)
                record("eager", precision, batch, timing, holder["codes"] if batch == top else None)
                torch.cuda.empty_cache()

    for precision in precisions:
        fast = FastMossEncoder(model, precision, epilogues=args.epilogues)
        for batch in batches:
            w, l = clips[:batch], lengths[:batch]
            holder = {}
            try:
                timing = cuda_time(lambda: holder.__setitem__("codes", fast.encode(w, l, nq)[0]), min_iters=5, min_seconds=1.0)
            except Exception as error:  # noqa: BLE001 - recorded, the rest goes on
                encoder["rows"].append({"path": "fast", "precision": precision, "batch": batch, "error": repr(error)})
                log(f"fast {precision} B={batch} failed: {error!r}")
                traceback.print_exc()
                continue
            record("fast", precision, batch, timing, holder["codes"] if batch == top else None)
        del fast
        torch.cuda.empty_cache()

    # Ablation at one batch size: what each step of the fast path buys (FP16 compute).
    batch = args.ablation_batch
    w, l = clips[:batch], lengths[:batch]
    steps: list[tuple[str, Callable[[], Any]]] = []
    if not args.skip_baseline:
        eager16 = _eager_runner(model, "fp16")
        steps.append(("eager autocast FP16, dense mask", lambda: eager16(w, l)))

        def no_mask() -> Any:
            model.set_attention(windowed_attention)
            try:
                return eager16(w, l)
            finally:
                model.set_attention(windowed_causal_attention)
        steps.append(("+ causal SDPA, no mask (set_attention)", no_mask))
    torch_ops = FastMossEncoder(model, "fp16", kernels="torch", cuda_graphs=False, epilogues="none")
    steps.append(("fast FP16, PyTorch ops, no graphs", lambda: torch_ops.encode(w, l, nq)))
    triton_ops = FastMossEncoder(model, "fp16", cuda_graphs=False, epilogues="none")
    steps.append(("+ Triton fused RoPE / residual+LayerNorm", lambda: triton_ops.encode(w, l, nq)))
    graphed = FastMossEncoder(model, "fp16", epilogues="none")
    steps.append(("+ CUDA graph of the whole encode", lambda: graphed.encode(w, l, nq)))
    cublas = FastMossEncoder(model, "fp16")
    steps.append(("+ GELU, residual adds in cuBLAS (default)", lambda: cublas.encode(w, l, nq)))
    triton_epilogues = FastMossEncoder(model, "fp16", epilogues="triton")
    steps.append(("  (instead RoPE/GELU in Triton matmuls)", lambda: triton_epilogues.encode(w, l, nq)))
    try:
        from torch.nn.attention import SDPBackend

        for name, backend in (("flash", SDPBackend.FLASH_ATTENTION), ("cuDNN", SDPBackend.CUDNN_ATTENTION),
                              ("mem-efficient", SDPBackend.EFFICIENT_ATTENTION)):
            pinned = FastMossEncoder(model, "fp16", attention_backends=[backend])
            steps.append((f"  (same, SDPA pinned to {name})", lambda pinned=pinned: pinned.encode(w, l, nq)))
    except ImportError:
        pass
    for name, fn in steps:
        try:
            timing = cuda_time(fn, min_iters=3, min_seconds=0.7, max_iters=20)
        except Exception as error:  # noqa: BLE001
            encoder["ablation"].append({"step": name, "batch": batch, "error": repr(error)})
            log(f"ablation {name}: {error!r}")
            continue
        clips_s = batch / (timing["median_ms"] / 1e3)
        encoder["ablation"].append({"step": name, "batch": batch, **timing, "clips_per_s": clips_s})
        log(f"ablation B={batch} {name:<44} {clips_s:8.1f} clips/s")
    del torch_ops, triton_ops, graphed, cublas, triton_epilogues
    steps.clear()
    del model
    torch.cuda.empty_cache()


_CATEGORIES = (("attention", ("flash", "fmha", "cudnn", "attention", "sm90_fmha")),
               ("fused matmul (Triton)", ("_linear_kernel",)),
               ("matmul (cuBLAS)", ("gemm", "cutlass", "xmma", "nvjet", "sm90_", "cublas")),
               ("residual+LayerNorm (Triton)", ("_residual_layernorm",)),
               ("RoPE (Triton)", ("_rope",)),
               ("GELU", ("gelu",)),
               ("copies / casts", ("copy", "elementwise_kernel", "cat", "index")),
               ("reductions / argmax", ("reduce", "argmax")))


def _kernel_breakdown(fn: Callable[[], Any]) -> dict[str, Any]:
    from torch.profiler import ProfilerActivity, profile

    fn()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        fn()
        torch.cuda.synchronize()
    kernels: dict[str, list[float]] = {}
    for event in prof.events():
        if getattr(event, "device_type", None) != torch.autograd.DeviceType.CUDA:
            continue
        kernels.setdefault(event.name, []).append(getattr(event, "device_time", None) or getattr(event, "cuda_time", 0.0))
    totals = {name: sum(times) / 1e3 for name, times in kernels.items()}  # ms
    categories: dict[str, float] = {}
    for name, ms in totals.items():
        lowered = name.lower()
        category = next((c for c, keys in _CATEGORIES if any(k.lower() in lowered for k in keys)), "other")
        categories[category] = categories.get(category, 0.0) + ms
    top = sorted(totals.items(), key=lambda item: -item[1])[:12]
    return {"total_ms": sum(totals.values()), "categories": dict(sorted(categories.items(), key=lambda i: -i[1])),
            "top_kernels": [{"name": n[:120], "ms": ms, "launches": len(kernels[n])} for n, ms in top]}


def section_profile(args: argparse.Namespace, results: dict) -> None:
    """Where the fast path's time goes (kernel time by kind, one encode without graphs), by epilogues."""
    from training.moss import build_encoder, resolve_moss
    from training.moss.gpu import FastMossEncoder, flops_per_clip

    source = resolve_moss(args.moss_config)
    model = build_encoder(source, "cuda")
    flops = flops_per_clip(model.config, args.clip_seconds)["total"]
    batches = _ints(args.profile_batches)
    top = max(batches)
    clips = torch.from_numpy(test_clips(top, args.clip_seconds)).cuda()
    lengths = torch.full((top,), clips.shape[-1], dtype=torch.int64, device="cuda")
    nq = model.config.quantizer.num_quantizers
    section: dict[str, Any] = {"rows": [], "breakdown": {}}
    results["profile"] = section
    reference_batch = 64 if 64 in batches else batches[0]
    reference = _eager_runner(model, "fp32")(clips[:reference_batch], lengths[:reference_batch])
    counts = lengths[:reference_batch] // model.config.hop
    variants = [("fp16", "cublas", 1), ("fp16", "none", 1), ("fp16", "cublas", 2), ("bf16", "cublas", 1)]
    for precision, epilogues, streams in variants[: args.profile_variants]:
        fast = FastMossEncoder(model, precision, epilogues=epilogues, streams=streams)
        for batch in batches:
            w, l = clips[:batch], lengths[:batch]
            holder: dict[str, torch.Tensor] = {}
            try:
                timing = cuda_time(lambda: holder.__setitem__("codes", fast.encode(w, l, nq)[0]), min_iters=5, min_seconds=0.8)
            except Exception as error:  # noqa: BLE001
                section["rows"].append({"precision": precision, "epilogues": epilogues, "streams": streams,
                                        "batch": batch, "error": repr(error)[:300]})
                log(f"profile {precision} epilogues={epilogues} streams={streams} B={batch}: {error!r}")
                continue
            clips_s = batch / (timing["median_ms"] / 1e3)
            row = {"precision": precision, "epilogues": epilogues, "streams": streams, "batch": batch, **timing,
                   "clips_per_s": clips_s, "tflops": clips_s * flops / 1e12}
            if batch == reference_batch:
                row.update(agreement(reference, holder["codes"], counts))
            section["rows"].append(row)
            log(f"profile {precision} epilogues={epilogues} streams={streams} B={batch}: {clips_s:.1f} clips/s "
                + (f"L0 {100 * row['level0']:.2f}% all {100 * row['all_levels']:.2f}%" if "level0" in row else ""))
        del fast
        torch.cuda.empty_cache()
    w, l = clips[:64], lengths[:64]
    for epilogues in ("cublas", "none")[: 1 + int(args.profile_variants > 1)]:
        eager = FastMossEncoder(model, "fp16", cuda_graphs=False, epilogues=epilogues)
        key = f"fp16 B=64 epilogues={epilogues}"
        try:
            section["breakdown"][key] = breakdown = _kernel_breakdown(lambda: eager.encode(w, l, nq))
            log(f"kernel time {key}: {breakdown['total_ms']:.1f} ms " + ", ".join(
                f"{k} {v:.1f}" for k, v in breakdown["categories"].items()))
            for kernel in breakdown["top_kernels"]:
                log(f"   {kernel['ms']:8.2f} ms {kernel['launches']:5d}x {kernel['name']}")
        except Exception as error:  # noqa: BLE001
            section["breakdown"][key] = {"error": repr(error)[:300]}
            log(f"profile breakdown failed: {error!r}")
        del eager
    del model
    torch.cuda.empty_cache()


# -- top-K ---------------------------------------------------------------------------------------------
def _unit_rows(size: int, dim: int, generator: torch.Generator, *, cluster: int = 0, spread: float = 0.7) -> torch.Tensor:
    """Seeded random unit vectors [size, dim] in FP16, normalised in blocks (no FP32 copy of the whole catalog);
    ``cluster`` > 0: runs of that many adjacent rows scattered around one direction each (a track's segments)."""
    catalog = torch.empty(size, dim, device="cuda", dtype=torch.float16)
    step = (1 << 20) // cluster * cluster if cluster else 1 << 20
    for start in range(0, size, step):
        rows = min(step, size - start)
        if cluster:
            centres = torch.randn(-(-rows // cluster), dim, device="cuda", generator=generator)
            block = centres.repeat_interleave(cluster, 0)[:rows] + spread * torch.randn(rows, dim, device="cuda", generator=generator)
        else:
            block = torch.randn(rows, dim, device="cuda", generator=generator)
        catalog[start:start + rows] = torch.nn.functional.normalize(block, dim=1).half()
    return catalog


def section_topk(args: argparse.Namespace, results: dict) -> None:
    from serving.torch_topk import (DEFAULT_GROUP_TOP, TorchFlatIndex, chunked_topk, group_top_scan, group_top_topk,
                                   mm_topk, naive_topk)

    copy_gb_s = results.get("env", {}).get("copy_gb_s") or 3000.0
    peak = results.get("env", {}).get("matmul_tflops", {}).get("fp16") or 790.0
    dim, n_queries = 256, args.topk_queries
    section: dict[str, Any] = {"dim": dim, "queries": n_queries, "dtype": "fp16", "rows": [], "tuning": [],
                               "data": "random unit vectors (catalog and queries)", "copy_gb_s": copy_gb_s,
                               "fp16_tflops": peak}
    results["topk"] = section
    generator = torch.Generator(device="cuda").manual_seed(0)
    queries = torch.nn.functional.normalize(torch.randn(n_queries, dim, device="cuda", generator=generator), dim=1).half()
    ks = _ints(args.topk_k)
    best = dict(DEFAULT_GROUP_TOP)
    keys = ("BQ", "BN", "BK", "R", "num_warps", "num_stages", "programs", "flatten", "ws")

    def stream_ms(fn: Callable[[], Any], reps: int = 20) -> float:
        """GPU time of ``fn`` issued back to back (its CPU launch cost hidden), median of 5."""
        fn()
        torch.cuda.synchronize()
        times = []
        for _ in range(5):
            begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            begin.record()
            for _ in range(reps):
                fn()
            end.record()
            end.synchronize()
            times.append(begin.elapsed_time(end) / reps)
        return statistics.median(times)

    def record(name: str, size: int, k: int, fn: Callable[[], Any], exact_rows: torch.Tensor, exact_scores: torch.Tensor | None,
               index: TorchFlatIndex | None = None, n_q: int = n_queries, back_to_back: bool = False) -> None:
        roofline_ms = size * dim * 2 / (copy_gb_s * 1e9) * 1e3
        compute_ms = 2 * n_q * size * dim / (peak * 1e12) * 1e3
        try:
            scores, rows = fn()
            timing = cuda_time(fn, min_iters=10, min_seconds=0.5)
        except Exception as error:  # noqa: BLE001
            section["rows"].append({"method": name, "n": size, "k": k, "error": repr(error)[:300]})
            log(f"topk {name} N={size} k={k}: {error!r}")
            return
        same = float((torch.sort(rows, 1).values == torch.sort(exact_rows, 1).values).float().mean())
        row = {"method": name, "n": size, "k": k, **timing, "memory_roofline_ms": roofline_ms, "compute_roofline_ms": compute_ms,
               "pct_of_memory_roofline": 100 * roofline_ms / timing["median_ms"],
               "pct_of_compute_roofline": 100 * compute_ms / timing["median_ms"], "same_rows_as_exact": same}
        if exact_scores is not None:
            row["max_score_error"] = float((scores.float() - exact_scores).abs().max())
        if index is not None and index.last_candidates is not None:
            row["mean_flagged_groups"] = float(index.last_candidates.float().mean())
        if back_to_back:  # batches issued one after another (no host sync between them where k allows)
            row["back_to_back_ms"] = stream_ms(fn)
        section["rows"].append(row)
        log(f"topk N={size:>9} k={k:<3} {name:<34} {timing['median_ms']:7.3f} ms ({row['pct_of_memory_roofline']:5.1f}% of memory "
            f"roofline {roofline_ms:.3f} ms, {row['pct_of_compute_roofline']:5.1f}% of compute {compute_ms:.3f} ms) same rows {same:.4f}")

    for size in _ints(args.topk_sizes):
        catalog = _unit_rows(size, dim, generator)
        flop = 2 * n_queries * size * dim
        if not section["tuning"]:  # tune once, on the first size and k
            k = ks[0]
            # R stays 32: R = 16 scans ~4 % faster but doubles the candidates re-scored (k=100 then loses ~0.1 ms)
            for values in ((128, 256, 64, 32, 8, 4, 1, 1, 0), (128, 256, 128, 32, 8, 2, 1, 1, 0), (256, 128, 64, 32, 8, 4, 1, 1, 0),
                           (128, 128, 64, 32, 8, 4, 1, 1, 0), (128, 128, 64, 32, 8, 3, 2, 1, 0), (64, 256, 64, 32, 4, 4, 1, 1, 0),
                           (128, 256, 64, 32, 8, 3, 1, 0, 1), (128, 256, 64, 32, 8, 3, 0, 1, 0)):
                config = dict(zip(keys, values))
                try:  # GPU time back to back: the search itself replays a CUDA graph
                    scan = stream_ms(lambda config=config: group_top_scan(catalog, queries, config))
                    total = stream_ms(lambda config=config: group_top_topk(catalog, queries, k, config=config), reps=10)
                except Exception as error:  # noqa: BLE001 - e.g. out of shared memory
                    section["tuning"].append({**config, "error": repr(error)[:200]})
                    continue
                section["tuning"].append({**config, "scan_ms": scan, "scan_tflops": flop / scan / 1e9, "search_stream_ms": total})
                log(f"topk tune N={size} k={k} {config}: scan {scan:.3f} ms ({flop / scan / 1e9:.0f} TFLOP/s), "
                    f"search issued back to back {total:.3f} ms")
            good = [t for t in section["tuning"] if "scan_ms" in t]
            if good:  # by the scan: the rest does not depend on these settings, and without a graph it is CPU-bound
                winner = min(good, key=lambda t: t["scan_ms"])
                best = {key: winner[key] for key in keys}
            section["best"] = best
            section["scan_ms"] = stream_ms(lambda: group_top_scan(catalog, queries, best), reps=50)
            section["scan_tflops"] = flop / section["scan_ms"] / 1e9
            section["cublas_scores_ms"] = stream_ms(lambda: queries @ catalog.t())
            log(f"topk best {best}: its scan kernel alone {section['scan_ms']:.3f} ms ({section['scan_tflops']:.0f} TFLOP/s); "
                f"cuBLAS FP16 scores [queries x N] alone: {section['cublas_scores_ms']:.3f} ms")
        index = TorchFlatIndex(catalog, "cuda", torch.float16, scan=best)
        for k in ks:
            exact_scores, exact_rows = chunked_topk(catalog, queries, k, chunk_rows=1 << 20)  # FP32 sums of the FP16 data
            record("naive matmul+topk", size, k, lambda: naive_topk(catalog, queries, k), exact_rows, None)
            record("chunked (fp32 scores)", size, k, lambda: chunked_topk(catalog, queries, k, chunk_rows=1 << 20), exact_rows, exact_scores)
            record("group-top (fused scan, CUDA graph)", size, k, lambda: index.search_tensor(queries, k), exact_rows,
                   exact_scores, index, back_to_back=True)
            if size == _ints(args.topk_sizes)[0] and k == ks[0]:
                record("group-top, no graph", size, k, lambda: group_top_topk(catalog, queries, k, config=best)[:2], exact_rows,
                       exact_scores)
                few = queries[: args.topk_few_queries]  # a search request's few queries (its windows)
                record(f"few: cuBLAS FP32 + topk ({few.shape[0]} q)", size, k, lambda: mm_topk(catalog, few, k),
                       exact_rows[: args.topk_few_queries], None, n_q=few.shape[0])
        del index, catalog
        torch.cuda.empty_cache()
        if size == _ints(args.topk_sizes)[0]:  # segments of one track sit side by side: the flagged-group path
            catalog = _unit_rows(size, dim, generator, cluster=10)
            near = torch.nn.functional.normalize(catalog[torch.randint(0, size, (n_queries,), device="cuda", generator=generator)].float()
                                                 + 0.5 * torch.randn(n_queries, dim, device="cuda", generator=generator) / dim ** 0.5, dim=1).half()
            index = TorchFlatIndex(catalog, "cuda", torch.float16, scan=best)
            for k in ks:
                exact_scores, exact_rows = chunked_topk(catalog, near, k, chunk_rows=1 << 20)
                record("group-top, clustered (10 rows/track)", size, k, lambda: index.search_tensor(near, k), exact_rows,
                       exact_scores, index, back_to_back=True)
            del index, catalog
            torch.cuda.empty_cache()


# -- end to end through Triton -------------------------------------------------------------------------
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
                         instance_kind: str | None = None, gpu_parameters: dict[str, dict[str, str]] | None = None) -> Path:
    """A runnable repository with the `gpu` configs: MOSS from ``moss_spec``, a seeded random TokenEmbedder
    (checkpoint + its ONNX export), and a flat catalog of random unit vectors written without FAISS.

    ``instance_kind`` / ``gpu_parameters`` (model -> parameters) override serving.yaml (tests run the gpu
    configs on CPU instances)."""
    import yaml

    from serving.catalog_index import sha256_file, write_catalog
    from serving.torch_topk import FlatVectors
    from training.embedder import EmbedderConfig, TokenEmbedder

    source = Path(__file__).resolve().parents[1] / "model_repository"
    serving = yaml.safe_load((source.parent / "configs" / "serving.yaml").read_text(encoding="utf-8"))["models"]
    repository = work / "model_repository"
    shutil.rmtree(repository, ignore_errors=True)
    if instance_kind or gpu_parameters:  # render configs with the overrides (needs tritonclient's protobufs)
        import dataclasses

        from export.repo_configs import Instances, load_serving_config, render_repository, write_repository

        config = load_serving_config()
        config = dataclasses.replace(config, models=tuple(
            dataclasses.replace(
                model,
                gpu=Instances(kind=instance_kind, count=model.gpu.count) if instance_kind else model.gpu,
                gpu_parameters={**model.gpu_parameters, **(gpu_parameters or {}).get(model.name, {})})
            for model in config.models))
        write_repository(repository, render_repository(config))
    for model_dir in sorted(p for p in source.iterdir() if (p / "config.pbtxt").is_file()):
        for path in [model_dir / "config.pbtxt", *model_dir.glob("configs/*.pbtxt"), *model_dir.glob("[0-9]*/model.py")]:
            target = repository / path.relative_to(source)
            if not target.exists():  # the committed configs (generated from serving.yaml), unless rendered above
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


def _model_stats(url: str) -> dict[str, Any]:
    """Per-model averages from Triton's statistics endpoint: where a request's time goes inside the server."""
    connection = http.client.HTTPConnection(*url.split(":"), timeout=30)
    connection.request("GET", "/v2/models/stats")
    stats = json.loads(connection.getresponse().read())
    summary = {}
    for model in stats.get("model_stats", []):
        inference = model.get("inference_stats", {})
        count = inference.get("success", {}).get("count", 0)
        executions = model.get("execution_count", 0)
        if not count:
            continue
        summary[model["name"]] = {
            "requests": count, "executions": executions, "mean_batch_requests": round(count / max(1, executions), 2),
            **{f"{key}_ms_per_request": round(inference.get(key, {}).get("ns", 0) / count / 1e6, 3)
               for key in ("queue", "compute_input", "compute_infer", "compute_output")},
        }
    return summary


def section_e2e(args: argparse.Namespace, results: dict, out: Path) -> None:
    from serving.triton_runtime import EmbeddedTriton, TritonNotInstalled, find_triton_install

    section: dict[str, Any] = {}
    results["e2e"] = section
    try:
        find_triton_install()
    except TritonNotInstalled as error:
        section["skipped"] = str(error)
        log(f"e2e skipped: {error}")
        return
    work = Path(args.work_dir or tempfile.mkdtemp(prefix="gpu-e2e-"))
    work.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    repository = build_gpu_repository(work, args.moss_config, args.e2e_vectors, args.e2e_segments_per_track)
    section.update({"moss": args.moss_config, "catalog_vectors": args.e2e_vectors, "query_seconds": args.e2e_query_seconds,
                    "setup_s": time.perf_counter() - started, "model_config_name": "gpu"})
    log(f"e2e repository at {repository} in {section['setup_s']:.1f} s; starting tritonserver ...")
    audio = [test_clips(1, args.e2e_query_seconds, seed=100 + i)[0, 0] for i in range(8)]
    server = EmbeddedTriton(repository, model_config_name="gpu", startup_timeout_s=args.e2e_startup_timeout,
                            log_path=work / "tritonserver.log", python_env=args.python_env,
                            extra_args=["--cuda-memory-pool-byte-size=0:268435456",
                                        # a batch of 32 10-s windows is 31 MB: start the stubs' shared memory large
                                        "--backend-config=python,shm-default-byte-size=134217728"])
    try:
        started = time.perf_counter()
        server.start()
        section["startup_s"] = time.perf_counter() - started
        log(f"tritonserver ready in {section['startup_s']:.1f} s")
        first = _HttpSearch(server.http_url, audio[0], 10)()
        section["example"] = {o["name"]: o["data"][:3] for o in first["outputs"]}
        section["python_client"] = []
        for level in _ints(args.e2e_concurrency):
            point = concurrency_run(server.http_url, audio, level, args.e2e_seconds)
            section["python_client"].append(point)
            log(f"e2e python client c={level}: {point['throughput']:.1f} req/s p50 {point['p50_ms']} ms "
                f"p95 {point['p95_ms']} ms errors {point['errors']}")
        if not args.skip_perf_analyzer:
            section["perf_analyzer"] = _perf_analyzer(server, work, audio[0], _ints(args.perf_concurrency), args.e2e_seconds)
        section["model_stats"] = _model_stats(server.http_url)
        for name, stats in section["model_stats"].items():
            log(f"e2e server stats {name}: {stats}")
    except Exception as error:  # noqa: BLE001 - the log tail explains
        section["error"] = repr(error)[:2000]
        log(f"e2e failed: {error!r}")
    finally:
        server.stop()
        log_path = work / "tritonserver.log"
        if log_path.is_file():
            shutil.copy2(log_path, out / "tritonserver.log")
            section["log_tail"] = log_path.read_text(errors="replace").splitlines()[-15:]


# -- report --------------------------------------------------------------------------------------------
def table(results: dict) -> str:
    lines = []
    env = results.get("env", {})
    if env:
        peaks = env.get("matmul_tflops", {})
        lines.append(f"device: {env['device']} ({env['sms']} SMs), torch {env['torch']}, triton {env.get('triton')}; "
                     f"copy {env['copy_gb_s']:.0f} GB/s; matmul TFLOP/s " + ", ".join(f"{k} {v:.0f}" for k, v in peaks.items()))
    enc = results.get("encoder")
    if enc:
        flop = enc["flop_per_clip"]["total"]
        peak = env.get("matmul_tflops", {}).get("fp16")
        lines.append(f"\nMOSS encoder, {enc['moss']} ({enc['weights']}), {enc['clip_seconds']:g}-s clips, "
                     f"{flop:.3g} FLOP/clip from the config" + (f" -> roofline {peak * 1e12 / flop:.0f} clips/s at the measured FP16 peak" if peak else ""))
        floor = enc.get("fp32_rebatched_agreement")
        if floor:
            lines.append(f"identical codes vs eager FP32 at the largest batch (noise floor: the same FP32 path rebatched "
                         f"by 16 agrees {100 * floor['level0']:.2f}% level 0, {100 * floor['all_levels']:.2f}% all levels)")
        lines.append(f"{'path':<6} {'prec':<5} {'batch':>5} {'clips/s':>9} {'TFLOP/s':>8} {'%peak':>6} {'L0 same':>8} {'all same':>8}")
        for row in enc["rows"]:
            if "error" in row:
                lines.append(f"{row['path']:<6} {row['precision']:<5} {row['batch']:>5} error: {row['error'][:60]}")
                continue
            pct = f"{row['pct_of_fp16_peak']:.1f}" if row.get("pct_of_fp16_peak") is not None else "-"
            l0 = f"{100 * row['level0']:.2f}%" if "level0" in row else ""
            al = f"{100 * row['all_levels']:.2f}%" if "all_levels" in row else ""
            lines.append(f"{row['path']:<6} {row['precision']:<5} {row['batch']:>5} {row['clips_per_s']:>9.1f} "
                         f"{row['tflops']:>8.1f} {pct:>6} {l0:>8} {al:>8}")
        if enc.get("ablation"):
            lines.append(f"ablation (batch {enc['ablation'][0]['batch']}):")
            for row in enc["ablation"]:
                lines.append(f"  {row['step']:<46} " + (f"{row['clips_per_s']:8.1f} clips/s" if "clips_per_s" in row else row.get("error", "")[:60]))
    topk = results.get("topk")
    if topk:
        lines.append(f"\ntop-K: {topk['queries']} queries x {topk['dim']}-d {topk['dtype']} ({topk['data']}); "
                     f"tuned {topk.get('best')}")
        if "scan_ms" in topk:
            lines.append(f"group-top scan kernel alone (N={topk['rows'][0]['n'] if topk['rows'] else '?'}): {topk['scan_ms']:.3f} ms, "
                         f"{topk['scan_tflops']:.0f} TFLOP/s; cuBLAS FP16 score matrix alone: {topk['cublas_scores_ms']:.3f} ms")
        lines.append(f"{'N':>10} {'k':>4} {'method':<36} {'ms':>8} {'%mem roof':>9} {'%tc roof':>8} {'roof ms':>8} {'same rows':>9} "
                     f"{'b2b ms':>7}")
        for row in topk["rows"]:
            if "error" in row:
                lines.append(f"{row['n']:>10} {row['k']:>4} {row['method']:<36} error {row['error'][:50]}")
                continue
            lines.append(f"{row['n']:>10} {row['k']:>4} {row['method']:<36} {row['median_ms']:>8.3f} "
                         f"{row['pct_of_memory_roofline']:>8.1f}% {row.get('pct_of_compute_roofline', 0):>7.1f}% "
                         f"{row['memory_roofline_ms']:>8.3f} {row['same_rows_as_exact']:>9.4f}"
                         + (f" {row['back_to_back_ms']:>7.3f}" if "back_to_back_ms" in row else ""))
    e2e = results.get("e2e")
    if e2e:
        lines.append("\naudio_search end to end through tritonserver (gpu configs)")
        if "skipped" in e2e or "error" in e2e:
            lines.append(f"  {e2e.get('skipped') or e2e.get('error')}"[:400])
        for point in e2e.get("python_client", []):
            lines.append(f"  python client c={point['concurrency']:<3} {point['throughput']:8.1f} req/s "
                         f"p50 {point['p50_ms'] or float('nan'):7.1f} ms p95 {point['p95_ms'] or float('nan'):7.1f} ms"
                         + (f" errors {point['errors'][:1]}" if point["errors"] else ""))
        for name, stats in e2e.get("model_stats", {}).items():
            lines.append(f"  server {name:<15} {stats['requests']:>6} req in {stats['executions']:>6} executions "
                         f"(x{stats['mean_batch_requests']}), per request: queue {stats['queue_ms_per_request']:.2f} ms, "
                         f"infer {stats['compute_infer_ms_per_request']:.2f} ms")
        pa = e2e.get("perf_analyzer")
        if isinstance(pa, list):
            for point in pa:
                lines.append(f"  perf_analyzer c={point['concurrency']:<3} {point['throughput']:8.1f} infer/s "
                             f"p50 {point['p50_ms']:7.1f} ms p95 {point['p95_ms']:7.1f} ms")
        elif pa:
            lines.append(f"  {pa}"[:300])
    return "\n".join(lines)


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    fig, axes = plt.subplots(1, 3, figsize=(17, 4.8))
    enc = results.get("encoder", {})
    rows = [r for r in enc.get("rows", []) if "clips_per_s" in r]
    if rows:
        ax = axes[0]
        for path_name, style in (("eager", "--"), ("fast", "-")):
            for precision in ("fp32", "tf32", "fp16", "bf16"):
                pts = sorted((r["batch"], r["clips_per_s"]) for r in rows if r["path"] == path_name and r["precision"] == precision)
                if pts:
                    ax.plot([p[0] for p in pts], [p[1] for p in pts], style, marker="o", label=f"{path_name} {precision}")
        ax.set_xscale("log", base=2)
        ax.set_xlabel("batch (10-s clips)")
        ax.set_ylabel("clips/s")
        ax.set_title("MOSS encoder (random weights)")
        ax.legend(fontsize=7)
    topk = [r for r in results.get("topk", {}).get("rows", []) if "median_ms" in r]
    if topk:
        ax = axes[1]
        labels = [f"N={r['n'] / 1e6:g}M k={r['k']} {r['method']}" for r in topk]
        ax.barh(range(len(topk)), [r["median_ms"] for r in topk],
                color=["tab:gray" if "naive" in r["method"] else "tab:blue" for r in topk])
        ax.set_yticks(range(len(topk)), labels, fontsize=6)
        ax.invert_yaxis()
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.set_xlabel("ms per batch of queries (256 unless marked)")
        ax.set_title("exact top-K, FP16 catalog")
    e2e = results.get("e2e", {}).get("python_client", [])
    if e2e:
        ax = axes[2]
        ax.plot([p["concurrency"] for p in e2e], [p["throughput"] for p in e2e], marker="o", label="req/s")
        ax.set_xlabel("concurrency")
        ax.set_ylabel("requests/s")
        ax2 = ax.twinx()
        ax2.plot([p["concurrency"] for p in e2e], [p["p95_ms"] or 0 for p in e2e], color="tab:red", marker="x", label="p95 ms")
        ax2.set_ylabel("p95 latency (ms)", color="tab:red")
        ax.set_title("audio_search via Triton (gpu configs)")
    for ax in axes:  # a run of some sections only: no empty panels
        if not ax.has_data():
            ax.set_axis_off()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, required=True, help="folder for gpu.json, gpu.png, gpu.txt")
    parser.add_argument("--sections", default=",".join(SECTIONS), help="comma list of %(default)s")
    parser.add_argument("--moss-config", default="official", help="preset (RANDOM weights) or checkpoint folder")
    parser.add_argument("--clip-seconds", type=float, default=10.0)
    parser.add_argument("--batches", default="1,8,16,64")
    parser.add_argument("--precisions", default="fp32,tf32,fp16,bf16")
    parser.add_argument("--ablation-batch", type=int, default=64)
    parser.add_argument("--epilogues", choices=("cublas", "triton", "none"), default="cublas",
                        help="FastMossEncoder's epilogues for the fast rows (training/moss/gpu.py)")
    parser.add_argument("--profile-batches", default="32,64")
    parser.add_argument("--profile-variants", type=int, default=4,
                        help="how many of (fp16), (fp16, epilogues none), (fp16, 2 streams), (bf16) to time; "
                             "the kernel breakdown covers epilogues none as well when above 1")
    parser.add_argument("--skip-baseline", action="store_true", help="no eager dense-mask rows")
    parser.add_argument("--topk-sizes", default="1000000,10000000")
    parser.add_argument("--topk-k", default="10,100")
    parser.add_argument("--topk-queries", type=int, default=256)
    parser.add_argument("--topk-few-queries", type=int, default=4, help="also time a search request's few queries")
    parser.add_argument("--e2e-vectors", type=int, default=1_000_000)
    parser.add_argument("--e2e-segments-per-track", type=int, default=10)
    parser.add_argument("--e2e-query-seconds", type=float, default=10.0)
    parser.add_argument("--e2e-concurrency", default="1,4,16,32")
    parser.add_argument("--e2e-seconds", type=float, default=5.0, help="measurement per concurrency level")
    parser.add_argument("--e2e-startup-timeout", type=float, default=400.0)
    parser.add_argument("--perf-concurrency", default="1,16", help="perf_analyzer concurrency levels")
    parser.add_argument("--skip-perf-analyzer", action="store_true")
    parser.add_argument("--work-dir", type=Path, default=None, help="scratch folder for the e2e repository")
    parser.add_argument("--python-env", type=Path, default=None,
                        help="virtual environment of the backend stubs (default: this interpreter's)")


def main(args: argparse.Namespace) -> int:
    if not torch.cuda.is_available():
        print("no CUDA device: `python -m benchmarks gpu` runs on a GPU machine")
        return 1
    sections = [s for s in args.sections.split(",") if s]
    unknown = sorted(set(sections) - set(SECTIONS))
    if unknown:
        raise SystemExit(f"unknown sections {unknown}; choose from {SECTIONS}")
    args.out.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {"argv": sys.argv, "started": time.strftime("%Y-%m-%d %H:%M:%S")}
    steps = {"env": lambda: section_env(results), "encoder": lambda: section_encoder(args, results),
             "profile": lambda: section_profile(args, results),
             "topk": lambda: section_topk(args, results), "e2e": lambda: section_e2e(args, results, args.out)}
    for name in SECTIONS:
        if name not in sections:
            continue
        started = time.perf_counter()
        try:
            steps[name]()
        except Exception as error:  # noqa: BLE001 - one section's failure must not lose the others
            results.setdefault(name, {})["error"] = repr(error)[:2000]
            traceback.print_exc()
        results.setdefault("section_seconds", {})[name] = round(time.perf_counter() - started, 1)
        (args.out / "gpu.json").write_text(json.dumps(results, indent=1, default=str), encoding="utf-8")
    text = table(results)
    (args.out / "gpu.txt").write_text(text + "\n", encoding="utf-8")
    try:
        plot(results, args.out / "gpu.png")
    except Exception as error:  # noqa: BLE001
        print(f"plot failed: {error!r}")
    print("\n" + text)
    return 0
