"""A tiny SAC run for fault tests: a generated image folder, a 1-block model, 2 envs, frequent checkpoints."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from tiny_models import tiny_model

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))


@pytest.fixture(scope="session")
def env_kwargs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Keyword arguments of ``AdaGlimpse-ImageFolder-v0`` for a tiny env: 5 images, a 1-block model, 2 glimpses."""
    from adaglimpse_env.models import save_model

    root = tmp_path_factory.mktemp("fault_env")
    for i in range(5):
        Image.fromarray(np.random.default_rng(i).integers(0, 255, (64, 80, 3), dtype=np.uint8)).save(root / f"{i}.png")
    save_model(root / "tiny.pt", tiny_model(), "reconstruction")
    return {"data_root": str(root), "checkpoint": str(root / "tiny.pt"), "num_glimpses": 2}


@pytest.fixture(scope="session")
def env_args(env_kwargs: dict[str, Any]) -> list[str]:
    """The same env as ``--env-id`` and ``--env-kwargs`` flags."""
    return ["--env-id", "AdaGlimpse-ImageFolder-v0", "--env-kwargs", *(f"{k}={v}" for k, v in env_kwargs.items())]


@pytest.fixture(scope="session")
def sac_args(env_args: list[str]) -> Callable[..., list[str]]:
    """``sac_args(output, total, **flags)``: train_sac.py flags of a tiny run, checkpointed every 16 env steps,
    with a replay buffer larger than ``total`` (so that its size must equal the env steps done)."""

    def build(output: Path, total: int, buffer_size: int = 512, checkpoint_every: int = 16) -> list[str]:
        return [
            *env_args, "--num-envs", "2", "--total-timesteps", str(total), "--learning-starts", "8",
            "--buffer-size", str(buffer_size), "--batch-size", "8", "--eval-every", "1000000", "--eval-episodes", "2",
            "--eval-envs", "2", "--checkpoint-every", str(checkpoint_every), "--output", str(output),
            "--no-progress-bar", "--threads", "1",
        ]  # fmt: skip

    return build


@pytest.fixture(scope="session", autouse=True)
def one_torch_thread():
    """Tiny models on a busy machine run ~10x faster on one thread than on threads fighting over the cores."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
