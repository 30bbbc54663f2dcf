"""`python -m serving milvus-lite`: a Milvus Lite folder served on a loopback port, so that the index builder and
every Triton model instance reach one catalog at `http://127.0.0.1:PORT`.

Milvus Lite opens its folder in one process only (an flock on LOCK); a second process that opens the folder as a
path is refused. Serving it over gRPC is how several processes share it. For more than one machine, or catalogs
beyond one process's memory, use Milvus standalone or a cluster (docker-compose's `milvus` profile, docs/scale.md).
"""
from __future__ import annotations

import argparse
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType

DEFAULT_PORT = 19530


class MilvusLiteServer:
    """`python -m serving milvus-lite` as a child process, ready when its port accepts connections."""

    def __init__(self, db: Path, port: int, host: str = "127.0.0.1", log_path: Path | None = None,
                 start_timeout_s: float = 60.0) -> None:
        self.db, self.port, self.host = Path(db), port, host
        self.log_path = log_path or self.db.with_suffix(".log")
        self.start_timeout_s = start_timeout_s
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def uri(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> MilvusLiteServer:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "serving.milvus_lite_server", "--db", str(self.db), "--host", self.host,
                 "--port", str(self.port)], stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + self.start_timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"Milvus Lite on {self.db} exited with {self.process.returncode}; see {self.log_path}")
            try:
                with socket.create_connection((self.host, self.port), timeout=1):
                    return self
            except OSError:
                time.sleep(0.2)
        self.stop()
        raise TimeoutError(f"Milvus Lite on {self.db} did not listen on {self.uri} within {self.start_timeout_s} s")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def __enter__(self) -> MilvusLiteServer:
        return self.start()

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None) -> None:
        self.stop()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--db", type=Path, default=Path("artifacts/milvus.db"), help="Milvus Lite folder (created if absent)")
    parser.add_argument("--host", default="127.0.0.1", help="bind address (default: loopback only)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT)


def main(args: argparse.Namespace) -> int:
    import signal

    from milvus_lite.adapter.grpc.server import run_server

    # SIGTERM (docker stop, MilvusLiteServer.stop) closes the folder cleanly, as Ctrl-C does.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    args.db.parent.mkdir(parents=True, exist_ok=True)
    run_server(str(args.db), host=args.host, port=args.port)
    return 0


if __name__ == "__main__":
    from common.cli import run_module

    sys.exit(run_module("serving.milvus_lite_server", sys.argv[1:]))
