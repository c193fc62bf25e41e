"""The grid policy: a categorical distribution over candidate glimpses, scored from the map, for PPO and A2C."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from gymnasium import spaces
from map_env import tiny_map_env
from stable_baselines3 import A2C, PPO

from agents.critic_search import CriticSearch
from agents.grid_policy import GlimpseGrid, GlimpseGridDistribution, GlimpseGridExtractor, GlimpseGridPolicy
from agents.map_critic import GlimpseGeometry, glimpse_geometry_of

GEOMETRY = GlimpseGeometry(image_size=(224, 224), min_crop=32.0, max_crop=224.0)
ACTION_SPACE = spaces.Box(-1.0, 1.0, shape=(3,), dtype=np.float32)


def test_grid_is_the_critic_search_grid() -> None:
    grid = GlimpseGrid(positions=5, scales=4)
    candidates = grid.candidates(GEOMETRY)
    assert candidates.shape == (grid.size, 3) == (5 * 5 * 4, 3)
    search = CriticSearch(positions=5, scales=4)
    holder = torch.nn.Linear(1, 1)
    holder.glimpse_geometry = GEOMETRY  # type: ignore[assignment]
    torch.testing.assert_close(torch.unique(candidates[:, 2]), search.scale_values(holder, 4))  # type: ignore[arg-type]
    # Geometric sides: 32, 61, 117, 224 px, ascending.
    sides = 32 + (torch.unique(candidates[:, 2]) + 1) / 2 * 192
    torch.testing.assert_close(sides, torch.tensor([32.0, 61.0, 117.1, 224.0]), atol=0.6, rtol=0)
    with pytest.raises(ValueError, match="positions must be an integer >= 1"):
        GlimpseGrid(positions=0)
    with pytest.raises(ValueError, match="scale_spacing must be one of"):
        GlimpseGrid(scale_spacing="log")


def test_distribution_scores_the_grid_point_of_each_action() -> None:
    candidates = GlimpseGrid(positions=5, scales=3).candidates(GEOMETRY)
    distribution = GlimpseGridDistribution(candidates, positions=5, scales=3)
    everything = torch.arange(len(candidates))
    points = distribution.actions(everything)
    assert torch.equal(distribution.indices(points), everything)
    assert torch.equal(distribution.indices(points.double().float()), everything)  # as stored by a buffer
    # Off-grid actions go to the nearest point: on a 5-point axis (step 0.5) +-0.2 stays, 0.3 moves on; on the
    # scale axis less than half the gap to the next side stays.
    inside = (points[:, :2].abs() < 1).all(dim=1)
    for nudge, expected_step in ((0.2, 0), (-0.2, 0), (0.3, 1)):
        moved = points.clone()
        moved[:, 0] += nudge
        expected = everything + expected_step * 5 * 3
        assert torch.equal(distribution.indices(moved)[inside], expected[inside]), nudge
    axis = torch.unique(candidates[:, 2])
    nudged_scale = points.clone()
    nudged_scale[:, 2] += 0.45 * (axis[1] - axis[0])  # below half the smallest gap: the same side
    assert torch.equal(distribution.indices(nudged_scale), everything)

    logits = torch.randn(4, len(candidates), generator=torch.Generator().manual_seed(0))
    distribution.proba_distribution(logits)
    actions = distribution.sample()
    assert actions.shape == (4, 3)
    assert all(any(torch.equal(row, point) for point in candidates) for row in actions)  # grid points
    expected_log_prob = logits.log_softmax(dim=1).gather(1, distribution.indices(actions)[:, None])[:, 0]
    torch.testing.assert_close(distribution.log_prob(actions), expected_log_prob)
    torch.testing.assert_close(distribution.mode(), candidates[logits.argmax(dim=1)])
    with pytest.raises(ValueError, match="requires"):
        GlimpseGridDistribution(candidates, positions=5, scales=4)


def test_policy_starts_uniform_and_acts_on_the_grid(tiny_folder: Path, tiny_checkpoint: Path) -> None:
    env = tiny_map_env(tiny_folder, tiny_checkpoint)
    grid = {"positions": 7, "scales": 3}
    model = PPO(GlimpseGridPolicy, env, n_steps=4, batch_size=8, seed=0, device="cpu",
                policy_kwargs={"glimpse_geometry": glimpse_geometry_of(env), "grid": grid})  # fmt: skip
    observation = torch.as_tensor(env.reset())
    distribution = model.policy.get_distribution(observation)
    entropy = distribution.entropy()
    assert entropy is not None
    torch.testing.assert_close(entropy, torch.full((2,), float(np.log(7 * 7 * 3))), atol=1e-3, rtol=0)
    actions, values, log_prob = model.policy(observation)
    assert actions.shape == (2, 3) and values.shape == (2, 1)
    extractor = model.policy.features_extractor
    assert isinstance(extractor, GlimpseGridExtractor)
    candidates = GlimpseGrid(positions=7, scales=3).candidates(extractor.geometry)
    assert all(any(torch.equal(row, point) for point in candidates) for row in actions)
    _, evaluated, _ = model.policy.evaluate_actions(observation, actions)
    torch.testing.assert_close(evaluated, log_prob)
    env.close()


def test_ppo_stores_actions_it_scores_back_exactly_and_saves(
    tiny_folder: Path, tiny_checkpoint: Path, tmp_path: Path
) -> None:
    env = tiny_map_env(tiny_folder, tiny_checkpoint)
    model = PPO(GlimpseGridPolicy, env, n_steps=4, batch_size=8, seed=0, device="cpu",
                policy_kwargs={"glimpse_geometry": glimpse_geometry_of(env), "grid": {"positions": 7}})  # fmt: skip
    _, callback = model._setup_learn(4, callback=None)
    model.collect_rollouts(model.env, callback, model.rollout_buffer, n_rollout_steps=4)  # no update yet
    buffer = model.rollout_buffer
    observations = torch.as_tensor(buffer.observations.reshape(-1, *env.observation_space.shape))
    actions = torch.as_tensor(buffer.actions.reshape(-1, 3))
    candidates = model.policy.action_dist.candidates
    assert all(any(torch.equal(row, point) for point in candidates) for row in actions)  # grid points stored
    # PPO's ratio starts from the log-probabilities of the rollout: the stored float32 actions score back to them.
    with torch.no_grad():
        _, log_prob, _ = model.policy.evaluate_actions(observations, actions)
    np.testing.assert_allclose(log_prob.numpy(), buffer.log_probs.reshape(-1), rtol=1e-6, atol=1e-6)
    model.learn(8)

    from agents.sb3_files import load_sb3

    model.save(tmp_path / "ppo_grid.zip")
    loaded = load_sb3(PPO, tmp_path / "ppo_grid.zip", env.observation_space, env.action_space)  # no unpickling
    observation = env.reset()
    expected, _ = model.predict(observation, deterministic=True)
    got, _ = loaded.predict(observation, deterministic=True)
    np.testing.assert_array_equal(got, expected)
    env.close()


def test_a2c_takes_the_policy_too(tiny_folder: Path, tiny_checkpoint: Path) -> None:
    env = tiny_map_env(tiny_folder, tiny_checkpoint)
    model = A2C(GlimpseGridPolicy, env, n_steps=2, seed=0, device="cpu",
                policy_kwargs={"glimpse_geometry": glimpse_geometry_of(env), "grid": {"positions": 5}})  # fmt: skip
    model.learn(8)
    action, _ = model.predict(env.reset(), deterministic=True)
    assert action.shape == (2, 3) and np.all(np.abs(action) <= 1)
    env.close()


def test_policy_refuses_other_observations_and_a_missing_geometry() -> None:
    flat = spaces.Box(-1.0, 1.0, shape=(10,), dtype=np.float32)
    with pytest.raises(ValueError, match="requires the 'map' observation"):
        GlimpseGridPolicy(flat, ACTION_SPACE, lambda _: 3e-4, glimpse_geometry={})
    image = spaces.Box(-3.0, 3.0, shape=(5, 16, 16), dtype=np.float32)
    with pytest.raises(ValueError, match="needs glimpse_geometry"):
        GlimpseGridPolicy(image, ACTION_SPACE, lambda _: 3e-4)
    with pytest.raises(ValueError, match="glimpse action Box of shape"):
        GlimpseGridPolicy(image, spaces.Discrete(4), lambda _: 3e-4, glimpse_geometry={})
    geometry = {"image_size": [224, 224], "min_crop": 32.0, "max_crop": 224.0}
    with pytest.raises(ValueError, match="takes no use_sde"):
        GlimpseGridPolicy(image, ACTION_SPACE, lambda _: 3e-4, glimpse_geometry=geometry, use_sde=True)
    with pytest.raises(ValueError, match="one trunk"):
        GlimpseGridPolicy(
            image, ACTION_SPACE, lambda _: 3e-4, glimpse_geometry=geometry, share_features_extractor=False
        )
    with pytest.raises(ValueError, match="positions must be an integer"):
        GlimpseGridPolicy(image, ACTION_SPACE, lambda _: 3e-4, glimpse_geometry=geometry, grid={"positions": True})
