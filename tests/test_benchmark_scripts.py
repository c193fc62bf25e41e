"""The performance benchmarks run end to end on a tiny setting and print what docs/benchmarks.md quotes."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))

import benchmark_cost_growth
import benchmark_env


def test_benchmark_env_prints_one_row_per_setting(capsys: pytest.CaptureFixture[str]) -> None:
    argv = [
        "--model-sizes",
        "tiny",
        "--num-envs",
        "1",
        "2",
        "--num-glimpses",
        "2",
        "--repeats",
        "1",
        "--devices",
        "cpu",
    ]
    assert benchmark_env.main(argv) == 0
    rows = [line.split("|")[1:-1] for line in capsys.readouterr().out.splitlines() if line.startswith("| cpu")]
    assert [row[2].strip() for row in rows] == ["1", "2"]
    for row in rows:
        # (printed rounded to the ms: too coarse to recompute the ratio from the printed times)
        assert min(float(cell) for cell in row[3:7]) > 0
        assert "process peak RSS" in row[7]


def test_cost_growth_prints_both_paths_and_draws_the_plot(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    plot = tmp_path / "growth.png"
    argv = ["--num-envs", "1", "--glimpse-counts", "1", "2", "--repeats", "1", "--plot", str(plot)]
    assert benchmark_cost_growth.main(argv) == 0
    out = capsys.readouterr().out
    assert "reference: step time =" in out and "incremental: step time =" in out
    assert "| 2 |" in out
    assert Image.open(plot).size == (880, 350)


def test_nice_ticks_cover_the_data() -> None:
    ticks = benchmark_cost_growth.nice_ticks(23.0)
    assert ticks[0] == 0 and ticks[-1] >= 23.0 and len(ticks) <= 7


def test_benchmark_sac_prints_rates_and_phases(capsys: pytest.CaptureFixture[str]) -> None:
    import benchmark_sac

    argv = ["--env-id", "AdaGlimpse-ClutteredDigits-Fast-v0", "--presets", "flat", "map", "--batch-size", "8",
            "--updates", "2", "--repeats", "1", "--num-envs", "2", "--fill-steps", "16", "--learn-vector-steps", "1",
            "--threads", "1"]  # fmt: skip
    assert benchmark_sac.main(argv) == 0
    lines = capsys.readouterr().out.splitlines()
    rates = [line.split("|")[1:-1] for line in lines if line.startswith(("| flat | 1 | ", "| map | 1 | "))]
    assert len(rates) == 4  # one rates row and one phases row per preset
    for row in rates:
        assert all(float(cell) >= 0 for cell in row[2:])
    assert float(rates[0][2]) > 0 and float(rates[0][3]) > 0  # flat: SB3's and our updates/s


def test_benchmark_sac_times_the_critic_search_heads(capsys: pytest.CaptureFixture[str]) -> None:
    import benchmark_sac

    argv = ["--env-id", "AdaGlimpse-ClutteredDigits-Fast-v0", "--critic-search", "--batch-size", "8", "--updates",
            "2", "--repeats", "1", "--num-envs", "2", "--fill-steps", "16", "--threads", "1"]  # fmt: skip
    assert benchmark_sac.main(argv) == 0
    rows = [line.split("|")[1:-1] for line in capsys.readouterr().out.splitlines() if line.startswith("| 1 | ")]
    assert len(rows) == 1
    assert all(float(cell) > 0 for cell in rows[0][1:])  # rates, acting times and their ratios


def test_benchmark_grid_dqn_times_sb3s_update_against_grid_dqns(capsys: pytest.CaptureFixture[str]) -> None:
    import benchmark_grid_dqn

    argv = ["--batch-size", "8", "--updates", "2", "--repeats", "1", "--num-envs", "2", "--fill-steps", "16",
            "--threads", "1"]  # fmt: skip
    assert benchmark_grid_dqn.main(argv) == 0
    rows = [line.split("|")[1:-1] for line in capsys.readouterr().out.splitlines() if line.startswith("| 1 | ")]
    assert len(rows) == 1 and len(rows[0]) == 6  # threads, three rates, two ratios
    assert all(float(cell) > 0 for cell in rows[0][1:])


def test_probe_rewards_covers_every_step_once(capsys: pytest.CaptureFixture[str]) -> None:
    import probe_rewards

    argv = ["--num-envs", "2", "--steps", "7", "--bands", "2"]
    assert probe_rewards.main(argv) == 0
    rows = [line.split("|")[1:-1] for line in capsys.readouterr().out.splitlines() if line.startswith("| [")]
    assert len(rows) == 2 and sum(int(row[4]) for row in rows) == 14
    assert all(0.0 <= float(row[2]) <= 1.0 and 0.0 <= float(row[3]) <= 1.0 for row in rows)


def test_benchmark_sac_times_the_paper_path_against_the_default(capsys: pytest.CaptureFixture[str]) -> None:
    import benchmark_sac
    import yaml

    argv = ["--env-id", "AdaGlimpse-ClutteredDigits-Fast-v0", "--against-paper", "--batch-size", "8", "--updates",
            "2", "--repeats", "1", "--num-envs", "2", "--fill-steps", "16", "--learn-vector-steps", "1",
            "--threads", "1"]  # fmt: skip
    assert benchmark_sac.main(argv) == 0
    lines = capsys.readouterr().out.splitlines()
    rows = [line.split("|")[1:-1] for line in lines if line.startswith("| 1 | ")]
    paper, default, default_paper_batch = rows[:3]  # then the phases row
    issue_run, default_run = (
        yaml.safe_load(path.read_text()) for path in (benchmark_sac.ISSUE_README_RUN, benchmark_sac.DEFAULT_README_RUN)
    )
    assert int(paper[2]) == 8 and int(default[2]) == default_run["batch_size"]  # --batch-size, and the run's own
    assert int(default_paper_batch[2]) == 8
    assert float(paper[3]) > 0 and float(default[3]) > 0 and float(default[4]) > 0
    # Transitions/s ratio = updates/s ratio x batch ratio.
    scale = default_run["batch_size"] / 8
    assert float(default[5]) == pytest.approx(float(default[4]) * scale, abs=0.005 * scale + 0.006)  # 2 decimals
    assert float(default_paper_batch[5]) == pytest.approx(float(default_paper_batch[4]), abs=0.011)
    # The updates each README run plans: gradient steps per vector step after the warm-up.
    assert int(paper[8]) == benchmark_sac.planned_updates(issue_run) == (34_000 - 10_000) // 32 * 1
    assert int(default[8]) == benchmark_sac.planned_updates(default_run)
    assert default_paper_batch[8].strip() == "-"
    assert any(line.startswith("README run updates: ") for line in lines)
