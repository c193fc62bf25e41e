"""SB3 features extractor mirroring the original AdaGlimpse actor/critic trunk (original `rl_glimpse.py`; original
`actor_critic.py`).

The trunk embeds every token slot from up to four streams, concatenates them and pools the slots with masked
multi-head attention::

    patches    (B, P, 3, 16, 16) -> patch_net_conv -> (B, P, 32) -> input_layers[i] -> (B, P, common)
    importance (B, P, 1)                                          -> input_layers[j] -> (B, P, common)
    coords     (B, P, 4) raw pixel (y1, x1, y2, x2)               -> input_layers[k] -> (B, P, common)
    latent     (B, P + 1, D), last P tokens (cls dropped)         -> input_layers[l] -> (B, P, common)
    concat -> (B, P, n_streams * common) -> pooling(mask) -> (B, hidden)

Parameter names are the original's (``input_layers``, ``pooling``, ``patch_net_conv``), so the trunk part of an
original actor state dict loads as is (see :mod:`agents.original_policy`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from gymnasium import spaces
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor
from torch import nn

#: Streams in the original's order (original `rl_glimpse.py` ``exclude_rl_inputs`` indices 0..3); the original calls
#: importance ``attention`` and latent ``observation``.
STREAMS: tuple[str, ...] = ("patches", "importance", "coords", "latent")
#: Output width of the patch CNN: 16 -> 12 -> 6 -> 2 -> 1 pixels, 32 channels (original `actor_critic.py`).
PATCH_FEATURES = 32
#: Added to the pooling logits of empty slots (original `actor_critic.py`; original `mae_utils.py`).
MASK_PENALTY = -1e8
#: The original's ``norm_layer`` (original `actor_critic.py`).
LAYER_NORM_EPS = 1e-6

_PATCH_SHAPE = (3, 16, 16)


def _embedding_layer(in_dim: int, out_dim: int) -> nn.Sequential:
    """``Linear -> LayerNorm(eps=1e-6) -> GELU``, the original's per-stream and pooling block."""
    return nn.Sequential(nn.Linear(in_dim, out_dim), nn.LayerNorm(out_dim, eps=LAYER_NORM_EPS), nn.GELU())


def patch_feature_net() -> nn.Sequential:
    """The original patch CNN (original `actor_critic.py`): ``(N, 3, 16, 16) -> (N, 32)``.

    Indices 0, 1, 4, 5 hold the parameters (``patch_net_conv.{0,1,4,5}`` in original `actor_critic.py`).
    """
    return nn.Sequential(
        nn.Conv2d(3, 8, kernel_size=5),
        nn.BatchNorm2d(8),
        nn.GELU(),
        nn.MaxPool2d(2),
        nn.Conv2d(8, PATCH_FEATURES, kernel_size=5),
        nn.BatchNorm2d(PATCH_FEATURES),
        nn.GELU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
    )


