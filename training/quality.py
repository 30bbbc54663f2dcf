"""`python -m training quality` (make quality): search quality as a user meets it, end to end.

Data: the real-music corpus plus generated distractors, or generated tracks alone where no corpus is
installed; tokenizer: the trained models/moss-small, or the tiny RANDOM-weight preset where it is
missing (training.pipeline; every fallback is printed and recorded under "data" in the report).
Then views -> train (skipped with --checkpoint) -> evaluate: the catalog holds every track, queries are
test-track excerpts at random sample offsets under every listening condition and length, ranked by
exact search and by FAISS. Writes reports/quality.json and reports/quality_recall_vs_length.png.
"""
from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from training.pipeline import PipelineConfig, add_source_arguments, prepare_data, run_step


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--work-dir", type=Path, default=Path("artifacts/quality"))
    parser.add_argument("--report", type=Path, default=Path("reports/quality.json"))
    parser.add_argument("--plot", type=Path, default=Path("reports/quality_recall_vs_length.png"))
    add_source_arguments(parser)
    parser.add_argument("--checkpoint", type=Path, default=None, help="evaluate this embedder checkpoint instead of training one")
    parser.add_argument("--distractors", type=int, default=1000, help="generated tracks added to the corpus's catalog")
    parser.add_argument("--tracks", type=int, default=300,
                        help="generated tracks that are the data set where no corpus is installed (80/10/10 split; sized for CPU minutes with moss-small)")
    parser.add_argument("--seconds", type=float, default=30.0, help="length of each generated track")
    parser.add_argument("--views-per-track", type=int, default=None, help="override the training config's views.per_track")
    parser.add_argument("--n-quantizers", type=int, default=8, help="RVQ levels tokenized; the embedder reads the first n_levels (8)")
    parser.add_argument("--train-config", type=Path, default=None, help="default: configs/train_music.yaml with the corpus, configs/train.yaml without")
    parser.add_argument("--epochs", type=int, default=None, help="override the config's epochs")
    parser.add_argument("--queries-per-track", type=int, default=1, help="excerpts per test track, condition and length (scale up for tighter numbers)")
    parser.add_argument("--max-query-tracks", type=int, default=60,
                        help="query a seeded sample of this many test tracks (0: all); 60 x 9 conditions x 4 lengths keeps CPU evaluation to minutes")
    parser.add_argument("--prepare-only", action="store_true",
                        help="tokenize the corpus and the distractors, then stop (a GPU machine that receives the corpus in parts calls this after each)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--eval-seed", type=int, default=1234, help="seed of the query offsets and degradations")


def main(args: argparse.Namespace) -> int:
    if args.checkpoint is not None and not args.checkpoint.is_file():
        raise SystemExit(f"--checkpoint {args.checkpoint}: no such file")
    cfg = PipelineConfig(
        work_dir=args.work_dir, tracks=args.tracks, seconds=args.seconds, views_per_track=args.views_per_track,
        n_quantizers=args.n_quantizers, epochs=args.epochs, val_ratio=0.1, test_ratio=0.1, train_config=args.train_config,
        moss_config=args.moss_config, device=args.device, seed=args.seed, corpus=args.corpus, checkpoint=args.checkpoint, distractors=args.distractors,
        prepare_only=args.prepare_only,
    )
    timings: dict[str, float] = {}
    data = prepare_data(cfg, timings)
    if data.checkpoint is None:
        print(json.dumps({"prepared": data.describe(), "tokens": [str(root) for root in data.tokens_roots], "seconds_per_step": timings}))
        return 0
    run_step("evaluate", "training.evaluate", [
        "--checkpoint", str(data.checkpoint), "--split", "test", "--use-faiss", "--output-json", str(args.report), "--plot", str(args.plot),
        "--tokens-root", *map(str, data.tokens_roots), "--splits-root", str(data.splits), "--audio-root", *map(str, data.audio_roots),
        "--queries-per-track", str(args.queries_per_track), *(["--max-tracks", str(args.max_query_tracks)] if args.max_query_tracks else []),
        "--seed", str(args.eval_seed), *data.moss_args, "--n-quantizers", str(args.n_quantizers), "--device", args.device,
    ], timings)
    history = data.checkpoint.parent / "history.png"
    if history.is_file():
        shutil.copy(history, args.report.with_name("training_history.png"))
    report = json.loads(args.report.read_text(encoding="utf-8"))
    report["data"] = data.describe()
    report["seconds_per_step"] = timings
    args.report.write_text(json.dumps(report, indent=2), encoding="utf-8")
    print(json.dumps({"report": str(args.report), "plot": str(args.plot), "data": report["data"], "seconds_per_step": timings}))
    for note in data.notes:
        print(f"NOTE {note}")
    return 0
