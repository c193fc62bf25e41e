"""One-step look-ahead: the score each env would reach with each of several candidate glimpses.

This is what an oracle sees (the true image and its label, mask or pixels), not what an agent sees; the
``greedy`` baseline of ``agents/baselines.py`` uses it as an upper bound for any policy with the same frozen model.
All candidates of all envs are scored by batched forwards of the model, in chunks of at most ``max_batch``
sequences so that memory stays bounded.
"""

from __future__ import annotations

import numpy as np
import torch

from adaglimpse_env.glimpse import action_to_unit, compute_glimpse_boxes, extract_patches
from adaglimpse_env.models.mae import ElasticMAE
from adaglimpse_env.tasks import Task, TaskTargets


@torch.inference_mode()
def score_candidate_glimpses(
    model: ElasticMAE,
    task: Task,
    images: torch.Tensor,
    patches: torch.Tensor,
    boxes: torch.Tensor,
    token_count: torch.Tensor,
    targets: TaskTargets,
    image_pixels: torch.Tensor | None,
    unit_actions: torch.Tensor,
    grid_size: int,
    max_size_ratio: float = 1.0,
    max_batch: int = 512,
) -> torch.Tensor:
    """Scores after one more glimpse, for every env and candidate; nothing is changed.

    Args:
        model: the frozen model.
        task: its task (head and score).
        images: ``(B, 3, H, W)`` normalised images.
        patches: ``(B, P, 3, 16, 16)`` tokens so far (slots ``>= token_count`` are ignored).
        boxes: ``(B, P, 4)`` their pixel boxes.
        token_count: ``(B,)`` int64 tokens filled per env.
        targets: the images' labels ``(B,)`` and masks ``(B, H, W)`` (either may be None).
        image_pixels: ``to_pixels(images)`` ``(B, 3, H, W)`` if the caller keeps it (reconstruction), else None.
        unit_actions: ``(B, K, 3)`` candidates in the original order ``(y, x, scale)``, in ``[0, 1]``.
        grid_size: ``g``.
        max_size_ratio: largest glimpse side as a fraction of the image side.
        max_batch: most sequences (env x candidate) in one forward.

    Returns:
        ``(B, K)`` float32 scores (higher is better).
    """
    batch, num_candidates = unit_actions.shape[:2]
    per_glimpse = grid_size * grid_size
    size = (images.shape[2], images.shape[3])
    cells = compute_glimpse_boxes(unit_actions.reshape(-1, 3), size, grid_size, max_size_ratio).cells
    cells = cells.reshape(batch, num_candidates * per_glimpse, 4)
    new_patches = extract_patches(images, cells).reshape(batch, num_candidates, per_glimpse, *patches.shape[2:])
    new_boxes = cells.reshape(batch, num_candidates, per_glimpse, 4)
    longest = int(token_count.max())
    old_patches, old_boxes = patches[:, :longest], boxes[:, :longest]
    # Slots past an env's own count are padding; the candidate's tokens come after the longest history.
    empty = torch.arange(longest, device=images.device)[None] >= token_count[:, None]  # (B, longest)
    pad_mask = torch.cat((empty, empty.new_zeros(batch, per_glimpse)), dim=1).float()[..., None]
    chunk = max(1, max_batch // batch)
    scores = []
    for start in range(0, num_candidates, chunk):
        count = min(chunk, num_candidates - start)
        seq_patches = torch.cat(
            (old_patches[:, None].expand(-1, count, -1, -1, -1, -1), new_patches[:, start : start + count]), dim=2
        ).flatten(0, 1)
        seq_boxes = torch.cat(
            (old_boxes[:, None].expand(-1, count, -1, -1), new_boxes[:, start : start + count]), dim=2
        ).flatten(0, 1)
        seq_pad = pad_mask.repeat_interleave(count, dim=0) if bool(empty.any()) else None
        latent = model.forward_encoder(seq_patches, seq_boxes, seq_pad).latent
        prediction = task.head.predict(model, latent, seq_pad)

        def repeat(tensor: torch.Tensor | None, count: int = count) -> torch.Tensor | None:
            return None if tensor is None else tensor.repeat_interleave(count, dim=0)

        repeated = TaskTargets(labels=repeat(targets.labels), masks=repeat(targets.masks))
        score = task.score(model, prediction, images.repeat_interleave(count, dim=0), repeated, repeat(image_pixels))
        scores.append(score.float().reshape(batch, count))
    return torch.cat(scores, dim=1)


def candidate_unit_actions(actions: np.ndarray | torch.Tensor, num_envs: int, device: torch.device) -> torch.Tensor:
    """Candidate actions ``(num_envs, K, 3)`` ``(x, y, scale)`` in ``[-1, 1]``, checked and clipped, as the
    original-order unit actions :func:`score_candidate_glimpses` takes.

    Raises:
        ValueError: wrong shape or non-finite actions.
    """
    if isinstance(actions, np.ndarray):  # a broadcast view is read-only: copy it into one float32 block
        actions = np.ascontiguousarray(actions, dtype=np.float32)
    candidates = torch.as_tensor(actions, dtype=torch.float32).to(device)
    if candidates.ndim != 3 or candidates.shape[0] != num_envs or candidates.shape[2] != 3:
        raise ValueError(
            f"score_candidates requires actions of shape ({num_envs}, K, 3) ordered (x, y, scale), "
            f"got {tuple(candidates.shape)}"
        )
    if not bool(torch.isfinite(candidates).all()):
        raise ValueError("score_candidates requires finite actions, got NaN or inf")
    batch, count = candidates.shape[:2]
    return action_to_unit(candidates.clamp(-1.0, 1.0).reshape(-1, 3)).reshape(batch, count, 3)
