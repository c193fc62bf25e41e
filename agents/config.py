"""Typed run configuration from a YAML preset plus command-line overrides (CleanRL/SB3-zoo style)."""

from __future__ import annotations

import argparse
import json
from dataclasses import fields, is_dataclass
from pathlib import Path
from typing import Any, TypeVar

import yaml

T = TypeVar("T")


def _flag_type(type_name: str) -> Any:
    base = type_name.split("|")[0].strip()
    return {"int": int, "float": float}.get(base, str)


def parse_config(config_class: type[T], argv: list[str] | None, description: str) -> T:
    """Build ``config_class`` (a dataclass) from ``--config preset.yaml`` and ``--field value`` flags.

    Flags are the field names with dashes; booleans take ``--flag/--no-flag``; dict fields take ``key=value``
    pairs (values parsed as JSON when they parse); list fields take several values. Unknown YAML keys are an error.
    """
    assert is_dataclass(config_class)
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--config", type=Path, help="YAML preset (see configs/)")
    for item in fields(config_class):
        flag = "--" + item.name.replace("_", "-")
        type_name = str(item.type)
        if type_name.startswith("bool"):
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=None)
        elif type_name.startswith("dict"):
            parser.add_argument(flag, nargs="*", default=None, metavar="KEY=VALUE")
        elif type_name.startswith("list"):
            parser.add_argument(flag, nargs="+", default=None, type=_flag_type(type_name[5:-1]))
        else:
            parser.add_argument(flag, type=_flag_type(type_name), default=None)
    args = parser.parse_args(argv)
    values: dict[str, Any] = {}
    if args.config:
        values.update(yaml.safe_load(args.config.read_text()) or {})
        unknown = set(values) - {f.name for f in fields(config_class)}
        if unknown:
            parser.error(f"unknown keys in {args.config}: {sorted(unknown)}")
    for key, value in vars(args).items():
        if value is None or key == "config":
            continue
        declared = str(next(f.type for f in fields(config_class) if f.name == key))
        if isinstance(value, list) and declared.startswith("dict"):
            value = {**values.get(key, {}), **parse_key_values(value)}
        values[key] = value
    return config_class(**values)


def parse_key_values(items: list[str]) -> dict[str, Any]:
    """``["key=value", ...]`` -> dict; each value parsed as JSON when it parses (numbers, true, null, lists),
    else kept as text. Used for ``--env-kwargs`` style flags."""
    parsed: dict[str, Any] = {}
    for item in items:
        key, separator, text = item.partition("=")
        if not separator:
            raise ValueError(f"expected KEY=VALUE, got {item!r}")
        try:
            parsed[key] = json.loads(text)
        except json.JSONDecodeError:
            parsed[key] = text
    return parsed
