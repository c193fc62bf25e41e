"""Typed run configuration: one dataclass per script, filled from a YAML preset and command-line flags through one
typed path (CleanRL/SB3-zoo style, no dependency beyond argparse and PyYAML).

* Flags are generated from the dataclass fields: ``--field-name``, typed from the annotation, with the help text of
  the field's line in the class docstring's ``Attributes:`` section (every field must have one).
* YAML values go through the same converter as flag values: ``lr: 1e-3``, which PyYAML reads as the *string*
  ``"1e-3"``, becomes the float 0.001; a value of the wrong type is an error naming the file, the key, the value
  and the expected type.
* The dataclass's ``__post_init__`` may raise ``ValueError`` for constraints between fields (``min <= max``); it is
  reported the same way.
"""

from __future__ import annotations

import argparse
import inspect
import json
import math
import re
import types
import typing
from dataclasses import MISSING, Field, fields, is_dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar, Union

import yaml

T = TypeVar("T")

#: ``--env-kwargs`` keys whose values are names or paths: kept as text even when they look like numbers
#: (``data_root=2024`` is a folder, not the int 2024).
TEXT_KWARGS = frozenset({
    "data_root", "checkpoint", "split", "split_file", "device", "observation", "reward", "render_mode", "output",
    "autocast_dtype", "task", "dataset", "eval_resize",
})  # fmt: skip


class ConfigError(ValueError):
    """A configuration value (YAML key or flag) is missing, unknown or of the wrong type."""


def _type_name(hint: Any) -> str:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is Literal:
        return "one of " + ", ".join(repr(arg) for arg in args)
    if origin in (Union, types.UnionType):
        return " or ".join(_type_name(arg) for arg in args)
    if origin is not None:
        return f"{origin.__name__}[{', '.join(_type_name(arg) for arg in args)}]"
    return "null" if hint is type(None) else getattr(hint, "__name__", str(hint))


def convert(value: Any, hint: Any, where: str) -> Any:
    """``value`` as the type ``hint`` (``int``, ``float``, ``str``, ``bool``, ``Literal``, ``X | None``,
    ``list[X]``, ``dict[str, Any]``, ``Any``), converting strings that spell a number.

    Args:
        value: from YAML or from a flag (a string).
        hint: the field's resolved annotation.
        where: what is converted, for the message (``"configs/x.yaml: key 'lr'"``).

    Raises:
        ConfigError: naming ``where``, the value and the expected type.
    """
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    wrong = ConfigError(f"{where} requires {_type_name(hint)}, got {value!r} ({type(value).__name__})")
    if hint is Any:
        return value
    if origin in (Union, types.UnionType):
        spells_none = value is None or (isinstance(value, str) and value.lower() in ("none", "null"))
        if spells_none and type(None) in args:
            return None
        for arg in (arg for arg in args if arg is not type(None)):
            try:
                return convert(value, arg, where)
            except ConfigError:
                continue
        raise wrong
    if origin is Literal:
        if value in args:
            return value
        raise wrong
    if origin is list:
        if not isinstance(value, list):
            raise wrong
        return [convert(item, args[0] if args else Any, where) for item in value]
    if origin is dict:
        if not isinstance(value, dict) or not all(isinstance(key, str) for key in value):
            raise wrong
        return dict(value)
    if hint is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
        raise wrong
    if hint is int:
        number = _number(value)
        if number is None or not math.isfinite(number) or number != int(number):
            raise wrong
        return int(number)
    if hint is float:
        number = _number(value)
        if number is None:
            raise wrong
        return float(number)
    if hint is str:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)  # a folder named 2024
        raise wrong
    raise TypeError(f"{where}: the annotation {hint!r} is not supported by agents.config")


def _number(value: Any) -> float | int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return value
    if isinstance(value, str):
        try:
            return int(value)
        except ValueError:
            try:
                return float(value)
            except ValueError:
                return None
    return None


def field_help(config_class: type) -> dict[str, str]:
    """``field -> help`` from the ``Attributes:`` section of ``config_class``'s Google-style docstring."""
    lines = inspect.cleandoc(config_class.__doc__ or "").splitlines()
    helps: dict[str, str] = {}
    current: str | None = None
    inside = False
    for line in lines:
        if line.strip() == "Attributes:":
            inside = True
            continue
        if not inside:
            continue
        if line and not line.startswith(" "):  # the next section
            inside = False
            continue
        entry = re.match(r"^ {4}(\w+): ?(.*)$", line)
        if entry:
            current = entry.group(1)
            helps[current] = entry.group(2).strip()
        elif current and line.startswith(" " * 8):
            helps[current] += " " + line.strip()
    return helps


