"""Observation and action spaces, defined once (original `rl_glimpse.py`; docs/original-compatibility.md)."""

from __future__ import annotations

import numpy as np
from gymnasium import spaces

from adaglimpse_env.envs.glimpse_map import DEFAULT_MAP_SIZE, MAP_CHANNELS
from adaglimpse_env.glimpse import PATCH_SIZE
from adaglimpse_env.normalization import IMAGENET_MEAN, IMAGENET_STD


def action_space() -> spaces.Box:
    """``(x, y, scale)`` in ``[-1, 1]``; scale -1 is the smallest glimpse."""
    return spaces.Box(-1.0, 1.0, shape=(3,), dtype=np.float32)


def _channel_bounds() -> tuple[np.ndarray, np.ndarray]:
    """``(3,)`` float32 lowest and highest normalised value of each channel of an image in ``[0, 1]``."""
    mean, std = np.array(IMAGENET_MEAN), np.array(IMAGENET_STD)
    return (-mean / std).astype(np.float32), ((1.0 - mean) / std).astype(np.float32)


def _patch_bounds(num_tokens: int) -> tuple[np.ndarray, np.ndarray]:
    # Normalised pixels of an image in [0, 1]; bilinear resampling never leaves that range.
    low, high = _channel_bounds()
    shape = (num_tokens, 3, PATCH_SIZE, PATCH_SIZE)
    low_full = np.broadcast_to(low[None, :, None, None], shape).copy()
    high_full = np.broadcast_to(high[None, :, None, None], shape).copy()
    return low_full, high_full


def map_space(map_size: int) -> spaces.Box:
    """The ``map`` preset: ``(5, M, M)`` float32, channels RGB (normalised), detail, budget used."""
    low, high = _channel_bounds()  # unseen pixels are 0, inside every channel's range (low < 0 < high)
    low_map = np.zeros((MAP_CHANNELS, map_size, map_size), dtype=np.float32)
    high_map = np.ones((MAP_CHANNELS, map_size, map_size), dtype=np.float32)
    low_map[:3] = low[:, None, None]
    high_map[:3] = high[:, None, None]
    return spaces.Box(low_map, high_map, dtype=np.float32)


def observation_space(
    preset: str, num_tokens: int, embed_dim: int, image_size: tuple[int, int], map_size: int = DEFAULT_MAP_SIZE
) -> spaces.Space:
    """The single-env observation space of a preset.

    Args:
        preset: ``full``, ``latent``, ``flat`` or ``map``.
        num_tokens: ``P``, the token budget.
        embed_dim: ``D``.
        image_size: ``(H, W)``; box coordinates lie in ``[0, max(H, W)]``.
        map_size: ``M``, the side of the ``map`` preset.
    """
    latent = spaces.Box(-np.inf, np.inf, shape=(num_tokens + 1, embed_dim), dtype=np.float32)
    coords = spaces.Box(0.0, float(max(image_size)), shape=(num_tokens, 4), dtype=np.float32)
    mask = spaces.Box(0.0, 1.0, shape=(num_tokens, 1), dtype=np.float32)
    if preset == "full":
        low, high = _patch_bounds(num_tokens)
        return spaces.Dict(
            {
                "latent": latent,
                "importance": spaces.Box(0.0, 1.0, shape=(num_tokens, 1), dtype=np.float32),
                "coords": coords,
                "patches": spaces.Box(low, high, dtype=np.float32),
                "mask": mask,
            }
        )
    if preset == "latent":
        return spaces.Dict({"latent": latent, "coords": coords, "mask": mask})
    if preset == "flat":
        return spaces.Box(-np.inf, np.inf, shape=(embed_dim + 5 * num_tokens,), dtype=np.float32)
    if preset == "map":
        return map_space(map_size)
    raise ValueError(f"observation preset must be 'full', 'latent', 'flat' or 'map', got {preset!r}")
