"""The glimpse canvas: glimpses drawn back where they were cut, scored as the env scores its model."""

from __future__ import annotations

import itertools
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from adaglimpse_env.glimpse import centred_unit_action, unit_to_action
from adaglimpse_env.normalization import to_pixels
from agents.evaluation import run_policy
from agents.glimpse_canvas import GlimpseCanvas

IMAGE = (224, 224)


def make_env(folder: Path, checkpoint: Path, num_glimpses: int = 4, **kwargs: object):
    return gym.make_vec(
        "AdaGlimpse-ImageFolder-v0", num_envs=2, data_root=str(folder), checkpoint=str(checkpoint),
        num_glimpses=num_glimpses, **kwargs,
    )  # fmt: skip


def box_action(top: int, left: int, side: int) -> np.ndarray:
    """``(2, 3)`` actions (both envs) for the ``side``-px glimpse with its corner at ``(top, left)``."""
    centre = torch.tensor([[top + side / 2, left + side / 2]] * 2)
    unit = centred_unit_action(centre, torch.full((2,), float(side)), IMAGE)
    return unit_to_action(unit).numpy()


def step_to(env, canvas: GlimpseCanvas, top: int, left: int, side: int) -> None:
    *_, info = env.step(box_action(top, left, side))
    np.testing.assert_array_equal(
        info["glimpse_boxes"][0, info["num_glimpses"][0] - 1], [top, left, top + side, left + side]
    )
    canvas.update()


def mean_colour() -> torch.Tensor:
    """The ImageNet mean on the 0-255 scale, ``(3, 1, 1)``: the canvas where nothing was seen."""
    return to_pixels(torch.zeros(1, 3, 1, 1))[0]


def test_native_glimpse_is_copied_and_the_rest_is_the_mean_colour(tiny_folder: Path, tiny_checkpoint: Path) -> None:
    env = make_env(tiny_folder, tiny_checkpoint)
    env.reset(seed=0)
    canvas = GlimpseCanvas(env.unwrapped)
    canvas.reset()
    truth = env.unwrapped.buffers.image_pixels
    expected = mean_colour().expand_as(truth).clone()
    step_to(env, canvas, 96, 96, 32)  # 2x2 cells of 16 px: one pixel per patch pixel
    expected[:, :, 96:128, 96:128] = truth[:, :, 96:128, 96:128]
    torch.testing.assert_close(canvas.pixels(), expected, atol=1e-3, rtol=0)
    by_hand = (expected - truth).double().square().flatten(1).mean(dim=1).sqrt().numpy()
    np.testing.assert_allclose(canvas.rmse(), by_hand, rtol=1e-6)
    env.close()


def test_a_coarse_cell_is_its_patch_resized_bilinearly(tiny_folder: Path, tiny_checkpoint: Path) -> None:
    env = make_env(tiny_folder, tiny_checkpoint)
    env.reset(seed=0)
    canvas = GlimpseCanvas(env.unwrapped)
    canvas.reset()
    step_to(env, canvas, 0, 0, 224)  # the whole image: cells of 112 px from 16 px patches
    patches = to_pixels(env.unwrapped.buffers.patches[:, :4])  # (2, 4, 3, 16, 16), row-major cells
    for cell, (top, left) in enumerate([(0, 0), (0, 112), (112, 0), (112, 112)]):
        resized = F.interpolate(patches[:, cell], size=(112, 112), mode="bilinear", align_corners=False)
        torch.testing.assert_close(
            canvas.pixels()[:, :, top : top + 112, left : left + 112], resized, atol=1e-3, rtol=0
        )
    env.close()


@pytest.mark.parametrize("coarse_first", [True, False])
def test_the_finer_glimpse_wins_whatever_the_order(
    tiny_folder: Path, tiny_checkpoint: Path, coarse_first: bool
) -> None:
    env = make_env(tiny_folder, tiny_checkpoint)
    env.reset(seed=0)
    canvas = GlimpseCanvas(env.unwrapped)
    canvas.reset()
    glimpses = [(0, 0, 224), (64, 32, 32)] if coarse_first else [(64, 32, 32), (0, 0, 224)]
    for glimpse in glimpses:
        step_to(env, canvas, *glimpse)
    truth = env.unwrapped.buffers.image_pixels
    torch.testing.assert_close(canvas.pixels()[:, :, 64:96, 32:64], truth[:, :, 64:96, 32:64], atol=1e-3, rtol=0)
    assert (canvas.pixels()[:, :, 150:, 150:] - truth[:, :, 150:, 150:]).abs().amax() > 1.0  # blurred, not copied
    env.close()


