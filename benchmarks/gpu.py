"""`python -m benchmarks gpu --out DIR`: the GPU benchmark of issue "GPU performance on one H100", in one run.

Sections (``--sections``, all by default), one module per thing measured:
- ``env`` (here): device, versions, and the two ceilings the others are measured against: device-to-device copy
  bandwidth (bytes read + written) and dense matmul rate per precision (8192^3).
- ``encoder``, ``profile``: the MOSS encoder, eager vs fast path (benchmarks/gpu_encoder.py).
- ``topk``: exact inner-product top-K over FP16 catalogs (benchmarks/gpu_topk.py).
- ``e2e``: `audio_search` end to end through the real tritonserver with the `gpu` configs (benchmarks/gpu_e2e.py).

Writes DIR/gpu.json (everything), DIR/gpu.png, DIR/gpu.txt (the table, also printed last; benchmarks/gpu_report.py).
Shared helpers: benchmarks/gpu_common.py.
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmarks.gpu_common import cuda_time, log
from benchmarks.gpu_e2e import section_e2e
from benchmarks.gpu_encoder import section_encoder, section_profile
from benchmarks.gpu_report import plot, table
from serving.cuda_mps import CUDA_MPS_CHOICES
from benchmarks.gpu_topk import section_topk

SECTIONS = ("env", "encoder", "profile", "topk", "e2e")


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


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, required=True, help="folder for gpu.json, gpu.png, gpu.txt")
    parser.add_argument("--sections", default=",".join(SECTIONS), help="comma list of %(default)s")
    parser.add_argument("--moss-config", default="official", help="preset (RANDOM weights) or checkpoint folder")
    parser.add_argument("--clip-seconds", type=float, default=10.0)
    parser.add_argument("--batches", default="1,8,16,64")
    parser.add_argument("--precisions", default="fp32,tf32,fp16,bf16")
    parser.add_argument("--ablation-batch", type=int, default=64, help="0: no ablation (default: %(default)s)")
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
    parser.add_argument("--e2e-variant", action="append", default=[], metavar="NAME:MODEL.FIELD=VALUE[;...]",
                        help="also measure serving.yaml with these model fields changed, one server per variant "
                             "(e.g. 'topk1:faiss_topk.gpu.count=1', 'wait20:window_embedder.gpu_queue_delay_microseconds=20000'; "
                             "'twostep:window_embedder.gpu_fused=false' serves the encoder and the embedder as two models); repeatable")
    parser.add_argument("--e2e-override", action="append", default=[], metavar="MODEL.FIELD=VALUE",
                        help="a model field changed for every e2e run, the base included (e.g. '*.gpu.kind=KIND_CPU'); repeatable")
    parser.add_argument("--e2e-cuda-mps", choices=tuple(CUDA_MPS_CHOICES), default="auto",
                        help="the server's own CUDA MPS daemon (serving/cuda_mps.py); auto: on for the gpu configs")
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

    def save() -> None:
        (args.out / "gpu.json").write_text(json.dumps(results, indent=1, default=str), encoding="utf-8")

    steps = {"env": lambda: section_env(results), "encoder": lambda: section_encoder(args, results),
             "profile": lambda: section_profile(args, results),
             "topk": lambda: section_topk(args, results), "e2e": lambda: section_e2e(args, results, args.out, save)}
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
        save()
    text = table(results)
    (args.out / "gpu.txt").write_text(text + "\n", encoding="utf-8")
    try:
        plot(results, args.out / "gpu.png")
    except Exception as error:  # noqa: BLE001
        print(f"plot failed: {error!r}")
    print("\n" + text)
    return 0
