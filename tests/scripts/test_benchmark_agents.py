"""benchmark_agents.py spreads its runs over GPUs (end-to-end table: tests/scripts/test_agent_scripts.py)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))

import benchmark_agents


def test_runs_spread_round_robin_over_visible_gpus(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 3)
    assert benchmark_agents.job_devices("cuda", 5) == ["cuda:0", "cuda:1", "cuda:2", "cuda:0", "cuda:1"]
    assert benchmark_agents.job_devices("cuda:2", 2) == ["cuda:2", "cuda:2"]  # an explicit device is kept
    assert benchmark_agents.job_devices("cpu", 2) == ["cpu", "cpu"]


def test_one_gpu_or_none_keeps_the_device_as_given(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert benchmark_agents.job_devices("cuda", 2) == ["cuda", "cuda"]
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    assert benchmark_agents.job_devices("cuda", 1) == ["cuda"]


def test_worker_processes_give_the_same_table_as_one_process(tmp_path: Path) -> None:
    import json

    argv = ["--env-id", "AdaGlimpse-ClutteredDigits-Fast-v0", "--algorithms", "--baselines", "random", "raster",
            "--seeds", "0", "1", "--eval-episodes", "4", "--eval-envs", "2", "--threads", "1"]  # fmt: skip
    assert benchmark_agents.main([*argv, "--output", str(tmp_path / "one.json")]) == 0
    assert benchmark_agents.main([*argv, "--workers", "2", "--output", str(tmp_path / "two.json")]) == 0

    def finals(name: str) -> list[tuple[str, int, float]]:
        results = json.loads((tmp_path / name).read_text())["results"]
        return [(row["name"], row["seed"], row["final_metric"]) for row in results]

    assert finals("two.json") == finals("one.json") and len(finals("one.json")) == 4
