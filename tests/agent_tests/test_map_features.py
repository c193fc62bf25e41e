"""The map trunk points where its features fire, and every algorithm builds on the map preset."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from gymnasium import spaces
from stable_baselines3 import PPO, TD3

from agents.map_features import GlimpseMapExtractor, SpatialSoftArgmax
from agents.trunks import policy_setup


def test_soft_argmax_finds_the_peak() -> None:
    features = torch.full((1, 2, 9, 9), -30.0)
    features[0, 0, 0, 8] = 30.0  # top right: x = 1, y = -1
    features[0, 1, 4, 4] = 30.0  # centre
    points = SpatialSoftArgmax()(features)
    torch.testing.assert_close(points, torch.tensor([[1.0, 0.0, -1.0, 0.0]]), atol=1e-4, rtol=0)


def test_map_extractor_shapes_and_refusals() -> None:
    space = spaces.Box(-3.0, 3.0, shape=(5, 32, 32), dtype=np.float32)
    extractor = GlimpseMapExtractor(space, features_dim=64, channels=8)
    assert extractor(torch.zeros(3, 5, 32, 32)).shape == (3, 64)
    with pytest.raises(ValueError, match=r"Box of shape \(C, M, M\)"):
        GlimpseMapExtractor(spaces.Box(0.0, 1.0, shape=(10,)))
    with pytest.raises(ValueError, match="feature_stride must be 2 or 4, got 3"):
        GlimpseMapExtractor(space, feature_stride=3)


@pytest.mark.parametrize("stride", [2, 4])
def test_map_extractor_feature_stride_sets_the_feature_map_size_and_keeps_the_receptive_field(stride: int) -> None:
    space = spaces.Box(-3.0, 3.0, shape=(5, 32, 32), dtype=np.float32)
    extractor = GlimpseMapExtractor(space, features_dim=64, channels=8, feature_stride=stride)
    maps = torch.zeros(1, 5, 32, 32, requires_grad=True)
    features = extractor.feature_map(maps)
    assert features.shape == (1, 8, 32 // stride, 32 // stride)
    assert extractor(maps.detach()).shape == (1, 64)
    assert extractor.last_where_logits is not None and extractor.last_where_logits.shape == (1, (32 // stride) ** 2)
    # Receptive field of the centre feature: the map pixels its gradient reaches (both trunks about 16 map px).
    features[0, :, 16 // stride, 16 // stride].sum().backward()
    assert maps.grad is not None
    rows = torch.nonzero(maps.grad.abs().sum(dim=(0, 1, 3)) > 0)[:, 0]
    assert 13 <= int(rows.max() - rows.min()) + 1 <= 18


def test_map_agents_save_their_trunk_stride() -> None:
    setup = policy_setup(spaces.Box(-3.0, 3.0, shape=(5, 32, 32), dtype=np.float32))
    assert setup.policy_kwargs["features_extractor_kwargs"]["feature_stride"] == 4  # written out: SB3 saves it


@pytest.mark.parametrize("algorithm", [TD3, PPO])
def test_other_algorithms_on_the_map_preset(algorithm, tiny_folder, tiny_checkpoint) -> None:
    from agents.sb3_adapter import make_sb3_vec_env

    env = make_sb3_vec_env("AdaGlimpse-ImageFolder-v0", num_envs=2, data_root=str(tiny_folder),
                           checkpoint=tiny_checkpoint, num_glimpses=2, observation="map", map_size=16)  # fmt: skip
    on_policy = algorithm is PPO
    setup = policy_setup(env.observation_space, on_policy=on_policy)
    extra = {"n_steps": 4, "batch_size": 8} if on_policy else {"learning_starts": 4, "buffer_size": 32}
    if setup.replay_buffer_class is not None:
        extra["replay_buffer_class"] = setup.replay_buffer_class
    model = algorithm(setup.policy, env, policy_kwargs=setup.policy_kwargs, seed=0, **extra)
    model.learn(16)
    assert model.num_timesteps >= 16
    env.close()


def test_spatial_actor_aims_at_its_where_point() -> None:
    from agents.map_critic import MapSACPolicy

    space = spaces.Box(-3.0, 3.0, shape=(5, 32, 32), dtype=np.float32)
    action_space = spaces.Box(-1.0, 1.0, shape=(3,), dtype=np.float32)
    from agents.map_features import map_policy_kwargs

    policy = MapSACPolicy(
        space, action_space, lambda _: 1e-3, **map_policy_kwargs(features_dim=32, channels=8, feature_stride=4)
    )
    extractor = policy.actor.features_extractor
    assert isinstance(extractor, GlimpseMapExtractor)
    with torch.no_grad():  # the where map fires on channel 3 of the input only (stride-4 trunk), no correction
        for parameter in policy.actor.mu.parameters():
            parameter.zero_()
        for layer in extractor.convolutions:
            if isinstance(layer, torch.nn.Conv2d):
                layer.weight.zero_()
                layer.bias.zero_()
        extractor.convolutions[0].weight[0, 3] = 1.0  # first conv channel copies the detail channel
        extractor.convolutions[2].weight[:, 0] = 1.0 / 9
        extractor.convolutions[4].weight[:, :, 1, 1] = 1.0
        extractor.where.weight.fill_(1.0)
        extractor.where_argmax.log_temperature.fill_(4.0)
    observation = torch.zeros(1, 5, 32, 32)
    observation[0, 3, 2:6, 26:30] = 1.0  # something bright at the top right
    actions, _ = policy.predict(observation.numpy(), deterministic=True)
    assert actions[0, 0] > 0.5 and actions[0, 1] < -0.5  # x right, y up
