"""`python -m serving serve`: run the embedded tritonserver (CPU) on model_repository/ until Ctrl-C."""
from __future__ import annotations

import argparse
import signal
import sys
import urllib.error
from pathlib import Path
from types import FrameType

from common.paths import DEFAULT_REPOSITORY, REPO_ROOT
from serving.cuda_mps import CUDA_MPS_CHOICES
from serving.triton_runtime import EmbeddedTriton, TritonNotInstalled, TritonStartError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model-repository", type=Path, default=DEFAULT_REPOSITORY, help="default: %(default)s")
    parser.add_argument("--http-port", type=int, default=8000, help="0 picks a free port (default: %(default)s)")
    parser.add_argument("--grpc-port", type=int, default=8001, help="default: %(default)s")
    parser.add_argument("--metrics-port", type=int, default=8002, help="default: %(default)s")
    parser.add_argument("--model-config-name", default="cpu",
                        help="use <model>/configs/NAME.pbtxt where present; '' for the production config.pbtxt")
    parser.add_argument("--log-file", type=Path, default=REPO_ROOT / ".triton" / "logs" / "serve.log", help="default: %(default)s")
    parser.add_argument("--python-env", type=Path, default=None,
                        help=f"virtual environment the Python-backend models run in (default: this interpreter's, {sys.prefix})")
    parser.add_argument("--startup-timeout", type=float, default=300.0, help="seconds (default: %(default)s)")
    parser.add_argument("--cuda-mps", choices=tuple(CUDA_MPS_CHOICES), default="auto",
                        help="a CUDA MPS daemon of the server's own for its GPU models' processes; auto: where the "
                             "served configs put a model on the GPU (default: %(default)s)")
    parser.add_argument("--server-arg", action="append", default=[], metavar="ARG",
                        help="extra tritonserver argument, e.g. --server-arg=--model-control-mode=explicit (repeatable)")


def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def main(args: argparse.Namespace) -> int:
    server = EmbeddedTriton(
        args.model_repository,
        http_port=args.http_port,
        grpc_port=args.grpc_port,
        metrics_port=args.metrics_port,
        model_config_name=args.model_config_name or None,
        extra_args=args.server_arg,
        log_path=args.log_file,
        startup_timeout_s=args.startup_timeout,
        python_env=args.python_env,
        cuda_mps=CUDA_MPS_CHOICES[args.cuda_mps],
    )
    # Ctrl-C, and a service manager's SIGTERM, shut the server down cleanly (SIGINT too where a
    # non-interactive parent started us with it ignored).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _raise_interrupt)
    print(f"starting tritonserver on {server.model_repository} (log: {server.log_path}) ...", flush=True)
    try:
        server.start()
    except (TritonNotInstalled, TritonStartError) as error:
        print(f"error: {error}")
        return 1
    except KeyboardInterrupt:
        server.stop()
        return 130
    print(f"HTTP     http://{server.http_url}")
    print(f"gRPC     {server.grpc_url}")
    print(f"metrics  {server.metrics_url}")
    if server.cuda_mps_note:
        print(f"gpu      {server.cuda_mps_note}")
    try:
        models = server.repository_index()
    except urllib.error.HTTPError as error:  # e.g. --http-restricted-api=model-repository:...
        print(f"models   (repository index not readable: HTTP {error.code})")
        models = []
    for model in models:
        state = model.get("state", "?")
        reason = f" ({model['reason']})" if model.get("reason") else ""
        print(f"model    {model['name']:<16} version {model.get('version', '-'):<3} {state}{reason}")
    print("ready; Ctrl-C stops the server", flush=True)
    try:
        code = server.wait()
    except KeyboardInterrupt:
        print("\nstopping ...", flush=True)
        return 0 if server.stop() in (0, None) else 1
    print(f"tritonserver exited with code {code}:\n{server.log_tail()}")
    return 1
