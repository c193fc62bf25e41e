"""Drawing episodes: the image with its glimpse boxes beside the model's current prediction.

One module for every picture of an episode (``env.render()``; later the visualisation script and TensorBoard),
so they all look the same. Pure Pillow: no plotting dependency.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw

from adaglimpse_env.models.heads import ReconstructionHead, SegmentationHead, TaskHead
from adaglimpse_env.models.mae import ElasticMAE
from adaglimpse_env.normalization import to_pixels


def step_colour(step: int, total: int) -> tuple[int, int, int]:
    """Colour of glimpse ``step`` of ``total``: from yellow (first) to red (last)."""
    t = step / max(total - 1, 1)
    return 255, int(230 * (1 - t)), int(40 * (1 - t))


def image_to_uint8(image: torch.Tensor) -> np.ndarray:
    """Normalised ``(3, H, W)`` -> ``(H, W, 3)`` uint8."""
    return to_pixels(image.float()).round().byte().permute(1, 2, 0).cpu().numpy()


def draw_glimpses(pixels: np.ndarray, crops: np.ndarray, width: int = 2) -> Image.Image:
    """The image with glimpse boxes ``(N, 4)`` ``(y1, x1, y2, x2)`` drawn in step order (``-1`` rows skipped)."""
    canvas = Image.fromarray(pixels)
    draw = ImageDraw.Draw(canvas)
    valid = [box for box in crops.tolist() if box[0] >= 0]
    for step, (y1, x1, y2, x2) in enumerate(valid):
        draw.rectangle((x1, y1, x2 - 1, y2 - 1), outline=step_colour(step, len(valid)), width=width)
    return canvas


def segmentation_palette(num_classes: int) -> np.ndarray:
    """A fixed, well-spread colour per class, ``(num_classes, 3)`` uint8."""
    rng = np.random.default_rng(12345)
    return rng.integers(40, 255, size=(num_classes, 3), dtype=np.uint8)


def draw_class_bars(
    probabilities: torch.Tensor, classes: Sequence[str], size: tuple[int, int], top: int = 5
) -> Image.Image:
    """Horizontal bars of the ``top`` most probable classes."""
    height, width = size
    canvas = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    values, indices = probabilities.float().topk(min(top, probabilities.numel()))
    row = height // (top + 1)
    for rank, (value, index) in enumerate(zip(values.tolist(), indices.tolist(), strict=True)):
        y = row // 2 + rank * row
        draw.rectangle((4, y, 4 + int((width - 8) * value), y + row // 2), fill=(70, 130, 220))
        name = classes[index] if index < len(classes) else f"class {index}"
        draw.text((6, y + row // 2), f"{name[:28]} {value:.2f}", fill=(0, 0, 0))
    return canvas


def prediction_panel(
    model: ElasticMAE, head: TaskHead, prediction: torch.Tensor, classes: Sequence[str], size: tuple[int, int]
) -> Image.Image:
    """Picture of one image's prediction: reconstruction, top-5 classes, or segmentation map."""
    if isinstance(head, ReconstructionHead):
        return Image.fromarray(image_to_uint8(model.unpatchify(prediction[None])[0]))
    if isinstance(head, SegmentationHead):
        labels = prediction.argmax(dim=0).cpu().numpy()
        return Image.fromarray(segmentation_palette(prediction.shape[0])[labels])
    return draw_class_bars(prediction.float().softmax(dim=-1), classes, size)


def render_frames(
    model: ElasticMAE,
    head: TaskHead,
    images: torch.Tensor,
    predictions: torch.Tensor,
    crops: np.ndarray,
    num_glimpses: np.ndarray,
    classes: Sequence[str] = (),
) -> tuple[np.ndarray, ...]:
    """One ``(H, 2W, 3)`` uint8 frame per image: glimpses drawn on the image | prediction.

    Args:
        model: the frozen model (for unpatchify).
        head: the task head.
        images: ``(B, 3, H, W)`` normalised.
        predictions: the head's output for the batch.
        crops: ``(B, N, 4)`` glimpse boxes so far (``-1`` rows unused).
        num_glimpses: ``(B,)`` glimpses taken.
        classes: class names for classification bars.
    """
    frames = []
    height, width = images.shape[-2:]
    for b in range(images.shape[0]):
        left = draw_glimpses(image_to_uint8(images[b]), crops[b, : int(num_glimpses[b])])
        right = prediction_panel(model, head, predictions[b], classes, (height, width)).resize((width, height))
        frame = Image.new("RGB", (2 * width, height))
        frame.paste(left, (0, 0))
        frame.paste(right, (width, 0))
        frames.append(np.asarray(frame))
    return tuple(frames)
