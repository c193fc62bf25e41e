"""A glimpse task whose only information sits in one corner of each image, with a classifier trained for it.

Every image is mid-range pixel noise except its top-left ``cue x cue`` square, which holds 1-pixel black and
white stripes: horizontal for class ``horizontal``, vertical for class ``vertical``. The background carries no
information about the class, so a frozen classifier trained on random glimpses of these images gives the true
class a probability near 1 when a glimpse covered part of the corner and near 0.5 otherwise; the reward (the
score's improvement) is paid only for looking at the corner. With glimpses capped at half the image side a
random policy rarely looks there.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from adaglimpse_env.datasets import ImageSource
from adaglimpse_env.datasets.folders import image_folder
from adaglimpse_env.datasets.transforms import TransformConfig
from adaglimpse_env.glimpse import extract_glimpses
from adaglimpse_env.models import ElasticMAE, create_model

CLASSES = ("horizontal", "vertical")
#: Image side, and side of the informative top-left square (14% of the image).
IMAGE_SIZE = 128
CUE_SIZE = 48


def corner_image(label: int, rng: np.random.Generator, size: int, cue: int) -> np.ndarray:
    """``(size, size, 3)`` uint8: mid-range pixel noise, stripes of class ``label`` in the top-left corner."""
    image = rng.integers(48, 208, (size, size, 3), dtype=np.uint8)
    stripes = (np.arange(cue) % 2 * 255).astype(np.uint8)
    pattern = np.broadcast_to(stripes[:, None] if label == 0 else stripes[None, :], (cue, cue))
    image[:cue, :cue] = pattern[..., None]
    return image


def write_corner_folder(
    root: Path, images_per_class: int, seed: int, size: int = IMAGE_SIZE, cue: int = CUE_SIZE
) -> Path:
    """An image folder ``root/<class>/<i>.png`` (lossless, so the stripes survive) of corner images."""
    rng = np.random.default_rng(seed)
    for label, name in enumerate(CLASSES):
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(images_per_class):
            Image.fromarray(corner_image(label, rng, size, cue)).save(folder / f"{i:04d}.png")
    return root


def covers_corner(boxes: np.ndarray, cue: int = CUE_SIZE) -> np.ndarray:
    """Whether each glimpse ``(..., 4)`` box ``(y1, x1, y2, x2)`` overlaps the informative square (-1 rows: no)."""
    return (boxes[..., 0] >= 0) & (boxes[..., 0] < cue) & (boxes[..., 1] < cue)


def load_folder(root: Path, size: int = IMAGE_SIZE) -> tuple[torch.Tensor, torch.Tensor]:
    """Every image of a folder as the env sees it (normalised, no augmentation) ``(N, 3, H, W)``, and its labels."""
    source: ImageSource = image_folder(root, TransformConfig(size=size))
    samples = [source[i] for i in range(len(source))]
    return torch.stack([s["image"] for s in samples]), torch.stack([s["label"] for s in samples])


def train_corner_classifier(
    images: torch.Tensor,
    labels: torch.Tensor,
    steps: int = 300,
    batch_size: int = 64,
    grid_size: int = 2,
    seed: int = 0,
) -> ElasticMAE:
    """A small elastic MAE classifier trained on one uniformly random glimpse per image, cut as the env cuts it.

    Glimpses range over every size, up to the whole image, as ``scripts/pretrain_mae.py`` draws them, even for an
    env that caps them: more of them see the corner, so the classifier learns the stripes in fewer steps (with
    glimpses capped at half the image side, 300 steps gave held-out corner scores 0.1-0.2 lower).

    Args:
        images: ``(N, 3, H, W)`` normalised images.
        labels: ``(N,)`` int64 classes.
        steps: optimiser steps.
        batch_size: images per step.
        grid_size: ``g`` of the env's glimpses.
        seed: seeds the weights and the glimpse draws.

    Returns:
        The trained model, in eval mode.
    """
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    size = images.shape[-1]
    model = create_model(
        "tiny",
        "classification",
        img_size=(size, size),
        embed_dim=64,
        depth=2,
        num_heads=2,
        num_classes=len(CLASSES),
        layer_scale_init=0.1,
    )
    optimiser = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)
    model.train()
    for _ in range(steps):
        index = torch.randint(len(images), (batch_size,), generator=generator)
        unit = torch.rand(batch_size, 3, generator=generator)
        patches, boxes = extract_glimpses(images[index], unit, grid_size)
        logits = model.forward_head(model.forward_encoder(patches, boxes).latent)
        loss = F.cross_entropy(logits, labels[index])
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    return model.eval().requires_grad_(False)
