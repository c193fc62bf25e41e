"""Attention rollout (Abnar & Zuidema, 2020) over the elastic MAE's attention maps: how much each token contributes
to the cls token, the ``importance`` stream of the paper's agent state (original `mae.py`).
"""

from __future__ import annotations

import torch


def attention_rollout(
    attentions: list[torch.Tensor], discard_ratio: float = 0.5, num_valid: torch.Tensor | None = None
) -> torch.Tensor:
    """Importance of each patch token for the cls token, by attention rollout (original `mae.py`).

    Per block: mean over heads, zero the ``int(T*T*discard_ratio)`` smallest entries (never ``[cls, cls]``),
    add the identity, row-normalise and chain. The cls row over the patch tokens is soft-maxed, so the result
    sums to one per image.

    A batch may be padded to a common token count: with ``num_valid`` each image is rolled out over its own
    ``T_b = 1 + num_valid[b]`` tokens only (its discard count, ranking and softmax ignore the padded slots), which
    gives exactly what the image would get alone. Padded slots get importance 0. Ties among the smallest
    entries are broken by position (a stable sort), where the original's ``topk`` leaves them unspecified.

    Args:
        attentions: per block ``(B, heads, T, T)`` softmax attention, ``T = 1 + n``; padded keys must have been
            masked (attention exactly 0), as :meth:`ElasticMAE.forward_encoder` does with ``pad_mask``.
        discard_ratio: fraction of entries dropped per block.
        num_valid: optional ``(B,)`` int64 count of valid patch tokens, which are the first slots.

    Returns:
        ``(B, n, 1)`` importance; ``(B, 0, 1)`` when there are no patch tokens.
    """
    first = attentions[0]
    batch, _, tokens, _ = first.shape
    if tokens == 1:
        return first.new_ones(batch, 0, 1)
    device = first.device
    uniform = num_valid is None
    if num_valid is None:
        num_valid = torch.full((batch,), tokens - 1, dtype=torch.long, device=device)
    positions = torch.arange(tokens, device=device)
    valid_tokens = positions[None] < (num_valid.to(device) + 1)[:, None]  # (B, T), cls always valid
    valid_pairs = (valid_tokens[:, :, None] & valid_tokens[:, None, :]).reshape(batch, tokens * tokens)
    valid_count = (num_valid.to(device) + 1).double()
    num_discard = torch.floor(valid_count * valid_count * discard_ratio).long()[:, None]  # python int() of T*T*r
    flat_positions = torch.arange(tokens * tokens, device=device).expand(batch, -1)
    eye = torch.eye(tokens, dtype=first.dtype, device=device)
    rollout = eye.expand(batch, tokens, tokens)
    # Every image has the same count when no num_valid is given: then a selection replaces the sort.
    same_count = int(tokens * tokens * discard_ratio) if uniform else None
    for attention in attentions:
        fused = attention.mean(dim=1).reshape(batch, tokens * tokens)
        # Zero the smallest valid entries, but keep entry 0 ([cls, cls]) even when it is among them.
        if same_count is not None:
            drop = _smallest_entries(fused, same_count)
        else:
            order = fused.masked_fill(~valid_pairs, float("inf")).argsort(dim=-1, stable=True)
            rank = torch.empty_like(order).scatter_(1, order, flat_positions)
            drop = rank < num_discard
        drop &= flat_positions != 0
        fused = fused.masked_fill(drop, 0.0).reshape(batch, tokens, tokens)
        fused = (fused + eye) / 2
        fused = fused / fused.sum(dim=-1, keepdim=True)
        rollout = fused @ rollout
    logits = rollout[:, 0, 1:].masked_fill(~valid_tokens[:, 1:], float("-inf"))
    importance = torch.where(valid_tokens[:, 1:], logits.softmax(dim=-1), 0.0)
    return importance.unsqueeze(-1)


def _smallest_entries(values: torch.Tensor, count: int) -> torch.Tensor:
    """Mask of the ``count`` smallest entries of each row, ties broken by position (as a stable sort ranks them).

    The ``count``-th smallest value is found by selection (``kthvalue``, linear time) instead of a full sort;
    entries below it are in, and of those equal to it, the first ones by position until ``count`` are taken.

    Args:
        values: ``(B, N)`` finite.
        count: ``0 <= count <= N``.

    Returns:
        ``(B, N)`` bool.
    """
    if count == 0:
        return torch.zeros_like(values, dtype=torch.bool)
    threshold = values.kthvalue(count, dim=-1, keepdim=True).values
    below = values < threshold
    tied = values == threshold
    room = count - below.sum(dim=-1, keepdim=True)  # >= 1: the threshold itself is among the smallest
    return below | (tied & (tied.cumsum(dim=-1) <= room))
