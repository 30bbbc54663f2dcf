"""The embedded server's own CUDA MPS daemon: when it starts one, what it does where the machine has none, and (on a
GPU machine) that a CUDA client of it really runs under MPS."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from common.paths import DEFAULT_REPOSITORY
from serving.cuda_mps import CONTROL, CudaMps, CudaMpsUnavailable
from serving.triton_runtime import EmbeddedTriton, serves_on_gpu

HAS_MPS = shutil.which(CONTROL) is not None


def test_gpu_configs_ask_for_mps_and_cpu_configs_do_not() -> None:
    assert serves_on_gpu(DEFAULT_REPOSITORY, "gpu")
    assert not serves_on_gpu(DEFAULT_REPOSITORY, "cpu")


def test_a_model_without_the_named_config_is_read_from_its_config_pbtxt(tmp_path: Path) -> None:
    model = tmp_path / "topk"
    (model / "configs").mkdir(parents=True)
    (model / "configs" / "cpu.pbtxt").write_text('instance_group { kind: KIND_CPU }\n', encoding="utf-8")
    (model / "config.pbtxt").write_text('instance_group { kind: KIND_GPU }\n', encoding="utf-8")
    assert not serves_on_gpu(tmp_path, "cpu")
    assert serves_on_gpu(tmp_path, "gpu")  # no configs/gpu.pbtxt: tritonserver takes config.pbtxt
    assert serves_on_gpu(tmp_path, None)


@pytest.mark.skipif(HAS_MPS, reason=f"{CONTROL} is installed here")
def test_without_the_driver_tool_mps_is_refused_by_name() -> None:
    with pytest.raises(CudaMpsUnavailable, match=CONTROL):
        CudaMps().start()


@pytest.mark.skipif(HAS_MPS, reason=f"{CONTROL} is installed here")
def test_a_server_asked_for_mps_starts_without_it_and_says_why(tmp_path: Path) -> None:
    (tmp_path / "repository").mkdir()
    with EmbeddedTriton(tmp_path / "repository", model_config_name="gpu", cuda_mps=True,
                        log_path=tmp_path / "server.log") as server:
        assert server.is_ready()
        assert CONTROL in server.cuda_mps_note
        assert server.cuda_mps_servers() is None


@pytest.mark.skipif(not (HAS_MPS and torch.cuda.is_available()), reason="needs CUDA and CUDA MPS")
def test_a_cuda_client_of_the_private_daemon_runs_under_mps() -> None:
    mps = CudaMps().start()
    try:
        # A client that holds its CUDA context until told to exit: while it lives, the daemon lists its server.
        client = "import sys, torch; torch.zeros(1, device='cuda'); torch.cuda.synchronize(); print('up', flush=True); sys.stdin.read()"
        process = subprocess.Popen([sys.executable, "-c", client], env={**os.environ, **mps.environment},
                                   stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        try:
            assert process.stdout is not None and process.stdout.readline().strip() == "up"
            assert len(mps.servers()) == 1
        finally:
            process.communicate("", timeout=60)
        assert process.returncode == 0
    finally:
        mps.stop()
    assert mps.folder is None
