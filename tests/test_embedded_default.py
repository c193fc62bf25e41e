"""The offline default: the shipped model loads through the normal checkpoint path, the embedded env works with
no arguments and passes the env checkers."""

from __future__ import annotations

import warnings

import gymnasium as gym
import numpy as np
from gymnasium.utils.env_checker import check_env
from stable_baselines3.common.env_checker import check_env as sb3_check_env

import adaglimpse_env  # noqa: F401
from adaglimpse_env.envs.factory import embedded_model_path
from adaglimpse_env.models import load_model


def test_shipped_model_loads_with_metadata() -> None:
    path = embedded_model_path()
    assert path.stat().st_size < 25 * 2**20
    loaded = load_model(path)
    assert loaded.task == "reconstruction" and loaded.source_format == "adaglimpse-env"
    assert loaded.model.config.embed_dim == 192
    assert "pretrain_mae.py" in loaded.metadata["command"] and loaded.metadata["step"] > 0


def test_embedded_env_runs_offline_with_no_arguments() -> None:
    env = gym.make("AdaGlimpse-Photos-v0")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        check_env(env.unwrapped)
        sb3_check_env(env.unwrapped)
    _observation, info = env.reset(seed=0)
    first = info["rmse"]
    for _ in range(12):
        _observation, _reward, terminated, truncated, info = env.step(np.array([0.0, 0.0, 1.0], dtype=np.float32))
    assert terminated and not truncated
    assert info["rmse"] < first  # seeing the whole image helps the shipped model
    assert info["pixel_fraction"] == 1.0
    env.close()
