"""Env settings, tensor actions and model weights that used to fail late or silently: each is now a one-line error
at the call that gave it, naming the value and what is expected."""

from __future__ import annotations

import pickle
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
from tiny_models import tiny_model, write_images

import adaglimpse_env  # noqa: F401
from adaglimpse_env.models import save_model


@pytest.fixture(scope="module")
def folder_kwargs(tmp_path_factory: pytest.TempPathFactory, checkpoints: dict[str, Path]) -> dict:
    root = tmp_path_factory.mktemp("settings")
    write_images(root / "images", 3, seed=3)
    return {"data_root": str(root / "images"), "checkpoint": str(checkpoints["reconstruction"]), "num_glimpses": 2}


@pytest.mark.parametrize("threshold", ["high", float("nan"), float("inf"), True])
def test_early_stop_threshold_must_be_a_finite_number(folder_kwargs: dict, threshold: object) -> None:
    with pytest.raises(ValueError, match="early_stop_threshold must be a finite number"):
        gym.make("AdaGlimpse-ImageFolder-v0", early_stop_threshold=threshold, **folder_kwargs)


def test_grid_too_large_for_the_image_fails_at_make(folder_kwargs: dict) -> None:
    # 15 x 15 cells of 16 px need 240 px; the images are 224.
    with pytest.raises(ValueError, match=r"grid of 15x15 requires an image side of at least 240 px"):
        gym.make("AdaGlimpse-ImageFolder-v0", grid_size=15, **folder_kwargs)


def test_num_envs_must_be_a_count(folder_kwargs: dict) -> None:
    with pytest.raises(ValueError, match="num_envs >= 1, got True"):
        gym.make_vec("AdaGlimpse-ImageFolder-v0", num_envs=True, **folder_kwargs)


@pytest.mark.parametrize("kind", ["meta", "sparse"])
def test_meta_and_sparse_tensor_actions_are_refused(folder_kwargs: dict, kind: str) -> None:
    env = gym.make_vec("AdaGlimpse-ImageFolder-v0", num_envs=2, **folder_kwargs)
    env.reset(seed=0)
    actions = torch.zeros(2, 3, device="meta") if kind == "meta" else torch.zeros(2, 3).to_sparse()
    with pytest.raises(ValueError, match=f"dense tensor with data.*{kind}|dense tensor with data.*sparse"):
        env.step(actions)
    env.step(np.zeros((2, 3), dtype=np.float32))  # the env is still usable
    env.close()


def test_pickling_an_env_says_how_to_get_one_elsewhere(folder_kwargs: dict) -> None:
    env = gym.make_vec("AdaGlimpse-ImageFolder-v0", num_envs=1, **folder_kwargs)
    env.reset(seed=0)
    with pytest.raises(TypeError, match=r"cannot be pickled.*gym\.make_vec"):
        pickle.dumps(env)
    env.close()


def test_overflowing_weights_stop_with_the_image_and_step(folder_kwargs: dict, tmp_path: Path) -> None:
    # Finite weights whose products overflow: the check for finite weights at load time passes, every score is NaN.
    model = tiny_model()
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "gamma" in name:
                parameter.fill_(3e38)
    save_model(tmp_path / "overflow.pt", model, "reconstruction")
    env = gym.make_vec(
        "AdaGlimpse-ImageFolder-v0", num_envs=2, **{**folder_kwargs, "checkpoint": str(tmp_path / "overflow.pt")}
    )
    # Even the empty state (no glimpse yet) overflows: reset already stops, naming the image and the step.
    with pytest.raises(FloatingPointError, match=r"non-finite score .* for image '.*img_3_\d+\.jpg' in env \d after 0"):
        env.reset(seed=0)
    env.close()