class NativeTiles:
    """Tiles the image with 7x7 native-resolution glimpses of 32 px, row-major."""

    def __init__(self) -> None:
        self.step = 0

    def predict(self, observation: object, deterministic: bool = True) -> tuple[np.ndarray, None]:
        row, col = divmod(self.step % 49, 7)
        self.step += 1
        return box_action(32 * row, 32 * col, 32), None


def test_run_policy_scores_the_canvas_of_its_own_episodes(tiny_folder: Path, tiny_checkpoint: Path) -> None:
    env = make_env(tiny_folder, tiny_checkpoint, num_glimpses=49)
    result = run_policy(env.unwrapped, NativeTiles(), episodes=2, seed=0, canvas=True)
    drawn = result["canvas"]["metric_by_glimpse"]
    assert len(drawn) == 50 and drawn[0] > 20.0
    assert all(later <= earlier + 1e-9 for earlier, later in itertools.pairwise(drawn))  # tiles never overlap
    assert drawn[-1] < 1e-3 and result["canvas"]["final_score"] > -1e-3  # every pixel seen at full resolution
    assert result["metric_by_glimpse"][-1] > 1.0  # the tiny model does not reproduce them
    # On the covered pixels only: the share grows by one tile a glimpse; the canvas is exact there, and once
    # everything is covered the model's covered-pixel RMSE is its RMSE.
    np.testing.assert_allclose(result["canvas"]["seen_share_by_glimpse"], np.arange(50) / 49, atol=1e-12)
    seen_canvas, seen_model = (
        result["canvas"]["seen_canvas_rmse_by_glimpse"],
        result["canvas"]["seen_model_rmse_by_glimpse"],
    )
    assert seen_canvas[0] is None and seen_model[0] is None  # nothing covered yet
    assert max(seen_canvas[1:]) < 1e-3
    assert seen_model[-1] == pytest.approx(result["metric_by_glimpse"][-1], rel=1e-5)
    env.close()


def test_canvas_refuses_other_tasks_and_same_step_autoreset(tiny_folder: Path, tiny_checkpoint: Path) -> None:
    env = gym.make_vec("AdaGlimpse-ClutteredDigits-Fast-v0", num_envs=2)
    with pytest.raises(ValueError, match=r"reconstruction reference.*'correct'"):
        GlimpseCanvas(env.unwrapped)
    env.close()
    env = make_env(tiny_folder, tiny_checkpoint, autoreset_mode="same_step")
    with pytest.raises(ValueError, match="autoreset_mode='next_step'"):
        GlimpseCanvas(env.unwrapped)
    env.close()


def test_the_canvas_follows_early_stops_and_restarts(tiny_folder: Path, tiny_checkpoint: Path) -> None:
    """Drawn step by step, the canvas equals one drawn from scratch from the env's current glimpses, while one env
    stops early, restarts on a new image and runs a glimpse count apart from the other."""
    probe = make_env(tiny_folder, tiny_checkpoint, num_glimpses=3)
    probe.reset(seed=0)
    *_, info = probe.step(box_action(0, 0, 224))
    probe.close()
    low, high = sorted(info["score"])
    assert low < high
    env = make_env(tiny_folder, tiny_checkpoint, num_glimpses=3, early_stop_threshold=float(low + high) / 2)
    env.reset(seed=0)
    canvas = GlimpseCanvas(env.unwrapped)
    canvas.reset()
    rng = np.random.default_rng(0)
    counts_differed = False
    for step in range(7):
        action = box_action(0, 0, 224) if step == 0 else rng.uniform(-1, 1, (2, 3)).astype(np.float32)
        *_, info = env.step(action)
        canvas.update()
        fresh = GlimpseCanvas(env.unwrapped)
        fresh.reset()
        fresh.update()
        torch.testing.assert_close(canvas.pixels(), fresh.pixels(), atol=0, rtol=0)
        counts_differed |= info["num_glimpses"][0] != info["num_glimpses"][1]
    assert counts_differed
    env.close()


def test_the_env_exposes_the_prediction_it_scored(tiny_folder: Path, tiny_checkpoint: Path) -> None:
    env = make_env(tiny_folder, tiny_checkpoint).unwrapped
    with pytest.raises(RuntimeError, match="requires reset"):
        _ = env.prediction
    env.reset(seed=0)
    *_, info = env.step(box_action(64, 32, 64))
    images = env.task.prediction_images(env.model, env.prediction)
    rmse = (to_pixels(images.float()) - env.buffers.image_pixels).double().square().flatten(1).mean(dim=1).sqrt()
    np.testing.assert_allclose(rmse.numpy(), info["rmse"], rtol=1e-5)
    env.close()
