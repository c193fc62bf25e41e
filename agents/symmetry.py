"""Symmetry augmentation of replayed map transitions: mirror and transpose the picture, move the action with it.

The ``map`` observation (:mod:`adaglimpse_env.envs.glimpse_map`) is a top-down picture of the image, and a glimpse
action ``(x, y, scale)`` is a place on that picture. Where to look does not depend on which way up the scene is
drawn: mirroring the map left-right and negating ``x`` (or top-bottom and ``y``; or, on a square image, swapping
rows with columns and ``x`` with ``y``) gives a transition of the same kind, with the same reward to first order.
Replaying each sampled transition under a random one of these eight symmetries (the dihedral group of the square)
gives the critic eight views of every experience, the image-augmentation idea of RAD (Laskin et al., 2020) and
DrQ (Kostrikov et al., 2020) applied with the transformation that the action space shares, as in equivariant
spatial-action RL (Wang et al., "SO(2)-Equivariant Reinforcement Learning", 2022).

What is not symmetric, and why it is small: the env floors a glimpse's corner to whole pixels (so a mirrored
glimpse can sit one pixel off), the last row and column of cells are wider by the remainder when the grid does not
divide the glimpse's side (a pixel, with the 2 x 2 grid), and a mirrored digit reads differently to the
classifier; the critic only has to learn where glimpses pay, not what they read.
"""

from __future__ import annotations

import torch


def random_symmetries(batch_size: int, square: bool, device: torch.device) -> torch.Tensor:
    """``(B, 3)`` bool draws of (transpose, mirror x, mirror y) per transition; transpose only when ``square``.

    Drawn from torch's global generator, so SB3's seeding makes a run repeat.
    """
    draws = torch.rand(batch_size, 3, device=device) < 0.5
    if not square:
        draws[:, 0] = False
    return draws


def symmetry_codes(symmetries: torch.Tensor) -> torch.Tensor:
    """``(B,)`` int64 code of each draw of :func:`random_symmetries`: ``4 transpose + 2 mirror_x + mirror_y``, in
    ``[0, 8)`` (the row of :func:`all_symmetries` that holds it)."""
    return symmetries[:, 0].long() * 4 + symmetries[:, 1].long() * 2 + symmetries[:, 2].long()


def all_symmetries() -> torch.Tensor:
    """``(8, 3)`` bool: the eight draws (transpose, mirror x, mirror y), row ``c`` the one of code ``c``
    (:func:`symmetry_codes`)."""
    codes = torch.arange(8)
    return torch.stack((codes // 4 == 1, codes // 2 % 2 == 1, codes % 2 == 1), dim=1)


def apply_symmetries(maps: torch.Tensor, symmetries: torch.Tensor) -> torch.Tensor:
    """Each map transformed by its symmetry: transpose first, then mirror ``x`` (columns), then ``y`` (rows).

    Args:
        maps: ``(B, C, H, W)`` pictures (``H == W`` wherever a transpose is drawn).
        symmetries: ``(B, 3)`` bool from :func:`random_symmetries`.

    Returns:
        ``(B, C, H, W)``, a new tensor.
    """
    transpose, mirror_x, mirror_y = (symmetries[:, index, None, None, None] for index in range(3))
    if maps.shape[-1] == maps.shape[-2]:  # a shape test, not a look at the draws: no wait for the device
        maps = torch.where(transpose, maps.transpose(-1, -2), maps)
    elif bool(symmetries[:, 0].any()):
        raise ValueError(f"a transpose was drawn for maps of shape {tuple(maps.shape)}: only square maps transpose")
    maps = torch.where(mirror_x, maps.flip(-1), maps)
    return torch.where(mirror_y, maps.flip(-2), maps)


def apply_to_actions(actions: torch.Tensor, symmetries: torch.Tensor) -> torch.Tensor:
    """The glimpse actions ``(B, 3)`` ``(x, y, scale)`` in ``[-1, 1]`` moved as :func:`apply_symmetries` moves
    their maps (the scale is unchanged)."""
    transpose, mirror_x, mirror_y = (symmetries[:, index, None] for index in range(3))
    position = torch.where(transpose, actions[:, [1, 0]], actions[:, :2])
    sign_x = torch.where(mirror_x, -1.0, 1.0).to(actions)
    sign_y = torch.where(mirror_y, -1.0, 1.0).to(actions)
    return torch.cat((position[:, :1] * sign_x, position[:, 1:2] * sign_y, actions[:, 2:]), dim=1)
