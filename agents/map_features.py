"""A small convolutional trunk for the ``map`` observation (:mod:`adaglimpse_env.envs.glimpse_map`).

The policy's output is a place in the image, so the trunk keeps *where* explicit: a few convolutions, then a
spatial soft-argmax per channel (the expected ``(x, y)`` of each feature map, as in Levine et al., *End-to-End
Training of Deep Visuomotor Policies*, 2016), beside each channel's global max (whether it fired at all)::

    feature_stride 4: map (B, 5, M, M) -> conv 4x4/2 -> GELU -> conv 3x3/2 -> GELU -> conv 3x3/1
                      -> (B, C, M/4, M/4)                                   (about 5 M multiply-adds, M = 64)
    feature_stride 2: map -> conv 3x3/1 -> GELU -> conv 4x4/2 -> GELU -> conv 3x3/1 -> GELU -> conv 3x3/1
                      dilated 2 -> (B, C, M/2, M/2)                        (about 30 M multiply-adds, M = 64)
        -> soft-argmax (B, 2C) ++ global max (B, C) -> Linear -> LayerNorm -> GELU -> (B, features_dim)

Stride 2 keeps a feature every 7 px of a 224 px image instead of every 14 px, for the map critic
(:mod:`agents.map_critic`), which samples the features under each glimpse's cells: trained offline on the same
glimpse values it ranks candidate glimpses better after fewer updates, but SAC with critic search did not learn
more in the README run's budget and its updates cost 3x (docs/results.md), so stride 4 is the default. Both keep a
receptive field of about 60 px of a 224 px image.
"""

from __future__ import annotations

from typing import Any

import torch
from gymnasium import spaces
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor
from stable_baselines3.sac.policies import Actor
from torch import nn


class SpatialSoftArgmax(nn.Module):
    """``(B, C, H, W) -> (B, 2C)``: the softmax-weighted mean ``(x, y)`` in ``[-1, 1]`` of each channel.

    Args:
        readout_sharpness: a fixed factor on the logits of the mean only (not on :meth:`logits`): a heat map
            trained as a distribution by cross-entropy keeps mass on every cell, and its plain mean is pulled
            to the centre; ``8`` makes the mean land on the mode (measured on the map actor's heat map).
    """

    def __init__(self, readout_sharpness: float = 1.0) -> None:
        super().__init__()
        # Softmax sharpness, learnt: a plain softmax over a few hundred positions starts too flat to point.
        self.log_temperature = nn.Parameter(torch.zeros(()))
        self.readout_sharpness = readout_sharpness

    def logits(self, features: torch.Tensor) -> torch.Tensor:
        """``(B, C, H, W) -> (B, C, H*W)``: the learnt-temperature logits of each channel's softmax."""
        return features.flatten(2) * self.log_temperature.exp()

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        height, width = features.shape[2:]
        weights = (self.logits(features) * self.readout_sharpness).softmax(dim=-1)  # (B, C, H*W)
        grid_x, grid_y = cell_positions(height, width, features)
        expected_x = (weights * grid_x.reshape(1, 1, -1)).sum(dim=-1)
        expected_y = (weights * grid_y.reshape(1, 1, -1)).sum(dim=-1)
        return torch.cat((expected_x, expected_y), dim=1)


