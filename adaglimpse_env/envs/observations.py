"""What the agent sees and what ``info`` reports, built from the episode buffers and the model's evaluation.

One function per output, on the env's device; :class:`~adaglimpse_env.envs.vector_env.GlimpseVectorEnv` only
exports the tensors (numpy or device tensors, never a view of its state). The presets are described in
:mod:`adaglimpse_env.envs.spaces`.
"""

from __future__ import annotations

import torch

from adaglimpse_env.envs.episode_buffers import EpisodeBuffers
from adaglimpse_env.envs.model_runner import ModelEvaluation


def agent_observation(
    preset: str,
    evaluation: ModelEvaluation,
    buffers: EpisodeBuffers,
    budget: int,
    image_size: tuple[int, int],
) -> torch.Tensor | dict[str, torch.Tensor]:
    """The batched observation of ``preset``: fresh tensors the env may hand out as they are.

    Args:
        preset: ``full``, ``latent``, ``flat`` or ``map``.
        evaluation: the model's output for the tokens so far (``latent (B, T + 1, D)``, ``importance (B, T, 1)``).
        buffers: the episodes' state (boxes, patches, token counts, map).
        budget: ``P``, the padded token budget.
        image_size: ``(H, W)``; the ``flat`` preset divides boxes by its longer side.

    Returns:
        A ``(B, D + 5P)`` tensor (``flat``), a ``(B, 5, M, M)`` tensor (``map``) or a dict of ``(B, ...)`` tensors.
    """
    latent = evaluation.latent
    batch, tokens = latent.shape[0], latent.shape[1] - 1
    empty = buffers.empty_slots(budget)
    coords = buffers.boxes.float()  # (B, P, 4), a fresh tensor
    if preset == "flat":
        return torch.cat((latent[:, 0], (coords / max(image_size)).flatten(1), empty.flatten(1)), dim=1)
    if preset == "map":
        assert buffers.glimpse_map is not None
        return buffers.glimpse_map.observation(buffers.token_count.float() / budget)
    latent_obs = latent.new_zeros(batch, budget + 1, latent.shape[-1])
    latent_obs[:, : tokens + 1] = latent
    observation = {"latent": latent_obs, "coords": coords, "mask": empty}
    if preset == "full":
        importance = latent.new_zeros(batch, budget, 1)
        importance[:, : evaluation.importance.shape[1]] = evaluation.importance
        observation["importance"] = importance
        observation["patches"] = buffers.patches.clone()
    return observation


def info_tensors(
    evaluation: ModelEvaluation, buffers: EpisodeBuffers, initial_score: torch.Tensor
) -> dict[str, torch.Tensor]:
    """The per-env ``info`` entries that live on the device: scores, labels, boxes, coverage and task metrics."""
    return {
        "score": evaluation.score,
        "initial_score": initial_score,
        "label": buffers.labels,
        "target_box": buffers.target_boxes,
        "glimpse_boxes": buffers.crops,
        "pixel_fraction": buffers.pixel_fraction(),
        "num_clipped_actions": buffers.clipped,
        **evaluation.metrics,
    }
