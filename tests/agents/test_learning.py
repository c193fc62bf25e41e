"""SAC learns where to look: on images whose only content sits in the top-left quadrant, a short SAC run
beats the random policy (episode return = score improvement)."""

from __future__ import annotations

from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
from PIL import Image

from adaglimpse_env import GlimpseVectorEnv
from adaglimpse_env.envs.factory import embedded_model_path
from agents.baselines import make_baseline
from agents.evaluation import run_policy
from agents.sac import make_sac
from agents.sb3_adapter import make_sb3_vec_env


@pytest.fixture(scope="module")
def corner_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("corner")
    for i in range(16):
        image = np.full((224, 224, 3), 128, dtype=np.uint8)
        rng = np.random.default_rng(i)
        blocks = rng.integers(0, 255, (7, 7, 3), dtype=np.uint8)
        image[:112, :112] = np.kron(blocks, np.ones((16, 16, 1), dtype=np.uint8))[:112, :112]
        Image.fromarray(image).save(root / f"{i}.png")
    return root


@pytest.mark.slow
def test_sac_beats_random_when_the_information_is_in_one_corner(corner_folder: Path) -> None:
    torch.set_num_threads(2)
    kwargs = {"data_root": str(corner_folder), "checkpoint": str(embedded_model_path()), "num_glimpses": 2}
    env = make_sb3_vec_env("AdaGlimpse-ImageFolder-v0", num_envs=16, augment=False, **kwargs)
    model = make_sac(env, seed=0, device="cpu", learning_starts=320, learning_rate=3e-3, lr_schedule=False)
    model.learn(3_200)
    evaluation = gym.make_vec("AdaGlimpse-ImageFolder-v0", num_envs=16, split="val", **kwargs)
    assert isinstance(evaluation, GlimpseVectorEnv)
    trained = run_policy(evaluation, model, episodes=32, seed=1)
    random = run_policy(evaluation, make_baseline("random", evaluation, seed=1), episodes=32, seed=1)
    assert trained["return"] > random["return"], (trained["return"], random["return"])
