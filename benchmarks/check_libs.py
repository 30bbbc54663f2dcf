"""`python -m benchmarks check-libs`: do the bundled binaries resolve every shared library? (`make setup` runs it.)

tritonserver, its Python backend and backend stub come from the nvidia-pytriton wheel, perf_analyzer from the
tritonclient wheel; each is checked under the LD_LIBRARY_PATH it runs with. A library that does not resolve
is named with the Debian package of setup/apt-packages.txt that provides it.
"""
from __future__ import annotations

import argparse
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from benchmarks.perf_analyzer import PerfAnalyzerUnavailable, perf_analyzer_binary, perf_library_environment
from common.system_libs import APT_PACKAGES, missing_libraries_error, read_apt_packages, shared_libraries
from serving.triton_runtime import TritonNotInstalled, find_triton_install, server_environment


@dataclass(frozen=True)
class BundledBinary:
    name: str
    path: Path
    env: Mapping[str, str]


def bundled_binaries() -> list[BundledBinary]:
    """The native files the project runs from its wheels, with the environment each runs in."""
    install = find_triton_install()
    server_env = server_environment(install)
    return [
        BundledBinary("tritonserver", install.binary, server_env),
        BundledBinary("Python backend", install.python_backend / "libtriton_python.so", server_env),
        BundledBinary("Python-backend stub", install.stub, server_env),
        BundledBinary("perf_analyzer", perf_analyzer_binary(), perf_library_environment()),
    ]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--packages", type=Path, default=APT_PACKAGES, help="the package list (default: %(default)s)")


def main(args: argparse.Namespace) -> int:
    try:
        binaries = bundled_binaries()
    except (TritonNotInstalled, PerfAnalyzerUnavailable) as error:
        print(f"error: {error}")
        return 1
    packages = read_apt_packages(args.packages)
    failed = 0
    for binary in binaries:
        libraries = shared_libraries(binary.path, binary.env)
        problem = missing_libraries_error(binary.name, binary.path, libraries, packages)
        if problem:
            print(f"error: {problem}")
            failed += 1
        else:
            print(f"ok  {binary.name}: all {len(libraries)} shared libraries resolve")
    return 1 if failed else 0
