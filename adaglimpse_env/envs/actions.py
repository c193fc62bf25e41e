"""Checking a vector env's actions at the boundary: shape, type and finiteness; finite values outside the box are
clipped, and which envs had one is reported so the env can count them."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from adaglimpse_env.envs.episode_buffers import upload


def validate_actions(actions: Any, num_envs: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``(num_envs, 3)`` float32 actions on ``device``, clipped to ``[-1, 1]``.

    Args:
        actions: ``(num_envs, 3)`` ``(x, y, scale)``: a numpy array (or anything numpy reads) or a tensor on any
            device; ``(3,)`` is accepted when ``num_envs == 1``.
        num_envs: the env's batch size.
        device: where the env lives.

    Returns:
        ``(actions, clipped)``: ``clipped`` is a ``(num_envs,)`` bool tensor on ``device`` marking envs whose
        action had a component outside ``[-1, 1]``, or None when a host check found none.

    Raises:
        ValueError: for a wrong shape, a non-numeric type, NaN or inf.
    """
    if isinstance(actions, torch.Tensor):
        return _validate_tensor_actions(actions.detach(), num_envs, device)
    try:
        raw = np.asarray(actions)
    except (TypeError, ValueError) as error:  # e.g. a ragged nested list
        raise ValueError(
            f"GlimpseVectorEnv.step requires numeric actions of shape ({num_envs}, 3), got {actions!r}"
        ) from error
    if raw.dtype.kind not in "biuf":  # strings, objects (None, 10**400, dicts), complex: never parse them
        raise ValueError(
            f"GlimpseVectorEnv.step requires real numeric actions (bool, int or float), got dtype {raw.dtype}: "
            f"{actions!r}"
        )
    array = _check_action_shape(raw.astype(np.float64), num_envs)
    if not np.isfinite(array).all():
        bad = np.argwhere(~np.isfinite(array))[0]
        raise _non_finite_action_error(array[bad[0], bad[1]], int(bad[0]), int(bad[1]))
    outside = (np.abs(array) > 1.0).any(axis=1)
    clipped = upload(outside, device) if outside.any() else None
    return upload(np.clip(array, -1.0, 1.0).astype(np.float32), device), clipped


def _validate_tensor_actions(
    actions: torch.Tensor, num_envs: int, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    if actions.is_meta or actions.layout != torch.strided:
        raise ValueError(
            f"GlimpseVectorEnv.step requires actions as a dense tensor with data, shape ({num_envs}, 3), got a "
            f"{'meta' if actions.is_meta else str(actions.layout)} tensor; pass actions.to_dense() or a numpy array"
        )
    if actions.dtype == torch.bool or actions.is_complex():
        raise ValueError(
            f"GlimpseVectorEnv.step requires real numeric actions of shape ({num_envs}, 3), "
            f"got a {actions.dtype} tensor"
        )
    actions = _check_action_shape(actions.to(device), num_envs)
    if not actions.is_floating_point():
        actions = actions.double()
    finite = torch.isfinite(actions)
    if not bool(finite.all()):  # waits for the device: a bad action must raise here, in the caller's step
        bad = (~finite).nonzero()[0].tolist()
        raise _non_finite_action_error(actions[bad[0], bad[1]].item(), bad[0], bad[1])
    return actions.clamp(-1.0, 1.0).float(), (actions.abs() > 1.0).any(dim=1)


def _check_action_shape(actions: Any, num_envs: int) -> Any:
    if tuple(actions.shape) == (3,) and num_envs == 1:
        actions = actions[None]
    if tuple(actions.shape) != (num_envs, 3):
        raise ValueError(
            f"GlimpseVectorEnv.step requires actions of shape ({num_envs}, 3) ordered (x, y, scale), "
            f"got shape {tuple(actions.shape)}"
        )
    return actions


def _non_finite_action_error(value: float, env: int, component: int) -> ValueError:
    return ValueError(
        f"GlimpseVectorEnv.step requires finite actions in [-1, 1], got {value} for env {env}, component "
        f"{('x', 'y', 'scale')[component]}; check the policy for NaN/inf outputs"
    )