def build_parser(config_class: type, description: str) -> argparse.ArgumentParser:
    """The argparse parser of ``config_class``: one typed flag per field, with its help and default.

    Raises:
        TypeError: a field has no help line in the class docstring (a developer error, caught by the tests).
    """
    assert is_dataclass(config_class)
    hints = typing.get_type_hints(config_class)
    helps = field_help(config_class)
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, help="YAML preset (see configs/); flags override its values")
    for item in fields(config_class):
        if item.name not in helps:
            raise TypeError(f"{config_class.__name__}.{item.name} has no help line in the docstring's Attributes:")
        flag = "--" + item.name.replace("_", "-")
        default = field_default(item)
        help_text = f"{helps[item.name]} (default: {default!r})".replace("%", "%%")
        hint = hints[item.name]
        origin = typing.get_origin(hint)
        if hint is bool:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=None, help=help_text)
        elif origin is dict:
            parser.add_argument(flag, nargs="*", default=None, metavar="KEY=VALUE", help=help_text)
        elif origin is list:
            parser.add_argument(flag, nargs="+", default=None, help=help_text)
        else:
            shown = [arg for arg in typing.get_args(hint) if arg is not type(None)] if origin is not Literal else []
            metavar = _type_name(shown[0] if shown else hint).upper().replace(" ", "")
            parser.add_argument(flag, default=None, help=help_text, metavar=metavar)
    return parser


def load_yaml(path: Path, config_class: type) -> dict[str, Any]:
    """The top-level mapping of a YAML preset, with every key a field of ``config_class``.

    Raises:
        ConfigError: the file cannot be read or parsed, is not a mapping, or has unknown keys.
    """
    try:
        values = yaml.safe_load(Path(path).read_text())
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(f"{path}: cannot read the config file ({error})") from error
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: not valid YAML ({' '.join(str(error).split())})") from error
    if values is None:
        return {}
    if not isinstance(values, dict):
        raise ConfigError(f"{path}: requires a mapping of settings at the top level, got a {type(values).__name__}")
    known = {item.name for item in fields(config_class)}
    unknown = sorted(str(key) for key in values if key not in known)
    if unknown:
        raise ConfigError(f"{path}: unknown keys {unknown}; valid keys are {sorted(known)}")
    return values


def parse_config(config_class: type[T], argv: list[str] | None, description: str) -> T:
    """Build ``config_class`` (a dataclass) from ``--config preset.yaml`` and ``--field value`` flags.

    Flags override the YAML; dict fields (``--env-kwargs key=value ...``) are merged into the YAML's dict, or into
    the field's default when the YAML does not set it.

    Raises:
        ConfigError: a value of the wrong type, an unknown key, or a constraint of ``__post_init__`` broken; the
            message names the file or flag, the key and the value.
    """
    parser = build_parser(config_class, description)
    args = parser.parse_args(argv)
    hints = typing.get_type_hints(config_class)
    assert is_dataclass(config_class)
    by_name = {item.name: item for item in fields(config_class)}
    values: dict[str, Any] = {}
    if args.config:
        for key, value in load_yaml(args.config, config_class).items():
            values[key] = convert(value, hints[key], f"{args.config}: key {key!r}")
    for key, value in vars(args).items():
        if value is None or key == "config":
            continue
        where = f"--{key.replace('_', '-')}"
        if typing.get_origin(hints[key]) is dict:
            base = values[key] if key in values else field_default(by_name[key]) or {}
            values[key] = {**base, **parse_key_values(value, where)}
        else:
            values[key] = convert(value, hints[key], where)
    try:
        return config_class(**values)
    except ValueError as error:
        source = f"{args.config} and flags" if args.config else "flags"
        raise ConfigError(f"invalid settings ({source}): {error}") from error


def field_default(item: Field[Any]) -> Any:
    """The default value of a dataclass field (its factory called), or None for a field without one."""
    if item.default is not MISSING:
        return item.default
    factory: Any = item.default_factory
    return factory() if factory is not MISSING else None


def parse_key_values(items: list[str], where: str = "--env-kwargs") -> dict[str, Any]:
    """``["key=value", ...]`` -> dict, for ``--env-kwargs`` style flags.

    Values of the keys in :data:`TEXT_KWARGS` stay text; others are parsed as JSON when they parse (numbers,
    ``true``, ``null``, lists), as a float when Python reads one (``.5``, ``1e-3``), else kept as text.

    Raises:
        ConfigError: an item without ``=``.
    """
    parsed: dict[str, Any] = {}
    for item in items:
        key, separator, text = item.partition("=")
        if not separator or not key:
            raise ConfigError(f"{where} requires KEY=VALUE items, got {item!r}")
        if key in TEXT_KWARGS:
            parsed[key] = text
            continue
        try:
            parsed[key] = json.loads(text)
        except json.JSONDecodeError:
            number = _number(text)
            parsed[key] = float(number) if number is not None and text.strip().lower() not in ("nan",) else text
    return parsed


def positive_int(text: str) -> int:
    """An argparse ``type`` for counts: an integer of at least 1, else a message naming the value."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"requires a whole number >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"requires a whole number >= 1, got {value}")
    return value


def output_files(prefix: Path, suffixes: tuple[str, ...]) -> list[Path]:
    """``prefix`` with each suffix appended (``r.seed1`` -> ``r.seed1.json``, never ``r.json``); a prefix that
    already ends in one of ``suffixes`` has it replaced."""
    base = str(prefix)
    for suffix in suffixes:
        if base.endswith(suffix):
            base = base[: -len(suffix)]
            break
    return [Path(base + suffix) for suffix in suffixes]
