"""EpisodeConfig is resolved once into a ResolvedEpisodeConfig of plain values."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from tiny_models import tiny_model, write_images

from adaglimpse_env import EpisodeConfig, GlimpseVectorEnv, ResolvedEpisodeConfig
from adaglimpse_env.datasets import TransformConfig, image_folder


@pytest.mark.parametrize(
    ("task", "glimpses", "grid"), [("reconstruction", 12, 2), ("classification", 14, 2), ("segmentation", 8, 3)]
)
def test_resolve_fills_in_the_tasks_budget_and_grid_as_ints(task: str, glimpses: int, grid: int) -> None:
    written = EpisodeConfig(task=task)
    assert (written.num_glimpses, written.grid_size) == (None, None)  # what the caller wrote is kept
    resolved = written.resolve()
    assert isinstance(resolved, ResolvedEpisodeConfig)
    assert type(resolved.num_glimpses) is int and type(resolved.grid_size) is int
    assert (resolved.num_glimpses, resolved.grid_size) == (glimpses, grid)
    assert (resolved.tokens_per_glimpse, resolved.max_tokens) == (grid * grid, glimpses * grid * grid)
    assert resolved.resolve() is resolved


def test_given_values_win_and_every_other_field_is_carried_over() -> None:
    written = EpisodeConfig(
        task="classification", num_glimpses=3, grid_size=4, max_glimpse_ratio=0.5, reward="final",
        early_stop_threshold=0.9, observation="flat", extract_latent_layer=1,
    )  # fmt: skip
    resolved = written.resolve()
    assert dataclasses.asdict(resolved) == dataclasses.asdict(written)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"task": "detection"}, "task must be one of"),
        ({"num_glimpses": 0}, "num_glimpses must be a positive int"),
        ({"grid_size": 1.5}, "grid_size must be a positive int"),
        ({"reward": "sparse"}, "reward must be one of"),
        ({"max_glimpse_ratio": 0.0}, "max_glimpse_ratio must be in"),
    ],
)
def test_a_bad_value_fails_where_it_is_written(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        EpisodeConfig(**kwargs)
    resolved = {"task": "reconstruction", "num_glimpses": 2, "grid_size": 2, **kwargs}
    with pytest.raises(ValueError, match=message):
        ResolvedEpisodeConfig(**resolved)


def test_envs_read_the_resolved_config(tmp_path: Path) -> None:
    write_images(tmp_path, 2)
    model = tiny_model()
    source = image_folder(tmp_path, TransformConfig(size=model.config.img_size[0]))
    env = GlimpseVectorEnv(1, model, source, EpisodeConfig(num_glimpses=3))
    assert env.episode == EpisodeConfig(num_glimpses=3).resolve()
    assert (env.num_glimpses, env.grid_size) == (3, 2)
    env.close()
