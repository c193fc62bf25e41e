"""n-step returns with the float16 replay of the ``map`` preset (agents/replay.py): SB3 builds its n-step buffer
only when no buffer class is given, so ``n_steps`` would be ignored with the float16 buffer."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from gymnasium import spaces
from map_env import tiny_map_env
from stable_baselines3.common.buffers import NStepReplayBuffer

from agents.replay import Float16NStepReplayBuffer, Float16ReplayBuffer, float16_n_step_settings

SPACE = spaces.Box(-3.0, 3.0, shape=(2, 4, 4), dtype=np.float32)
ACTIONS = spaces.Box(-1.0, 1.0, shape=(3,), dtype=np.float32)


def _filled(buffer_class: type, n_envs: int = 2) -> NStepReplayBuffer:
    """A buffer of 12 steps of ``n_envs`` envs: episodes of 3 steps, float16-exact observations."""
    buffer = buffer_class(32, SPACE, ACTIONS, n_envs=n_envs, n_steps=3, gamma=0.9)
    rng = np.random.default_rng(0)
    for step in range(12):
        observation = np.round(rng.uniform(-3, 3, (n_envs, *SPACE.shape)) * 8) / 8  # exact in float16
        next_observation = np.round(rng.uniform(-3, 3, (n_envs, *SPACE.shape)) * 8) / 8
        done = np.full(n_envs, step % 3 == 2)
        buffer.add(observation, next_observation, rng.uniform(-1, 1, (n_envs, 3)), rng.uniform(0, 1, n_envs), done,
                   [{} for _ in range(n_envs)])  # fmt: skip
    return buffer


def test_float16_n_step_samples_are_sb3s_n_step_samples() -> None:
    ours, sb3 = _filled(Float16NStepReplayBuffer), _filled(NStepReplayBuffer)
    assert ours.observations.dtype == np.float16 and ours.observations.nbytes * 2 == sb3.observations.nbytes
    assert ours.next_observations.dtype == np.float16
    indices = np.arange(11)
    np.random.seed(1)  # the env column of each sample is drawn from NumPy's global generator
    mine = ours._get_samples(indices)
    np.random.seed(1)
    theirs = sb3._get_samples(indices)
    for name in ("observations", "actions", "next_observations", "dones", "rewards", "discounts"):
        torch.testing.assert_close(getattr(mine, name), getattr(theirs, name), msg=name)
    assert mine.observations.dtype == torch.float32
    # Episodes of 3 steps: a sample at an episode's first step sums three rewards and bootstraps with 0.9^3.
    assert mine.discounts[0].item() == pytest.approx(0.9**3)
    assert mine.discounts[2].item() == pytest.approx(0.9)  # the last step: one reward, then the episode ends


def test_settings_switch_the_float16_buffer_to_n_step_returns_only_when_asked() -> None:
    plain = {"replay_buffer_class": Float16ReplayBuffer, "n_steps": 1}
    assert float16_n_step_settings(plain) is plain
    sb3_own = {"n_steps": 3}  # no buffer class: SB3 builds its own n-step buffer
    assert float16_n_step_settings(sb3_own) is sb3_own
    switched = float16_n_step_settings({"replay_buffer_class": Float16ReplayBuffer, "n_steps": 3, "gamma": 0.95})
    assert switched == {
        "replay_buffer_class": Float16NStepReplayBuffer,
        "replay_buffer_kwargs": {"n_steps": 3, "gamma": 0.95},
        "gamma": 0.95,
    }
    defaults = float16_n_step_settings({"replay_buffer_class": Float16ReplayBuffer, "n_steps": 5})
    assert defaults["replay_buffer_kwargs"] == {"n_steps": 5, "gamma": 0.99}  # SB3's gamma
    with pytest.raises(ValueError, match="replay_buffer_kwargs give n_steps=2 but the algorithm's n_steps is 3"):
        float16_n_step_settings(
            {"replay_buffer_class": Float16ReplayBuffer, "n_steps": 3, "replay_buffer_kwargs": {"n_steps": 2}}
        )


@pytest.mark.parametrize("name", ["dqn_grid", "sac_search"])
def test_benchmark_entries_on_the_map_train_with_n_step_returns(
    tiny_folder: Path, tiny_checkpoint: Path, tmp_path: Path, name: str
) -> None:
    from stable_baselines3 import DQN, SAC

    from agents.algorithms import build_algorithm
    from agents.sb3_files import load_sb3, read_sb3_data

    env = tiny_map_env(tiny_folder, tiny_checkpoint)
    overrides = {"buffer_size": 64, "n_steps": 3, "learning_starts": 4, "batch_size": 8, "gradient_steps": 1}
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*n_steps.*ignored")  # SB3's warning when it drops n_steps
        model = build_algorithm(name, env, 0, "cpu", overrides)
    assert isinstance(model.replay_buffer, Float16NStepReplayBuffer) and model.replay_buffer.n_steps == 3
    model.learn(12)
    assert model.num_timesteps >= 12 and model._n_updates > 0  # trained on n-step batches
    model.save(tmp_path / "model.zip")
    assert read_sb3_data(tmp_path / "model.zip")["replay_buffer_kwargs"]["n_steps"] == 3  # the zip says so
    algorithm = DQN if name == "dqn_grid" else SAC  # and loads without unpickling (the buffer class is allowed)
    loaded = load_sb3(algorithm, tmp_path / "model.zip", model.observation_space, model.action_space)
    assert loaded.replay_buffer_class is Float16NStepReplayBuffer and loaded.replay_buffer_kwargs["n_steps"] == 3
    env.close()
