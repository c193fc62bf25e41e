"""Tiny checkpoints on disk and env builders for the hostile-input suite (everything goes through public paths)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import gymnasium as gym
import pytest
import torch
from hostile_inputs import FOLDER_ID, write_good_image
from tiny_models import tiny_model

import adaglimpse_env  # noqa: F401  (registers the ids)
from adaglimpse_env.models import save_model


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """Run this folder's tiny forwards on one thread, then restore the setting.

    The models here are tiny, so threads only add a barrier per op; on a shared 2-core machine each barrier waits
    for a core, which made these tests 3x slower. Nothing tested here depends on the thread count.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Our-format checkpoint files of the 1-block tiny model, one per task."""
    folder = tmp_path_factory.mktemp("checkpoints")
    paths = {}
    for task in ("reconstruction", "classification", "segmentation"):
        paths[task] = folder / f"tiny_{task}.pt"
        save_model(paths[task], tiny_model(task), task)
    return paths


@pytest.fixture(scope="session")
def good_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder holding one readable image."""
    folder = tmp_path_factory.mktemp("good")
    write_good_image(folder)
    return folder


EnvFactory = Callable[..., Any]


def _folder_kwargs(folder: Path, checkpoint: Path, overrides: dict[str, Any]) -> dict[str, Any]:
    # Deterministic file order (shuffle=False) and no augmentation, decoded in this process: a test can then
    # say exactly which files the env met and what they look like.
    return {
        "data_root": str(folder),
        "checkpoint": str(checkpoint),
        "num_glimpses": 2,
        "num_workers": 0,
        "split": "val",
        "shuffle": False,
        **overrides,
    }


@pytest.fixture(scope="session")
def make_folder_vec_env(checkpoints: dict[str, Path]) -> EnvFactory:
    """``gym.make_vec("AdaGlimpse-ImageFolder-v0", ...)`` on a folder, with the tiny reconstruction model."""

    def make(folder: Path, num_envs: int = 1, **overrides: Any) -> Any:
        kwargs = _folder_kwargs(folder, checkpoints["reconstruction"], overrides)
        return gym.make_vec(FOLDER_ID, num_envs=num_envs, **kwargs)

    return make


@pytest.fixture(scope="session")
def make_folder_env(checkpoints: dict[str, Path]) -> EnvFactory:
    """``gym.make("AdaGlimpse-ImageFolder-v0", ...)`` on a folder, with the tiny reconstruction model."""

    def make(folder: Path, **overrides: Any) -> Any:
        return gym.make(FOLDER_ID, **_folder_kwargs(folder, checkpoints["reconstruction"], overrides))

    return make
