"""API keys: only their SHA-256 is stored; a presented key is hashed and looked up.

Entries come from a file (`--keys-file`) or the environment variable CLOUDTUNE_API_KEYS, one per line
(or separated by ';' in the variable), '#' starts a comment:

    NAME SHA256-OF-THE-KEY [REQUESTS-PER-MINUTE]

Keys are 32 random bytes (`python -m api key`), so a plain SHA-256 is enough: with that much entropy the hash
cannot be inverted by guessing, and the file reveals no key. The same hash is `printf %s KEY | sha256sum`.
"""
from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass
from pathlib import Path

ENV_VAR = "CLOUDTUNE_API_KEYS"
KEY_PREFIX = "ct_"
MAX_KEY_LENGTH = 256
_NAME = re.compile(r"[A-Za-z0-9_.@-]{1,64}")
_HASH = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class ApiKey:
    name: str
    requests_per_minute: float | None = None  # None: the configured default


class KeyStore:
    def __init__(self, keys: dict[str, ApiKey]) -> None:
        self._by_hash = dict(keys)

    def __len__(self) -> int:
        return len(self._by_hash)

    def identify(self, presented: str) -> ApiKey | None:
        if not presented or len(presented) > MAX_KEY_LENGTH:
            return None
        return self._by_hash.get(hash_key(presented))


def new_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def entry_line(name: str, key: str, requests_per_minute: float | None = None) -> str:
    if not _NAME.fullmatch(name):
        raise ValueError(f"key name {name!r}: use 1-64 letters, digits and . _ @ -")
    return " ".join([name, hash_key(key), *([f"{requests_per_minute:g}"] if requests_per_minute is not None else [])])


def parse_entries(text: str, source: str) -> dict[str, ApiKey]:
    """{sha256: ApiKey} of every entry; a malformed entry raises ValueError naming ``source`` and the entry."""
    keys: dict[str, ApiKey] = {}
    for number, raw in enumerate(re.split(r"[\n;]", text), 1):
        words = raw.split("#", 1)[0].split()
        if not words:
            continue
        where = f"{source}, entry {number}"
        if len(words) not in (2, 3) or not _NAME.fullmatch(words[0]) or not _HASH.fullmatch(words[1]):
            raise ValueError(f"{where}: expected 'NAME SHA256-HEX [REQUESTS-PER-MINUTE]'")
        rate = None
        if len(words) == 3:
            try:
                rate = float(words[2])
            except ValueError:
                rate = -1.0
            if not rate > 0:
                raise ValueError(f"{where}: requests per minute must be a positive number, got {words[2]!r}")
        if words[1] in keys:
            raise ValueError(f"{where}: the same key is listed twice ({keys[words[1]].name} and {words[0]})")
        keys[words[1]] = ApiKey(words[0], rate)
    return keys


def load_keys(path: Path | None, environment: str | None) -> KeyStore:
    """The keys of the file and of the environment variable's value together."""
    keys: dict[str, ApiKey] = {}
    if path is not None:
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as error:
            raise ValueError(f"cannot read the keys file: {error}") from error
        keys.update(parse_entries(text, str(path)))
    if environment:
        keys.update(parse_entries(environment, ENV_VAR))
    return KeyStore(keys)