class AttentionPooling(nn.Module):
    """Masked multi-head attention pooling over token slots (original `actor_critic.py`).

    Each head scores every slot, empty slots get :data:`MASK_PENALTY` added to their logits, and the head's
    ``hidden_dim / num_heads`` channels of the slot embeddings are averaged with the softmax weights.

    Args:
        input_dim: width of the concatenated stream embeddings.
        hidden_dim: width of the slot embeddings and of the output.
        num_heads: attention heads; must divide ``hidden_dim``.
    """

    def __init__(self, input_dim: int, hidden_dim: int, num_heads: int) -> None:
        super().__init__()
        if num_heads < 1 or hidden_dim % num_heads:
            raise ValueError(f"AttentionPooling requires num_heads dividing hidden_dim={hidden_dim}, got {num_heads}")
        self.hidden_dim = hidden_dim
        self.num_heads = num_heads
        self.input_layer = _embedding_layer(input_dim, hidden_dim)
        self.attention = nn.Sequential(nn.Linear(hidden_dim, hidden_dim), nn.GELU(), nn.Linear(hidden_dim, num_heads))
        self.output_layer = _embedding_layer(hidden_dim, hidden_dim)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Pool the slots.

        Args:
            x: ``(B, P, input_dim)`` slot features.
            mask: ``(B, P, 1)``, 1 for an empty slot, 0 for a token.

        Returns:
            ``(B, hidden_dim)``.
        """
        batch, slots, _ = x.shape
        h = self.input_layer(x)  # (B, P, H)
        logits = self.attention(h).transpose(1, 2).unsqueeze(2)  # (B, heads, 1, P)
        # When every slot is empty (step 0) all logits are ~-1e8 and, at float32 resolution, the weights become
        # near-uniform: the original behaves the same way.
        logits = logits + mask.reshape(batch, 1, 1, slots) * MASK_PENALTY
        weights = logits.softmax(dim=-1)
        values = h.reshape(batch, slots, self.num_heads, self.hidden_dim // self.num_heads).transpose(1, 2)
        pooled = (weights @ values).reshape(batch, self.hidden_dim)  # (B, heads, 1, H/heads) -> (B, H)
        return self.output_layer(pooled)


class GlimpseFeaturesExtractor(BaseFeaturesExtractor):
    """The original AdaGlimpse actor/critic trunk as a Stable-Baselines3 features extractor (original
    `actor_critic.py`).

    Reads the ``full`` observation preset of :mod:`adaglimpse_env.envs.spaces` (or any Dict holding ``mask`` and
    the streams in use, e.g. the ``latent`` preset with ``exclude_inputs=("patches", "importance")``):

    * ``latent``: ``(B, P + 1, D)``; only the last ``P`` tokens are used, so the cls token is dropped (original
    `rl_glimpse.py`);
    * ``importance``: ``(B, P, 1)`` rollout importance;
    * ``coords``: ``(B, P, 4)`` raw pixel boxes ``(y1, x1, y2, x2)``, not normalised (original token coords);
    * ``patches``: ``(B, P, 3, 16, 16)`` ImageNet-normalised pixels;
    * ``mask``: ``(B, P, 1)``, 1 for an empty slot.

    Empty slots are masked only in the attention pooling (original `actor_critic.py`). Like the original, the patch
    CNN's BatchNorm sees every slot, so in train mode the contents of empty slots do move the batch statistics; in eval
    mode they have no effect on the output.

    Parameter names are the original's (original `actor_critic.py`): ``input_layers.{i}`` for the streams in use, in
    :data:`STREAMS` order, ``pooling.{input_layer, attention, output_layer}`` and ``patch_net_conv`` (absent when
    ``patches`` is excluded).

    Args:
        observation_space: the env's single observation space.
        hidden_dim: width of the pooled features (``features_dim``); the original's 256.
        num_heads: pooling heads; the original's 8.
        exclude_inputs: streams to leave out, among :data:`STREAMS` (the original's ``--exclude-rl-inputs``).
            Each stream embeds to ``common = 2 * hidden_dim // n_streams`` channels.

    Raises:
        ValueError: an observation space that is not a Dict with the needed keys and shapes, an unknown stream
            name, or every stream excluded.
    """

    def __init__(
        self,
        observation_space: spaces.Space,
        hidden_dim: int = 256,
        num_heads: int = 8,
        exclude_inputs: Sequence[str] = (),
    ) -> None:
        if isinstance(exclude_inputs, str):
            exclude_inputs = (exclude_inputs,)
        unknown = sorted(set(exclude_inputs) - set(STREAMS))
        if unknown:
            raise ValueError(f"exclude_inputs must name streams among {list(STREAMS)}, got unknown {unknown}")
        streams = tuple(name for name in STREAMS if name not in exclude_inputs)
        if not streams:
            raise ValueError(
                f"GlimpseFeaturesExtractor requires at least one stream, got exclude_inputs={tuple(exclude_inputs)}"
            )
        num_tokens, embed_dim = _check_observation_space(observation_space, streams)
        super().__init__(observation_space, features_dim=hidden_dim)

        self.streams = streams
        self.num_tokens = num_tokens
        self.embed_dim = embed_dim
        self.common_dim = 2 * hidden_dim // len(streams)  # original `rl_glimpse.py`: 128 for 4 streams
        input_dims = {"patches": PATCH_FEATURES, "importance": 1, "coords": 4, "latent": embed_dim}
        self.input_layers = nn.ModuleList(_embedding_layer(input_dims[name], self.common_dim) for name in streams)
        self.pooling = AttentionPooling(len(streams) * self.common_dim, hidden_dim, num_heads)
        if "patches" in streams:
            self.patch_net_conv = patch_feature_net()

    def forward(self, observations: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Trunk features.

        Args:
            observations: batched observation dict (shapes in the class docstring).

        Returns:
            ``(B, hidden_dim)``.
        """
        slots = self.num_tokens
        pairs = zip(self.streams, self.input_layers, strict=True)
        embedded = [layer(self._stream_input(name, observations)) for name, layer in pairs]
        x = torch.cat(embedded, dim=-1)  # (B, P, n_streams * common)
        return self.pooling(x, observations["mask"][:, -slots:])

    def _stream_input(self, name: str, observations: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """``(B, P, d_in)`` input of one stream: its last ``P`` slots (original `rl_glimpse.py`), patches through the
        CNN."""
        value = observations[name][:, -self.num_tokens :]
        if name != "patches":
            return value
        batch, slots = value.shape[:2]
        features = self.patch_net_conv(value.reshape(batch * slots, *_PATCH_SHAPE))  # (B * P, 32)
        return features.reshape(batch, slots, PATCH_FEATURES)


def _check_observation_space(observation_space: spaces.Space, streams: Sequence[str]) -> tuple[int, int]:
    """``(P, D)`` of a Dict observation space holding ``mask`` and ``streams``, or a ValueError saying why not."""
    needed = ("mask", *streams)
    if not isinstance(observation_space, spaces.Dict):
        raise ValueError(
            f"GlimpseFeaturesExtractor requires a Dict observation space with keys {list(needed)} (the 'full' "
            f"preset), got {type(observation_space).__name__}{getattr(observation_space, 'shape', '')}"
        )
    missing = [key for key in needed if key not in observation_space.spaces]
    if missing:
        raise ValueError(
            f"GlimpseFeaturesExtractor requires observation keys {list(needed)} (the 'full' preset), missing "
            f"{missing}; got keys {list(observation_space.spaces)} (or leave streams out with exclude_inputs=...)"
        )
    shapes: dict[str, Any] = {key: observation_space.spaces[key].shape for key in needed}
    mask_shape = shapes["mask"]
    if mask_shape is None or len(mask_shape) != 2 or mask_shape[1] != 1:
        raise ValueError(f"Observation 'mask' requires shape (P, 1), got {mask_shape}")
    num_tokens = int(mask_shape[0])
    latent_shape = shapes.get("latent")
    embed_dim = int(latent_shape[-1]) if latent_shape is not None and len(latent_shape) == 2 else -1
    expected: dict[str, str] = {
        "importance": f"({num_tokens}, 1)",
        "coords": f"({num_tokens}, 4)",
        "patches": f"({num_tokens}, 3, 16, 16)",
        "latent": f"(T >= {num_tokens}, D), e.g. ({num_tokens + 1}, D)",
    }
    valid: dict[str, bool] = {
        "importance": shapes.get("importance") == (num_tokens, 1),
        "coords": shapes.get("coords") == (num_tokens, 4),
        "patches": shapes.get("patches") == (num_tokens, *_PATCH_SHAPE),
        "latent": latent_shape is not None and len(latent_shape) == 2 and latent_shape[0] >= num_tokens,
    }
    wrong = [f"{key}: expected {expected[key]}, got {shapes[key]}" for key in streams if not valid[key]]
    if wrong:
        raise ValueError(
            f"GlimpseFeaturesExtractor found observation shapes that do not fit P={num_tokens} slots "
            f"(from 'mask'): " + "; ".join(wrong)
        )
    return num_tokens, embed_dim


def sac_policy_kwargs(hidden_dim: int = 256, num_heads: int = 8, exclude_inputs: Sequence[str] = ()) -> dict[str, Any]:
    """SB3 ``policy_kwargs`` for a SAC whose actor matches the original's (original `actor_critic.py`).

    The actor becomes ``trunk -> Linear(hidden, hidden) -> GELU -> mu / log_std Linear(hidden, 3)``, the
    original's ``head.0 (hidden, hidden) GELU head.2 (6, hidden)`` split in two. Actor and critics get separate
    trunks, as in the original. The critics keep SB3's layout (``Linear(hidden + 3, hidden) GELU
    Linear(hidden, 1)``), not the original's ``action_net``.

    Args:
        hidden_dim: trunk and head width.
        num_heads: pooling heads.
        exclude_inputs: streams the trunks leave out (see :class:`GlimpseFeaturesExtractor`).

    Returns:
        ``policy_kwargs`` for ``SAC("MultiInputPolicy", env, policy_kwargs=...)``.
    """
    return {
        "features_extractor_class": GlimpseFeaturesExtractor,
        "features_extractor_kwargs": {
            "hidden_dim": hidden_dim,
            "num_heads": num_heads,
            "exclude_inputs": tuple(exclude_inputs),
        },
        "share_features_extractor": False,
        "net_arch": {"pi": [hidden_dim], "qf": [hidden_dim]},
        "activation_fn": nn.GELU,
    }
