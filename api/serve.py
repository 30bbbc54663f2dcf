"""`python -m api serve`: the search API on uvicorn, optionally with the embedded tritonserver behind it.

Keys come from --keys-file and/or $CLOUDTUNE_API_KEYS; without any the API refuses to start, unless --no-auth
is given, which is allowed on a loopback address only. Metrics are served on their own port (--metrics-port).
With --embedded (what `make serve` runs), tritonserver starts first on --model-repository, listening on
127.0.0.1 only (HTTP :8000, gRPC :8001, metrics :8002), and stops with the API.
"""
from __future__ import annotations

import argparse
import ipaddress
import logging
import os
import signal
import sys
from pathlib import Path

from api.config import DEFAULT_CONFIG, ApiConfig, load_api_config
from api.keys import ENV_VAR, KeyStore, load_keys

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"
EMBEDDED_PORTS = "8000,8001,8002"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help="default: %(default)s")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: %(default)s; 0.0.0.0 in a container)")
    parser.add_argument("--port", type=int, default=8080, help="default: %(default)s")
    parser.add_argument("--triton-url", default=None, help="Triton gRPC host:port (default: the config's triton.url)")
    parser.add_argument("--triton-root-cert", default=None, help="CA file: TLS to Triton's gRPC (default: the config's triton.root_cert)")
    parser.add_argument("--keys-file", type=Path, default=None, help=f"API key entries (see api/keys.py); ${ENV_VAR} is read too")
    parser.add_argument("--no-auth", action="store_true", help="serve without API keys (loopback addresses only)")
    parser.add_argument("--metrics-port", type=int, default=9102, help="Prometheus metrics port, 0 = none (default: %(default)s)")
    parser.add_argument("--metrics-host", default="127.0.0.1", help="default: %(default)s")
    parser.add_argument("--embedded", action="store_true", help="also run the embedded tritonserver (CPU) and search through it")
    parser.add_argument("--model-repository", type=Path, default=None, help="for --embedded (default: model_repository/)")
    parser.add_argument("--triton-ports", default=EMBEDDED_PORTS, metavar="HTTP,GRPC,METRICS",
                        help="ports of the embedded server, 0 = any free one (default: %(default)s)")
    parser.add_argument("--log-level", default="info", choices=("debug", "info", "warning", "error"))


def main(args: argparse.Namespace) -> int:
    config = load_api_config(args.config)
    if args.triton_url:
        config.triton.url = args.triton_url
    if args.triton_root_cert is not None:
        config.triton.root_cert = args.triton_root_cert
    try:
        keys = _keys(args)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    _configure_logging(args.log_level)
    if not args.embedded:
        return _serve(args, config, keys)
    try:
        http_port, grpc_port, metrics_port = (int(port) for port in args.triton_ports.split(","))
    except ValueError:
        print(f"error: --triton-ports takes three port numbers HTTP,GRPC,METRICS, not {args.triton_ports!r}", file=sys.stderr)
        return 2
    from common.paths import DEFAULT_REPOSITORY, REPO_ROOT
    from serving.triton_runtime import EmbeddedTriton, TritonNotInstalled, TritonStartError

    server = EmbeddedTriton(args.model_repository or DEFAULT_REPOSITORY, http_port=http_port or None,
                            grpc_port=grpc_port or None, metrics_port=metrics_port or None,
                            extra_args=["--http-address=127.0.0.1", "--grpc-address=127.0.0.1", "--metrics-address=127.0.0.1"],
                            log_path=REPO_ROOT / ".triton" / "logs" / "serve.log", startup_timeout_s=300.0)
    print(f"starting tritonserver on {server.model_repository} (log: {server.log_path}) ...", flush=True)
    try:
        server.start()
    except (TritonNotInstalled, TritonStartError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(f"tritonserver ready: gRPC {server.grpc_url}, HTTP {server.http_url} (loopback only)", flush=True)
    config.triton.url = server.grpc_url
    try:
        return _serve(args, config, keys)
    finally:
        server.stop()


def _keys(args: argparse.Namespace) -> KeyStore | None:
    if args.no_auth:
        if not _is_loopback(args.host):
            raise ValueError(f"--no-auth is allowed on a loopback address only, not {args.host}")
        return None
    keys = load_keys(args.keys_file, os.environ.get(ENV_VAR))
    if not len(keys):
        raise ValueError(f"no API keys: give --keys-file or ${ENV_VAR} (make one with `python -m api key NAME`), "
                         "or --no-auth on a loopback address")
    return keys


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def _configure_logging(level: str) -> None:
    from api.guard import RequestIdFilter

    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    handler.addFilter(RequestIdFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())


def _serve(args: argparse.Namespace, config: ApiConfig, keys: KeyStore | None) -> int:
    import uvicorn

    from api.app import create_app
    from api.protocol import head_deadline_protocol
    from client import AsyncAudioSearchClient

    triton = config.triton
    search = AsyncAudioSearchClient(triton.url, "grpc", triton.model, timeout_s=triton.timeout_s, retries=triton.retries,
                                    connections=triton.connections, root_certificates=triton.root_cert or None)
    app, metrics = create_app(config, keys, search)
    if args.metrics_port:
        metrics.serve(args.metrics_port, args.metrics_host)
    logging.getLogger("api").info("searching %s at %s (%s); keys: %s; metrics: %s", triton.model, triton.url,
                                  "TLS" if triton.root_cert else "plaintext", "off" if keys is None else len(keys),
                                  f"{args.metrics_host}:{args.metrics_port}" if args.metrics_port else "off")
    server = uvicorn.Server(uvicorn.Config(
        app, host=args.host, port=args.port, log_config=None, access_log=False, server_header=False,
        http=head_deadline_protocol(config.limits.header_timeout_s), limit_concurrency=config.queue.max_connections,
        timeout_graceful_shutdown=int(config.limits.body_timeout_s) + 5,
    ))
    # uvicorn shuts down gracefully on SIGINT/SIGTERM and then raises the signal again: as KeyboardInterrupt
    # here, so an embedded tritonserver is stopped too and Ctrl-C or `docker stop` ends with status 0.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        server.run()
    except KeyboardInterrupt:
        pass
    return 0 if server.started else 1
