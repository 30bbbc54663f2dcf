"""The licence line of a packaged file, from its package's /usr/share/doc/<package>/copyright.

Machine-readable copyright files (DEP-5, a ``Format:`` header): the first line of the ``License:``
field of the last ``Files:`` stanza whose patterns match the file (later stanzas override earlier
ones, as the format specifies), else of the first ``Files:`` stanza. Patterns are relative to the
upstream source tree, which is not where the file is installed, so a pattern matches when it
matches any trailing part of the installed path (``music/*.ogg`` matches
``/usr/share/hyperrogue/music/hr3-caves.ogg``).

Free-form copyright files (wesnoth, nexuiz, singularity): the first line that mentions a licence
in a few words (``it under the terms of the GNU General Public License version 2``), whitespace
collapsed, since there is no field to read.
"""
from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass
from pathlib import Path

DOC_ROOT = Path("/usr/share/doc")
_FIELD = re.compile(r"^([A-Za-z][A-Za-z0-9-]*):[ \t]*(.*)$")
_MENTION = re.compile(r"licen[cs]e", re.IGNORECASE)
_MAX_CHARS = 160


@dataclass(frozen=True)
class Stanza:
    patterns: tuple[str, ...]
    licence: str


def parse_dep5(text: str) -> list[Stanza] | None:
    """The ``Files:`` stanzas that carry a licence, or None when ``text`` is not DEP-5."""
    paragraphs = [_fields(block) for block in re.split(r"\n[ \t]*\n", text.strip()) if block.strip()]
    if not paragraphs or "format" not in paragraphs[0]:
        return None
    return [
        Stanza(tuple(fields["files"].split()), fields["license"].splitlines()[0].strip() if fields["license"].strip() else "")
        for fields in paragraphs
        if "files" in fields and "license" in fields
    ]


def _fields(block: str) -> dict[str, str]:
    fields: dict[str, str] = {}
    name = None
    for line in block.splitlines():
        match = _FIELD.match(line)
        if match and not line[0].isspace():
            name = match.group(1).lower()
            fields[name] = match.group(2)
        elif name is not None:
            fields[name] += "\n" + line.strip()
    return fields


def licence_for(copyright_text: str, installed_path: str) -> str:
    stanzas = parse_dep5(copyright_text)
    if stanzas is None:
        return _free_form_licence(copyright_text)
    if not stanzas:
        return ""
    matching = [stanza for stanza in stanzas if _covers(stanza.patterns, installed_path)]
    return (matching[-1] if matching else stanzas[0]).licence


def _covers(patterns: tuple[str, ...], installed_path: str) -> bool:
    parts = installed_path.strip("/").split("/")
    tails = ["/".join(parts[start:]) for start in range(len(parts))]
    # fnmatchcase: DEP-5 patterns are case-sensitive, and its '*' also crosses '/', as fnmatch's does.
    return any(fnmatch.fnmatchcase(tail, pattern) for pattern in patterns for tail in tails)


def _free_form_licence(text: str) -> str:
    for line in text.splitlines():
        words = line.split()
        if len(words) >= 4 and _MENTION.search(line):
            return " ".join(words)[:_MAX_CHARS]
    return ""


def package_licence(package: str, installed_path: str, doc_root: Path = DOC_ROOT) -> str:
    """``licence_for`` on the package's copyright file; says so when the package has none."""
    path = doc_root / package / "copyright"
    if not path.is_file():
        return f"unknown (no {path})"
    return licence_for(path.read_text(encoding="utf-8", errors="replace"), installed_path) or f"unknown (see {path})"
