"""Tiny glimpse envs for agent tests: a generated folder and a 1-block model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from tiny_models import tiny_model


@pytest.fixture(scope="session")
def tiny_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("agent_images")
    for i in range(6):
        rng = np.random.default_rng(i)
        Image.fromarray(rng.integers(0, 255, (64, 80, 3), dtype=np.uint8)).save(root / f"{i}.png")
    return root


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from adaglimpse_env.models import save_model

    path = tmp_path_factory.mktemp("agent_model") / "tiny.pt"
    save_model(path, tiny_model(), "reconstruction")
    return path
