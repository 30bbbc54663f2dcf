"""Run the real tritonserver from the nvidia-pytriton wheel as a child process (CPU, no Docker).

The wheel ships the server binary, the Python backend and one backend stub per Python version.
Only the Python backend exists there, so ONNX models are served by our Python-based backend
`onnx_cpu` (serving/triton_backends/onnx_cpu/model.py), assembled next to it.
"""
from __future__ import annotations

import ctypes
import hashlib
import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from common.paths import REPO_ROOT
from serving.cuda_mps import CudaMps, CudaMpsUnavailable

DEFAULT_BACKEND_DIR = REPO_ROOT / ".triton" / "backends"
# The embedded configs' EXECUTION_ENV_PATH (written by export/repo_configs.py). The Python backend resolves a
# relative path against the server's working folder: the server starts in a folder where this name links the
# Python environment of the backend stubs, so a repository serves from anywhere and holds no environment.
PYTHON_ENV_LINK = ".venv"
DEFAULT_WORK_ROOT = REPO_ROOT / ".triton"
# What every model of the repository imports in its stub, besides the standard library.
STUB_MODULES = ("numpy", "serving", "common")
OWN_BACKENDS = Path(__file__).resolve().parent / "triton_backends"
# The embedded server is CPU-only and must start where no GPU driver exists.
BASE_ARGS = (
    "--allow-gpu-metrics=false",
    "--pinned-memory-pool-byte-size=0",
    "--cuda-memory-pool-byte-size=0:0",
)


class TritonNotInstalled(RuntimeError):
    pass


class TritonStartError(RuntimeError):
    pass


class UnusablePythonEnv(TritonStartError):
    pass


@dataclass(frozen=True)
class TritonInstall:
    binary: Path
    python_backend: Path
    stub: Path
    libs: Path


def find_triton_install() -> TritonInstall:
    """The server files inside the installed nvidia-pytriton wheel, for the running Python."""
    # find_spec locates the package without importing it: its own dependencies are not installed.
    spec = importlib.util.find_spec("pytriton")
    hint = "run `make setup` (it installs nvidia-pytriton==0.7.0 with --no-deps)"
    if spec is None or not spec.submodule_search_locations:
        raise TritonNotInstalled(f"the nvidia-pytriton wheel is not installed in {sys.prefix}: {hint}")
    package = Path(next(iter(spec.submodule_search_locations)))
    root = package / "tritonserver"
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    install = TritonInstall(
        binary=root / "bin" / "tritonserver",
        python_backend=root / "backends" / "python",
        stub=root / "python_backend_stubs" / version / "triton_python_backend_stub",
        libs=package.parent / "nvidia_pytriton.libs",
    )
    missing = [str(path) for path in (install.binary, install.python_backend, install.stub, install.libs) if not path.exists()]
    if missing:
        raise TritonNotInstalled(f"incomplete tritonserver install, missing {missing}: {hint}")
    return install


def _install_file(source: Path, target: Path, executable: bool = False) -> None:
    """Copy unless identical; replace atomically so a running server keeps its mapped old file."""
    if target.exists() and target.read_bytes() == source.read_bytes():
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=target.parent, prefix=f".{target.name}.", delete=False) as handle:
        handle.write(source.read_bytes())
    os.chmod(handle.name, 0o755 if executable else 0o644)
    os.replace(handle.name, target)


