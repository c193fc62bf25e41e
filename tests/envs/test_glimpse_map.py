"""The ``map`` observation: what the glimpses showed, where they showed it, at the detail they showed it."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch

from adaglimpse_env.envs.glimpse_map import GlimpseMap, cell_detail
from adaglimpse_env.glimpse import compute_glimpse_boxes, extract_glimpses

WHOLE = np.array([0.0, 0.0, 1.0], dtype=np.float32)  # (x, y, scale): the whole image


def _glimpse(image: torch.Tensor, unit: list[float]) -> tuple[torch.Tensor, torch.Tensor]:
    """Patches ``(1, 4, 3, 16, 16)`` and cells ``(1, 4, 4)`` of one original-order unit action."""
    action = torch.tensor([unit], dtype=torch.float32)
    patches, _ = extract_glimpses(image, action, 2)
    return patches, compute_glimpse_boxes(action, (64, 64), 2).cells


def test_map_paints_each_glimpse_where_it_was_and_keeps_the_finest() -> None:
    image = torch.zeros(1, 3, 64, 64)
    image[:, :, :32, :32] = 1.0  # a bright top-left quadrant
    glimpse_map = GlimpseMap(1, 16, (64, 64), torch.device("cpu"))
    glimpse_map.paint(slice(None), *_glimpse(image, [0.0, 0.0, 1.0]))  # whole image: four 32-px cells
    observation = glimpse_map.observation(torch.tensor([0.5]))
    assert observation.shape == (1, 5, 16, 16)
    pixels, detail, budget = observation[0, :3], observation[0, 3], observation[0, 4]
    assert torch.allclose(budget, torch.full_like(budget, 0.5))
    assert torch.allclose(detail, cell_detail(torch.tensor([32.0]), 64).expand(16, 16))
    assert pixels[:, 1:7, 1:7].min() > 0.9 and pixels[:, 9:, 9:].abs().max() < 0.1  # where it was, not elsewhere

    # A finer glimpse (32 px, 16-px cells) at the bottom right raises the detail there and only there...
    glimpse_map.paint(slice(None), *_glimpse(image, [1.0, 1.0, 0.0]))
    detail = glimpse_map.observation(torch.tensor([1.0]))[0, 3]
    assert torch.allclose(detail[8:, 8:], torch.ones(8, 8)) and detail[:8, :8].max() < 1.0
    # ... and a coarse glimpse afterwards does not hide it.
    glimpse_map.paint(slice(None), *_glimpse(image, [0.0, 0.0, 1.0]))
    assert torch.allclose(glimpse_map.observation(torch.tensor([1.0]))[0, 3, 8:, 8:], torch.ones(8, 8))
    glimpse_map.clear(slice(None))
    assert glimpse_map.observation(torch.tensor([0.0])).abs().max() == 0.0


def test_overlapping_cells_of_an_odd_sided_glimpse_are_not_painted_twice() -> None:
    # A 33-px glimpse: 16-px first cells and 17-px last ones, which overlap their neighbours by one pixel.
    image = torch.full((1, 3, 64, 64), 0.5)
    patches, cells = _glimpse(image, [0.25, 0.25, 1.0 / 32.0])
    assert int((cells[0, :, 2:] - cells[0, :, :2]).max()) == 17
    glimpse_map = GlimpseMap(1, 64, (64, 64), torch.device("cpu"))  # one map pixel per image pixel
    glimpse_map.paint(slice(None), patches, cells)
    observation = glimpse_map.observation(torch.tensor([0.0]))[0]
    seen = observation[3] > 0
    assert int(seen.sum()) == 33 * 33
    torch.testing.assert_close(observation[:3, seen], torch.full((3, 33 * 33), 0.5))  # a mean, not a sum
    assert float(observation[3].max()) == float(cell_detail(torch.tensor([16.0]), 64)[0])


def test_cell_detail_falls_with_the_cell_side() -> None:
    detail = cell_detail(torch.tensor([16.0, 32.0, 112.0, 224.0]), 224)
    assert detail[0] == 1.0 and bool((detail[1:] < detail[:-1]).all()) and detail[-1] >= 0.1


def test_map_preset_on_the_digits(tmp_path) -> None:
    from gymnasium.utils.env_checker import check_env
    from stable_baselines3.common.env_checker import check_env as sb3_check_env

    env = gym.make_vec("AdaGlimpse-ClutteredDigits-Fast-v0", num_envs=2, observation="map", map_size=32)
    assert env.single_observation_space.shape == (5, 32, 32)
    first, _ = env.reset(seed=3)
    assert not first.any()  # nothing seen yet
    observation, *_ = env.step(np.stack([WHOLE, WHOLE]))
    assert env.observation_space.contains(observation)
    assert np.allclose(observation[:, 4], 1 / 6) and (observation[:, 3] > 0).all()
    # The same seed gives the same maps.
    env.reset(seed=3)
    repeated, *_ = env.step(np.stack([WHOLE, WHOLE]))
    np.testing.assert_array_equal(repeated, observation)
    env.close()
    single = gym.make("AdaGlimpse-ClutteredDigits-Fast-v0", observation="map", map_size=32)
    check_env(single.unwrapped)
    sb3_check_env(single, warn=False)
    with pytest.raises(ValueError, match="map_size must be an int in"):
        gym.make("AdaGlimpse-ClutteredDigits-Fast-v0", observation="map", map_size=4)
