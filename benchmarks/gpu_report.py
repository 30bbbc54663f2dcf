"""The GPU benchmark's report (`python -m benchmarks gpu`): the text table and the PNG of whatever sections ran."""
from __future__ import annotations

from pathlib import Path


def encoder_ceiling(results: dict) -> dict | None:
    """The encoder section's fastest FP16 fast-path row whose level-0 codes agree >= 99 % with FP32 (the bar of
    issue #15): a 10-s query is one 10-s window, so its clips/s bound the queries/s of the whole search."""
    rows = [row for row in results.get("encoder", {}).get("rows", [])
            if row.get("path") == "fast" and row.get("precision") == "fp16" and "clips_per_s" in row and row.get("level0", 0) >= 0.99]
    return max(rows, key=lambda row: row["clips_per_s"], default=None)


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
        lines.append("\naudio_search end to end through tritonserver (gpu configs" + (f"; every run: {'; '.join(e2e['overrides'])}" if e2e.get("overrides") else "") + ")")
        ceiling = encoder_ceiling(results)
        if ceiling:
            lines.append(f"  encoder alone, same run: {ceiling['clips_per_s']:.0f} clips/s (fast FP16, batch {ceiling['batch']}): "
                         "the ceiling of 10-s queries/s")
        lines += _e2e_lines(e2e)
        for variant in e2e.get("variants", []):
            lines.append(f"variant {variant['name']}: {'; '.join(variant['overrides'])}")
            lines += _e2e_lines(variant)
    return "\n".join(lines)


def _e2e_lines(run: dict) -> list[str]:
    """One e2e run (base or variant): its error, client curve, server statistics and perf_analyzer points."""
    lines = []
    if "skipped" in run or "error" in run:
        lines.append(f"  {run.get('skipped') or run.get('error')}"[:400])
    if run.get("cuda_mps"):
        mps = run["cuda_mps"]
        lines.append(f"  CUDA MPS: {mps['note'] or 'off'}; servers {mps['servers']}")
    for point in run.get("python_client", []):
        lines.append(f"  python client c={point['concurrency']:<3} {point['throughput']:8.1f} req/s "
                     f"p50 {point['p50_ms'] or float('nan'):7.1f} ms p95 {point['p95_ms'] or float('nan'):7.1f} ms"
                     + (f" errors {point['errors'][:1]}" if point["errors"] else ""))
        steps = [f"{name} x{stats['mean_batch_requests']} q{stats['queue_ms_per_request']:.1f}+"
                 f"i{stats['compute_infer_ms_per_request']:.1f}" for name, stats in point.get("model_stats", {}).items()]
        if steps:
            lines.append(f"    per step (requests per execution, queue + infer ms per request): {', '.join(steps)}")
    for name, stats in run.get("model_stats", {}).items():
        lines.append(f"  server {name:<15} {stats['requests']:>6} req in {stats['executions']:>6} executions "
                     f"(x{stats['mean_batch_requests']}), per request: queue {stats['queue_ms_per_request']:.2f} ms, "
                     f"infer {stats['compute_infer_ms_per_request']:.2f} ms")
    pa = run.get("perf_analyzer")
    if isinstance(pa, list):
        for point in pa:
            lines.append(f"  perf_analyzer c={point['concurrency']:<3} {point['throughput']:8.1f} infer/s "
                         f"p50 {point['p50_ms']:7.1f} ms p95 {point['p95_ms']:7.1f} ms")
    elif pa:
        lines.append(f"  {pa}"[:300])
    return lines


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    rows = [r for r in results.get("encoder", {}).get("rows", []) if "clips_per_s" in r]
    topk = [r for r in results.get("topk", {}).get("rows", []) if "median_ms" in r]
    e2e = results.get("e2e", {})
    runs = [("base", e2e), *((variant["name"], variant) for variant in e2e.get("variants", []))]
    runs = [(name, run["python_client"]) for name, run in runs if run.get("python_client")]
    shown = max(1, sum(1 for data in (rows, topk, runs) if data))  # a run of some sections only: no empty panels
    fig, axes = plt.subplots(1, shown, figsize=(5.7 * shown, 4.8), squeeze=False)
    panels = iter(axes[0])
    if rows:
        ax = next(panels)
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
    if topk:
        ax = next(panels)
        labels = [f"N={r['n'] / 1e6:g}M k={r['k']} {r['method']}" for r in topk]
        ax.barh(range(len(topk)), [r["median_ms"] for r in topk],
                color=["tab:gray" if "naive" in r["method"] else "tab:blue" for r in topk])
        ax.set_yticks(range(len(topk)), labels, fontsize=6)
        ax.invert_yaxis()
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.set_xlabel("ms per batch of queries (256 unless marked)")
        ax.set_title("exact top-K, FP16 catalog")
    if runs:
        ax = next(panels)
        ax2 = ax.twinx()
        for index, (name, points) in enumerate(runs):
            color = f"C{index}"
            concurrency = [p["concurrency"] for p in points]
            ax.plot(concurrency, [p["throughput"] for p in points], color=color, marker="o", label=f"{name} req/s")
            ax2.plot(concurrency, [p["p95_ms"] or 0 for p in points], color=color, linestyle=":", marker="x")
        ceiling = encoder_ceiling(results)
        if ceiling:
            ax.axhline(ceiling["clips_per_s"], color="gray", linestyle="--", label=f"encoder alone, batch {ceiling['batch']}")
        ax.set_xlabel("concurrency")
        ax.set_ylabel("requests/s (solid)")
        ax2.set_ylabel("p95 latency, ms (dotted)")
        ax.legend(fontsize=7, loc="upper left")
        ax.set_title("audio_search via Triton (gpu configs)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
