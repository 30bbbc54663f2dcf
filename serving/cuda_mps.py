"""CUDA MPS for the embedded server on a GPU node: a control daemon private to one tritonserver, so the CUDA
processes of its Python-based backends (one stub process per GPU model instance) run kernels on the GPU at the
same time instead of time-slicing it. Measured on the H200 (docs/gpu-performance.md, "CUDA MPS"): two instances
of the fused window_embedder serve ~25 % more queries under MPS and half as many without it."""
from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

CONTROL = "nvidia-cuda-mps-control"
# The CLIs' --cuda-mps choices -> EmbeddedTriton(cuda_mps=...): auto (None) starts a daemon where the served configs
# put a model on the GPU.
CUDA_MPS_CHOICES: dict[str, bool | None] = {"auto": None, "on": True, "off": False}


class CudaMpsUnavailable(RuntimeError):
    """This machine cannot run an MPS control daemon (no NVIDIA driver tools, or the daemon refused to start)."""


class CudaMps:
    """One MPS control daemon whose pipe and log folders are private (a fresh temporary folder), so it neither
    needs nor disturbs a node-wide daemon; its clients are the processes started with ``environment``."""

    def __init__(self) -> None:
        self.folder: Path | None = None
        self._control: str | None = None

    @property
    def environment(self) -> dict[str, str]:
        if self.folder is None:
            raise RuntimeError("CUDA MPS not started")
        return {"CUDA_MPS_PIPE_DIRECTORY": str(self.folder / "pipe"), "CUDA_MPS_LOG_DIRECTORY": str(self.folder / "log")}

    def start(self) -> CudaMps:
        control = shutil.which(CONTROL)
        if control is None:
            raise CudaMpsUnavailable(f"{CONTROL} is not on PATH (it comes with the NVIDIA driver)")
        # Short: the pipe folder holds a Unix socket, whose path may not exceed 107 bytes.
        self.folder = Path(tempfile.mkdtemp(prefix="cuda-mps-"))
        for name in ("pipe", "log"):
            (self.folder / name).mkdir()
        self._control = control
        try:
            subprocess.run([control, "-d"], env={**os.environ, **self.environment}, check=True, capture_output=True,
                           text=True, timeout=30)
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as error:
            output = getattr(error, "stderr", "") or getattr(error, "stdout", "") or ""
            self._remove()
            raise CudaMpsUnavailable(f"{CONTROL} -d failed: {error} {output.strip()}") from None
        return self

    def command(self, line: str) -> str:
        """Send one control command (``get_server_list``, ``quit``, ...) and return its answer."""
        if self._control is None:
            raise RuntimeError("CUDA MPS not started")
        done = subprocess.run([self._control], input=f"{line}\n", env={**os.environ, **self.environment},
                              capture_output=True, text=True, timeout=30)
        return done.stdout.strip()

    def servers(self) -> list[str]:
        """The MPS servers running: one per client user once a CUDA client has connected, none while MPS is not in
        effect (the evidence a benchmark records)."""
        return self.command("get_server_list").split()

    def stop(self) -> None:
        if self._control is None:
            return
        try:
            self.command("quit")
        except subprocess.TimeoutExpired:
            pass  # a daemon that does not answer is gone with its folder; nothing of the server's depends on it
        self._remove()

    def _remove(self) -> None:
        if self.folder is not None:
            shutil.rmtree(self.folder, ignore_errors=True)
        self.folder, self._control = None, None
