"""Random glimpse sets for training a model behind the env: what ``scripts/pretrain_mae.py`` feeds it.

Each set is ``k`` glimpses per image cut exactly as the env cuts them (:func:`adaglimpse_env.glimpse.extract_glimpses`):
uniform random squares, optionally the whole image first (as the original `PretrainingSampler`), and, for image
sources that place a target (the cluttered digits), glimpses aimed at the target at a chosen scale and placement,
so that a classifier learns to read the target wherever a policy's glimpse puts it.
"""

from __future__ import annotations

import math
from typing import Literal

import torch

from adaglimpse_env.glimpse import centred_unit_action, extract_glimpses

#: Where a target glimpse puts the target (see :func:`target_glimpse_actions`).
TargetPlacement = Literal["cell", "centred", "anywhere", "mixed"]


def target_glimpse_actions(
    target_boxes: torch.Tensor, num_glimpses: int, scale: tuple[float, float], image_size: tuple[int, int],
    grid_size: int, generator: torch.Generator, placement: TargetPlacement = "cell",
) -> torch.Tensor:  # fmt: skip
    """Glimpses that show the target: squares ``scale`` times the target's longer side (log-uniform).

    ``placement="cell"`` puts the target's centre near the centre of a random cell (within an eighth of the glimpse
    side; a cell holds the whole target only when the glimpse is at least ``g`` times its size, so smaller scales
    show it cut by the glimpse's edge); ``"centred"`` near the glimpse's centre (within a sixteenth of its side),
    where the cells cut it into ``g x g`` pieces; ``"anywhere"`` anywhere wholly inside the glimpse (its centre
    uniform over the positions that keep it inside), so targets cut across cells are among them; ``"mixed"``
    picks one of those three for each glimpse at random.

    Why several: reading a target cut across cells needs the encoder to put the cells back together from their
    absolute box embeddings, which a small model learns slowly (measured: a micro model read 12% of digits cut in
    four after 600 steps of such glimpses, 76% of digits inside one cell after 400). So the digits classifier is
    trained in phases, from digits inside one cell to digits anywhere (the configs in ``configs/pretrain/``,
    docs/tasks.md).

    Args:
        target_boxes: ``(B, 4)`` pixel boxes ``(y1, x1, y2, x2)``.

    Returns:
        ``(B, num_glimpses, 3)`` original-order unit actions.
    """
    batch = target_boxes.shape[0]
    boxes = target_boxes.float().cpu()
    centre = ((boxes[:, :2] + boxes[:, 2:]) / 2)[:, None].expand(batch, num_glimpses, 2)
    extent = (boxes[:, 2:] - boxes[:, :2]).amax(dim=1)[:, None]
    low, high = math.log(scale[0]), math.log(scale[1])
    side = extent * torch.exp(low + (high - low) * torch.rand(batch, num_glimpses, generator=generator))
    if placement == "anywhere":
        # Target centre uniform over the glimpse positions that keep the whole target inside.
        room = (side - extent)[..., None].clamp(min=0)
        glimpse_centre = centre + (torch.rand(batch, num_glimpses, 2, generator=generator) - 0.5) * room
    elif placement == "centred":
        # Within a sixteenth of the side of the glimpse's centre, so the g x g cells cut the target.
        jitter = (torch.rand(batch, num_glimpses, 2, generator=generator) - 0.5) * side[..., None] / 8
        glimpse_centre = centre + jitter
    elif placement == "mixed":
        kinds = [
            target_glimpse_actions(target_boxes, num_glimpses, scale, image_size, grid_size, generator, kind)
            for kind in ("cell", "centred", "anywhere")
        ]
        pick = torch.randint(0, len(kinds), (batch, num_glimpses, 1), generator=generator)
        return torch.stack(kinds).gather(0, pick[None].expand(1, -1, -1, 3))[0]
    elif placement == "cell":
        cell = torch.randint(0, grid_size, (batch, num_glimpses, 2), generator=generator).float()
        # Offset from the glimpse centre to the chosen cell's centre, plus a jitter of up to side / 8 either way.
        offset = ((cell + 0.5) / grid_size - 0.5) * side[..., None]
        jitter = (torch.rand(batch, num_glimpses, 2, generator=generator) - 0.5) * side[..., None] / 4
        glimpse_centre = centre - offset + jitter
    else:
        raise ValueError(
            f"target glimpse placement must be 'cell', 'centred', 'anywhere' or 'mixed', got {placement!r}"
        )
    unit = centred_unit_action(glimpse_centre.reshape(-1, 2), side.reshape(-1), image_size, grid_size)
    return unit.reshape(batch, num_glimpses, 3)


def sample_glimpses(
    images: torch.Tensor,
    num_glimpses: int,
    grid_size: int,
    whole_first: bool,
    generator: torch.Generator,
    target_boxes: torch.Tensor | None = None,
    target_share: float = 0.0,
    target_scale: tuple[float, float] = (2.0, 3.5),
    target_placement: TargetPlacement = "cell",
) -> tuple[torch.Tensor, torch.Tensor]:
    """``num_glimpses`` glimpses per image, cut as the env cuts them: uniform random squares, the first one the
    whole image if ``whole_first``, and each later one on the target with probability ``target_share`` (needs
    ``target_boxes (B, 4)``; see :func:`target_glimpse_actions`).

    Returns:
        ``(patches (B, k*g*g, 3, 16, 16), boxes (B, k*g*g, 4))``.
    """
    batch = images.shape[0]
    unit = torch.rand(batch, num_glimpses, 3, generator=generator)
    if target_boxes is not None and target_share > 0 and num_glimpses:
        on_target = torch.rand(batch, num_glimpses, generator=generator) < target_share
        size = (images.shape[2], images.shape[3])
        aimed = target_glimpse_actions(
            target_boxes, num_glimpses, target_scale, size, grid_size, generator, target_placement
        )
        unit = torch.where(on_target[..., None], aimed, unit)
    unit = unit.to(images.device)
    if whole_first and num_glimpses:
        unit[:, 0] = torch.tensor([0.0, 0.0, 1.0], device=images.device)  # whole image as a coarse grid
    patches, boxes = [], []
    for k in range(num_glimpses):
        glimpse_patches, glimpse_boxes = extract_glimpses(images, unit[:, k], grid_size)
        patches.append(glimpse_patches)
        boxes.append(glimpse_boxes)
    if not patches:
        return images.new_zeros(batch, 0, 3, 16, 16), torch.zeros(batch, 0, 4, dtype=torch.long, device=images.device)
    return torch.cat(patches, dim=1), torch.cat(boxes, dim=1)
