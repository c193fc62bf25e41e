"""The find-and-zoom ids: Gymnasium and SB3 checks, the target box in info (never observed), rendering, and the
oracle look-ahead agreeing with what a step then measures."""

from __future__ import annotations

from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env
from stable_baselines3.common.env_checker import check_env as sb3_check_env

import adaglimpse_env  # noqa: F401
from adaglimpse_env.datasets.scenes import render_scene
from adaglimpse_env.models import create_model, save_model

DIGIT_IDS = ("AdaGlimpse-ClutteredDigits-v0", "AdaGlimpse-ClutteredDigits-Fast-v0")


@pytest.fixture(scope="module")
def micro_classifier(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random 2-block micro classifier whose LayerScale is large enough that every glimpse moves its output."""
    torch.manual_seed(0)
    model = create_model("micro", "classification", num_classes=10, depth=2, layer_scale_init=0.5)
    path = tmp_path_factory.mktemp("digits") / "micro.pt"
    save_model(path, model, "classification")
    return path


@pytest.mark.parametrize("env_id", DIGIT_IDS)
def test_checkers_pass(env_id: str, micro_classifier: Path) -> None:
    env = gym.make(env_id, checkpoint=str(micro_classifier), num_val_scenes=8)
    check_env(env.unwrapped, skip_render_check=True)
    sb3_check_env(env.unwrapped)
    env.close()


def test_budgets_and_task(micro_classifier: Path) -> None:
    full = gym.make_vec(DIGIT_IDS[0], num_envs=2, checkpoint=str(micro_classifier))
    fast = gym.make_vec(DIGIT_IDS[1], num_envs=2, checkpoint=str(micro_classifier))
    assert full.episode.task == fast.episode.task == "classification"
    assert (full.episode.num_glimpses, fast.episode.num_glimpses) == (14, 6)
    full.close()
    fast.close()


def test_target_box_in_info_not_in_observation(micro_classifier: Path) -> None:
    env = gym.make_vec(DIGIT_IDS[0], num_envs=3, checkpoint=str(micro_classifier), split="val", num_val_scenes=3)
    observation, info = env.reset(seed=0)
    for row in range(3):
        scene = render_scene(env.image_source.config, "val", row)
        assert info["target_box"][row].tolist() == list(scene.box)
        assert int(info["label"][row]) == scene.label
    # The observation holds what the agent has seen: nothing yet, so no trace of the target's position.
    assert not np.asarray(observation["coords"]).any() and not np.asarray(observation["patches"]).any()
    env.close()


def test_render_outlines_the_target(micro_classifier: Path) -> None:
    env = gym.make(DIGIT_IDS[0], checkpoint=str(micro_classifier), split="val", render_mode="rgb_array")
    _, info = env.reset(seed=0)
    frame = env.render()
    y1, x1 = info["target_box"][:2]
    assert frame.shape == (224, 3 * 224, 3)
    assert tuple(frame[y1 - 2, x1 + 1]) == (0, 255, 255)  # the cyan outline 2 px above the digit
    env.close()


def test_scene_keywords_reach_the_scenes_and_are_checked(micro_classifier: Path) -> None:
    env = gym.make_vec(DIGIT_IDS[1], num_envs=1, checkpoint=str(micro_classifier), clutter=0, background="plain")
    assert env.image_source.config.clutter == 0 and env.image_source.config.background == "plain"
    env.close()
    with pytest.raises(ValueError, match="background must be one of"):
        gym.make(DIGIT_IDS[1], checkpoint=str(micro_classifier), background="stars")
    with pytest.raises(TypeError, match="dataset='digits'"):
        gym.make("AdaGlimpse-Photos-v0", clutter=3)


@pytest.mark.parametrize("desynchronise", [False, True])
def test_lookahead_scores_equal_the_scores_a_step_reaches(micro_classifier: Path, desynchronise: bool) -> None:
    env = gym.make_vec(DIGIT_IDS[0], num_envs=3, checkpoint=str(micro_classifier), split="val")
    env.reset(seed=0)
    rng = np.random.default_rng(0)
    for _ in range(2):
        env.step(rng.uniform(-1, 1, size=(3, 3)).astype(np.float32))
    if desynchronise:  # env 1 starts a new image: histories of different lengths (padding in the middle)
        env.reset(options={"reset_mask": np.array([False, True, False])})
    candidates = rng.uniform(-1, 1, size=(3, 5, 3)).astype(np.float32)
    scores = env.score_candidates(candidates, max_batch=4)  # several chunks
    assert scores.shape == (3, 5)
    for k in (0, 3):
        probe = gym.make_vec(DIGIT_IDS[0], num_envs=3, checkpoint=str(micro_classifier), split="val")
        probe.reset(seed=0)
        replay = np.random.default_rng(0)
        for _ in range(2):
            probe.step(replay.uniform(-1, 1, size=(3, 3)).astype(np.float32))
        if desynchronise:
            probe.reset(options={"reset_mask": np.array([False, True, False])})
        _, _, _, _, info = probe.step(candidates[:, k])
        np.testing.assert_allclose(scores[:, k], info["score"], rtol=1e-4, atol=1e-5)
        probe.close()
    env.close()


def test_lookahead_rejects_bad_candidates(micro_classifier: Path) -> None:
    env = gym.make_vec(DIGIT_IDS[1], num_envs=2, checkpoint=str(micro_classifier))
    with pytest.raises(ValueError, match="reset"):
        env.score_candidates(np.zeros((2, 1, 3)))
    env.reset(seed=0)
    with pytest.raises(ValueError, match=r"shape \(2, K, 3\)"):
        env.score_candidates(np.zeros((2, 3)))
    with pytest.raises(ValueError, match="finite"):
        env.score_candidates(np.full((2, 1, 3), np.nan))
    env.close()
