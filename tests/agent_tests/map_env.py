"""The tiny ``map`` env shared by the map-critic and critic-search tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def tiny_map_env(folder: Path, checkpoint: Path) -> Any:
    """Two SB3 envs with 16 x 16 maps over the tiny folder and model (``tiny_folder``, ``tiny_checkpoint``)."""
    from agents.sb3_adapter import make_sb3_vec_env

    return make_sb3_vec_env("AdaGlimpse-ImageFolder-v0", num_envs=2, data_root=str(folder), checkpoint=checkpoint,
                            num_glimpses=2, observation="map", map_size=16)  # fmt: skip
