"""Typed configs: dataclass <-> JSON, strictly.

Every model and training run has one `@dataclass` config with typed fields and a docstring per field. On disk
a config is a JSON object; loading it checks every key and every value's type, and an unknown or mistyped
key raises an `InputError` that lists the valid keys. Nested dataclass fields load from nested objects.
"""

from __future__ import annotations

import dataclasses
import json
import os
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

from pixal3d.atomic import write_json_atomic
from pixal3d.errors import InputError

T = TypeVar("T")


def config_to_dict(config: Any) -> dict[str, Any]:
    """A dataclass config -> a JSON-ready dict (nested dataclasses become dicts, tuples become lists)."""
    if not dataclasses.is_dataclass(config):
        raise TypeError(f"expected a dataclass instance, got {type(config).__name__}")
    return json.loads(json.dumps(dataclasses.asdict(config)))


def _check_value(name: str, value: Any, annotation: Any, where: str) -> Any:
    """Validate (and convert lists to tuples / dicts to dataclasses) one value against its annotation."""
    origin = typing.get_origin(annotation)
    if annotation is Any:
        return value
    if dataclasses.is_dataclass(annotation):
        if not isinstance(value, dict):
            raise InputError(f"{where}: '{name}' must be an object for {annotation.__name__}, got {value!r}")
        return config_from_dict(annotation, value, where=f"{where}.{name}")
    if origin in (typing.Union, types.UnionType):
        errors = []
        for option in typing.get_args(annotation):
            if option is type(None):
                if value is None:
                    return None
                continue
            try:
                return _check_value(name, value, option, where)
            except InputError as err:
                errors.append(str(err))
        raise InputError(f"{where}: '{name}' = {value!r} matches none of {annotation} ({'; '.join(errors)})")
    if origin is typing.Literal:
        allowed = typing.get_args(annotation)
        if value not in allowed:
            raise InputError(f"{where}: '{name}' must be one of {list(allowed)}, got {value!r}")
        return value
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise InputError(f"{where}: '{name}' must be a list, got {value!r}")
        args = typing.get_args(annotation)
        item = args[0] if args else Any
        if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
            item = args[0]
        elif origin is tuple and args:
            if len(args) != len(value):
                raise InputError(f"{where}: '{name}' must have {len(args)} items, got {value!r}")
            return tuple(_check_value(name, v, a, where) for v, a in zip(value, args, strict=True))
        items = [_check_value(name, v, item, where) for v in value]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, dict):
            raise InputError(f"{where}: '{name}' must be an object, got {value!r}")
        return dict(value)
    if annotation is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise InputError(f"{where}: '{name}' must be a number, got {value!r}")
        return float(value)
    if annotation is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise InputError(f"{where}: '{name}' must be an integer, got {value!r}")
        return value
    if annotation in (bool, str):
        if not isinstance(value, annotation):
            raise InputError(f"{where}: '{name}' must be {annotation.__name__}, got {value!r}")
        return value
    return value


def config_from_dict(cls: type[T], data: dict[str, Any], where: str | None = None) -> T:
    """Build dataclass `cls` from `data`, rejecting unknown keys and wrong types (missing keys keep defaults)."""
    where = where or cls.__name__
    if not isinstance(data, dict):
        raise InputError(f"{where}: expected a JSON object, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise InputError(f"{where}: unknown key(s) {unknown}; valid keys are {sorted(fields)}")
    kwargs = {name: _check_value(name, value, hints[name], where) for name, value in data.items()}
    try:
        return cls(**kwargs)
    except TypeError as err:
        raise InputError(f"{where}: {err}") from err


def read_json(path: str | os.PathLike, missing: str, format: str | None = None,
              version: int | None = None) -> Any:
    """Read a JSON file; with `format`, it must be an object whose "format" and "version" are these.

    Args:
        path: the file.
        missing: the `InputError` message when `path` is not a file (say what the folder should have held).
        format, version: the expected header of a pixal3d JSON file (`pipeline.json`, `checkpoint.json`).

    Raises:
        InputError: the file is missing, truncated, not JSON, or of another format or version.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(missing)
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise InputError(f"{path} is truncated or not valid JSON ({err})") from err
    if format is not None and (not isinstance(data, dict) or data.get("format") != format
                               or data.get("version") != version):
        raise InputError(f"{path} is not a version-{version} {format} file")
    return data


def load_config(cls: type[T], path: str | os.PathLike) -> T:
    """Read a JSON config file into dataclass `cls` (strict: see `config_from_dict`)."""
    data = read_json(path, missing=f"config file not found: {path}")
    return config_from_dict(cls, data, where=str(path))


def save_config(config: Any, path: str | os.PathLike) -> None:
    """Write a dataclass config as JSON, atomically."""
    write_json_atomic(path, config_to_dict(config))
