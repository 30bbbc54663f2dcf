"""`python -m export publish`: lay the exported models and the catalog index into model_repository/.

The token_embedder's `embedder.json` records the checksum of the ONNX file the index was built
with, so faiss_topk refuses an index made for a different embedder. A repository elsewhere (any folder)
first gets the configs and model code of the models it lacks, so `python -m serving serve` can serve it.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from common.paths import DEFAULT_REPOSITORY
from export.repo_layout import EMBEDDER_MANIFEST, add_missing_models, publish_artifacts


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model-repository", type=Path, default=Path("model_repository"))
    parser.add_argument("--moss-onnx", type=Path, required=True)
    parser.add_argument("--embedder-onnx", type=Path, required=True)
    parser.add_argument("--index", type=Path, required=True, help="folder written by `python -m export index`")
    parser.add_argument("--moss-source", default=None,
                        help="for the gpu configs: MOSS checkpoint folder, or a preset (official/tiny: RANDOM weights)")
    parser.add_argument("--embedder-checkpoint", type=Path, default=None,
                        help="for the gpu configs: the TokenEmbedder checkpoint the ONNX export came from")


def main(args: argparse.Namespace) -> int:
    for path in (args.moss_onnx, args.embedder_onnx, args.index / "manifest.json"):
        if not path.exists():
            raise SystemExit(f"cannot publish: {path} does not exist")
    added = add_missing_models(args.model_repository)
    if added:
        print(f"added the configs and model code of {', '.join(added)} from {DEFAULT_REPOSITORY}", file=sys.stderr)
    publish_artifacts(args.model_repository, moss_onnx=args.moss_onnx, embedder_onnx=args.embedder_onnx, catalog_dir=args.index,
                      moss_source=args.moss_source, embedder_checkpoint=args.embedder_checkpoint)
    print(json.dumps({"repository": str(args.model_repository), **json.loads((args.model_repository / EMBEDDER_MANIFEST).read_text())}))
    return 0
