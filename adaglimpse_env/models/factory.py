"""Model factories by size, timm style: ``create_model("base", task="reconstruction")``.

Sizes small/base/large are the original's (original `mae.py`); tiny and micro are ours, for CPUs: tiny is the
shipped photo reconstruction model, micro the shipped cluttered-digits classifier.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from adaglimpse_env.models.heads import TASKS, create_task_head
from adaglimpse_env.models.mae import ElasticMAE, MAEConfig

#: Encoder/decoder sizes: (embed_dim, depth, num_heads, decoder_embed_dim, decoder_depth, decoder_num_heads).
MODEL_SIZES: dict[str, MAEConfig] = {
    "tiny": MAEConfig(
        embed_dim=192, depth=12, num_heads=3, decoder_embed_dim=128, decoder_depth=4, decoder_num_heads=8
    ),
    "micro": MAEConfig(
        embed_dim=128, depth=6, num_heads=4, decoder_embed_dim=128, decoder_depth=2, decoder_num_heads=4
    ),
    "small": MAEConfig(
        embed_dim=384, depth=12, num_heads=6, decoder_embed_dim=256, decoder_depth=8, decoder_num_heads=16
    ),
    "base": MAEConfig(
        embed_dim=768, depth=12, num_heads=12, decoder_embed_dim=512, decoder_depth=8, decoder_num_heads=16
    ),
    "large": MAEConfig(
        embed_dim=1024, depth=24, num_heads=16, decoder_embed_dim=512, decoder_depth=8, decoder_num_heads=16
    ),
}


def model_config(
    size: str = "base",
    task: str = "reconstruction",
    num_segmentation_classes: int | None = None,
    **overrides: Any,
) -> MAEConfig:
    """The :class:`MAEConfig` of a named size with the decoder a task needs.

    Args:
        size: one of :data:`MODEL_SIZES`.
        task: ``reconstruction`` (pixel decoder), ``classification`` (no decoder) or ``segmentation``.
        num_segmentation_classes: decoder output classes for segmentation (default 150).
        **overrides: any :class:`MAEConfig` field, e.g. ``depth=2`` for a test model.

    Raises:
        ValueError: for an unknown size or task.
    """
    if size not in MODEL_SIZES:
        raise ValueError(f"model size must be one of {list(MODEL_SIZES)}, got {size!r}")
    if task not in TASKS:
        raise ValueError(f"task must be one of {list(TASKS)}, got {task!r}")
    head = create_task_head(task)
    out_chans = head.decoder_out_chans(num_segmentation_classes)
    config = replace(MODEL_SIZES[size], decoder_type=head.decoder_type, out_chans=out_chans)  # type: ignore[arg-type]
    return replace(config, **overrides) if overrides else config


def create_model(
    size: str = "base",
    task: str = "reconstruction",
    num_segmentation_classes: int | None = None,
    **overrides: Any,
) -> ElasticMAE:
    """A randomly initialised :class:`ElasticMAE`; see :func:`model_config` for the arguments."""
    return ElasticMAE(model_config(size, task, num_segmentation_classes, **overrides))
