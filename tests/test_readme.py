"""Every command the README shows exists and accepts its flags, so the README cannot drift from the code.

The fenced ``bash`` blocks are read from README.md; each command line is split on ``&&``, stripped of its
comment, and checked: ``python scripts/X.py ...`` must name an existing script whose ``--help`` works and whose
argument parser accepts the README's flags; other programs must be installed (``pip``, ``pytest``, ...).
"""

from __future__ import annotations

import configparser
import importlib
import os
import shlex
import shutil
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
sys.path.insert(0, str(ROOT / "scripts"))


def readme_commands() -> list[list[str]]:
    """Each shell command of the README's ``bash`` blocks, as argv lists."""
    commands, inside = [], False
    for line in README.read_text().splitlines():
        if line.startswith("```"):
            inside = line.strip() == "```bash"
            continue
        if not inside or not line.strip():
            continue
        words = shlex.split(line, comments=True)
        command: list[str] = []
        for word in [*words, "&&"]:
            if word == "&&":
                if command:
                    commands.append(command)
                command = []
            else:
                command.append(word)
    return commands


COMMANDS = readme_commands()


def test_readme_starts_with_the_two_setup_commands() -> None:
    first_block = README.read_text().split("```bash\n", 1)[1].split("```", 1)[0].splitlines()
    assert first_block[0].startswith('pip install -e ".[dev]" && python scripts/train_sac.py')
    assert first_block[1].startswith('pip install -e ".[dev]" && pytest')
    ci = (ROOT / ".ci" / "run").read_text()
    assert 'pip install -e ".[dev]" && pytest' in ci  # CI runs exactly the README's test command


def test_readme_has_commands() -> None:
    scripts = {command[1] for command in COMMANDS if command[0] == "python"}
    assert {"scripts/train_sac.py", "scripts/evaluate.py", "scripts/visualize_episode.py"} <= scripts


def parse_script_flags(module: object, args: list[str]) -> None:
    parse_args = getattr(module, "parse_args", None)
    if parse_args is not None:
        parse_args(args)
    else:  # scripts configured by a dataclass (train_sac.py)
        from agents.config import parse_config

        parse_config(module.TrainConfig, args, "")  # type: ignore[attr-defined]


def which(program: str) -> str | None:
    """``shutil.which`` that also looks next to this interpreter: a virtualenv's console scripts (pytest, ruff,
    torchrun, ...) are installed there whether or not its ``bin`` is on ``PATH``."""
    return shutil.which(program, path=os.pathsep.join((str(Path(sys.executable).parent), os.environ.get("PATH", ""))))


@pytest.mark.parametrize("command", COMMANDS, ids=[" ".join(c)[:70] for c in COMMANDS])
def test_readme_command(command: list[str], monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    monkeypatch.chdir(ROOT)  # README commands run from the repository root
    program, args = command[0], command[1:]
    if program == "torchrun":  # check the launched script like a python command
        assert which("torchrun"), "README runs torchrun, which comes with torch"
        script_index = next(i for i, word in enumerate(args) if word.endswith(".py"))
        program, args = "python", args[script_index:]
    if program == "python":
        script = ROOT / args[0]
        assert script.is_file(), f"README names {args[0]}, which does not exist"
        module = importlib.import_module(script.stem)
        with pytest.raises(SystemExit) as exit_info:
            module.main(["--help"])
        assert exit_info.value.code == 0 and "usage" in capsys.readouterr().out
        parse_script_flags(module, args[1:])
    elif program == "pip":
        assert args[:2] == ["install", "-e"]
        extras = args[2].split("[", 1)[1].rstrip("]").split(",") if "[" in args[2] else []
        setup = configparser.ConfigParser()
        setup.read(ROOT / "setup.cfg")
        for extra in extras:
            assert setup.has_option("options.extras_require", extra), f"setup.cfg has no [{extra}] extra"
    elif program == "pytest":
        if "-m" in args:
            marker = args[args.index("-m") + 1]
            assert f'"{marker}:' in (ROOT / "pyproject.toml").read_text(), f"marker {marker!r} is not registered"
    else:
        assert which(program), f"README runs {program!r}, which is not installed by the dev extra"


def readme_python_blocks() -> list[str]:
    """The source of each fenced ``python`` block of the README."""
    blocks, current = [], None
    for line in README.read_text().splitlines():
        if line.startswith("```"):
            if current is not None:
                blocks.append("\n".join(current))
            current = [] if line.strip() == "```python" else None
            continue
        if current is not None:
            current.append(line)
    return blocks


def test_readme_usage_example_runs() -> None:
    # The "Use it" block, as written, on the shipped photos and model; the vector env goes to the CPU where no
    # GPU is present. (The other block needs the paper's checkpoint files, which cannot ship: tests/agent_tests covers
    # load_original_policy on a state dict with the original names and shapes.)
    import numpy as np
    import torch

    source = readme_python_blocks()[0]
    assert 'gym.make("AdaGlimpse-Photos-v0")' in source and 'device="cuda"' in source
    if not torch.cuda.is_available():
        source = source.replace('device="cuda"', 'device="cpu"')
    printed: list[tuple] = []
    namespace: dict[str, Any] = {"print": lambda *values: printed.append(values)}
    try:
        exec(compile(source, "README.md", "exec"), namespace)
        ((rmse, pixel_fraction, boxes),) = printed
        assert 0 < float(rmse) < 255 and 0 < float(pixel_fraction) <= 1
        boxes = np.asarray(boxes)
        assert boxes.shape == (12, 4) and (boxes >= 0).all()  # every glimpse's pixel box, none left unfilled
        assert namespace["envs"].num_envs == 64
    finally:
        for name in ("env", "envs"):
            if name in namespace:
                namespace[name].close()
