"""Every registered id builds from keyword overrides of its preset and passes Gymnasium's and SB3's env checkers."""

from __future__ import annotations

import warnings
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env
from stable_baselines3.common.env_checker import check_env as sb3_check_env

import adaglimpse_env
from adaglimpse_env import ENV_PRESETS, GlimpseVectorEnv, register_envs
from adaglimpse_env.envs.factory import MissingSetupError
from adaglimpse_env.models import save_model

DATA_FOLDERS = {"imagenet": "imagenet", "sun360": "sun360", "ade20k": "ade20k", "coco": "coco", "folder": "folder"}


def small_kwargs(env_id: str, data_root: Path, models: dict) -> dict:
    """A tiny model and generated data for every id (the embedded photos need no data folder)."""
    preset = ENV_PRESETS[env_id]
    kwargs = {"checkpoint": models[preset.task], "num_glimpses": 2, "num_workers": 0}
    if preset.dataset in DATA_FOLDERS:
        kwargs["data_root"] = str(data_root / DATA_FOLDERS[preset.dataset])
    return kwargs


@pytest.mark.parametrize("env_id", sorted(ENV_PRESETS))
def test_every_id_passes_env_checkers(env_id: str, data_root: Path, models: dict) -> None:
    env = gym.make(env_id, **small_kwargs(env_id, data_root, models))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # infinite latent bounds and Dict shapes are expected
        check_env(env.unwrapped)
        sb3_check_env(env.unwrapped)
    observation, _info = env.reset(seed=0)
    assert env.observation_space.contains(observation)
    observation, _reward, _terminated, _truncated, _info = env.step(env.action_space.sample())
    assert env.observation_space.contains(observation)
    env.close()


@pytest.mark.parametrize("env_id", ["AdaGlimpse-ImageNet-v0", "AdaGlimpse-ADE20K-Segmentation-v0"])
def test_make_vec_returns_native_vector_env(env_id: str, data_root: Path, models: dict) -> None:
    envs = gym.make_vec(env_id, num_envs=3, **small_kwargs(env_id, data_root, models))
    assert isinstance(envs, GlimpseVectorEnv)
    observation, _ = envs.reset(seed=1)
    assert envs.observation_space.contains(observation)
    _, reward, *_ = envs.step(envs.action_space.sample())
    assert reward.shape == (3,)
    if env_id.startswith("AdaGlimpse-ADE20K"):
        assert envs.episode.grid_size == 3 and envs.max_tokens == 2 * 9
    envs.close()


def test_dataset_ids_decode_in_background_workers(data_root: Path, models: dict) -> None:
    kwargs = {**small_kwargs("AdaGlimpse-COCO-Reconstruction-v0", data_root, models)}
    del kwargs["num_workers"]
    env = gym.make("AdaGlimpse-COCO-Reconstruction-v0", **kwargs)
    assert env.unwrapped.vector_env.stream.num_workers == 2
    env.reset(seed=0)
    _, _, _, _, info = env.step(env.action_space.sample())
    assert np.isfinite(info["score"])
    env.close()


def test_presets_follow_the_paper() -> None:
    assert ENV_PRESETS["AdaGlimpse-ImageNet-v0"].task == "classification"
    assert ENV_PRESETS["AdaGlimpse-ImageNet-v0"].num_glimpses == 14
    assert ENV_PRESETS["AdaGlimpse-ImageNet-Reconstruction-v0"].num_glimpses == 12
    assert ENV_PRESETS["AdaGlimpse-ADE20K-Segmentation-v0"].grid_size == 3


def test_missing_data_root_names_kwarg_env_var_and_layout(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ADAGLIMPSE_IMAGENET_ROOT", raising=False)
    with pytest.raises(MissingSetupError) as info:
        gym.make("AdaGlimpse-ImageNet-v0")
    message = str(info.value)
    assert "data_root=" in message and "ADAGLIMPSE_IMAGENET_ROOT" in message and "<root>/train/<wnid>" in message


def test_missing_checkpoint_names_the_official_source(data_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ADAGLIMPSE_IMAGENET_CLASSIFICATION_CHECKPOINT", raising=False)
    with pytest.raises(MissingSetupError) as info:
        gym.make("AdaGlimpse-ImageNet-v0", data_root=str(data_root / "imagenet"))
    message = str(info.value)
    assert "checkpoint=" in message
    assert "apardyl/AdaGlimpse" in message and "huggingface-cli download" in message
    assert "ADAGLIMPSE_IMAGENET_CLASSIFICATION_CHECKPOINT" in message


def test_environment_variables_and_checkpoint_path(
    data_root: Path, models: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    save_model(tmp_path / "rec.pt", models["reconstruction"], "reconstruction")
    monkeypatch.setenv("ADAGLIMPSE_COCO_ROOT", str(data_root / "coco"))
    monkeypatch.setenv("ADAGLIMPSE_COCO_RECONSTRUCTION_CHECKPOINT", str(tmp_path / "rec.pt"))
    env = gym.make("AdaGlimpse-COCO-Reconstruction-v0", num_glimpses=1)
    observation, info = env.reset(seed=0)
    inner = env.unwrapped.vector_env  # type: ignore[attr-defined]
    # The data folder and the checkpoint came from the environment variables.
    assert str(data_root / "coco") in inner.image_source.description
    saved = models["reconstruction"].state_dict()
    assert all(torch.equal(value.cpu(), saved[key]) for key, value in inner.model.state_dict().items())
    assert observation["latent"].shape == (5, models["reconstruction"].config.embed_dim)
    assert np.isfinite(info["score"])
    env.close()


def test_make_vec_refuses_a_max_episode_steps_it_cannot_honour(data_root: Path, models: dict) -> None:
    kwargs = {"data_root": str(data_root / "coco"), "checkpoint": models["reconstruction"], "num_glimpses": 4}
    with pytest.raises(ValueError, match=r"max_episode_steps >= num_glimpses=4.*num_glimpses=2"):
        gym.make_vec("AdaGlimpse-COCO-Reconstruction-v0", num_envs=1, max_episode_steps=2, **kwargs)
    env = gym.make_vec("AdaGlimpse-COCO-Reconstruction-v0", num_envs=1, max_episode_steps=4, **kwargs)
    env.close()  # a limit the glimpse budget already enforces is accepted


def test_wrong_task_checkpoint_is_refused(data_root: Path, models: dict) -> None:
    with pytest.raises(ValueError, match="decoder_type='standard'"):
        gym.make(
            "AdaGlimpse-COCO-Reconstruction-v0",
            data_root=str(data_root / "coco"),
            checkpoint=models["classification"],
        )


def test_unknown_kwarg_is_an_error(data_root: Path, models: dict) -> None:
    with pytest.raises(TypeError, match="unexpected keyword arguments \\['num_glimpse'\\]"):
        gym.make(
            "AdaGlimpse-COCO-Reconstruction-v0",
            data_root=str(data_root / "coco"),
            checkpoint=models["reconstruction"],
            num_glimpse=3,
        )


def test_registration_is_idempotent() -> None:
    before = {k for k in gym.registry if k.startswith("AdaGlimpse-")}
    register_envs()
    register_envs()
    assert {k for k in gym.registry if k.startswith("AdaGlimpse-")} == before == set(ENV_PRESETS)
    assert adaglimpse_env.__version__
