"""Discrete glimpse actions (an SB3 wrapper and a Gymnasium one) and DQN with the per-glimpse Q-network."""

from __future__ import annotations

from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium import spaces
from map_env import tiny_map_env
from stable_baselines3 import DQN, PPO

from agents.grid_dqn import (
    DiscreteGlimpses,
    GlimpseGridQPolicy,
    GridActing,
    GridActions,
    acting_policy,
)
from agents.grid_policy import GlimpseGrid, GlimpseGridPolicy
from agents.map_critic import glimpse_geometry_of

GRID = GlimpseGrid(positions=3, scales=2)
GEOMETRY = {"image_size": [224, 224], "min_crop": 32.0, "max_crop": 224.0}


def test_grid_actions_step_the_glimpse_of_each_index(tiny_folder: Path, tiny_checkpoint: Path) -> None:
    discrete = GridActions(tiny_map_env(tiny_folder, tiny_checkpoint), GRID)
    continuous = tiny_map_env(tiny_folder, tiny_checkpoint)
    assert discrete.action_space == spaces.Discrete(18) and discrete.candidates.shape == (18, 3)
    np.testing.assert_array_equal(discrete.candidates, GRID.candidates(discrete_geometry(discrete)).numpy())
    for env in (discrete, continuous):
        env.seed(3)
    np.testing.assert_array_equal(discrete.reset(), continuous.reset())
    indices = np.array([0, 17])
    observation, reward, _, infos = discrete.step(indices)
    expected, expected_reward, _, expected_infos = continuous.step(discrete.candidates[indices])
    np.testing.assert_array_equal(observation, expected)
    np.testing.assert_array_equal(reward, expected_reward)
    for info, reference in zip(infos, expected_infos, strict=True):
        np.testing.assert_array_equal(info["glimpse_boxes"], reference["glimpse_boxes"])
    for bad in (np.array([0, 18]), np.array([-1, 0]), np.array([0.5, 1.0]), np.array([np.nan, 1.0])):
        with pytest.raises(ValueError, match=r"whole numbers in \[0, 18\)"):
            discrete.step(bad)
    with pytest.raises(ValueError, match=r"one index per env \(2\), got 3"):
        discrete.step(np.array([0, 1, 2]))
    discrete.close()
    continuous.close()


def discrete_geometry(env: GridActions):
    from agents.map_critic import GlimpseGeometry

    return GlimpseGeometry.from_dict(env.glimpse_geometry)


def test_gymnasium_wrapper_takes_an_index_for_one_env(tiny_folder: Path, tiny_checkpoint: Path) -> None:
    kwargs = {"data_root": str(tiny_folder), "checkpoint": str(tiny_checkpoint), "num_glimpses": 2}
    env = DiscreteGlimpses(gym.make("AdaGlimpse-ImageFolder-v0", **kwargs), GRID)
    twin = gym.make("AdaGlimpse-ImageFolder-v0", **kwargs)
    assert env.action_space == spaces.Discrete(18)
    env.reset(seed=1)
    twin.reset(seed=1)
    _, reward, _, _, info = env.step(np.int64(7))
    _, expected_reward, _, _, expected = twin.step(env.candidates[7])
    assert reward == expected_reward
    np.testing.assert_array_equal(info["glimpse_boxes"], expected["glimpse_boxes"])
    with pytest.raises(ValueError, match="whole numbers"):
        env.step(18)
    with pytest.raises(ValueError, match="takes one index"):
        env.step([1, 2])
    with pytest.raises(ValueError, match="need a glimpse env"):
        DiscreteGlimpses(gym.make("CartPole-v1"))
    env.close()
    twin.close()