def cell_positions(height: int, width: int, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(x, y)`` in ``[-1, 1]`` of each cell of an ``H x W`` map, as :class:`SpatialSoftArgmax` reads them
    (corner cells at +-1), each ``(H, W)``, on ``like``'s device and dtype."""
    ys = torch.linspace(-1.0, 1.0, height, device=like.device, dtype=like.dtype)
    xs = torch.linspace(-1.0, 1.0, width, device=like.device, dtype=like.dtype)
    grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
    return grid_x, grid_y


#: :class:`SpatialSoftArgmax` ``readout_sharpness`` of the actor's "where" heat map.
WHERE_READOUT_SHARPNESS = 8.0


class GlimpseMapExtractor(BaseFeaturesExtractor):
    """SB3 features extractor for the ``map`` observation preset.

    Args:
        observation_space: ``Box`` of shape ``(C, M, M)`` with ``M >= 16``.
        features_dim: output width.
        channels: channels of the convolutions (and soft-argmax points).
        feature_stride: map pixels per feature-map pixel, 4 (the default) or 2 (see the module).

    Raises:
        ValueError: an observation space that is not a ``(C, M, M)`` Box, or another ``feature_stride``.
    """

    def __init__(
        self, observation_space: spaces.Space, features_dim: int = 256, channels: int = 32, feature_stride: int = 4
    ) -> None:
        shape = getattr(observation_space, "shape", None)
        if not isinstance(observation_space, spaces.Box) or shape is None or len(shape) != 3 or min(shape[1:]) < 16:
            raise ValueError(
                "GlimpseMapExtractor requires the 'map' observation, a Box of shape (C, M, M) with M >= 16, got "
                f"{observation_space}"
            )
        if feature_stride not in (2, 4):
            raise ValueError(f"GlimpseMapExtractor feature_stride must be 2 or 4, got {feature_stride!r}")
        super().__init__(observation_space, features_dim)
        self.channels = channels
        self.feature_stride = feature_stride
        self.convolutions = _convolutions(shape[0], channels, feature_stride)
        self.soft_argmax = SpatialSoftArgmax()
        self.head = nn.Sequential(nn.Linear(3 * channels, features_dim), nn.LayerNorm(features_dim), nn.GELU())
        # One more heat map whose soft-argmax is "where to look next" (read by SpatialActor; unused otherwise).
        self.where = nn.Conv2d(channels, 1, kernel_size=1)
        self.where_argmax = SpatialSoftArgmax(readout_sharpness=WHERE_READOUT_SHARPNESS)
        #: ``(B, 2)`` ``(x, y)`` in ``[-1, 1]`` of the where-map's soft-argmax for the last forward's batch.
        self.last_where: torch.Tensor | None = None
        #: ``(B, (M/s)^2)`` logits (``s`` the feature stride) of the softmax behind :attr:`last_where`, row-major
        #: cells (with gradients).
        self.last_where_logits: torch.Tensor | None = None

    def forward(self, observations: torch.Tensor) -> torch.Tensor:
        """``(B, C, M, M) -> (B, features_dim)``; also sets :attr:`last_where`."""
        features = self.feature_map(observations)
        where_map = self.where(torch.nn.functional.gelu(features))  # (B, 1, M/s, M/s)
        self.last_where = self.where_argmax(where_map)
        self.last_where_logits = self.where_argmax.logits(where_map)[:, 0]
        return self.summarize(features)

    def feature_map(self, observations: torch.Tensor) -> torch.Tensor:
        """``(B, C_in, M, M) -> (B, channels, M/s, M/s)`` (``s`` the feature stride): the convolutions' output,
        before any pooling."""
        return self.convolutions(observations)

    def summarize(self, feature_map: torch.Tensor) -> torch.Tensor:
        """``(B, channels, M/s, M/s) -> (B, features_dim)``: soft-argmax points and global max, then the head."""
        points = self.soft_argmax(feature_map)
        fired = feature_map.flatten(2).amax(dim=-1)
        return self.head(torch.cat((points, fired), dim=1))


def _convolutions(in_channels: int, channels: int, feature_stride: int) -> nn.Sequential:
    """The trunk's convolutions for a feature stride of 4 or 2 (the module's diagram)."""
    if feature_stride == 4:
        return nn.Sequential(
            nn.Conv2d(in_channels, channels // 2, kernel_size=4, stride=2, padding=1),
            nn.GELU(),
            nn.Conv2d(channels // 2, channels, kernel_size=3, stride=2, padding=1),
            nn.GELU(),
            nn.Conv2d(channels, channels, kernel_size=3, stride=1, padding=1),
        )
    return nn.Sequential(
        nn.Conv2d(in_channels, channels // 2, kernel_size=3, stride=1, padding=1),
        nn.GELU(),
        nn.Conv2d(channels // 2, channels, kernel_size=4, stride=2, padding=1),
        nn.GELU(),
        nn.Conv2d(channels, channels, kernel_size=3, stride=1, padding=1),
        nn.GELU(),
        # Dilated: the receptive field of the stride-4 trunk (about 60 px of 224) at the same cost as a 3x3.
        nn.Conv2d(channels, channels, kernel_size=3, stride=1, padding=2, dilation=2),
    )


class SpatialActor(Actor):
    """SB3's SAC actor whose mean glimpse position is the map trunk's "where" point plus a learnt correction.

    The position of the action's mean (pre-``tanh``) is ``atanh(0.95 * where) + mu_xy(latent)``, with ``where`` the
    soft-argmax of a heat map over the map (:class:`GlimpseMapExtractor`): the policy learns one local filter
    ("look here") that applies everywhere on the map, instead of a regression from the whole map to coordinates.
    For small glimpses the action's ``(x, y)`` is close to the glimpse centre in the same ``[-1, 1]`` frame.
    """

    def get_action_dist_params(self, obs: Any) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        mean, log_std, extra = super().get_action_dist_params(obs)
        where = getattr(self.features_extractor, "last_where", None)
        if where is None:
            return mean, log_std, extra
        offset = torch.atanh(0.95 * where)
        return torch.cat((mean[:, :2] + offset, mean[:, 2:]), dim=1), log_std, extra


def map_policy_kwargs(features_dim: int = 256, channels: int = 32, feature_stride: int = 4) -> dict[str, Any]:
    """SB3 ``policy_kwargs`` for an off-policy or on-policy agent on the ``map`` preset (``"CnnPolicy"``).

    Actor and critics get separate trunks (as the paper's agent); the map is already scaled, so SB3 must not
    divide it by 255. The feature stride is written out so that SB3's saved ``policy_kwargs`` say which trunk
    a checkpoint holds.
    """
    return {
        "features_extractor_class": GlimpseMapExtractor,
        "features_extractor_kwargs": {
            "features_dim": features_dim,
            "channels": channels,
            "feature_stride": feature_stride,
        },
        "normalize_images": False,
        "net_arch": [features_dim, features_dim],
        "activation_fn": nn.GELU,
    }
