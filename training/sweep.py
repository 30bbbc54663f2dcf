"""`python -m training sweep`: the embedder sized and shaped by measurement, one change at a time.

The data chain is `make quality`'s (training.pipeline: corpus or generated audio, tokenized once); then the
base training config and one variant per value of each ``--vary KEY=V1,V2`` (dotted keys into the training
config, e.g. ``model.n_levels=4,16``, ``model.pooling=mean``, ``optim.batch_size=512``) are trained for
``--epochs`` each, every run in its own folder, and compared on their best validation recall@1 (the
yardstick `train` keeps). Runs whose val views would be identical share one set, made once. A run cut
off by a time limit resumes where it stopped; finished runs are read back, not retrained. Writes a JSON
table and a PNG of the validation curves.

Variants that change the views (``views.*``) or the catalog layout are measured on their own val views,
so their numbers are a different yardstick: the report marks them.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from common.yaml_config import load_yaml, replaced, save_yaml
from training.pipeline import TRAIN_CONFIGS, PipelineConfig, add_source_arguments, prepare_data, train_embedder
from training.train import TrainConfig

# Keys whose change makes other val views (the runs' yardstick); keys the data chain sets for every run.
YARDSTICK_KEYS = ("views.", "catalog.")
CHAIN_KEYS = ("output_dir", "seed", "data.", "optim.epochs")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--vary", action="append", default=[], metavar="KEY=V1,V2",
                        help="a training-config key (dotted) and the values to try instead of the base config's; repeatable")
    parser.add_argument("--epochs", type=int, default=12, help="epochs of every run (base and variants)")
    parser.add_argument("--train-config", type=Path, default=None, help="the base config (default: configs/train_music.yaml with the corpus, configs/train.yaml without)")
    parser.add_argument("--work-dir", type=Path, default=Path("artifacts/quality"))
    parser.add_argument("--report", type=Path, default=Path("reports/sweep.json"))
    add_source_arguments(parser)
    parser.add_argument("--distractors", type=int, default=1000, help="generated tracks tokenized beside the corpus (the quality chain's)")
    parser.add_argument("--tracks", type=int, default=300, help="generated tracks that are the data set where no corpus is installed")
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--n-quantizers", type=int, default=8, help="RVQ levels tokenized: the most any variant's model.n_levels may read")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--seed", type=int, default=42)


def parse_vary(items: list[str]) -> list[tuple[str, list[str]]]:
    """``KEY=V1,V2`` -> (KEY, [V1, V2]); a malformed item is one line of error."""
    parsed = []
    for item in items:
        key, sep, values = item.partition("=")
        if not sep or not key.strip() or not values.strip():
            raise SystemExit(f"--vary {item!r}: expected KEY=V1,V2 (for example model.n_levels=4,16)")
        parsed.append((key.strip(), [v.strip() for v in values.split(",") if v.strip()]))
    return parsed


def with_override(cfg: TrainConfig, key: str, value: str) -> TrainConfig:
    """A copy of ``cfg`` with the dotted ``key`` set to ``value``, read as the type the key holds."""
    if key.startswith(CHAIN_KEYS):
        raise SystemExit(f"--vary {key}: set by the data chain for every run (--epochs, --seed, the corpus and tokenizer options)")
    try:
        return replaced(cfg, key, value)
    except (TypeError, ValueError) as error:
        raise SystemExit(f"--vary {key}={value}: {error}") from None


def variants(base: TrainConfig, vary: list[tuple[str, list[str]]]) -> dict[str, TrainConfig]:
    """The base config and one variant per (key, value), named after the change."""
    runs = {"base": base}
    for key, values in vary:
        for value in values:
            runs[f"{key}={value}"] = with_override(base, key, value)
    return runs


def run_summary(name: str, checkpoints: Path, changes_yardstick: bool) -> dict:
    history = json.loads((checkpoints / "history.json").read_text(encoding="utf-8"))
    best = max(history, key=lambda h: h["val_recall@1"])
    state = torch.load(checkpoints / "best.pt", map_location="cpu", weights_only=False)
    return {
        "run": name, "best_val_recall@1": best["val_recall@1"], "best_epoch": best["epoch"], "epochs": len(history),
        "final_train_loss": history[-1]["train_loss"], "train_seconds": round(sum(h["seconds"] for h in history), 1),
        "parameters": int(sum(t.numel() for t in state["model"].values())), "own_val_views": changes_yardstick,
        "val_recall@1": [h["val_recall@1"] for h in history],
    }


def plot_sweep(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5))
    for row in rows:
        style = "--" if row["own_val_views"] else "-"
        ax.plot(range(1, len(row["val_recall@1"]) + 1), row["val_recall@1"], style, label=f"{row['run']} ({row['best_val_recall@1']:.3f})")
    ax.set_xlabel("epoch")
    ax.set_ylabel("val recall@1")
    ax.set_title("embedder sweep (dashed: measured on its own val views)")
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(args: argparse.Namespace) -> int:
    vary = parse_vary(args.vary)
    if args.epochs < 1:
        raise SystemExit("--epochs must be >= 1")
    cfg = PipelineConfig(work_dir=args.work_dir, tracks=args.tracks, seconds=args.seconds, views_per_track=None, n_quantizers=args.n_quantizers,
                         epochs=args.epochs, val_ratio=0.1, test_ratio=0.1, moss_config=args.moss_config, device=args.device, seed=args.seed,
                         corpus=args.corpus, distractors=args.distractors, prepare_only=True)
    timings: dict[str, float] = {}
    data = prepare_data(cfg, timings)
    base_config = args.train_config or TRAIN_CONFIGS[data.source]
    base = load_yaml(TrainConfig, base_config)
    runs = variants(base, vary)  # every override checked before any training starts
    too_deep = [name for name, run in runs.items() if run.model.n_levels > args.n_quantizers]
    if too_deep:
        raise SystemExit(f"{', '.join(too_deep)}: more levels than the {args.n_quantizers} tokenized; pass --n-quantizers")
    sweep_dir = args.work_dir / data.tag / "sweep"
    rows = []
    for name, run in runs.items():
        work = sweep_dir / name.replace("/", "_")
        work.mkdir(parents=True, exist_ok=True)
        save_yaml(run, work / "variant.yaml")
        run_cfg = PipelineConfig(**{**vars(cfg), "train_config": work / "variant.yaml", "prepare_only": False})
        checkpoints = train_embedder(run_cfg, data.source, data.moss_config, data.audio_roots[0], data.tokens_roots[0], data.splits, work, timings, data.notes,
                                     shared_views=sweep_dir / "views")
        rows.append(run_summary(name, checkpoints.parent, name != "base" and name.startswith(YARDSTICK_KEYS)))
        print(json.dumps({k: v for k, v in rows[-1].items() if k != "val_recall@1"}), flush=True)
    args.report.parent.mkdir(parents=True, exist_ok=True)
    report = {"epochs": args.epochs, "data": data.describe(), "base_config": str(base_config),
              "vary": {key: values for key, values in vary}, "runs": rows, "seconds_per_step": timings}
    args.report.write_text(json.dumps(report, indent=2), encoding="utf-8")
    plot_sweep(rows, args.report.with_suffix(".png"))
    print(json.dumps({"report": str(args.report), "best": max(rows, key=lambda r: r["best_val_recall@1"])["run"]}))
    return 0
