"""Presets are typed data: gym.make overrides them keyword by keyword, unknown keywords are refused."""

from __future__ import annotations

import dataclasses
import inspect

import gymnasium as gym
import pytest

import adaglimpse_env  # noqa: F401  (registers the ids)
from adaglimpse_env import ENV_PRESETS, EpisodeConfig, GlimpseVectorEnv
from adaglimpse_env.datasets.scenes import SceneConfig
from adaglimpse_env.presets import SCENE_KEYS, EnvPreset


@pytest.mark.parametrize("env_id", sorted(ENV_PRESETS))
def test_registered_keywords_give_the_preset_back(env_id: str) -> None:
    preset = ENV_PRESETS[env_id]
    kwargs = gym.spec(env_id).kwargs
    assert kwargs == {"env_id": env_id, **preset.as_kwargs()}
    assert EnvPreset.from_kwargs(kwargs) == dataclasses.replace(preset, env_id=env_id)


def test_overrides_replace_one_keyword_each() -> None:
    merged = {**gym.spec("AdaGlimpse-ClutteredDigits-v0").kwargs, "num_glimpses": 3, "clutter": 0, "split": "val"}
    preset = EnvPreset.from_kwargs(merged)
    base = ENV_PRESETS["AdaGlimpse-ClutteredDigits-v0"]
    assert (preset.num_glimpses, preset.clutter, preset.split) == (3, 0, "val")
    assert (preset.dataset, preset.task, preset.checkpoint) == (base.dataset, base.task, base.checkpoint)
    assert preset.scene == {"clutter": 0}
    assert not preset.augmentation and not preset.shuffled  # the val split's defaults
    assert dataclasses.replace(preset, augment=True).augmentation


def test_the_episode_is_resolved_with_plain_ints() -> None:
    segmentation = ENV_PRESETS["AdaGlimpse-ADE20K-Segmentation-v0"].episode
    assert (segmentation.num_glimpses, segmentation.grid_size) == (8, 3)
    photos = dataclasses.replace(ENV_PRESETS["AdaGlimpse-Photos-v0"], num_glimpses=None).episode
    assert type(photos.num_glimpses) is int and (photos.num_glimpses, photos.grid_size) == (12, 2)


def test_a_real_override_reaches_the_env() -> None:
    env = gym.make_vec("AdaGlimpse-Photos-v0", num_envs=1, num_glimpses=2, grid_size=3, reward="final")
    assert isinstance(env, GlimpseVectorEnv)
    assert (env.num_glimpses, env.grid_size, env.episode.reward) == (2, 3, "final")
    env.close()


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"env_id": "X-v0", "num_glimpse": 3, "colour": 1}, TypeError,
         r"X-v0 got unexpected keyword arguments \['colour', 'num_glimpse'\]"),
        ({"clutter": 2}, TypeError, r"make_env: scene keywords \['clutter'\] need dataset='digits'"),
        ({"dataset": "mnist"}, ValueError, "dataset must be one of"),
        ({"num_glimpses": 0}, ValueError, "num_glimpses must be a positive int"),
        ({"num_glimpses": 4, "max_episode_steps": 2}, ValueError, "max_episode_steps >= num_glimpses=4"),
    ],
)  # fmt: skip
def test_bad_keywords_fail_before_anything_is_loaded(kwargs: dict, error: type, message: str) -> None:
    with pytest.raises(error, match=message):
        EnvPreset.from_kwargs(kwargs)


def test_defaults_are_those_of_the_classes_they_feed() -> None:
    preset = EnvPreset()
    for name, field in EpisodeConfig.__dataclass_fields__.items():
        assert getattr(preset, name) == field.default, name
    signature = inspect.signature(GlimpseVectorEnv.__init__).parameters
    for name in ("device", "num_workers", "render_mode", "output", "autocast_dtype", "compile_model", "incremental"):
        assert getattr(preset, name) == signature[name].default, name
    assert set(SCENE_KEYS) == set(SceneConfig.__dataclass_fields__) - {"canvas_size"}
