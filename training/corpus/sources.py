"""Debian packages -> the audio files they ship, each with a stable, readable track id.

Files are found with ``dpkg -L``. Two packages keep their music inside a Quake-style ``.pk3``
(a zip): its audio members are sources too, named ``<archive>!<member>`` and, for the copyright
lookup, placed where the archive sits (``.../base/0music.pk3!music/x.ogg`` -> ``.../base/music/x.ogg``,
the path the copyright file names). Listed paths that lead to one file (drascula-music's
per-language folders are symlinks to one folder) are one source; the other paths are reported
as duplicates of it.

Track ids: ``<game>-<file stem>``, lower case, runs of other characters as ``-``; the game is the
package name without ``-music``/``-music-ogg``/``-data`` and a version (``wesnoth-1.16-music`` -> ``wesnoth``,
``supertux-data`` -> ``supertux``). A game-data package listed with ``music_only`` contributes only the files
under a folder named ``music``.
Stems that collide within a package take their folder names in front until they differ.
"""
from __future__ import annotations

import os
import re
import subprocess
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from training.audio_io import AUDIO_EXTENSIONS, AudioError, load_audio

ARCHIVE_EXTENSIONS = (".pk3", ".zip")
MEMBER_SEPARATOR = "!"


@dataclass(frozen=True)
class Source:
    """One audio file: on disk (``member`` None) or inside the zip archive ``file``."""

    package: str
    file: Path
    member: str | None = None

    @property
    def source_path(self) -> str:
        return f"{self.file}{MEMBER_SEPARATOR}{self.member}" if self.member else str(self.file)

    @property
    def installed_path(self) -> str:
        """Where the file would sit unpacked: what copyright files name."""
        return str(self.file.parent / self.member) if self.member else str(self.file)

    def size(self) -> int:
        """Bytes of the (compressed) file; 0 when unreadable, which decoding will report."""
        try:
            if self.member is None:
                return self.file.stat().st_size
            with zipfile.ZipFile(self.file) as archive:
                return archive.getinfo(self.member).compress_size
        except (OSError, zipfile.BadZipFile, KeyError):
            return 0

    def read_bytes(self) -> bytes:
        if self.member is None:
            return self.file.read_bytes()
        with zipfile.ZipFile(self.file) as archive:
            return archive.read(self.member)

    def decode(self) -> np.ndarray:
        """24 kHz mono float32 through ``load_audio``; raises AudioError with the source path."""
        if self.member is None:
            return load_audio(self.file)
        try:
            data = self.read_bytes()
        except (OSError, zipfile.BadZipFile, KeyError) as exc:
            raise AudioError(f"{self.source_path}: cannot read archive member ({exc})") from exc
        # load_audio reads paths: the member goes through a temporary file named like it (soundfile
        # picks the format from the content, the suffix only helps libsndfile's guess).
        with tempfile.NamedTemporaryFile(suffix=Path(self.member).suffix) as handle:
            handle.write(data)
            handle.flush()
            try:
                return load_audio(handle.name)
            except AudioError as exc:
                raise AudioError(f"{self.source_path}: {str(exc).split(': ', 1)[-1]}") from exc


@dataclass(frozen=True)
class Listing:
    """A package's audio: its sources by track id, and listed paths that are links to one of them."""

    package: str
    sources: dict[str, Source]
    aliases: list[tuple[str, str]]  # (listed path, track id of the source it leads to)
    errors: list[tuple[str, str]]  # (path, why it could not be listed)


def installed(package: str) -> bool:
    result = subprocess.run(["dpkg-query", "-W", "-f=${Status}", package], capture_output=True, text=True, check=False)
    return result.returncode == 0 and result.stdout.strip().endswith(" installed")


