"""Load a trained original AdaGlimpse actor into a Stable-Baselines3 SAC policy (original `actor_critic.py`; original
Lightning checkpoints).

The policy must be built with :func:`agents.features.sac_policy_kwargs`, so that its actor is the original's:
``trunk -> Linear(h, h) -> GELU -> (mu, log_std)``. The original head ``head.2 (6, h)`` emits
``[loc (3), raw_scale (3)]`` in action order ``(y, x, scale)`` on ``[0, 1]``; ours is ``(x, y, scale)`` on
``[-1, 1]`` with ``a = 2u - 1``.

Deterministic actions are reproduced exactly. The original's mode is ``u = 0.5 + 0.5 * tanh(loc + 0.5)``
(torchrl 0.3.1 shifts the Gaussian loc by +0.5, original `actor_critic.py`; original TanhNormal actor), so ``a = 2u - 1
= tanh(loc + 0.5)``, which is SB3's deterministic ``tanh(mu)`` with ``mu = reorder(loc + 0.5)``.

Sampled actions are only approximated. The pre-tanh Gaussian of both is ``N(mean, std)``, but the original's std
is ``softplus(raw_scale + b) + 0.01`` with ``b = log(expm1(0.49))``, while SB3's is ``exp(clamp(log_std, -20, 2))``.
No affine layer gives the first from the second, so ``log_std`` takes the raw rows as they are (reordered). The
std is then ``exp(raw)`` instead of ``softplus(raw - 0.4585) + 0.01``. For example, raw = 0 gives 1.0 instead of 0.5.
Use ``deterministic=True`` to act like the trained agent's mode. The original's own evaluation used the mean of
1000 samples (original TanhNormal actor), which this cannot match exactly.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from stable_baselines3.sac.policies import SACPolicy
from torch import nn

from adaglimpse_env.models.torch_files import safe_torch_load
from agents.features import GlimpseFeaturesExtractor

#: Where a Lightning checkpoint keeps the actor (original Lightning checkpoints).
ACTOR_PREFIX = "actor_critic.actor_net."
#: A second path to the same actor tensors in the same checkpoint (original Lightning checkpoints); ignored.
DUPLICATE_ACTOR_PREFIX = "actor_critic.policy_module.module.0.module."
#: torchrl 0.3.1 adds ``(max - min) / 2 + min`` to the Gaussian loc for actions on [0, 1] (original `actor_critic.py`).
LOC_OFFSET = 0.5
#: Rows of the original's ``(y, x, scale)`` that give our ``(x, y, scale)``.
ACTION_ORDER = (1, 0, 2)
#: The original's action dimension; its head emits ``2 * ACTION_DIM`` values (loc, raw scale).
ACTION_DIM = 3
#: Keys in the hyper-parameters of a Lightning checkpoint that give its glimpse budget (original
#: `interactive_sampler.py`; original Lightning checkpoints).
_BUDGET_KEYS = ("num_glimpses", "glimpse_grid_size")


def original_actor_state_dict(checkpoint: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """The original actor's state dict (original `actor_critic.py`) out of any of its layouts.

    Args:
        checkpoint: a Lightning checkpoint ``{"state_dict": {...}, ...}``, its ``state_dict``, or a bare actor
            state dict. In a Lightning state dict, ``actor_critic.actor_net.*`` is taken with that prefix
            stripped; the duplicate ``actor_critic.policy_module.module.0.module.*`` is ignored (used only when
            ``actor_net`` is absent), and everything else (``mae.*``, critics, losses) is dropped.

    Returns:
        ``{name: tensor}`` with names like ``input_layers.0.0.weight``, ``head.2.bias``.

    Raises:
        ValueError: a Lightning checkpoint without actor weights, or values that are not tensors.
    """
    lightning = isinstance(checkpoint.get("state_dict"), Mapping)
    state_dict: Mapping[str, Any] = checkpoint["state_dict"] if lightning else checkpoint
    actor = _strip(state_dict, ACTOR_PREFIX) or _strip(state_dict, DUPLICATE_ACTOR_PREFIX)
    if not actor:
        if lightning or any(key.startswith(("actor_critic.", "mae.", "rl_loss_module.")) for key in state_dict):
            sample = ", ".join(list(state_dict)[:5])
            raise ValueError(
                f"An original AdaGlimpse checkpoint requires actor weights under {ACTOR_PREFIX!r}, "
                f"found none; got keys like {sample}"
            )
        actor = dict(state_dict)
    not_tensors = [key for key, value in actor.items() if not isinstance(value, torch.Tensor)]
    if not_tensors:
        raise ValueError(f"An actor state dict requires tensor values, got non-tensors at {not_tensors[:8]}")
    return actor


def _strip(state_dict: Mapping[str, Any], prefix: str) -> dict[str, Any]:
    return {key[len(prefix) :]: value for key, value in state_dict.items() if key.startswith(prefix)}


def load_original_actor(policy: SACPolicy, checkpoint: str | os.PathLike[str] | Mapping[str, Any]) -> None:
    """Copy a trained original actor into an SB3 SAC policy built with :func:`~agents.features.sac_policy_kwargs`.

    * trunk (``input_layers``, ``pooling``, ``patch_net_conv``, BatchNorm running stats included) ->
      ``policy.actor.features_extractor``;
    * ``head.0`` -> ``policy.actor.latent_pi[0]``;
    * loc rows ``head.2[:3]`` -> ``policy.actor.mu``, as ``reorder(W x + b + 0.5)``: deterministic actions are
      exactly the original's mode, converted to ``(x, y, scale)`` on ``[-1, 1]``;
    * raw-scale rows ``head.2[3:]`` -> ``policy.actor.log_std``, reordered: an approximation, see the module
      docstring (sampled actions differ from the original's).

    The critics are left untouched.

    Args:
        policy: e.g. ``SAC("MultiInputPolicy", env, policy_kwargs=sac_policy_kwargs()).policy``.
        checkpoint: a path (read with weights-only loading), a Lightning checkpoint dict, its ``state_dict``,
            or a bare actor state dict.

    Raises:
        ValueError: the policy does not have the original layout, or the checkpoint does not fit it: missing,
            unexpected or mismatched keys (with expected and found shapes), e.g. another embed dim ``D``, or,
            when the checkpoint records it, another glimpse budget ``P``.
        adaglimpse_env.models.CheckpointError: an unreadable or unsafe file (a ValueError too).
    """
    source = str(checkpoint) if isinstance(checkpoint, str | os.PathLike) else "<mapping>"
    raw: Any = safe_torch_load(Path(checkpoint)) if isinstance(checkpoint, str | os.PathLike) else checkpoint
    if not isinstance(raw, Mapping):
        raise ValueError(f"Checkpoint {source!r} requires a dict at top level, got {type(raw).__name__}")
    state_dict = original_actor_state_dict(raw)

    actor = policy.actor
    extractor = actor.features_extractor
    if not isinstance(extractor, GlimpseFeaturesExtractor):
        raise ValueError(
            f"load_original_actor requires a policy built with sac_policy_kwargs() (a GlimpseFeaturesExtractor "
            f"trunk), got {type(extractor).__name__}"
        )
    hidden = extractor.features_dim
    first, mu, log_std = _actor_head(actor.latent_pi, actor.mu, actor.log_std, actor.use_sde, hidden)
    _check_budget(raw, extractor.num_tokens, source)

    trunk_expected = {key: tuple(value.shape) for key, value in extractor.state_dict().items()}
    expected = trunk_expected | {
        "head.0.weight": (hidden, hidden),
        "head.0.bias": (hidden,),
        "head.2.weight": (2 * ACTION_DIM, hidden),
        "head.2.bias": (2 * ACTION_DIM,),
    }
    _check_keys(state_dict, expected, source, extractor)

    order = torch.tensor(ACTION_ORDER)
    weight, bias = state_dict["head.2.weight"], state_dict["head.2.bias"]
    with torch.no_grad():
        extractor.load_state_dict({key: state_dict[key] for key in trunk_expected}, strict=True)
        first.weight.copy_(state_dict["head.0.weight"])
        first.bias.copy_(state_dict["head.0.bias"])
        mu.weight.copy_(weight[:ACTION_DIM][order])
        mu.bias.copy_((bias[:ACTION_DIM] + LOC_OFFSET)[order])
        log_std.weight.copy_(weight[ACTION_DIM:][order])
        log_std.bias.copy_(bias[ACTION_DIM:][order])


def _actor_head(
    latent_pi: nn.Module, mu: Any, log_std: Any, use_sde: bool, hidden: int
) -> tuple[nn.Linear, nn.Linear, nn.Linear]:
    """``(latent_pi[0], mu, log_std)`` after checking the actor is ``Linear(h, h) GELU -> Linear(h, 3) x2``."""
    layout_ok = (
        not use_sde
        and isinstance(latent_pi, nn.Sequential)
        and len(latent_pi) == 2
        and isinstance(latent_pi[0], nn.Linear)
        and (latent_pi[0].in_features, latent_pi[0].out_features) == (hidden, hidden)
        and isinstance(latent_pi[1], nn.GELU)
        and latent_pi[1].approximate == "none"
        and isinstance(mu, nn.Linear)
        and isinstance(log_std, nn.Linear)
        and mu.out_features == log_std.out_features == ACTION_DIM
        and mu.in_features == log_std.in_features == hidden
    )
    if not layout_ok:
        raise ValueError(
            f"load_original_actor requires the original actor head: latent_pi = Linear({hidden}, {hidden}) GELU, "
            f"mu and log_std = Linear({hidden}, {ACTION_DIM}), no gSDE (build SAC with policy_kwargs="
            f"sac_policy_kwargs()); got latent_pi={latent_pi}, mu={mu}, log_std={log_std}, use_sde={use_sde}"
        )
    first = latent_pi[0] if isinstance(latent_pi, nn.Sequential) else None
    assert isinstance(first, nn.Linear)
    return first, mu, log_std


def _check_budget(raw: Mapping[str, Any], num_tokens: int, source: str) -> None:
    """Compare ``P`` with the checkpoint's recorded budget, where it has one (the weights do not depend on ``P``)."""
    hparams = raw.get("hyper_parameters")
    if not isinstance(hparams, Mapping) or not all(isinstance(hparams.get(key), int) for key in _BUDGET_KEYS):
        return
    glimpses, grid = (int(hparams[key]) for key in _BUDGET_KEYS)
    if glimpses * grid * grid != num_tokens:
        raise ValueError(
            f"Checkpoint {source!r} was trained with num_glimpses={glimpses}, glimpse_grid_size={grid} "
            f"(P={glimpses * grid * grid} token slots), but the policy observes P={num_tokens}; build the env "
            f"with EpisodeConfig(num_glimpses={glimpses}, grid_size={grid})"
        )


def _check_keys(
    state_dict: Mapping[str, torch.Tensor],
    expected: Mapping[str, tuple[int, ...]],
    source: str,
    extractor: GlimpseFeaturesExtractor,
) -> None:
    missing = [key for key in expected if key not in state_dict]
    unexpected = [key for key in state_dict if key not in expected]
    mismatched = [
        f"{key}: expected {expected[key]}, got {tuple(state_dict[key].shape)}"
        for key in expected
        if key in state_dict and tuple(state_dict[key].shape) != expected[key]
    ]
    if not (missing or unexpected or mismatched):
        return
    lines = [
        f"Original actor {source!r} does not fit the policy (embed_dim D={extractor.embed_dim}, "
        f"hidden_dim={extractor.features_dim}, streams={list(extractor.streams)}):"
    ]
    for title, keys in (("missing", missing), ("unexpected", unexpected), ("shape mismatch", mismatched)):
        if keys:
            shown = ", ".join(keys[:8]) + (f", ... ({len(keys)} in all)" if len(keys) > 8 else "")
            lines.append(f"  {title}: {shown}")
    if "latent" in extractor.streams:
        latent_key = f"input_layers.{extractor.streams.index('latent')}.0.weight"
        lines.append(f"A mismatch in {latent_key} means another MAE width D: use the checkpoint's model in the env.")
    raise ValueError("\n".join(lines))


def load_original_policy(checkpoint: str | os.PathLike[str] | Mapping[str, Any], env: Any) -> SACPolicy:
    """A stand-alone SB3 SAC policy for ``env``'s spaces with an original trained actor loaded; use its
    ``predict(observation, deterministic=True)`` to act like the trained agent.

    Args:
        checkpoint: an original trained checkpoint (path or loaded mapping).
        env: anything with ``single_observation_space`` / ``single_action_space`` (a ``GlimpseVectorEnv``) or
            ``observation_space`` / ``action_space`` (a single env).
    """
    from agents.features import sac_policy_kwargs

    observation_space = getattr(env, "single_observation_space", None) or env.observation_space
    action_space = getattr(env, "single_action_space", None) or env.action_space
    policy = SACPolicy(observation_space, action_space, lambda _: 0.0, **sac_policy_kwargs())
    load_original_actor(policy, checkpoint)
    return policy.eval()
