"""Typed options: build dataclasses from plain data (YAML), checking keys and types.

The bottom of the import graph: component modules (mixers, data sources, heads,
objectives) declare their options as dataclasses and convert plain mappings with
:func:`convert`, so they never import the run config that composes them. Unknown keys
are errors naming the closest valid key; values of the wrong type are errors naming
the key, the value and the expected type.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any, Union

from seqlab.errors import ConfigError
from seqlab.registry import closest


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if origin is not None:
        return f"{origin.__name__}[{', '.join(_type_name(a) for a in typing.get_args(tp))}]"
    return "null" if tp is type(None) else getattr(tp, "__name__", str(tp))


def _check(tp: Any, value: Any, key: str, source: str) -> Any:
    """Convert ``value`` to type ``tp`` or raise a ConfigError naming ``key``."""
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        errors = []
        for option in typing.get_args(tp):
            try:
                return _check(option, value, key, source)
            except ConfigError as e:
                errors.append(e)
        raise _type_error(tp, value, key, source)
    if tp is Any:
        return value
    if tp is type(None):
        if value is None:
            return None
        raise _type_error(tp, value, key, source)
    if dataclasses.is_dataclass(tp):
        return convert(tp, value, key, source)
    if origin is list:
        if not isinstance(value, list):
            raise _type_error(tp, value, key, source)
        (item,) = typing.get_args(tp)
        return [_check(item, v, f"{key}[{i}]", source) for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise _type_error(tp, value, key, source)
        _, item = typing.get_args(tp)
        return {str(k): _check(item, v, f"{key}.{k}", source) for k, v in value.items()}
    if tp is dict:
        if not isinstance(value, dict):
            raise _type_error(tp, value, key, source)
        return dict(value)
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # PyYAML reads "1e-3" as a string (YAML 1.1)
            try:
                return float(value)
            except ValueError:
                pass
    elif tp is str:
        if isinstance(value, str):
            return value
    raise _type_error(tp, value, key, source)


def _type_error(tp: Any, value: Any, key: str, source: str) -> ConfigError:
    return ConfigError(f"{source}: {key} must be {_type_name(tp)}, got {value!r} "
                       f"({type(value).__name__})")


def convert(cls: type, data: Any, prefix: str, source: str = "config"):
    """Build dataclass ``cls`` from a mapping, checking keys and value types."""
    where = prefix or "the top level"
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: {where} must be a mapping, got {data!r} "
                          f"({type(data).__name__})")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls) if f.init]
    kwargs = {}
    for key, value in data.items():
        dotted = f"{prefix}.{key}" if prefix else str(key)
        if key not in names:
            valid = [f"{prefix}.{n}" if prefix else n for n in names]
            raise ConfigError(f"{source}: unknown config key {dotted!r}{closest(dotted, valid)}; "
                              f"valid keys here: {', '.join(names)}")
        kwargs[key] = _check(hints[key], value, dotted, source)
    try:
        return cls(**kwargs)
    except ConfigError as e:
        if str(e).startswith(source):
            raise
        raise ConfigError(f"{source}: {e}") from None