def test_dqn_values_every_glimpse_acts_on_the_grid_and_loads_without_pickle(
    tiny_folder: Path, tiny_checkpoint: Path, tmp_path: Path
) -> None:
    env = GridActions(tiny_map_env(tiny_folder, tiny_checkpoint), GRID)
    model = DQN(GlimpseGridQPolicy, env, learning_starts=4, buffer_size=64, batch_size=8, train_freq=1,
                gradient_steps=1, policy_kwargs=env.policy_kwargs(), seed=0, device="cpu")  # fmt: skip
    observation = env.reset()
    with torch.no_grad():
        values = model.q_net(torch.as_tensor(observation))
    assert values.shape == (2, 18)
    indices, _ = model.predict(observation, deterministic=True)
    np.testing.assert_array_equal(indices, values.argmax(dim=1).numpy())
    model.learn(16)
    assert model._n_updates > 0
    acting = acting_policy(model)
    assert isinstance(acting, GridActing)
    actions, _ = acting.predict(observation, deterministic=True)
    indices, _ = model.predict(observation, deterministic=True)
    np.testing.assert_array_equal(actions, env.candidates[indices])  # the continuous env's glimpses

    from agents.sb3_files import load_sb3

    model.save(tmp_path / "dqn_grid.zip")
    loaded = load_sb3(DQN, tmp_path / "dqn_grid.zip", env.observation_space, env.action_space)  # no unpickling
    np.testing.assert_array_equal(loaded.predict(observation, deterministic=True)[0], indices)
    ppo = PPO(GlimpseGridPolicy, tiny_map_env(tiny_folder, tiny_checkpoint), n_steps=4, batch_size=8, device="cpu",
              policy_kwargs={"glimpse_geometry": glimpse_geometry_of(env)})  # fmt: skip
    assert acting_policy(ppo) is ppo
    with pytest.raises(ValueError, match="GlimpseGridQPolicy"):
        GridActing(ppo)
    # Another library's discrete model acts through the grid's candidates.
    other = GridActing(FixedIndex(5), env.candidates)
    np.testing.assert_array_equal(other.predict(observation)[0], env.candidates[[5, 5]])

    # evaluate.py's loader: sb3:dqn:<zip> acts on the continuous vector env, loaded without unpickling.
    from agents.policies import load_policy

    folder_kwargs = {"data_root": str(tiny_folder), "checkpoint": str(tiny_checkpoint), "num_glimpses": 2}
    vector_env = gym.make_vec("AdaGlimpse-ImageFolder-v0", num_envs=2, observation="map", map_size=16, **folder_kwargs)
    evaluated = load_policy(f"sb3:dqn:{tmp_path / 'dqn_grid.zip'}", vector_env)  # type: ignore[arg-type]
    assert isinstance(evaluated, GridActing)
    np.testing.assert_array_equal(evaluated.predict(observation, deterministic=True)[0], env.candidates[indices])
    ppo.save(tmp_path / "ppo.zip")
    with pytest.raises(ValueError, match="no glimpse grid"):
        load_policy(f"sb3:dqn:{tmp_path / 'ppo.zip'}", vector_env)  # type: ignore[arg-type]
    vector_env.close()
    env.close()


class FixedIndex:
    """A stand-in discrete model: always index ``k``."""

    def __init__(self, k: int) -> None:
        self.k = k

    def predict(self, observation, state=None, episode_start=None, deterministic=False):
        return np.full(len(observation), self.k), state


def test_policy_refuses_what_does_not_fit() -> None:
    image = spaces.Box(-3.0, 3.0, shape=(5, 16, 16), dtype=np.float32)
    flat = spaces.Box(-1.0, 1.0, shape=(10,), dtype=np.float32)
    with pytest.raises(ValueError, match="requires the 'map' observation"):
        GlimpseGridQPolicy(flat, spaces.Discrete(845), lambda _: 1e-3, glimpse_geometry=GEOMETRY)
    with pytest.raises(ValueError, match="needs glimpse_geometry"):
        GlimpseGridQPolicy(image, spaces.Discrete(845), lambda _: 1e-3)
    with pytest.raises(ValueError, match=r"requires Discrete\(18\) actions"):
        GlimpseGridQPolicy(image, spaces.Discrete(845), lambda _: 1e-3, glimpse_geometry=GEOMETRY, grid=GRID.to_dict())
    with pytest.raises(ValueError, match=r"requires Discrete\(845\)"):
        GlimpseGridQPolicy(image, spaces.Box(-1, 1, (3,)), lambda _: 1e-3, glimpse_geometry=GEOMETRY)
    with pytest.raises(ValueError, match="takes no net_arch"):
        GlimpseGridQPolicy(image, spaces.Discrete(845), lambda _: 1e-3, glimpse_geometry=GEOMETRY, net_arch=[64])
    with pytest.raises(ValueError, match="takes no features_extractor_class"):
        GlimpseGridQPolicy(image, spaces.Discrete(845), lambda _: 1e-3, glimpse_geometry=GEOMETRY,
                           features_extractor_class=torch.nn.Identity)  # fmt: skip
