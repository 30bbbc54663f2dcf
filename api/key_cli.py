"""`python -m api key NAME`: a new random API key (printed once, on stdout) and its entry for the keys file.

Only the entry (name, SHA-256, optional rate) is kept by the server; give the key to the caller and forget it.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from api.keys import entry_line, new_key


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", help="who the key is for (letters, digits, . _ @ -); shown in the logs")
    parser.add_argument("--rate", type=float, default=None, help="requests per minute for this key (default: configs/api.yaml)")
    parser.add_argument("--append-to", type=Path, default=None, metavar="KEYS_FILE",
                        help="append the entry to this keys file instead of printing it")


def main(args: argparse.Namespace) -> int:
    if args.rate is not None and not args.rate > 0:
        print("error: --rate must be positive", file=sys.stderr)
        return 2
    key = new_key()
    try:
        line = entry_line(args.name, key, args.rate)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if args.append_to is not None:
        with open(args.append_to, "a", encoding="utf-8") as handle:
            handle.write(line + "\n")
        print(f"entry for {args.name} appended to {args.append_to}", file=sys.stderr)
    else:
        print(f"keys-file entry: {line}", file=sys.stderr)
    print(key)
    return 0
