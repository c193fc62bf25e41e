"""Drawing episodes: the image with its glimpse boxes, what the agent has seen so far, and the model's current
prediction; episode contact sheets, policy comparison sheets, score curves and glimpse heat maps.

One module for every picture of an episode (``env.render()``, ``scripts/visualize_episode.py`` and the
TensorBoard images of ``scripts/train_sac.py``), so they all look the same. Pure Pillow: no plotting dependency.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from adaglimpse_env.models.mae import ElasticMAE
from adaglimpse_env.normalization import to_pixels

if TYPE_CHECKING:  # tasks draw their predictions with the helpers below, so they import this module
    from adaglimpse_env.tasks import Task

UNSEEN_GREY = (128, 128, 128)
POLICY_COLOURS = (
    (220, 60, 40),
    (40, 110, 220),
    (30, 160, 80),
    (150, 70, 190),
    (230, 150, 20),
    (60, 60, 60),
    (0, 170, 170),
)


@lru_cache(maxsize=8)
def font(size: int = 12) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    """Pillow's bundled font at ``size`` px (the bitmap default where FreeType is missing)."""
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError):  # Pillow < 10.1 or no FreeType: fixed-size bitmap font
        return ImageFont.load_default()


def step_colour(step: int, total: int) -> tuple[int, int, int]:
    """Colour of glimpse ``step`` of ``total``: from yellow (first) to red (last)."""
    t = step / max(total - 1, 1)
    return 255, int(230 * (1 - t)), int(40 * (1 - t))


def image_to_uint8(image: torch.Tensor) -> np.ndarray:
    """Normalised ``(3, H, W)`` -> ``(H, W, 3)`` uint8."""
    return to_pixels(image.float()).round().byte().permute(1, 2, 0).cpu().numpy()


def draw_glimpses(pixels: np.ndarray, crops: np.ndarray, width: int = 2) -> Image.Image:
    """The image with glimpse boxes drawn in step order, coloured by step over the whole budget (so a glimpse keeps
    its colour from frame to frame).

    Args:
        pixels: ``(H, W, 3)`` uint8.
        crops: ``(N, 4)`` boxes ``(y1, x1, y2, x2)`` for the episode's budget of ``N`` glimpses; ``-1`` rows (not
            taken yet) are skipped.
        width: line width in pixels.
    """
    canvas = Image.fromarray(pixels)
    draw = ImageDraw.Draw(canvas)
    rows = np.asarray(crops).tolist()
    for step, (y1, x1, y2, x2) in enumerate(rows):
        if y1 >= 0:
            draw.rectangle((x1, y1, x2 - 1, y2 - 1), outline=step_colour(step, len(rows)), width=width)
    return canvas


