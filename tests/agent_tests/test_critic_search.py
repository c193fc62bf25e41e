"""Acting by searching the map critic: the grid, the policy's probabilities, its actions, SAC's update, files."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from map_env import tiny_map_env

from agents.critic_search import CriticSearch, candidate_values, glimpse_candidates, grid_cells, grid_step
from agents.map_critic import GlimpseGeometry


class _PeakCritic:
    """Q = minus the distance of ``(x, y, scale)`` to one point (two heads, the second 0.01 higher)."""

    glimpse_geometry = GlimpseGeometry(image_size=(224, 224), min_crop=32.0, max_crop=224.0)

    def __init__(self, peak: tuple[float, float, float]) -> None:
        self.peak = torch.tensor(peak)

    def parameters(self) -> Iterator[torch.Tensor]:
        return iter([torch.zeros(1)])

    def state_features(self, observations: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.zeros(observations.shape[0], 1), torch.zeros(observations.shape[0], 1)

    def q_values(self, state: object, actions: torch.Tensor) -> tuple[torch.Tensor, ...]:
        value = -(actions - self.peak).norm(dim=-1, keepdim=True)
        return value, value + 0.01


def test_candidates_cover_the_action_box_on_a_grid() -> None:
    candidates = glimpse_candidates(5, 3, torch.zeros(1))
    assert candidates.shape == (5 * 5 * 3, 3)
    assert candidates.min().item() == -1.0 and candidates.max().item() == 1.0
    assert sorted(set(candidates[:, 0].tolist())) == [-1.0, -0.5, 0.0, 0.5, 1.0]
    assert sorted(set(candidates[:, 2].tolist())) == [-1.0, 0.0, 1.0]
    assert len({tuple(row) for row in candidates.tolist()}) == len(candidates)  # no point twice
    assert glimpse_candidates(1, 1, torch.zeros(1)).tolist() == [[0.0, 0.0, 0.0]]
    assert grid_step(5) == 0.5 and grid_step(1) == 2.0


def test_probabilities_are_a_distribution_with_an_exploration_floor() -> None:
    values = torch.tensor([[0.0, 0.01, 0.02, 0.03], [1.0, 1.0, 1.0, 1.0]])
    search = CriticSearch(sharpness=3.0, explore=0.2)
    probabilities = search.probabilities(values)
    torch.testing.assert_close(probabilities.sum(dim=1), torch.ones(2))
    assert bool((probabilities >= 0.2 / 4 - 1e-7).all())
    assert probabilities[0].argmax().item() == 3  # the best value gets the most mass
    # Standardised: values a hundred times larger give the same policy.
    torch.testing.assert_close(search.probabilities(values * 100), probabilities)
    torch.testing.assert_close(probabilities[1], torch.full((4,), 0.25))  # equal values: uniform
    uniform = CriticSearch(sharpness=0.0, explore=0.0).probabilities(values)
    torch.testing.assert_close(uniform, torch.full((2, 4), 0.25))


def test_deterministic_action_is_the_best_candidate_and_sampled_ones_stay_near_it() -> None:
    torch.manual_seed(0)
    critic: Any = _PeakCritic((0.5, -0.5, -1.0))
    search = CriticSearch(positions=5, scales=3, sharpness=8.0, explore=0.0, scale_spacing="linear", refine=0)
    observations = torch.zeros(64, 5, 16, 16)
    best = search.act(critic, observations, deterministic=True)
    torch.testing.assert_close(best, torch.tensor([[0.5, -0.5, -1.0]]).repeat(64, 1))
    sampled = search.act(critic, observations, deterministic=False)
    assert bool((sampled.abs() <= 1.0).all())
    # Jittered within the chosen cell (half a step each way), and with a sharp policy mostly around the peak.
    near = (sampled - torch.tensor([0.5, -0.5, -1.0])).abs()
    assert float((near[:, :2] <= 0.25 + 1e-6).all(dim=1).float().mean()) > 0.5
    assert len({tuple(row) for row in sampled.tolist()}) == 64  # continuous actions, not grid points


def test_geometric_scales_are_zoom_levels_and_cells_fit_their_gaps() -> None:
    critic: Any = _PeakCritic((0.0, 0.0, 0.0))
    scales = CriticSearch().scale_values(critic, 5)
    sides = 32.0 + (scales.double() + 1.0) / 2.0 * (224.0 - 32.0)
    torch.testing.assert_close(sides, torch.tensor(np.geomspace(32.0, 224.0, 5)), rtol=1e-5, atol=1e-4)
    assert scales[0].item() == -1.0 and scales[-1].item() == 1.0
    assert bool((scales.diff() > 0).all())
    linear = CriticSearch(scale_spacing="linear").scale_values(critic, 5)
    torch.testing.assert_close(linear, torch.linspace(-1.0, 1.0, 5))
    # Cells: half the position step either way; on the scale axis halfway to each neighbour, so they tile the axis.
    candidates = glimpse_candidates(3, 5, scales, scales)
    below, above = grid_cells(candidates, 3, scales)
    assert bool((below[:, :2] == grid_step(3) / 2).all()) and bool((above[:, :2] == grid_step(3) / 2).all())
    for index in range(4):  # each cell's top meets the next one's bottom
        top = scales[index] + above[candidates[:, 2] == scales[index], 2]
        bottom = scales[index + 1] - below[candidates[:, 2] == scales[index + 1], 2]
        torch.testing.assert_close(top, bottom)


def test_stochastic_actions_cover_the_scale_axis_without_holes() -> None:
    # A flat critic and no sharpness: every candidate equally likely; jittered actions must reach every scale.
    torch.manual_seed(0)
    critic: Any = _PeakCritic((0.0, 0.0, 0.0))
    critic.q_values = lambda state, actions: (torch.zeros(*actions.shape[:-1], 1),) * 2
    search = CriticSearch(positions=3, scales=5, sharpness=0.0, explore=0.0)
    actions = search.act(critic, torch.zeros(20_000, 5, 16, 16), deterministic=False)
    counts = torch.histc(actions[:, 2], bins=40, min=-1.0, max=1.0)
    assert bool((counts > 0).all()), counts
    assert bool((actions.abs() <= 1.0).all())


def test_deterministic_refinement_lands_between_grid_points() -> None:
    peak = (0.6, -0.4, -0.95)
    critic: Any = _PeakCritic(peak)
    observations = torch.zeros(4, 5, 16, 16)
    coarse = CriticSearch(positions=5, scales=3, refine=0).act(critic, observations, deterministic=True)
    refined = CriticSearch(positions=5, scales=3, refine=5).act(critic, observations, deterministic=True)
    target = torch.tensor(peak)
    assert bool(((refined - target).norm(dim=1) < (coarse - target).norm(dim=1) - 0.05).all())
    # Within the local grid's resolution (an eighth of the coarse step in position).
    assert bool(((refined[:, :2] - target[:2]).abs() <= 0.0625 + 1e-6).all())
    assert bool((refined.abs() <= 1.0).all())


def test_next_state_value_is_the_expected_value_under_the_policy() -> None:
    search = CriticSearch(target_positions=3, target_scales=3, sharpness=2.0, explore=0.1)
    middle = search.scale_values(_PeakCritic((0.0, 0.0, 0.0)), 3)[1].item()  # 85 px: the geometric mean side
    critic: Any = _PeakCritic((0.0, 0.0, middle))
    observations = torch.zeros(2, 5, 16, 16)
    value = search.next_state_value(critic, observations)
    candidates = glimpse_candidates(3, 3, observations, search.scale_values(critic, 3))
    values = candidate_values(critic, critic.state_features(observations), candidates)
    assert value.shape == (2, 1)
    torch.testing.assert_close(value[:, 0], (search.probabilities(values) * values).sum(dim=1))
    assert values.min().item() < value[0, 0].item() < values.max().item()
    assert values.max().item() == 0.0  # the smaller head: the peak scores 0


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("positions", 0),
        ("scales", 1.5),
        ("sharpness", -1.0),
        ("explore", 1.5),
        ("target_positions", -2),
        ("refine", -1),
        ("scale_spacing", "log"),
    ],
)
def test_bad_settings_are_refused_with_the_field_named(field: str, value: Any) -> None:
    with pytest.raises(ValueError, match=f"CriticSearch.{field}"):
        CriticSearch(**{field: value})


def test_sac_with_critic_search_trains_the_critic_only_and_acts_from_it(
    tiny_folder: Path, tiny_checkpoint: Path, tmp_path: Path
) -> None:
    from stable_baselines3.common.logger import configure

    from agents.map_critic import GlimpseMapCritic
    from agents.sac import GlimpseSAC, make_sac
    from agents.sb3_files import load_sb3

    env = tiny_map_env(tiny_folder, tiny_checkpoint)
    search = CriticSearch(positions=3, scales=2, target_positions=2, target_scales=1)
    model = make_sac(env, seed=0, device="cpu", learning_starts=8, buffer_size=32, batch_size=4, critic_search=search)
    assert model.policy.critic_search == search
    model.learn(8)
    model.set_logger(configure(None, []))
    actor_start = {name: value.clone() for name, value in model.actor.state_dict().items()}
    critic_start = {name: value.clone() for name, value in model.critic.state_dict().items()}
    model.train(gradient_steps=2, batch_size=4)
    for name, value in model.actor.state_dict().items():
        torch.testing.assert_close(value, actor_start[name])  # the actor does not act, so it does not learn
    assert any(not torch.equal(value, critic_start[name]) for name, value in model.critic.state_dict().items())
    assert np.isfinite(model.logger.name_to_value["train/critic_loss"])
    assert "train/actor_loss" not in model.logger.name_to_value

    # Deterministic actions are the critic's best grid point, refined locally: never worth less than it.
    observation = env.reset()
    action, _ = model.predict(observation, deterministic=True)
    assert isinstance(model.critic, GlimpseMapCritic)
    with torch.no_grad():
        expected = search.act(model.critic, torch.as_tensor(observation), deterministic=True).numpy()
    np.testing.assert_allclose(action, expected)
    with torch.no_grad():
        observations = torch.as_tensor(observation)
        coarse = replace(search, refine=0).act(model.critic, observations, deterministic=True)
        state = model.critic.state_features(observations)
        chosen_value = torch.min(*model.critic.q_values(state, torch.as_tensor(action).float()))
        coarse_value = torch.min(*model.critic.q_values(state, coarse))
    grid = glimpse_candidates(3, 2, torch.zeros(1), search.scale_values(model.critic, 2)).numpy()
    assert all(any(np.allclose(row, point) for point in grid) for row in coarse.numpy())
    assert bool((chosen_value >= coarse_value - 1e-6).all())
    assert np.abs(action - coarse.numpy())[:, :2].max() <= grid_step(3) / 2 + 1e-6

    # The setting travels with the zip (as readable JSON: no trust needed) and the loaded agent acts the same.
    model.save(tmp_path / "search.zip")
    loaded = load_sb3(GlimpseSAC, tmp_path / "search.zip", env.observation_space, env.action_space)
    assert loaded.policy.critic_search == search
    np.testing.assert_array_equal(loaded.predict(observation, deterministic=True)[0], action)
    env.close()


def test_critic_search_needs_the_map_critic(tiny_folder: Path, tiny_checkpoint: Path) -> None:
    from agents.sac import make_sac

    env = tiny_map_env(tiny_folder, tiny_checkpoint)
    with pytest.raises(ValueError, match="critic_search needs the map critic"):
        make_sac(env, seed=0, device="cpu", spatial_critic=False, critic_search=CriticSearch())
    env.close()


def test_critic_target_is_reward_plus_discounted_next_value_of_the_target_critic(
    tiny_folder: Path, tiny_checkpoint: Path
) -> None:
    from types import SimpleNamespace

    from agents.sac import make_sac

    env = tiny_map_env(tiny_folder, tiny_checkpoint)
    search = CriticSearch(target_positions=3, target_scales=2)
    model = make_sac(env, seed=0, device="cpu", learning_starts=4, buffer_size=32, critic_search=search)
    with torch.no_grad():  # a target critic that differs from the online one: the target must read the former
        for parameter in model.critic_target.parameters():
            parameter.add_(0.1)
    torch.manual_seed(0)
    observations, next_observations = torch.randn(4, 5, 16, 16), torch.randn(4, 5, 16, 16)
    actions = torch.rand(4, 3) * 2 - 1
    rewards = torch.tensor([[0.5], [0.0], [-0.2], [1.0]])
    dones = torch.tensor([[0.0], [1.0], [0.0], [0.0]])
    batch = SimpleNamespace(observations=observations, next_observations=next_observations, actions=actions,
                            rewards=rewards, dones=dones)  # fmt: skip
    next_values = search.next_state_value(model.critic_target, next_observations)
    expected_target = rewards + (1 - dones) * 0.9 * next_values
    with torch.no_grad():
        current = model.critic(observations, actions)
    expected_loss = 0.5 * sum(torch.nn.functional.mse_loss(q, expected_target) for q in current)
    assert model._critic_step(batch, 0.9, search) == pytest.approx(float(expected_loss), rel=1e-5)
    env.close()


def test_stochastic_search_acting_repeats_with_the_seed(tiny_folder: Path, tiny_checkpoint: Path) -> None:
    # No random warm-up: every collected action comes from the critic search (SB3's _sample_action -> predict).
    from agents.sac import make_sac

    def collected_actions() -> np.ndarray:
        env = tiny_map_env(tiny_folder, tiny_checkpoint)
        model = make_sac(env, seed=3, device="cpu", learning_starts=0, buffer_size=32, batch_size=4,
                         critic_search=CriticSearch(positions=5, scales=3))  # fmt: skip
        model.learn(12)
        env.close()
        assert model.replay_buffer is not None
        return model.replay_buffer.actions[: model.replay_buffer.pos].copy()

    first, second = collected_actions(), collected_actions()
    assert first.shape[0] == 6 and bool((np.abs(first) <= 1).all())
    np.testing.assert_array_equal(first, second)


def test_settings_saved_before_a_field_existed_keep_the_behaviour_they_were_trained_with() -> None:
    legacy = CriticSearch.from_settings({"positions": 13, "scales": 5, "sharpness": 6.0})
    assert (legacy.scale_spacing, legacy.refine) == ("linear", 0)
    assert CriticSearch.from_settings(CriticSearch().to_dict()) == CriticSearch()  # new files: as saved
    with pytest.raises(ValueError, match=r"unknown keys \['unknown'\]"):
        CriticSearch.from_settings({"positions": 13, "unknown": 1})


def test_zip_saved_before_the_new_search_fields_loads_acting_as_trained(
    tiny_folder: Path, tiny_checkpoint: Path, tmp_path: Path
) -> None:
    # A zip of an earlier version: its policy_kwargs' critic_search lacks scale_spacing and refine, and its trunk
    # kwargs lack feature_stride. It loads with linear sides, no refinement and the stride-4 trunk it holds.
    import json
    import zipfile

    from agents.sac import GlimpseSAC, make_sac
    from agents.sb3_files import load_sb3

    env = tiny_map_env(tiny_folder, tiny_checkpoint)
    search = CriticSearch(positions=3, scales=3, target_positions=2, target_scales=1, scale_spacing="linear", refine=0)
    model = make_sac(env, seed=0, device="cpu", learning_starts=8, buffer_size=32, batch_size=4, critic_search=search)
    model.save(tmp_path / "new.zip")
    with zipfile.ZipFile(tmp_path / "new.zip") as source, zipfile.ZipFile(tmp_path / "old.zip", "w") as target:
        for item in source.infolist():
            payload = source.read(item)
            if item.filename == "data":
                data = json.loads(payload)
                for key in ("scale_spacing", "refine"):
                    del data["policy_kwargs"]["critic_search"][key]
                del data["policy_kwargs"]["features_extractor_kwargs"]["feature_stride"]
                payload = json.dumps(data).encode()
            target.writestr(item, payload)
    loaded = load_sb3(GlimpseSAC, tmp_path / "old.zip", env.observation_space, env.action_space)
    assert loaded.policy.critic_search == search  # the legacy values, not today's defaults
    assert loaded.policy.critic.features_extractor.feature_stride == 4
    observation = env.reset()
    np.testing.assert_array_equal(
        loaded.predict(observation, deterministic=True)[0], model.predict(observation, deterministic=True)[0]
    )
    env.close()
