"""One typed path for YAML presets and flags: every flag has help, YAML values are converted or refused with the
file, key, value and expected type named."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Literal

import pytest

from agents.config import ConfigError, build_parser, field_help, parse_config, parse_key_values

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))
import pretrain_mae
import train_sac


@dataclass
class Example:
    """Settings.

    Attributes:
        lr: learning rate.
        steps: how many
            steps (a continued line).
        name: a name.
        flag: a switch.
        mode: a choice.
        threads: optional count.
        kwargs: extra keyword arguments.
        sizes: sizes.
    """

    lr: float = 1e-3
    steps: int = 10
    name: str = "x"
    flag: bool = False
    mode: Literal["a", "b"] = "a"
    threads: int | None = None
    kwargs: dict[str, object] = field(default_factory=dict)
    sizes: list[int] = field(default_factory=lambda: [1])

    def __post_init__(self) -> None:
        if self.steps < 0:
            raise ValueError(f"steps >= 0 required, got {self.steps}")


def preset(tmp_path: Path, text: str) -> list[str]:
    path = tmp_path / "preset.yaml"
    path.write_text(text)
    return ["--config", str(path)]


@pytest.mark.parametrize("config_class", [train_sac.TrainConfig, pretrain_mae.PretrainConfig, Example])
def test_every_flag_has_help(config_class: type) -> None:
    helps = field_help(config_class)
    assert {item.name for item in fields(config_class)} <= set(helps)
    assert all(helps.values())
    text = build_parser(config_class, "").format_help()
    assert "(default:" in text


def test_help_lines_continue() -> None:
    assert field_help(Example)["steps"] == "how many steps (a continued line)."


def test_yaml_values_are_converted(tmp_path: Path) -> None:
    config = parse_config(Example, preset(tmp_path, "lr: 1e-3\nsteps: 1e2\nname: 2024\nthreads: null\n"), "")
    assert config.lr == 0.001 and isinstance(config.lr, float)
    assert config.steps == 100 and isinstance(config.steps, int)
    assert config.name == "2024"
    assert config.threads is None


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("lr: fast\n", r"preset.yaml: key 'lr' requires float, got 'fast' \(str\)"),
        ("steps: 2.5\n", r"key 'steps' requires int, got 2.5 \(float\)"),
        ("steps: true\n", r"key 'steps' requires int, got True \(bool\)"),
        ("flag: 1\n", r"key 'flag' requires bool, got 1 \(int\)"),
        ("mode: c\n", r"key 'mode' requires one of 'a', 'b', got 'c'"),
        ("sizes: 3\n", r"key 'sizes' requires list\[int\], got 3"),
        ("sizes: [1, x]\n", r"key 'sizes' requires int, got 'x'"),
        ("kwargs: [1]\n", r"key 'kwargs' requires dict"),
        ("- lr: 1\n", r"preset.yaml: requires a mapping of settings at the top level, got a list"),
        ("lr: [\n", r"preset.yaml: not valid YAML"),
        ("learning_rate: 1\n", r"preset.yaml: unknown keys \['learning_rate'\]; valid keys are"),
        ("steps: -1\n", r"invalid settings \(.*preset.yaml and flags\): steps >= 0 required, got -1"),
    ],
)
def test_bad_yaml_names_file_key_value_and_type(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as raised:
        parse_config(Example, preset(tmp_path, text), "")
    assert "\n" not in str(raised.value)


def test_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"missing.yaml: cannot read the config file"):
        parse_config(Example, ["--config", str(tmp_path / "missing.yaml")], "")


def test_flags_override_yaml_and_are_typed(tmp_path: Path) -> None:
    args = [*preset(tmp_path, "lr: 0.1\nkwargs: {a: 1}\n"), "--lr", "2e-4", "--kwargs", "b=.5", "--sizes", "3", "4"]
    config = parse_config(Example, args, "")
    assert config.lr == 2e-4 and config.kwargs == {"a": 1, "b": 0.5} and config.sizes == [3, 4]
    with pytest.raises(ConfigError, match=r"--steps requires int, got 'many'"):
        parse_config(Example, ["--steps", "many"], "")
    with pytest.raises(ConfigError, match=r"--kwargs requires KEY=VALUE items, got 'oops'"):
        parse_config(Example, ["--kwargs", "oops"], "")


def test_env_kwargs_keep_paths_as_text_and_read_numbers() -> None:
    parsed = parse_key_values(["data_root=2024", "max_glimpse_ratio=.5", "num_glimpses=3", "augment=true",
                               "checkpoint=1e3", "reward=final", "early_stop_threshold=1e-3"])  # fmt: skip
    assert parsed == {"data_root": "2024", "max_glimpse_ratio": 0.5, "num_glimpses": 3, "augment": True,
                      "checkpoint": "1e3", "reward": "final", "early_stop_threshold": 0.001}  # fmt: skip


@pytest.mark.parametrize(
    ("text", "message"),
    [("save_dtype: bfloat16\n", r"key 'save_dtype' requires one of 'float16', 'float32', got 'bfloat16'"),
     ("min_glimpses: 5\nmax_glimpses: 2\n", r"min_glimpses <= max_glimpses .* got min_glimpses=5, max_glimpses=2"),
     ("lr: 1e-3\n", None)],
)  # fmt: skip
def test_pretrain_config_errors(tmp_path: Path, text: str, message: str | None) -> None:
    if message is None:
        assert pretrain_mae.parse_args(preset(tmp_path, text)).lr == 0.001
        return
    with pytest.raises(ConfigError, match=message):
        pretrain_mae.parse_args(preset(tmp_path, text))