def _install_tree(source: Path, target: Path) -> None:
    for path in sorted(source.rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts:
            _install_file(path, target / path.relative_to(source))


def assemble_backends(install: TritonInstall, target: Path = DEFAULT_BACKEND_DIR) -> Path:
    """Lay out a --backend-directory: the Python backend with our stub, plus our Python-based backends."""
    _install_tree(install.python_backend, target / "python")
    _install_file(install.stub, target / "python" / install.stub.name, executable=True)
    for backend in sorted(p for p in OWN_BACKENDS.iterdir() if (p / "model.py").is_file()):
        _install_tree(backend, target / backend.name)
    return target


def server_environment(install: TritonInstall) -> dict[str, str]:
    """The stub embeds libpython of this interpreter; the server needs the wheel's bundled libraries."""
    env = dict(os.environ)
    paths = [str(sysconfig.get_config_var("LIBDIR")), str(install.libs)]
    if env.get("LD_LIBRARY_PATH"):
        paths.append(env["LD_LIBRARY_PATH"])
    env["LD_LIBRARY_PATH"] = os.pathsep.join(paths)
    return env


def check_python_env(env: Path) -> None:
    """Raise naming what is missing when the backend stubs could not run in ``env``."""
    hint = "serve with the project's environment (`make setup` creates .venv)"
    if not env.is_dir():
        raise UnusablePythonEnv(f"the backend stubs' Python environment {env} does not exist: {hint}")
    if not (env / "bin" / "activate").is_file():
        raise UnusablePythonEnv(f"{env} is no virtual environment: the Python backend activates it with "
                                f"{env / 'bin' / 'activate'}, which is missing: {hint}")
    # -I: what the stub sees (its sys.path ignores PYTHONPATH and the working folder).
    python = env / "bin" / "python"
    try:
        probe = subprocess.run(
            [str(python), "-I", "-c",
             "import importlib.util, sys; print(*(m for m in sys.argv[1:] if importlib.util.find_spec(m) is None))", *STUB_MODULES],
            capture_output=True, text=True, timeout=120, check=False)
    except OSError as error:
        raise UnusablePythonEnv(f"{python} does not run ({error}): {hint}") from error
    if probe.returncode != 0:
        raise UnusablePythonEnv(f"{python} does not run: {probe.stderr.strip()}: {hint}")
    if probe.stdout.split():
        raise UnusablePythonEnv(f"the Python environment {env} lacks {', '.join(probe.stdout.split())}, which the "
                                f"repository's models import: {hint}")


def link_python_env(env: Path, work_root: Path = DEFAULT_WORK_ROOT) -> Path:
    """The server's working folder for ``env``: one per environment, holding only PYTHON_ENV_LINK -> ``env``."""
    target = env.resolve()
    folder = work_root / f"env-{hashlib.sha256(str(target).encode()).hexdigest()[:12]}"
    link = folder / PYTHON_ENV_LINK
    if not (link.is_symlink() and link.resolve() == target):
        folder.mkdir(parents=True, exist_ok=True)
        # Replaced atomically: a server starting beside us never sees the link missing.
        temporary = folder / f".{PYTHON_ENV_LINK}.{os.getpid()}"
        temporary.unlink(missing_ok=True)
        temporary.symlink_to(target, target_is_directory=True)
        os.replace(temporary, link)
    return folder


def free_ports(count: int) -> list[int]:
    """Ports the OS reports free; all sockets stay open until every port is picked so they differ."""
    sockets = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


# The server is local: a proxy from the environment must not see its health checks.
_LOCAL_HTTP = urllib.request.build_opener(urllib.request.ProxyHandler({}))
_LIBC = ctypes.CDLL(None, use_errno=True)
PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """Runs in the child before exec: an orphaned server would keep its ports and CPU after a crash.

    Linux sends the signal when the starting *thread* ends: start servers from a long-lived thread.
    """
    _LIBC.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def serves_on_gpu(repository: Path, config_name: str | None) -> bool:
    """Whether a model's config as tritonserver will pick it (``configs/<name>.pbtxt`` where present, else
    ``config.pbtxt``) asks for a GPU instance."""
    for model in sorted(path for path in repository.iterdir() if path.is_dir()):
        named = model / "configs" / f"{config_name}.pbtxt"
        config = named if config_name and named.is_file() else model / "config.pbtxt"
        if config.is_file() and "KIND_GPU" in config.read_text(encoding="utf-8"):
            return True
    return False


class EmbeddedTriton:
    """A tritonserver child process on a model repository; a context manager that waits for readiness."""

    def __init__(
        self,
        model_repository: str | Path,
        *,
        http_port: int | None = None,
        grpc_port: int | None = None,
        metrics_port: int | None = None,
        model_config_name: str | None = "cpu",
        extra_args: Sequence[str] = (),
        log_path: str | Path | None = None,
        startup_timeout_s: float = 120.0,
        exit_timeout_s: int = 10,
        backend_directory: str | Path = DEFAULT_BACKEND_DIR,
        python_env: str | Path | None = None,
        cuda_mps: bool | None = None,
    ) -> None:
        self.model_repository = Path(model_repository).resolve()
        if not self.model_repository.is_dir():
            raise FileNotFoundError(f"model repository {self.model_repository} does not exist")
        picked = iter(free_ports(3))
        self.http_port = http_port or next(picked)
        self.grpc_port = grpc_port or next(picked)
        self.metrics_port = metrics_port or next(picked)
        self.model_config_name = model_config_name
        self.extra_args = tuple(extra_args)
        self.log_path = Path(log_path) if log_path else REPO_ROOT / ".triton" / "logs" / f"tritonserver-{self.http_port}.log"
        self.startup_timeout_s = startup_timeout_s
        self.exit_timeout_s = exit_timeout_s
        self.backend_directory = Path(backend_directory)
        # The backend stubs' environment: this interpreter's unless given (e.g. one with other NumPy).
        self.python_env = Path(python_env) if python_env else Path(sys.prefix)
        # A private CUDA MPS daemon for the GPU processes of this server (serving.cuda_mps): None starts one where
        # the served configs put a model on the GPU; where the machine cannot run one, the server starts without
        # it and cuda_mps_note says why.
        self.cuda_mps = cuda_mps
        self.cuda_mps_note = ""
        self._mps: CudaMps | None = None
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def http_url(self) -> str:
        return f"127.0.0.1:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.metrics_port}/metrics"

    def command(self, install: TritonInstall) -> list[str]:
        args = [
            str(install.binary),
            f"--model-repository={self.model_repository}",
            f"--backend-directory={self.backend_directory}",
            f"--http-port={self.http_port}",
            f"--grpc-port={self.grpc_port}",
            f"--metrics-port={self.metrics_port}",
            # How long shutdown waits for in-flight requests and open client connections.
            f"--exit-timeout-secs={self.exit_timeout_s}",
            *BASE_ARGS,
        ]
        if self.model_config_name:
            args.append(f"--model-config-name={self.model_config_name}")
        return [*args, *self.extra_args]

    def start(self) -> EmbeddedTriton:
        if self._process is not None:
            raise RuntimeError("server already started")
        install = find_triton_install()
        check_python_env(self.python_env)
        work_dir = link_python_env(self.python_env)
        assemble_backends(install, self.backend_directory)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        env = server_environment(install)
        if self.cuda_mps or (self.cuda_mps is None and serves_on_gpu(self.model_repository, self.model_config_name)):
            env.update(self._start_mps())
        try:
            with open(self.log_path, "wb") as log:
                self._process = subprocess.Popen(
                    self.command(install),
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env=env,
                    # EXECUTION_ENV_PATH resolves here; the stub also puts this folder (nothing but the link) on sys.path.
                    cwd=work_dir,
                    # Its own session: a terminal's Ctrl-C reaches only us, and stop() shuts it down once.
                    start_new_session=True,
                    preexec_fn=_die_with_parent,
                )
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def _start_mps(self) -> dict[str, str]:
        try:
            self._mps = CudaMps().start()
        except CudaMpsUnavailable as error:
            self.cuda_mps_note = f"CUDA MPS unavailable, the GPU processes time-slice the GPU: {error}"
            return {}
        self.cuda_mps_note = f"CUDA MPS daemon at {self._mps.folder}"
        return self._mps.environment

    def cuda_mps_servers(self) -> list[str] | None:
        """The MPS servers of this server's daemon (None without one): non-empty once a GPU model has loaded."""
        return None if self._mps is None else self._mps.servers()

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.startup_timeout_s
        while time.monotonic() < deadline:
            code = self.returncode
            if code is not None:
                raise TritonStartError(f"tritonserver exited with code {code} during startup:\n{self.log_tail()}")
            if self.is_ready():
                return
            time.sleep(0.2)
        raise TritonStartError(f"tritonserver not ready after {self.startup_timeout_s:.0f} s:\n{self.log_tail()}")

    @property
    def returncode(self) -> int | None:
        return None if self._process is None else self._process.poll()

    def is_ready(self) -> bool:
        try:
            with _LOCAL_HTTP.open(f"http://{self.http_url}/v2/health/ready", timeout=2) as response:
                return response.status == 200
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            return False

    def repository_index(self) -> list[dict[str, str]]:
        """Every model of the repository with its state (READY, UNAVAILABLE + reason, ...)."""
        request = urllib.request.Request(f"http://{self.http_url}/v2/repository/index", data=b"{}", method="POST")
        with _LOCAL_HTTP.open(request, timeout=10) as response:
            return json.load(response)

    def log_tail(self, lines: int = 20) -> str:
        """The log's error lines (Triton prefixes them with E), then its last lines."""
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace").splitlines()
        except FileNotFoundError:
            return "(no log)"
        errors = [line for line in text[:-lines] if line.startswith("E")]
        return "\n".join([*errors[-lines:], *text[-lines:]])

    def wait(self) -> int:
        if self._process is None:
            raise RuntimeError("server not started")
        return self._process.wait()

    def stop(self) -> int | None:
        """Graceful shutdown (SIGINT: Triton drains requests and unloads models), SIGKILL if that hangs."""
        process = self._process
        try:
            if process is None:
                return None
            if process.poll() is None:
                process.send_signal(signal.SIGINT)
                try:
                    process.wait(self.exit_timeout_s + 20)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
            return process.returncode
        finally:
            if self._mps is not None:
                self._mps.stop()
                self._mps = None

    def __enter__(self) -> EmbeddedTriton:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.stop()

