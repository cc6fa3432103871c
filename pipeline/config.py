"""YAML -> dataclasses, strictly: unknown keys and values of the wrong type are errors naming the key.

`from_dict(cls, data, where)` builds any (nested) dataclass whose fields are annotated with plain
types: bool, int, float, str, Optional[...], list[...], dict[str, ...], Literal[...] or another
dataclass. `load_yaml(path)` reads with `yaml.safe_load` and reports syntax errors as one line.
"""
from __future__ import annotations

import dataclasses
import math
import reprlib
import types
import typing
from pathlib import Path
from typing import Any, Literal, TypeVar, get_args, get_origin, get_type_hints

import yaml

from pipeline.errors import ConfigError, InputError

T = TypeVar("T")


def load_yaml(path: str | Path) -> Any:
    path = Path(path)
    if not path.is_file():
        raise InputError("no such file", path)
    try:
        with open(path, encoding="utf-8") as f:
            return yaml.safe_load(f)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise InputError(f"invalid YAML: {problem}", path, line) from None
    except UnicodeDecodeError:
        raise InputError("not a UTF-8 text file", path) from None
    except RecursionError:
        raise InputError("invalid YAML: nested too deeply", path) from None
    except OSError as e:
        raise InputError(f"cannot read: {e.strerror or e}", path) from None


_REPR = reprlib.Repr()
_REPR.maxstring = _REPR.maxother = 60
_REPR.maxlevel, _REPR.maxlist, _REPR.maxdict = 2, 4, 4


def show(value: Any) -> str:
    """A short repr for messages: bounded in depth and length (a YAML alias bomb is billions of items
    deep down, and a plain repr of it would never end)."""
    return _REPR.repr(value)


def _convert(value: Any, tp: Any, key: str) -> Any:
    origin = get_origin(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        args = get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _convert(value, a, key)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0] if errors else f"{key}: bad value {show(value)}")
    if origin is Literal:
        allowed = get_args(tp)
        if not any(type(value) is type(a) and value == a for a in allowed):  # True is not 1, [..] not hashed
            raise ConfigError(f"{key}: {show(value)} is not one of {', '.join(map(repr, allowed))}")
        return value
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, key)
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {type(value).__name__}")
        args = get_args(tp)
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(value) != len(args):
                raise ConfigError(f"{key}: expected {len(args)} values, got {len(value)}")
            return tuple(_convert(v, a, f"{key}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
        inner = args[0] if args else Any
        out = [_convert(v, inner, f"{key}[{i}]") for i, v in enumerate(value)]
        return tuple(out) if origin is tuple else out
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {type(value).__name__}")
        kt, vt = get_args(tp) or (Any, Any)
        return {_convert(k, kt, f"{key}"): _convert(v, vt, f"{key}.{k}") for k, v in value.items()}
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true or false, got {show(value)}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: expected an integer, got {show(value)}")
        if not -2**63 <= value < 2**63:
            raise ConfigError(f"{key}: {show(value)} is out of range")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key}: expected a number, got {show(value)}")
        if isinstance(value, int) and not -1e308 < value < 1e308 or not math.isfinite(value):
            raise ConfigError(f"{key}: expected a finite number, got {show(value)}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a string, got {show(value)}")
        return value
    raise TypeError(f"unsupported annotation {tp!r} for {key}")


def from_dict(cls: type[T], data: Any, where: str = "") -> T:
    """Build dataclass `cls` from a mapping; `where` prefixes key names in errors ("tracker.max_age")."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{where or 'config'}: expected a mapping, got {type(data).__name__}")
    hints = get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    prefix = f"{where}." if where else ""
    for k in data:
        if k not in fields:
            raise ConfigError(f"{prefix}{k}: unknown key (known: {', '.join(sorted(fields))})")
    kwargs = {}
    for name, f in fields.items():
        if name in data:
            kwargs[name] = _convert(data[name], hints[name], prefix + name)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ConfigError(f"{prefix}{name}: missing required key")
    obj = cls(**kwargs)
    check = getattr(obj, "validate", None)
    if callable(check):
        try:
            check(prefix)
        except ValueError as e:  # detectors/ and trackers/ cannot import ConfigError
            raise ConfigError(str(e)) from None
    return obj


def to_dict(obj: Any) -> Any:
    """Dataclass -> plain dict (for checkpoints, summaries and round trips)."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    return obj


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    """detectron2-style trailing `a.b=value` overrides; values parsed as YAML scalars."""
    if overrides and not isinstance(data, dict):
        raise ConfigError(f"expected a mapping at the top level, got {type(data).__name__}")
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"{item}: an override must look like key.sub=value")
        key, raw = item.split("=", 1)
        try:
            value = yaml.safe_load(raw)
        except (yaml.YAMLError, RecursionError):
            value = raw
        node = data
        parts = key.split(".")
        for p in parts[:-1]:
            if not isinstance(node.get(p, {}), dict):
                raise ConfigError(f"{key}: {p} is not a section")
            node = node.setdefault(p, {})
        node[parts[-1]] = value
    return data


def require(cond: bool, key: str, message: str) -> None:
    """Helper for `validate()` methods: raise ConfigError naming `key` unless `cond`."""
    if not cond:
        raise ConfigError(f"{key}: {message}")
