"""Typed settings: each command's settings are one dataclass, the single source of its defaults.

A value comes from, later winning: the dataclass default, a preset file (YAML, ``--config``
or ``CONFIG=``), then the command line (what ``make`` variables become). The command line is
generated from the dataclasses, as TRL's ``TrlParser`` does: one flag per field
(``max_tokens`` -> ``--max-tokens``; a field of a stage section -> ``--align.learning-rate``),
its help from ``field(metadata={"help": ...})``. Unknown keys, in a file or on the command
line, are errors that name where they came from.

Presets are files under ``configs/``: a mapping of field names, or for a command with
several sections (the trainer's run, align, activate, grpo, eval), a mapping of sections.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import types
import typing
from pathlib import Path
from typing import Any, Mapping

from synth.errors import UserError


class ConfigError(UserError):
    """A preset file or a flag that does not fit the settings: names the file/flag and the key."""


def help_of(f: dataclasses.Field) -> str:
    return f.metadata.get("help", "")


def field_types(cls) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls) if f.init}


def _optional(tp) -> tuple[Any, bool]:
    """(the inner type, whether None is allowed) of ``X | None``."""
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return (args[0] if len(args) == 1 else str), len(args) < len(typing.get_args(tp))
    return tp, False


def coerce(tp, value: Any, where: str) -> Any:
    """``value`` (from YAML, JSON or a command-line string) as type ``tp``; ConfigError if it
    cannot be one."""
    inner, nullable = _optional(tp)
    if value is None or (nullable and isinstance(value, str) and value.lower() in ("", "none", "null")):
        if nullable:
            return None
        raise ConfigError(f"{where}: a value is required")
    origin = typing.get_origin(inner)
    try:
        if inner is bool:
            if isinstance(value, bool):
                return value
            if str(value).lower() in ("1", "true", "yes", "on"):
                return True
            if str(value).lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError(value)
        if inner in (int, float):
            if isinstance(value, bool) or (inner is int and isinstance(value, float) and not value.is_integer()):
                raise ValueError(value)
            return inner(value)
        if inner is str:
            if not isinstance(value, (str, int, float)):
                raise ValueError(value)
            return str(value)
        if origin in (tuple, list):
            items = [v.strip() for v in value.split(",") if v.strip()] if isinstance(value, str) else value
            if not isinstance(items, (list, tuple)):
                raise ValueError(value)
            (elem, *_rest) = typing.get_args(inner) or (str,)
            return origin(coerce(elem, v, where) for v in items)
        if inner is dict or origin is dict:
            data = json.loads(value) if isinstance(value, str) else value
            if not isinstance(data, dict):
                raise ValueError(value)
            return data
    except (ValueError, TypeError, json.JSONDecodeError):
        raise ConfigError(f"{where}: {value!r} is not a valid {getattr(inner, '__name__', inner)}") from None
    return value


def build(cls, *layers: tuple[str, Mapping[str, Any]]):
    """An instance of ``cls`` from its defaults and ``layers`` of (source name, mapping),
    later layers winning. Keys that are not fields of ``cls`` are errors naming the source."""
    types_ = field_types(cls)
    values: dict[str, Any] = {}
    for source, mapping in layers:
        unknown = sorted(set(mapping) - set(types_))
        if unknown:
            raise ConfigError(f"{source}: unknown setting {unknown[0]!r} for {cls.__name__}; "
                              f"known: {', '.join(sorted(types_))}")
        for key, value in mapping.items():
            values[key] = coerce(types_[key], value, f"{source}: {key}")
    try:
        return cls(**values)
    except TypeError as e:  # a required field missing
        raise ConfigError(f"{cls.__name__}: {e}") from None


def load_preset(path: str | Path) -> dict[str, Any]:
    """A preset file's mapping; a missing file or non-mapping YAML names the file."""
    import yaml

    path = Path(path)
    if not path.is_file():
        presets = sorted(str(p) for p in Path("configs").rglob("*.yaml")) if Path("configs").is_dir() else []
        raise ConfigError(f"config file {path} does not exist" + (f"; presets: {', '.join(presets)}" if presets else ""))
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = f":{mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{path}{line}: not valid YAML ({getattr(e, 'problem', e)})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a preset is a mapping of settings, not a {type(data).__name__}")
    return data


def section_of(preset: Mapping[str, Any], section: str, path: str) -> dict[str, Any]:
    value = preset.get(section) or {}
    if not isinstance(value, dict):
        raise ConfigError(f"{path}: section {section!r} must be a mapping")
    return dict(value)


def add_arguments(parser: argparse.ArgumentParser, cls, section: str | None = None,
                  skip: tuple[str, ...] = ()) -> None:
    """One flag per field of ``cls``; parsed values land in the namespace as ``section.name``
    (or ``name``) only when given, so the defaults stay in the dataclass."""
    group = parser.add_argument_group(section or cls.__name__)
    types_ = field_types(cls)
    for f in dataclasses.fields(cls):
        if not f.init or f.name in skip:
            continue
        dest = f"{section}.{f.name}" if section else f.name
        flag = "--" + (f"{section}." if section else "") + f.name.replace("_", "-")
        flags = list(dict.fromkeys([flag, *f.metadata.get("flags", ())]))  # an alias equal to the flag once
        inner, _ = _optional(types_[f.name])
        default = f.default if f.default is not dataclasses.MISSING else "(computed)"
        required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        help_ = f"{help_of(f)} ({'required' if required else f'default: {default}'})".strip()
        if inner is bool:
            group.add_argument(*flags, dest=dest, action=argparse.BooleanOptionalAction,
                               default=argparse.SUPPRESS, help=help_)
        else:
            group.add_argument(*flags, dest=dest, default=argparse.SUPPRESS, metavar=f.name.upper(),
                               help=help_)


def given(namespace: argparse.Namespace, section: str | None = None) -> dict[str, Any]:
    """The flags given on the command line for ``section`` (or the top level), as raw values."""
    out = {}
    for dest, value in vars(namespace).items():
        head, dot, name = dest.partition(".")
        if section is None and not dot:
            out[dest] = value
        elif section is not None and dot and head == section:
            out[name] = value
    return out


def to_dict(config) -> dict[str, Any]:
    """A config as plain JSON values (tuples as lists), for manifests and DRY_RUN."""
    return json.loads(json.dumps(dataclasses.asdict(config), default=str))
