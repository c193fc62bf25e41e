"""Symmetry augmentation: a mirrored or transposed map with its moved action is the same glimpse, for the critic
exactly and for the env up to whole-pixel rounding; SAC's critic-search update uses it when asked."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from map_env import tiny_map_env

from adaglimpse_env.envs.glimpse_map import GlimpseMap
from adaglimpse_env.glimpse import action_to_unit, extract_glimpses
from agents.map_critic import GlimpseGeometry, sample_under_glimpses
from agents.symmetry import (
    all_symmetries,
    apply_symmetries,
    apply_to_actions,
    random_symmetries,
    symmetry_codes,
)

ALL_EIGHT = torch.tensor([[t, x, y] for t in (0, 1) for x in (0, 1) for y in (0, 1)], dtype=torch.bool)


def test_a_symmetry_code_is_the_row_of_its_draw() -> None:
    torch.testing.assert_close(all_symmetries(), ALL_EIGHT)  # code c = 4 transpose + 2 mirror_x + mirror_y
    assert symmetry_codes(ALL_EIGHT).tolist() == list(range(8))
    drawn = random_symmetries(64, True, torch.device("cpu"))
    torch.testing.assert_close(all_symmetries()[symmetry_codes(drawn)], drawn)


def test_the_eight_symmetries_are_distinct_and_keep_every_value() -> None:
    maps = torch.arange(2 * 6 * 6, dtype=torch.float32).reshape(1, 2, 6, 6).expand(8, -1, -1, -1)
    moved = apply_symmetries(maps, ALL_EIGHT)
    assert len({tuple(view.flatten().tolist()) for view in moved}) == 8
    torch.testing.assert_close(moved.flatten(1).sort(dim=1).values, maps.flatten(1).sort(dim=1).values)
    torch.testing.assert_close(moved[0], maps[0])  # (False, False, False) is the identity
    torch.testing.assert_close(moved[0b011], maps[0].flip(-1).flip(-2))  # mirror both: a half turn
    actions = torch.tensor([[0.5, -0.25, 0.3]]).expand(8, -1)
    moved_actions = apply_to_actions(actions, ALL_EIGHT)
    torch.testing.assert_close(moved_actions[:, 2], actions[:, 2])  # the glimpse's size never changes
    assert len({tuple(row.tolist()) for row in moved_actions}) == 8


def test_the_critic_reads_the_same_values_under_the_moved_glimpse() -> None:
    torch.manual_seed(0)
    geometry = GlimpseGeometry(image_size=(224, 224), min_crop=32.0, max_crop=224.0)
    maps, actions = torch.rand(8, 3, 32, 32), torch.rand(8, 3) * 2.0 - 1.0
    centre, half = geometry.glimpse_boxes(actions)
    moved_centre, moved_half = geometry.glimpse_boxes(apply_to_actions(actions, ALL_EIGHT))
    seen = sample_under_glimpses(maps, centre, half).reshape(8, 3, 16)
    moved_seen = sample_under_glimpses(apply_symmetries(maps, ALL_EIGHT), moved_centre, moved_half).reshape(8, 3, 16)
    # The 4 x 4 sample points move with the glimpse: the same values, in another order.
    torch.testing.assert_close(moved_seen.sort(dim=-1).values, seen.sort(dim=-1).values, atol=1e-5, rtol=0)


def test_a_mirrored_scene_glimpsed_at_the_moved_action_paints_the_moved_map() -> None:
    torch.manual_seed(1)
    smooth = F.interpolate(torch.rand(1, 3, 6, 6), size=(224, 224), mode="bilinear", align_corners=False)
    images = smooth.expand(8, -1, -1, -1).contiguous()
    actions = torch.rand(8, 3) * 2.0 - 1.0
    moved = (apply_symmetries(images, ALL_EIGHT), apply_to_actions(actions, ALL_EIGHT))
    painted = []
    for scene, action in ((images, actions), moved):
        glimpse_map = GlimpseMap(8, 32, (224, 224), torch.device("cpu"))
        patches, cells = extract_glimpses(scene, action_to_unit(action))
        glimpse_map.paint(slice(None), patches, cells)
        painted.append(glimpse_map.observation(torch.zeros(8)))
    expected, got = apply_symmetries(painted[0], ALL_EIGHT), painted[1]
    # Corners are floored to whole pixels, so an edge of the painted area can move by one map pixel, and the
    # wider last cell of an odd-sided glimpse changes sides (its detail differs in the third decimal).
    seen, moved_seen = expected[:, 3] > 0, got[:, 3] > 0
    assert float((seen != moved_seen).float().mean(dim=(1, 2)).max()) < 0.05
    both = seen & moved_seen
    assert float((expected[:, 3] - got[:, 3]).abs()[both].max()) < 0.01
    assert float((expected[:, :3] - got[:, :3]).abs().amax(dim=1)[both].mean()) < 0.02


def test_only_mirrors_are_drawn_for_a_non_square_image() -> None:
    torch.manual_seed(2)
    assert not random_symmetries(256, square=False, device=torch.device("cpu"))[:, 0].any()
    draws = random_symmetries(4096, square=True, device=torch.device("cpu")).float().mean(dim=0)
    assert bool(((draws - 0.5).abs() < 0.05).all())


def test_sac_critic_search_with_symmetry_augmentation_trains_and_repeats(
    tiny_folder: Path, tiny_checkpoint: Path
) -> None:
    from stable_baselines3.common.logger import configure

    from agents.critic_search import CriticSearch
    from agents.sac import make_sac

    def critic_after_training(augment: bool) -> dict[str, torch.Tensor]:
        env = tiny_map_env(tiny_folder, tiny_checkpoint)
        search = CriticSearch(positions=3, scales=2, target_positions=2, target_scales=1)
        model = make_sac(env, seed=0, device="cpu", learning_starts=8, buffer_size=32, batch_size=4,
                         critic_search=search)  # fmt: skip
        model.symmetry_augment = augment
        model.learn(8)
        model.set_logger(configure(None, []))
        torch.manual_seed(5)
        model.train(gradient_steps=2, batch_size=4)
        assert np.isfinite(model.logger.name_to_value["train/critic_loss"])
        env.close()
        return {name: value.clone() for name, value in model.critic.state_dict().items()}

    plain, augmented, again = critic_after_training(False), critic_after_training(True), critic_after_training(True)
    assert any(not torch.equal(plain[name], augmented[name]) for name in plain)  # the batches were moved
    for name, value in augmented.items():
        torch.testing.assert_close(again[name], value, atol=0, rtol=0)  # same seed, same update


def test_the_update_moves_observations_next_observations_and_actions_together(
    tiny_folder: Path, tiny_checkpoint: Path
) -> None:
    from stable_baselines3.common.type_aliases import ReplayBufferSamples

    from agents.critic_search import CriticSearch
    from agents.sac import make_sac

    env = tiny_map_env(tiny_folder, tiny_checkpoint)
    model = make_sac(env, seed=0, device="cpu", critic_search=CriticSearch(positions=3, scales=2))
    side = env.observation_space.shape[-1]
    # One bright map pixel where each action points; the next map is the same picture plus one.
    torch.manual_seed(3)
    rows, columns = torch.randint(0, side, (64,)), torch.randint(0, side, (64,))
    observations = torch.zeros(64, *env.observation_space.shape)
    observations[torch.arange(64), :, rows, columns] = 1.0
    to_action = lambda pixel: 2.0 * pixel.float() / (side - 1) - 1.0  # noqa: E731
    actions = torch.stack((to_action(columns), to_action(rows), torch.rand(64)), dim=1)
    batch = ReplayBufferSamples(observations, actions, observations + 1.0, torch.zeros(64, 1), torch.zeros(64, 1))
    moved = model._augmented(batch)
    assert not torch.equal(moved.observations, observations)  # 64 draws: some moved
    torch.testing.assert_close(moved.next_observations, moved.observations + 1.0)
    bright = moved.observations[:, 0].flatten(1).argmax(dim=1)
    torch.testing.assert_close(moved.actions[:, 0], to_action(bright % side))
    torch.testing.assert_close(moved.actions[:, 1], to_action(bright // side))
    torch.testing.assert_close(moved.actions[:, 2], actions[:, 2])
    env.close()


def test_a_transpose_of_non_square_maps_is_refused() -> None:
    maps = torch.zeros(2, 1, 4, 6)
    apply_symmetries(maps, torch.tensor([[False, True, False], [False, False, True]]))  # mirrors are fine
    with pytest.raises(ValueError, match="only square maps transpose"):
        apply_symmetries(maps, torch.tensor([[True, False, False], [False, False, False]]))
