"""The README's main command until the environment exists: it runs and prints a score per step."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))

import glimpse_demo


def test_demo_runs_on_bundled_photo(capsys: pytest.CaptureFixture[str]) -> None:
    assert glimpse_demo.main(["--num-glimpses", "3", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "rocket.jpg" in out
    rows = [line for line in out.splitlines() if line.strip()[:1].isdigit()]
    assert len(rows) == 4  # step 0 (no glimpse) + 3 glimpses
    assert "tokens: 12, importance sums to 1.0000" in out


def test_demo_random_policy_and_custom_image(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from PIL import Image

    Image.new("L", (320, 240), 128).save(tmp_path / "gray.png")
    argv = ["--image", str(tmp_path / "gray.png"), "--policy", "random", "--num-glimpses", "2", "--device", "cpu"]
    assert glimpse_demo.main(argv) == 0
    assert "gray.png" in capsys.readouterr().out
