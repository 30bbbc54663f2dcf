"""`python -m client search FILE`: the catalog tracks most similar to an audio file."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from client.cli_common import add_connection_arguments, client_options, run_reporting_errors


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", type=Path, help="audio file (any rate/channels soundfile reads; resampled to 24 kHz mono)")
    parser.add_argument("--top-k", type=int, default=10, help="default: %(default)s")
    parser.add_argument("--json", action="store_true", help="print [{track_id, score}, ...] as JSON")
    add_connection_arguments(parser)


def main(args: argparse.Namespace) -> int:
    from client.sync_client import AudioSearchClient

    def search() -> int:
        with AudioSearchClient(**client_options(args)) as client:
            hits = client.search(args.file, top_k=args.top_k)
        if args.json:
            print(json.dumps([{"track_id": track, "score": round(score, 6)} for track, score in hits]))
        else:
            for rank, (track, score) in enumerate(hits, 1):
                print(f"{rank:>3}  {track:<24} {score:.4f}")
        return 0

    return run_reporting_errors(search)
