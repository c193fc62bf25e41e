"""probe_critic reads a map SAC run's zip and reports hit rates that are shares, with chance beside them."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"
sys.path.insert(0, str(SCRIPTS))

import probe_critic  # noqa: E402

from agents.map_critic import GlimpseGeometry  # noqa: E402


def test_holds_target_follows_the_env_geometry() -> None:
    # 224 px image, glimpses of 32..224 px: the smallest glimpse at the top-left corner covers [0, 32).
    actions = np.array([[[-1.0, -1.0, -1.0], [1.0, 1.0, -1.0], [0.0, 0.0, 1.0]]])  # (1, 3, 3)
    centres = np.array([[10.0, 20.0]])  # (y, x) near the top-left corner
    hits = probe_critic.holds_target(actions, centres, GlimpseGeometry((224, 224), 32, 224.0))
    np.testing.assert_array_equal(hits, [[True, False, True]])


def test_probe_critic_on_a_fresh_map_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from agents.sac import make_sac
    from agents.sb3_adapter import make_sb3_vec_env

    env = make_sb3_vec_env("AdaGlimpse-ClutteredDigits-Fast-v0", num_envs=2, observation="map", map_size=32)
    model = make_sac(env, seed=0, device="cpu", learning_starts=8, buffer_size=32, batch_size=4)
    model.learn(12)
    model.save(tmp_path / "model.zip")
    env.close()
    argv = [str(tmp_path / "model.zip"), "--env-kwargs", "map_size=32", "--episodes", "4", "--grid", "3"]
    assert probe_critic.main(argv) == 0
    rows = [line.split("|") for line in capsys.readouterr().out.splitlines() if line.startswith("| the")]
    assert [row[1].strip() for row in rows] == ["the critic's best"] * 3 + ["the policy's own"]
    for row in rows:
        assert 0.0 <= float(row[3]) <= 1.0 and 0.0 <= float(row[4]) <= 1.0  # hit rate, chance
        assert 0.0 <= float(row[5]) <= 1.0  # true-class probability after the glimpse
