"""The map critic reads the map under the glimpse an action cuts: geometry, translation, gradients, SAC, files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from gymnasium import spaces
from map_env import tiny_map_env

from adaglimpse_env.glimpse import action_to_unit, compute_glimpse_boxes
from agents.map_critic import GlimpseGeometry, GlimpseMapCritic, MapSACPolicy, sample_under_glimpses
from agents.map_features import map_policy_kwargs

GEOMETRY = GlimpseGeometry(image_size=(224, 224), min_crop=32, max_crop=224.0)
MAP_SPACE = spaces.Box(-3.0, 3.0, shape=(5, 64, 64), dtype=np.float32)
ACTION_SPACE = spaces.Box(-1.0, 1.0, shape=(3,), dtype=np.float32)


def test_glimpse_boxes_match_the_env_geometry() -> None:
    actions = torch.rand(64, 3, generator=torch.Generator().manual_seed(0)) * 2 - 1
    centre, half = GEOMETRY.glimpse_boxes(actions)
    crop = compute_glimpse_boxes(action_to_unit(actions), (224, 224)).crop.float()  # (y, x, side), floored
    expected_centre = (crop[:, [1, 0]] + crop[:, 2:3] / 2) / 112.0 - 1.0
    torch.testing.assert_close(centre, expected_centre, atol=2 / 112, rtol=0)  # up to the env's flooring
    torch.testing.assert_close(half[:, 0], crop[:, 2] / 224.0, atol=1 / 224, rtol=0)


def test_samples_are_the_feature_map_under_the_glimpse() -> None:
    # A feature map whose two channels are the x and y coordinates of each cell centre reads back the sample points.
    size = 16
    coords = (torch.arange(size, dtype=torch.float32) + 0.5) / size * 2 - 1
    grid_y, grid_x = torch.meshgrid(coords, coords, indexing="ij")
    feature_map = torch.stack((grid_x, grid_y))[None]  # (1, 2, 16, 16)
    centre, half = torch.tensor([[0.25, -0.5]]), torch.tensor([[0.2, 0.2]])
    sampled = sample_under_glimpses(feature_map, centre, half).reshape(2, 4, 4)
    offsets = torch.tensor([-0.75, -0.25, 0.25, 0.75]) * 0.2
    torch.testing.assert_close(sampled[0, 0], 0.25 + offsets, atol=1e-5, rtol=0)  # x along a row
    torch.testing.assert_close(sampled[1, :, 0], -0.5 + offsets, atol=1e-5, rtol=0)  # y down a column


def make_critic(geometry: GlimpseGeometry = GEOMETRY) -> GlimpseMapCritic:
    policy = MapSACPolicy(
        MAP_SPACE,
        ACTION_SPACE,
        lambda _: 1e-3,
        glimpse_geometry={"image_size": list(geometry.image_size), "min_crop": 32, "max_crop": 224.0},
        **map_policy_kwargs(features_dim=32, channels=8),
    )
    assert isinstance(policy.critic, GlimpseMapCritic)
    return policy.critic


def test_critic_values_follow_the_map_content_not_the_place() -> None:
    # The same blob moved by a few map cells, and the glimpse moved with it, gives the same glimpse samples, so
    # the only difference in Q is what the global summary and the action say (checked through the samples).
    torch.manual_seed(0)
    critic = make_critic()
    observation = torch.zeros(2, 5, 64, 64)
    observation[0, :3, 24:28, 24:28] = 2.0
    observation[1, :3, 40:44, 32:36] = 2.0  # 16 rows down, 8 columns right (of 64): + (0.25, 0.5) in [-1, 1]
    with torch.no_grad():
        _, feature_map = critic.state_features(observation)
    # Centred on the first blob, well inside the map (away from the convolutions' zero padding).
    smallest = torch.tensor([[-0.2 / (1 - 32 / 224), -0.2 / (1 - 32 / 224), -1.0]])
    centre, half = GEOMETRY.glimpse_boxes(smallest)
    shifted_centre = centre[:1] + torch.tensor([[0.25, 0.5]])  # where the second glimpse must sit
    first = sample_under_glimpses(feature_map[:1], centre[:1], half[:1])
    second = sample_under_glimpses(feature_map[1:], shifted_centre, half[:1])
    torch.testing.assert_close(first, second, atol=1e-5, rtol=0)


def test_critic_gives_the_actor_a_gradient_in_position_and_scale() -> None:
    torch.manual_seed(0)
    critic = make_critic()
    observation = torch.randn(4, 5, 64, 64)
    actions = (torch.rand(4, 3) * 1.6 - 0.8).requires_grad_(True)
    with torch.no_grad():
        state = critic.state_features(observation)
    q_first, q_second = critic.q_values(state, actions)
    (q_first.sum() + q_second.sum()).backward()
    assert actions.grad is not None and bool((actions.grad.abs() > 0).all())
    assert q_first.shape == (4, 1)
    torch.testing.assert_close(critic(observation, actions.detach())[0], q_first.detach())
    torch.testing.assert_close(critic.q1_forward(observation, actions.detach()), q_first.detach())


def test_many_candidates_per_state_score_as_one_action_at_a_time() -> None:
    # The K-candidate path computes the summary's share of the first layer once per state: the same function.
    torch.manual_seed(0)
    critic = make_critic()
    observation = torch.randn(3, 5, 64, 64)
    candidates = torch.rand(3, 7, 3) * 2 - 1
    with torch.no_grad():
        state = critic.state_features(observation)
        many = critic.q_values(state, candidates)
        for k in range(7):
            one = critic.q_values(state, candidates[:, k])
            for head_many, head_one in zip(many, one, strict=True):
                torch.testing.assert_close(head_many[:, k], head_one, atol=1e-5, rtol=1e-5)
    assert many[0].shape == (3, 7, 1)


def test_map_sac_uses_the_spatial_critic_and_resumes_from_its_zip(
    tiny_folder: Path, tiny_checkpoint: Path, tmp_path: Path
) -> None:
    from stable_baselines3 import SAC

    from agents.sac import GlimpseSAC, make_sac
    from agents.sb3_files import load_sb3

    env = tiny_map_env(tiny_folder, tiny_checkpoint)
    model = make_sac(env, seed=0, device="cpu", learning_starts=4, buffer_size=32, batch_size=4)
    assert isinstance(model.critic, GlimpseMapCritic)
    assert model.critic.glimpse_geometry.image_size == tuple(env.env.image_size)
    model.learn(12)
    model.save(tmp_path / "map_sac.zip")
    loaded = load_sb3(GlimpseSAC, tmp_path / "map_sac.zip", env.observation_space, env.action_space, env=env)
    assert isinstance(loaded.critic, GlimpseMapCritic)
    observation = env.reset()
    for name, value in model.policy.state_dict().items():
        torch.testing.assert_close(loaded.policy.state_dict()[name], value)
    np.testing.assert_array_equal(
        model.predict(observation, deterministic=True)[0], loaded.predict(observation, deterministic=True)[0]
    )
    assert issubclass(GlimpseSAC, SAC)
    env.close()


def test_spatial_critic_can_be_turned_off(tiny_folder: Path, tiny_checkpoint: Path) -> None:
    from stable_baselines3.common.policies import ContinuousCritic

    from agents.sac import make_sac

    env = tiny_map_env(tiny_folder, tiny_checkpoint)
    model = make_sac(env, seed=0, device="cpu", learning_starts=4, buffer_size=32, spatial_critic=False)
    assert type(model.critic) is ContinuousCritic
    env.close()


class _PeakCritic:
    """Q = minus the distance of the glimpse position to one point: the best cell is known."""

    def __init__(self, peak: tuple[float, float]) -> None:
        self.peak = torch.tensor(peak)

    def q_values(self, state: object, actions: torch.Tensor) -> tuple[torch.Tensor, ...]:
        value = -(actions[..., :2] - self.peak).norm(dim=-1, keepdim=True)
        return value, value + 0.01


def test_where_map_loss_moves_the_heat_map_to_the_best_cell() -> None:
    from agents.map_critic import where_map_loss

    torch.manual_seed(0)
    logits = torch.zeros(4, 64, requires_grad=True)  # an 8 x 8 heat map, flat at the start
    where = torch.zeros(4, 2)  # its soft-argmax: the centre
    actions = torch.tensor([[0.0, 0.0, -1.0]]).repeat(4, 1)
    critic = _PeakCritic((0.95 * 5 / 7, 0.95 * -3 / 7))  # cell column 6, row 2 (of 8; corner cells at +-1)
    optimiser = torch.optim.SGD([logits], lr=0.2)
    for _ in range(800):
        loss = where_map_loss(logits, where, critic, (torch.zeros(4, 1), torch.zeros(4, 1)), actions)  # type: ignore[arg-type]
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    # Random candidate sets spread some mass onto the best cell's neighbours: the best cell is the mode, and
    # most of the mass is around it.
    heat = logits.detach().softmax(dim=1).reshape(4, 8, 8)
    assert heat.flatten(1).argmax(dim=1).tolist() == [2 * 8 + 6] * 4
    assert bool((heat[:, 1:4, 5:8].sum(dim=(1, 2)) > 0.5).all())


def test_map_sac_logs_and_applies_the_where_loss(tiny_folder: Path, tiny_checkpoint: Path) -> None:
    from stable_baselines3.common.logger import configure

    from agents.sac import make_sac

    env = tiny_map_env(tiny_folder, tiny_checkpoint)
    model = make_sac(env, seed=0, device="cpu", learning_starts=16, buffer_size=32, batch_size=4)
    model.learn(16)
    model.set_logger(configure(None, []))
    where = model.actor.features_extractor.where
    start = where.weight.detach().clone()
    model.train(gradient_steps=2, batch_size=4)
    assert model.logger.name_to_value["train/where_loss"] > 0
    assert not torch.equal(where.weight, start)  # the heat map learns (SB3's loss alone moves it too, but less)
    env.close()