def seen_canvas(patches: torch.Tensor, boxes: torch.Tensor, num_tokens: int, size: tuple[int, int]) -> Image.Image:
    """What the agent has seen: every 16×16 patch pasted, nearest-neighbour, over its pixel box on grey.

    Coarse patches are pasted first and fine ones last, so the sharpest view of a region stays on top.

    Args:
        patches: ``(P, 3, 16, 16)`` ImageNet-normalised patches (the observation's ``patches``).
        boxes: ``(P, 4)`` pixel boxes ``(y1, x1, y2, x2)``.
        num_tokens: how many leading slots are filled.
        size: ``(H, W)`` of the image.
    """
    height, width = size
    canvas = Image.new("RGB", (width, height), UNSEEN_GREY)
    if num_tokens == 0:
        return canvas
    pixels = to_pixels(patches[:num_tokens].float()).round().byte().permute(0, 2, 3, 1).cpu().numpy()
    coords = boxes[:num_tokens].cpu().numpy()
    areas = (coords[:, 2] - coords[:, 0]) * (coords[:, 3] - coords[:, 1])
    for index in np.argsort(-areas, kind="stable"):
        y1, x1, y2, x2 = coords[index].tolist()
        if y2 > y1 and x2 > x1:
            patch = Image.fromarray(pixels[index]).resize((x2 - x1, y2 - y1), Image.Resampling.NEAREST)
            canvas.paste(patch, (x1, y1))
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
        draw.text((6, y + row // 2), f"{name[:28]} {value:.2f}", fill=(0, 0, 0), font=font(11))
    return canvas


def draw_target(canvas: Image.Image, box: Sequence[int]) -> Image.Image:
    """Outline the object to find (``(y1, x1, y2, x2)``; nothing for ``-1``s) in cyan over a black rim, 2 px
    outside it so the object itself stays visible."""
    y1, x1, y2, x2 = (int(v) for v in box)
    if y1 < 0:
        return canvas
    draw = ImageDraw.Draw(canvas)
    draw.rectangle((x1 - 3, y1 - 3, x2 + 2, y2 + 2), outline=(0, 0, 0), width=1)
    draw.rectangle((x1 - 2, y1 - 2, x2 + 1, y2 + 1), outline=(0, 255, 255), width=1)
    return canvas


def render_frames(
    model: ElasticMAE,
    task: Task,
    images: torch.Tensor,
    predictions: torch.Tensor,
    crops: np.ndarray,
    num_glimpses: np.ndarray,
    classes: Sequence[str] = (),
    patches: torch.Tensor | None = None,
    boxes: torch.Tensor | None = None,
    tokens_per_glimpse: int = 4,
    target_boxes: np.ndarray | None = None,
) -> tuple[np.ndarray, ...]:
    """One uint8 frame per image: glimpses drawn on the image | what was seen | prediction.

    Args:
        model: the frozen model (for unpatchify).
        task: the task, which draws its prediction (:meth:`~adaglimpse_env.tasks.Task.prediction_picture`).
        images: ``(B, 3, H, W)`` normalised.
        predictions: the head's output for the batch.
        crops: ``(B, N, 4)`` glimpse boxes so far (``-1`` rows unused).
        num_glimpses: ``(B,)`` glimpses taken.
        classes: class names for classification bars.
        patches: ``(B, P, 3, 16, 16)`` patches seen so far; with ``boxes``, adds the "seen" panel.
        boxes: ``(B, P, 4)`` token pixel boxes.
        tokens_per_glimpse: tokens each glimpse adds (``grid_size ** 2``).
        target_boxes: ``(B, 4)`` box of the object to find per image (``-1`` rows: none), outlined in cyan.

    Returns:
        ``B`` frames of shape ``(H, 3W, 3)`` (``(H, 2W, 3)`` without ``patches``).
    """
    frames = []
    height, width = images.shape[-2:]
    for b in range(images.shape[0]):
        glimpses = int(num_glimpses[b])
        shown = draw_glimpses(
            image_to_uint8(images[b]), np.where(np.arange(len(crops[b]))[:, None] < glimpses, crops[b], -1)
        )
        panels = [draw_target(shown, target_boxes[b]) if target_boxes is not None else shown]
        if patches is not None and boxes is not None:
            panels.append(seen_canvas(patches[b], boxes[b], glimpses * tokens_per_glimpse, (height, width)))
        picture = task.prediction_picture(model, predictions[b], classes, (height, width))
        panels.append(picture.resize((width, height)))
        frames.append(hstack([np.asarray(panel) for panel in panels]))
    return tuple(frames)


def hstack(frames: Sequence[np.ndarray], gap: int = 0, fill: int = 255) -> np.ndarray:
    """Frames side by side, top-aligned, padded to the tallest."""
    height = max(frame.shape[0] for frame in frames)
    width = sum(frame.shape[1] for frame in frames) + gap * (len(frames) - 1)
    out = np.full((height, width, 3), fill, dtype=np.uint8)
    x = 0
    for frame in frames:
        out[: frame.shape[0], x : x + frame.shape[1]] = frame
        x += frame.shape[1] + gap
    return out


def vstack(frames: Sequence[np.ndarray], gap: int = 0, fill: int = 255) -> np.ndarray:
    """Frames one above the other, left-aligned, padded to the widest."""
    width = max(frame.shape[1] for frame in frames)
    height = sum(frame.shape[0] for frame in frames) + gap * (len(frames) - 1)
    out = np.full((height, width, 3), fill, dtype=np.uint8)
    y = 0
    for frame in frames:
        out[y : y + frame.shape[0], : frame.shape[1]] = frame
        y += frame.shape[0] + gap
    return out


def scale_frame(frame: np.ndarray, scale: float) -> np.ndarray:
    """Resize a ``(H, W, 3)`` frame by ``scale`` (bilinear)."""
    if scale == 1.0:
        return frame
    height, width = frame.shape[:2]
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return np.asarray(Image.fromarray(frame).resize(size, Image.Resampling.BILINEAR))


def caption(frame: np.ndarray, text: str, height: int = 18) -> np.ndarray:
    """``frame`` with a white strip of ``text`` above it."""
    strip = Image.new("RGB", (frame.shape[1], height), (255, 255, 255))
    ImageDraw.Draw(strip).text((4, 2), text, fill=(0, 0, 0), font=font(height - 6))
    return vstack([np.asarray(strip), frame])


def draw_curves(
    curves: Mapping[str, Sequence[float]],
    size: tuple[int, int],
    title: str = "",
    marker: int | None = None,
    x_label: str = "glimpses",
    x_ends: tuple[str, str] | None = None,
) -> np.ndarray:
    """Line plot of one or more curves over glimpse count (x = 0, 1, ...), with a legend when several.

    Args:
        curves: name -> values; NaN values are left out.
        size: ``(H, W)`` of the picture.
        title: text above the plot.
        marker: draw a dot at this x on every curve (the current step of an animation).
        x_label: name of the x axis.
        x_ends: the labels of the x axis's two ends (default: the first and last index), for curves whose
            points are evenly spaced in something else (env steps of a learning curve).

    Returns:
        ``(H, W, 3)`` uint8.
    """
    height, width = size
    canvas = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    left, right, top, bottom = 38, 8, 20, 18
    finite = [v for values in curves.values() for v in values if np.isfinite(v)]
    low, high = (min(finite), max(finite)) if finite else (0.0, 1.0)
    if high - low < 1e-9:
        low, high = low - 0.5, high + 0.5
    steps = max((len(values) for values in curves.values()), default=1)
    span_x = max(steps - 1, 1)

    def point(step: int, value: float) -> tuple[float, float]:
        x = left + (width - left - right) * step / span_x
        y = top + (height - top - bottom) * (high - value) / (high - low)
        return x, y

    draw.rectangle((left, top, width - right, height - bottom), outline=(180, 180, 180))
    small = font(10)
    draw.text((2, top - 4), f"{high:.3g}", fill=(90, 90, 90), font=small)
    draw.text((2, height - bottom - 8), f"{low:.3g}", fill=(90, 90, 90), font=small)
    first, last = x_ends if x_ends is not None else ("0", str(steps - 1))
    draw.text((left, height - bottom + 3), first, fill=(90, 90, 90), font=small)
    draw.text(
        ((left + width - right) // 2 - 3 * len(x_label), height - bottom + 3), x_label, fill=(90, 90, 90), font=small
    )
    draw.text((width - right - max(12, 6 * len(last)), height - bottom + 3), last, fill=(90, 90, 90), font=small)
    draw.text((left, 3), title, fill=(0, 0, 0), font=font(12))
    for index, (name, values) in enumerate(curves.items()):
        colour = POLICY_COLOURS[index % len(POLICY_COLOURS)]
        points = [point(step, v) for step, v in enumerate(values) if np.isfinite(v)]
        if len(points) > 1:
            draw.line(points, fill=colour, width=2)
        if marker is not None and marker < len(values) and np.isfinite(values[marker]):
            x, y = point(marker, values[marker])
            draw.ellipse((x - 3, y - 3, x + 3, y + 3), fill=colour)
        if len(curves) > 1:
            draw.text((left + 4, top + 2 + 12 * index), name[:24], fill=colour, font=small)
    return np.asarray(canvas)


def glimpse_heatmap(boxes: np.ndarray, image_size: tuple[int, int], bins: int = 28, sigma: float = 1.0) -> np.ndarray:
    """Where a policy looks: glimpse centres binned on the image, each weighted by its side / image side.

    Args:
        boxes: ``(M, 4)`` crops ``(y1, x1, y2, x2)`` in pixels (rows with ``y1 < 0`` are unused slots).
        image_size: ``(H, W)``.
        bins: cells per side of the histogram.
        sigma: Gaussian blur in cells, so nearby centres merge.

    Returns:
        ``(H, W, 3)`` uint8, black (never) -> red -> yellow -> white (most), normalised to the maximum.
    """
    height, width = image_size
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    boxes = boxes[boxes[:, 0] >= 0]
    histogram = np.zeros((bins, bins))
    if len(boxes):
        cy = (boxes[:, 0] + boxes[:, 2]) / 2 / height
        cx = (boxes[:, 1] + boxes[:, 3]) / 2 / width
        weight = (boxes[:, 2] - boxes[:, 0]) / max(height, width)
        rows = np.clip((cy * bins).astype(int), 0, bins - 1)
        cols = np.clip((cx * bins).astype(int), 0, bins - 1)
        np.add.at(histogram, (rows, cols), weight)
    if sigma > 0:
        radius = max(1, int(3 * sigma))
        kernel = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
        kernel /= kernel.sum()
        histogram = np.apply_along_axis(np.convolve, 0, histogram, kernel, mode="same")
        histogram = np.apply_along_axis(np.convolve, 1, histogram, kernel, mode="same")
    peak = histogram.max()
    level = histogram / peak if peak > 0 else histogram
    # "hot" colour map: black -> red -> yellow -> white
    rgb = np.stack([np.clip(3 * level, 0, 1), np.clip(3 * level - 1, 0, 1), np.clip(3 * level - 2, 0, 1)], axis=-1)
    small = Image.fromarray((rgb * 255).round().astype(np.uint8))
    return np.asarray(small.resize((width, height), Image.Resampling.BILINEAR))


def animation_frame(frame: np.ndarray, scores: Sequence[float], step: int, num_steps: int, label: str) -> np.ndarray:
    """One frame of an episode animation: a caption, the env frame, and the score curve up to ``step``.

    Args:
        frame: the env's ``rgb_array`` frame after ``step`` glimpses.
        scores: the score after 0, 1, ... glimpses (at least ``step + 1`` values).
        step: glimpses taken.
        num_steps: the episode's glimpse budget (the curve's x extent).
        label: what to print above (policy, image).
    """
    values = [*scores[: step + 1], *[float("nan")] * (num_steps - step)]
    curve = draw_curves({"score": values}, (frame.shape[0], frame.shape[0]), "score", marker=step)
    return caption(hstack([frame, curve], gap=4), f"{label}   glimpse {step}/{num_steps}   score {scores[step]:.3f}")


def episode_sheet(
    frames: Sequence[np.ndarray], scores: Sequence[float], label: str, columns: int = 2, scale: float = 0.5
) -> np.ndarray:
    """Contact sheet of one episode: the frame after every glimpse (scaled), in reading order, then the curve.

    Args:
        frames: env frames after 0, 1, ..., N glimpses.
        scores: score after each of them.
        label: title of the sheet.
        columns: frames per row.
        scale: size of each frame relative to the env frame.
    """
    tiles = [caption(scale_frame(frame, scale), f"glimpse {step}") for step, frame in enumerate(frames)]
    side = tiles[0].shape[0]
    tiles.append(draw_curves({"score": list(scores)}, (side, side), "score"))
    rows = [hstack(tiles[i : i + columns], gap=4) for i in range(0, len(tiles), columns)]
    return caption(vstack(rows, gap=4), label, height=22)


def comparison_sheet(
    final_frames: Mapping[str, Sequence[np.ndarray]],
    metric_curves: Mapping[str, Sequence[float]],
    metric: str,
    scale: float = 0.5,
) -> np.ndarray:
    """Policies side by side on the same images: one row per policy with its final frame on each image, and one
    plot of the task metric after each glimpse (mean over the episodes), a line per policy.

    Args:
        final_frames: policy -> the env frame at the end of each episode (same images, same order, per policy).
        metric_curves: policy -> metric after 0, 1, ... glimpses.
        metric: the metric's name (for the plot title).
        scale: size of each frame relative to the env frame.
    """
    rows = []
    for policy, frames in final_frames.items():
        tiles = [scale_frame(frame, scale) for frame in frames]
        rows.append(caption(hstack(tiles, gap=4), policy, height=20))
    grid = vstack(rows, gap=6)
    plot = draw_curves(metric_curves, (min(grid.shape[0], 320), 320), f"{metric} after each glimpse")
    return hstack([grid, plot], gap=8)


def save_gif(frames: Sequence[np.ndarray], path: str | Path, fps: float = 2.0) -> None:
    """Write an animated GIF (Pillow), one image per frame, looping forever."""
    images = [Image.fromarray(frame) for frame in frames]
    images[0].save(path, save_all=True, append_images=images[1:], duration=int(1000 / fps), loop=0, optimize=True)
