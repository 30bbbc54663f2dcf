"""The Debian packages of setup/apt-packages.txt, and the shared libraries a binary resolves (ldd).

The bundled binaries (tritonserver from the nvidia-pytriton wheel, perf_analyzer from the tritonclient
wheel) link system libraries that pip cannot install; a missing one is named here with its package.
"""
from __future__ import annotations

import re
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
APT_PACKAGES = REPO_ROOT / "setup" / "apt-packages.txt"
SONAME = re.compile(r"\b[\w+-][\w.+-]*\.so(?:\.\w+)*")
# `libb64.so.0d => not found`, `libz.so.1 => /lib/x86_64-linux-gnu/libz.so.1 (0x...)`, `/lib64/ld-linux-x86-64.so.2 (0x...)`
LDD_LINE = re.compile(r"^\s*(?P<name>\S+)(?:\s+=>\s+(?P<path>.*?))?(?:\s+\(0x[0-9a-f]+\))?\s*$")


@dataclass(frozen=True)
class AptPackage:
    name: str
    comment: str

    @property
    def libraries(self) -> tuple[str, ...]:
        """The shared libraries the comment says this package provides."""
        return tuple(SONAME.findall(self.comment.split(":")[0]))


def read_apt_packages(path: Path = APT_PACKAGES) -> list[AptPackage]:
    """`package  # libraries: why` lines; blank lines and whole-line comments are skipped."""
    packages = []
    for line in path.read_text(encoding="utf-8").splitlines():
        name, _, comment = line.partition("#")
        if name.strip():
            packages.append(AptPackage(name.strip(), comment.strip()))
    return packages


def shared_libraries(binary: Path, env: Mapping[str, str]) -> dict[str, str | None]:
    """Every shared library ``binary`` loads under ``env`` (its LD_LIBRARY_PATH counts): name -> path, None if not found."""
    result = subprocess.run(["ldd", str(binary)], env=dict(env), capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"ldd {binary} failed: {(result.stderr or result.stdout).strip()}")
    libraries: dict[str, str | None] = {}
    for line in result.stdout.splitlines():
        match = LDD_LINE.match(line)
        if match is None or match["name"].startswith("linux-vdso"):
            continue
        path = match["path"] if match["path"] is not None else match["name"]
        libraries[Path(match["name"]).name] = None if path == "not found" else path
    return libraries


def missing_libraries_error(name: str, binary: Path, libraries: Mapping[str, str | None],
                            packages: Sequence[AptPackage] | None = None) -> str | None:
    """One line naming each library of ``shared_libraries(binary, ...)`` that did not resolve and the package
    that provides it; None if all resolved."""
    missing = [library for library, path in libraries.items() if path is None]
    if not missing:
        return None
    packages = read_apt_packages() if packages is None else packages
    parts = []
    for library in missing:
        package = next((p.name for p in packages if library in p.libraries), None)
        parts.append(f"{library} (Debian package {package})" if package else
                     f"{library} (no package of {APT_PACKAGES.relative_to(REPO_ROOT)} provides it: add the one that does)")
    return (f"{name} ({binary}) cannot load {', '.join(parts)}: "
            "run `make setup` (setup/system-packages.sh installs the packages of setup/apt-packages.txt)")
