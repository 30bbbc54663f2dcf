"""setup/apt-packages.txt against what the bundled binaries load (ldd, dpkg), and setup/system-packages.sh.

A fresh machine once passed every other check while perf_analyzer could not load libb64.so.0d: these tests
fail when a bundled binary links a library that no listed package provides or that is not installed.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from benchmarks.check_libs import bundled_binaries
from benchmarks.perf_analyzer import perf_analyzer_binary
from common.system_libs import APT_PACKAGES, REPO_ROOT, AptPackage, missing_libraries_error, read_apt_packages, shared_libraries

SCRIPT = REPO_ROOT / "setup" / "system-packages.sh"


def dpkg_owner(path: str) -> str | None:
    """The installed Debian package that owns ``path`` (merged /usr: dpkg may know it as /lib/... or /usr/lib/...)."""
    candidates = {path, os.path.realpath(path)}
    candidates |= {c.removeprefix("/usr") if c.startswith("/usr/") else f"/usr{c}" for c in candidates}
    for candidate in sorted(candidates):
        found = subprocess.run(["dpkg-query", "-S", candidate], capture_output=True, text=True, check=False)
        owners = [line.split(":")[0] for line in found.stdout.splitlines() if not line.startswith("diversion")]
        if found.returncode == 0 and owners:
            return owners[0]
    return None


def from_python(path: str) -> bool:
    """Libraries of the wheels in this environment, and the interpreter's own libpython."""
    return Path(path).resolve().is_relative_to(Path(sys.prefix).resolve()) or Path(path).name.startswith("libpython")


def test_package_list_parses() -> None:
    packages = {package.name: package for package in read_apt_packages()}
    assert packages["libb64-0d"].libraries == ("libb64.so.0d",)
    assert "libcrypto.so.3" in packages["libssl3"].libraries and "ld-linux-x86-64.so.2" in packages["libc6"].libraries
    assert all(package.comment for package in packages.values()), "every package says why it is needed"


def test_listed_packages_are_installed() -> None:
    for package in read_apt_packages():
        status = subprocess.run(["dpkg-query", "-W", "-f=${Status}", package.name], capture_output=True, text=True, check=False)
        assert status.stdout == "install ok installed", f"{package.name} is not installed: run `make setup`"


@pytest.mark.parametrize("binary", bundled_binaries(), ids=lambda binary: binary.name)
def test_bundled_binary_resolves_every_library_from_a_listed_package(binary) -> None:
    packages = {package.name: package for package in read_apt_packages()}
    libraries = shared_libraries(binary.path, binary.env)
    problem = missing_libraries_error(binary.name, binary.path, libraries)
    assert problem is None, problem
    system = {library: path for library, path in libraries.items() if path is not None and not from_python(path)}
    assert system, f"ldd found no system library for {binary.path}"
    for library, path in system.items():
        owner = dpkg_owner(path)
        assert owner in packages, f"{binary.name} loads {path} of package {owner}, which {APT_PACKAGES.name} does not list"
        assert library in packages[owner].libraries, f"{APT_PACKAGES.name}: the comment of {owner} should name {library}"


def test_an_unresolved_library_is_named_with_its_package() -> None:
    # Without the CUDA runtime wheel's folder on LD_LIBRARY_PATH, perf_analyzer's libcudart.so.12 does not resolve.
    binary = perf_analyzer_binary()
    libraries = shared_libraries(binary, {"PATH": os.environ["PATH"]})
    assert libraries["libcudart.so.12"] is None
    unlisted = missing_libraries_error("perf_analyzer", binary, libraries)
    assert unlisted is not None and "libcudart.so.12 (no package of setup/apt-packages.txt provides it" in unlisted
    listed = missing_libraries_error("perf_analyzer", binary, libraries, [AptPackage("cuda-runtime", "libcudart.so.12: test")])
    assert listed is not None and "libcudart.so.12 (Debian package cuda-runtime)" in listed and "make setup" in listed


def test_setup_script_without_root_prints_the_one_command_to_run() -> None:
    # Not tmp_path: pytest's base folder is private to this user, and as root the script runs as nobody here.
    with tempfile.TemporaryDirectory() as folder:
        os.chmod(folder, 0o755)
        script = Path(folder, SCRIPT.name)
        shutil.copy2(SCRIPT, script)
        Path(folder, "apt-packages.txt").write_text("# comment\nbash  # installed everywhere\ncloudtune-absent-package  # test\n")
        command = [str(script), sys.executable]
        if os.geteuid() == 0:  # as root the script would install
            command = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", *command]
        result = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "setup: missing Debian packages (cloudtune-absent-package); "
        "run: sudo apt-get update && sudo apt-get install -y cloudtune-absent-package"]
