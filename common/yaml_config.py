"""Dataclass configs read from YAML, strict about unknown keys so typos fail loudly."""
from __future__ import annotations

import dataclasses
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

T = TypeVar("T")


def from_dict(cls: type[T], data: dict[str, Any] | None) -> T:
    """Build dataclass ``cls`` from a mapping, recursing into nested dataclass fields."""
    data = dict(data or {})
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"{cls.__name__}: unknown keys {unknown}; known keys are {sorted(known)}")
    kwargs: dict[str, Any] = {}
    for name, value in data.items():
        hint = hints[name]
        if dataclasses.is_dataclass(hint) and isinstance(value, dict):
            value = from_dict(hint, value)
        elif typing.get_origin(hint) is tuple and isinstance(value, list):
            value = tuple(value)
        kwargs[name] = value
    return cls(**kwargs)


def load_yaml(cls: type[T], path: str | Path) -> T:
    with open(path, encoding="utf-8") as handle:
        return from_dict(cls, yaml.safe_load(handle))


def to_dict(obj: Any) -> dict[str, Any]:
    return dataclasses.asdict(obj)


def save_yaml(obj: Any, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(to_dict(obj), sort_keys=False), encoding="utf-8")


def replaced(obj: T, key: str, value: str) -> T:
    """A copy of dataclass ``obj`` with the dotted ``key`` set to ``value``, read as the type the key holds now
    (``typed_like``): nested dataclasses by field name, a dict field by entry. A key or value that does not fit
    is a ValueError of one line (what the command-line overrides of the sweep and the GPU benchmark print)."""
    head, _, rest = key.partition(".")
    if isinstance(obj, dict):
        if rest:
            raise ValueError(f"{head!r} is an entry, not a section")
        return {**obj, head: value}  # type: ignore[return-value]
    names = [field.name for field in dataclasses.fields(obj)]  # type: ignore[arg-type]
    if head not in names:
        raise ValueError(f"{head!r} is not a section of {type(obj).__name__}" if rest else f"no such key {head!r}; {type(obj).__name__} has {names}")
    current = getattr(obj, head)
    if rest and not (dataclasses.is_dataclass(current) or isinstance(current, dict)):
        raise ValueError(f"{head!r} is not a section of {type(obj).__name__}")
    return dataclasses.replace(obj, **{head: replaced(current, rest, value) if rest else typed_like(current, value, head)})  # type: ignore[type-var]


def typed_like(current: Any, value: str, key: str) -> Any:
    """``value`` as the type of the key's current value (YAML reads 5e-4 as a string; a float key must not);
    a tuple of numbers from ``1,2,3``; an unset (None) key as YAML reads it."""
    if dataclasses.is_dataclass(current) or isinstance(current, dict):
        raise ValueError(f"{key!r} is a section: name a key inside it")
    if isinstance(current, tuple):
        if not all(isinstance(item, (int, float)) and not isinstance(item, bool) for item in current):
            raise ValueError(f"{key!r} holds sections: not settable from the command line")
        items = [item for item in value.strip("[]").split(",") if item.strip()]
        kind = float if any(isinstance(item, float) for item in current) else int
        try:
            return tuple(kind(item) for item in items)
        except ValueError:
            raise ValueError(f"{key}={value}: expected {kind.__name__}s separated by commas") from None
    try:
        if isinstance(current, bool):
            parsed = yaml.safe_load(value)
            if not isinstance(parsed, bool):
                raise ValueError
            return parsed
        if isinstance(current, float):
            return float(value)
        if isinstance(current, int):
            return int(value)
    except ValueError:
        raise ValueError(f"{key}={value}: expected a {type(current).__name__}") from None
    return value if isinstance(current, str) else yaml.safe_load(value)
