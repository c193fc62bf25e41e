"""ImageNet normalisation and its inverse to 0-255 pixels (original `datasets/`; original metrics ``RevNormalizer``)."""

from __future__ import annotations

import functools

import torch

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)


@functools.lru_cache(maxsize=32)
def _cached_channel_stats(dtype: torch.dtype, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    # Built once per (dtype, device): a fresh torch.tensor on CUDA would be a host-to-device copy on every
    # call. Made outside inference mode so that autograd may save them (pretraining losses need gradients).
    with torch.inference_mode(False):
        mean = torch.tensor(IMAGENET_MEAN, dtype=dtype, device=device).reshape(3, 1, 1)
        std = torch.tensor(IMAGENET_STD, dtype=dtype, device=device).reshape(3, 1, 1)
    return mean, std


def _channel_stats(like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(3, 1, 1)`` mean and std in ``like``'s dtype and device; shared, never modify them in place."""
    return _cached_channel_stats(like.dtype, like.device)


def normalize(images: torch.Tensor) -> torch.Tensor:
    """Float images in ``[0, 1]`` -> ImageNet-normalised.

    Args:
        images: ``(..., 3, H, W)`` float in ``[0, 1]``.

    Returns:
        ``(..., 3, H, W)`` normalised, same dtype.
    """
    mean, std = _channel_stats(images)
    return (images - mean) / std


def to_pixels(images: torch.Tensor) -> torch.Tensor:
    """ImageNet-normalised images -> float pixels ``clip((x * std + mean) * 255, 0, 255)``, not rounded.

    This is the scale on which scores and RMSE are computed (original metrics).

    Args:
        images: ``(..., 3, H, W)`` normalised.

    Returns:
        ``(..., 3, H, W)`` float in ``[0, 255]``.
    """
    mean, std = _channel_stats(images)
    return ((images * std + mean) * 255.0).clamp(0.0, 255.0)
