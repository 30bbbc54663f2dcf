"""`python -m training quality` (make quality): the whole training side on generated audio.

synth -> tokenize (MOSS) -> splits -> views -> train -> evaluate, each step skipped when its
output exists, ending in reports/quality.json (the evaluate JSON) and its PNGs.
"""
from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from training.pipeline import PipelineConfig, moss_args, run_step, run_training_pipeline


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--work-dir", type=Path, default=Path("artifacts/quality"))
    parser.add_argument("--report", type=Path, default=Path("reports/quality.json"))
    parser.add_argument("--tracks", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--views-per-track", type=int, default=6)
    parser.add_argument("--n-quantizers", type=int, default=8, help="RVQ levels tokenized; the embedder reads the first n_levels (8)")
    parser.add_argument("--train-config", type=Path, default=Path("configs/train.yaml"))
    parser.add_argument("--epochs", type=int, default=None, help="override the config's epochs")
    parser.add_argument("--moss-config", default="tiny")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--seed", type=int, default=42)


def main(args: argparse.Namespace) -> int:
    cfg = PipelineConfig(
        work_dir=args.work_dir, tracks=args.tracks, seconds=args.seconds, views_per_track=args.views_per_track,
        n_quantizers=args.n_quantizers, epochs=args.epochs, val_ratio=0.1, test_ratio=0.1,
        train_config=args.train_config, moss_config=args.moss_config, device=args.device, seed=args.seed,
    )
    timings: dict[str, float] = {}
    paths = run_training_pipeline(cfg, timings)
    evaluate = [
        "--checkpoint", str(paths.best_checkpoint), "--split", "test", "--use-faiss",
        "--tokens-root", str(paths.tokens), "--splits-root", str(paths.splits), "--audio-root", str(paths.audio), *moss_args(cfg),
    ]
    # The headline report uses frame-aligned excerpts; beside it the same queries at arbitrary sample
    # offsets and at the tracks' start, with the code-stability table that explains the gaps for a
    # random-weight tokenizer.
    run_step("evaluate", "training.evaluate", [*evaluate, "--query-alignment", "frame", "--output-json", str(args.report)], timings)
    sample_report = args.report.with_name(f"{args.report.stem}_sample_offset.json")
    run_step("evaluate-sample-offset", "training.evaluate", [*evaluate, "--query-alignment", "sample", "--output-json", str(sample_report)], timings)
    start_report = args.report.with_name(f"{args.report.stem}_track_start.json")
    run_step("evaluate-track-start", "training.evaluate", [*evaluate, "--query-alignment", "start", "--output-json", str(start_report)], timings)
    run_step("code-stability", "training.code_stability", ["--output-json", str(args.report.with_name("code_stability.json")), *moss_args(cfg)], timings)
    shutil.copy(paths.checkpoints / "history.png", args.report.with_name("training_history.png"))
    print(json.dumps({"report": str(args.report), "seconds_per_step": timings}))
    return 0