def ensure_installed(packages: list[str]) -> list[str]:
    """Install the missing packages with apt-get when root; returns those it installed.

    Not root: exits with the one command that would install them.
    """
    missing = [package for package in packages if not installed(package)]
    if not missing:
        return []
    # Without recommends: game-data packages recommend their games (and those a desktop stack); the audio needs neither.
    command = ["apt-get", "install", "-y", "--no-install-recommends", *missing]
    if os.geteuid() != 0:
        raise SystemExit(f"packages not installed: {' '.join(missing)}; install them with: sudo {' '.join(command)}")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    if subprocess.run(command, env=env, check=False).returncode != 0:
        # Stale package lists are the usual reason; one refresh, then the error is apt's own.
        subprocess.run(["apt-get", "update"], env=env, check=False)
        if subprocess.run(command, env=env, check=False).returncode != 0:
            raise SystemExit(f"apt-get could not install {' '.join(missing)}: see its output above")
    return missing


def dpkg_files(package: str) -> list[Path]:
    result = subprocess.run(["dpkg", "-L", package], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise SystemExit(f"dpkg -L {package} failed: {result.stderr.strip() or result.stdout.strip()}")
    return sorted(Path(line) for line in result.stdout.splitlines() if line.startswith("/"))


def game_name(package: str) -> str:
    name = re.sub(r"-(music(-ogg)?|data)$", "", package)
    return re.sub(r"-\d+(\.\d+)*$", "", name)


def in_music_folder(path: str) -> bool:
    return any(part.lower() == "music" for part in Path(path).parts[:-1])


def list_package(package: str, paths: list[Path], music_only: bool = False) -> Listing:
    """The audio among ``paths`` (a package's files), with track ids; see the module doc."""
    candidates: list[tuple[str, Source]] = []  # (listed path, source)
    errors: list[tuple[str, str]] = []
    for path in paths:
        if not path.is_file():
            continue
        real = path.resolve()
        suffix = real.suffix.lower()
        if suffix in AUDIO_EXTENSIONS:
            candidates.append((str(path), Source(package, real)))
        elif suffix in ARCHIVE_EXTENSIONS:
            try:
                with zipfile.ZipFile(real) as archive:
                    members = sorted(name for name in archive.namelist() if Path(name).suffix.lower() in AUDIO_EXTENSIONS)
            except (OSError, zipfile.BadZipFile) as exc:
                errors.append((str(path), f"unreadable: cannot open archive ({exc})"))
                continue
            candidates += [(f"{path}{MEMBER_SEPARATOR}{member}", Source(package, real, member)) for member in members]
    if music_only:
        candidates = [(listed, source) for listed, source in candidates if in_music_folder(source.installed_path)]
    # One source per file (links resolved); other listed paths to it are aliases.
    by_source: dict[Source, list[str]] = {}
    for listed, source in candidates:
        by_source.setdefault(source, []).append(listed)
    ids = track_ids(package, list(by_source))
    sources = {ids[source]: source for source in by_source}
    aliases = sorted(
        (listed, ids[source]) for source, listed_paths in by_source.items() for listed in listed_paths if listed != source.source_path
    )
    return Listing(package, dict(sorted(sources.items())), aliases, errors)


def track_ids(package: str, sources: list[Source]) -> dict[Source, str]:
    """Unique ids within a package (see the module doc); deterministic for a given file list."""
    game = slug(game_name(package))

    def name(source: Source, folders: int) -> str:
        parts = Path(source.installed_path).with_suffix("").parts
        return slug("-".join((game, *parts[len(parts) - 1 - folders :])))

    ids: dict[Source, str] = {}
    pending = sorted(sources, key=lambda s: s.source_path)
    folders = 0
    while pending:
        names = [name(source, folders) for source in pending]
        taken = set(ids.values())
        for source, text in zip(pending, names):
            if names.count(text) == 1 and text not in taken:
                ids[source] = text
        pending = [source for source in pending if source not in ids]
        folders += 1
        if pending and folders >= max(len(Path(s.installed_path).parts) for s in pending):
            # Same path up to case or punctuation: numbered in path order.
            taken = set(ids.values())
            for source in pending:
                index = 2
                while f"{name(source, folders)}-{index}" in taken:
                    index += 1
                ids[source] = f"{name(source, folders)}-{index}"
                taken.add(ids[source])
            break
    return ids


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "track"
