"""Options and error handling shared by the client's CLI commands."""
from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from client.transport import PROTOCOLS, default_url

# One exit code per failure kind, so scripts can tell them apart.
EXIT_CODES = {"InvalidInput": 2, "ModelNotReady": 3, "ServerUnavailable": 4, "SearchError": 1}


def add_connection_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--protocol", choices=PROTOCOLS, default="grpc", help="default: %(default)s")
    parser.add_argument("--url", default=None, help="host:port (default: localhost:8001 for grpc, localhost:8000 for http)")
    parser.add_argument("--model", default="audio_search", help="default: %(default)s")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds per call (default: %(default)s)")
    parser.add_argument("--retries", type=int, default=2, help="retries of transient failures (default: %(default)s)")
    parser.add_argument("--root-cert", default=None, metavar="CA_FILE",
                        help="gRPC over TLS, the server's certificate checked against this CA (the deployment's gRPC proxy)")


def client_options(args: argparse.Namespace) -> dict[str, object]:
    return {"url": args.url or default_url(args.protocol), "protocol": args.protocol, "model": args.model,
            "timeout_s": args.timeout, "retries": args.retries, "root_certificates": args.root_cert}


def run_reporting_errors(command: Callable[[], int]) -> int:
    """Run ``command``; a SearchError becomes one line on stderr and its exit code."""
    from client.errors import SearchError

    try:
        return command()
    except SearchError as error:
        kind = type(error).__name__
        print(f"error: {kind}: {' '.join(str(error).split())}", file=sys.stderr)
        return EXIT_CODES.get(kind, 1)
