"""The GPU benchmark's encoder sections (`python -m benchmarks gpu --sections encoder,profile`).

``encoder``: MOSS encoder clips/s (10-s clips) for each batch size and precision, through the plain eager path
(reference modules, dense boolean mask; FP16/BF16 by autocast) and the fast path (training/moss/gpu.py: fused
kernels, CUDA graphs); share of identical codes vs eager FP32 (level 0, all levels, valid frames); TFLOP/s from the
configuration's FLOP count and % of the measured matmul peak; an ablation of the fast path's steps at one batch size.
``profile``: where the fast path's time goes (kernel time by kind). The official configuration with SEEDED RANDOM
WEIGHTS unless ``--moss-config`` names a checkpoint folder.
"""
from __future__ import annotations

import argparse
import time
import traceback
from typing import TYPE_CHECKING, Any, Callable

import torch

from benchmarks.gpu_common import agreement, cuda_time, ints, log, test_clips

if TYPE_CHECKING:
    from training.moss import MossEncoder


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
    from training.moss import build_encoder, resolve_moss
    from training.moss.gpu import FastMossEncoder, flops_per_clip

    source = resolve_moss(args.moss_config)
    log(f"building encoder {source.name} ({source.weights_label}) ...")
    started = time.perf_counter()
    model: MossEncoder = build_encoder(source, "cuda")
    log(f"built in {time.perf_counter() - started:.1f} s")
    flops = flops_per_clip(model.config, args.clip_seconds)
    batches = ints(args.batches)
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

    if args.ablation_batch > 0:
        _ablation(args, model, clips, lengths, nq, encoder)
    del model
    torch.cuda.empty_cache()


def _ablation(args: argparse.Namespace, model: MossEncoder, clips: torch.Tensor, lengths: torch.Tensor, nq: int,
              encoder: dict[str, Any]) -> None:
    """What each step of the fast path buys, at one batch size (FP16 compute), into ``encoder["ablation"]``."""
    from training.moss import windowed_causal_attention
    from training.moss.gpu import FastMossEncoder, windowed_attention

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
    batches = ints(args.profile_batches)
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
