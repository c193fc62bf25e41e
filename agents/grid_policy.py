"""An on-policy actor-critic for the ``map`` observation that chooses among a grid of glimpses (PPO, A2C).

SB3's PPO draws ``(x, y, scale)`` from one Gaussian whose mean a network regresses from a global feature vector:
on find-and-zoom, where only glimpses that land on the digit pay and the digit is anywhere, that policy stays at
chance (docs/results.md). Here the policy is a categorical distribution over a fixed grid of candidate glimpses
(the grid of :mod:`agents.critic_search`: ``positions x positions`` places, ``scales`` sides spaced
geometrically), and each candidate's logit is read from the map *under that glimpse*, as the map critic reads its
values (:func:`agents.map_critic.sample_under_glimpses`)::

    map -> trunk conv features F (B, C, M/s, M/s) -> global vector g (B, D)           (GlimpseMapExtractor)
    F -> 1x1 conv -> E channels, sampled at 4 x 4 points inside each candidate's glimpse (B, K, 16 E)
    logit_k = MLP(g ++ sampled_k ++ action_k)      value = MLP(g)

One filter scores every place of the map ("a digit-like blob under a cell pays"), so what a rewarded glimpse
teaches carries over to every other position; a categorical policy also keeps several modes (two blobs), which
one Gaussian cannot. The actions stay the env's continuous ``Box`` (the grid points), so the same env, wrappers
and evaluation serve it as any other agent: the distribution maps an action back to its grid point to score it.
This is the policy-gradient counterpart of acting by critic search; spatial action maps (Wu et al., 2020) and
the fully-convolutional policies of StarCraft II agents (Vinyals et al., 2017) are the same idea.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
from gymnasium import spaces
from stable_baselines3.common.distributions import CategoricalDistribution
from stable_baselines3.common.policies import ActorCriticPolicy
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor, create_mlp
from torch import nn

from agents.critic_search import SCALE_SPACINGS, glimpse_candidates, scale_axis
from agents.map_critic import SAMPLES_PER_SIDE, GlimpseGeometry, head_over_candidates, sample_under_glimpses
from agents.map_features import GlimpseMapExtractor


@dataclass(frozen=True)
class GlimpseGrid:
    """The candidate glimpses of a grid policy.

    Attributes:
        positions: grid points per image side for ``x`` and ``y`` (evenly over ``[-1, 1]``).
        scales: glimpse sides, spaced as ``scale_spacing`` says (``"geometric"``: evenly in log side, as the
            critic search's grid; ``"linear"``: evenly in the scale action).
        scale_spacing: ``"geometric"`` or ``"linear"``.
    """

    positions: int = 13
    scales: int = 5
    scale_spacing: str = "geometric"

    def __post_init__(self) -> None:
        for name in ("positions", "scales"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"GlimpseGrid.{name} must be an integer >= 1, got {value!r}")
        if self.scale_spacing not in SCALE_SPACINGS:
            raise ValueError(f"GlimpseGrid.scale_spacing must be one of {SCALE_SPACINGS}, got {self.scale_spacing!r}")

    @property
    def size(self) -> int:
        """Number of candidates ``K``."""
        return self.positions**2 * self.scales

    def candidates(self, geometry: GlimpseGeometry) -> torch.Tensor:
        """``(K, 3)`` the candidate actions (float32, CPU), in the order of
        :func:`agents.critic_search.glimpse_candidates` (index ``(ix * positions + iy) * scales + iscale``)."""
        like = torch.zeros(())
        return glimpse_candidates(
            self.positions, self.scales, like, scale_axis(geometry, self.scales, self.scale_spacing, like)
        )

    def to_dict(self) -> dict[str, Any]:
        """The fields as plain JSON values."""
        return asdict(self)


class GlimpseGridDistribution(CategoricalDistribution):
    """A categorical distribution over a grid's candidate glimpses, on the env's continuous actions.

    :meth:`sample` and :meth:`mode` return ``(B, 3)`` actions (grid points); :meth:`log_prob` takes such actions
    and scores the grid point nearest to each (an action on the grid is its own point), so PPO's stored actions
    and its probability ratios are exact.

    Args:
        candidates: ``(K, 3)`` the grid's actions (:meth:`GlimpseGrid.candidates`).
        positions: grid points per position axis.
        scales: grid points on the scale axis (``K = positions^2 * scales``).

    Raises:
        ValueError: ``candidates`` that are not ``positions^2 * scales`` rows.
    """

    def __init__(self, candidates: torch.Tensor, positions: int, scales: int) -> None:
        if candidates.shape != (positions**2 * scales, 3):
            raise ValueError(
                f"GlimpseGridDistribution requires ({positions}^2 * {scales}, 3) candidates, "
                f"got {tuple(candidates.shape)}"
            )
        super().__init__(len(candidates))
        self.positions = positions
        self.scales = scales
        # Candidates and the scale axis (ascending), kept on the device of the latest logits (moved once).
        self.candidates = candidates
        self.scale_axis = candidates[:scales, 2]

    def proba_distribution_net(self, latent_dim: int) -> nn.Module:
        """The logits are the latent itself (the features extractor scores every candidate)."""
        return nn.Identity()

    def proba_distribution(self, action_logits: torch.Tensor) -> GlimpseGridDistribution:
        """Set the ``(B, K)`` logits (and move the grid to their device the first time it differs)."""
        if self.candidates.device != action_logits.device:
            self.candidates = self.candidates.to(action_logits.device)
            self.scale_axis = self.scale_axis.to(action_logits.device)
        super().proba_distribution(action_logits)
        return self

    def indices(self, actions: torch.Tensor) -> torch.Tensor:
        """``(B, 3)`` actions -> ``(B,)`` the index of the nearest grid point."""
        if self.positions > 1:
            step = 2.0 / (self.positions - 1)
            position = ((actions[:, :2] + 1.0) / step).round().long().clamp(0, self.positions - 1)
        else:
            position = torch.zeros_like(actions[:, :2], dtype=torch.long)
        axis = self.scale_axis.to(actions)
        scale = (actions[:, 2:3] - axis[None]).abs().argmin(dim=1)
        return (position[:, 0] * self.positions + position[:, 1]) * self.scales + scale

    def actions(self, indices: torch.Tensor) -> torch.Tensor:
        """``(B,)`` indices -> ``(B, 3)`` their grid actions."""
        return self.candidates.to(indices.device)[indices]

    def log_prob(self, actions: torch.Tensor) -> torch.Tensor:
        """``(B, 3)`` actions -> ``(B,)`` log-probability of each one's grid point."""
        return super().log_prob(self.indices(actions))

    def sample(self) -> torch.Tensor:
        """``(B, 3)`` grid actions drawn from the logits."""
        return self.actions(super().sample())

    def mode(self) -> torch.Tensor:
        """``(B, 3)`` the most probable grid action of each state."""
        return self.actions(super().mode())


class GlimpseGridExtractor(BaseFeaturesExtractor):
    """Features of a grid policy: ``(B, K + D)``, the ``K`` candidates' logits then the ``D``-wide summary.

    Args:
        observation_space: the ``map`` observation ``Box`` ``(C, M, M)``.
        glimpse_geometry: :class:`~agents.map_critic.GlimpseGeometry` fields as a dict.
        grid: :class:`GlimpseGrid` fields as a dict.
        summary_dim: width ``D`` of the summary (the ``features_dim`` of
            :class:`~agents.map_features.GlimpseMapExtractor`).
        channels: channels of the trunk's convolutions.
        score_channels: channels ``E`` of the map the candidates' logits are read from.
        score_net: hidden widths of the per-candidate logit MLP.
    """

    candidates: torch.Tensor  # (K, 3), a buffer
    candidate_centres: torch.Tensor  # (K, 2) glimpse centres in the [-1, 1] frame of grid_sample, a buffer
    candidate_halves: torch.Tensor  # (K, 2) their half sides, a buffer

    def __init__(
        self,
        observation_space: spaces.Space,
        glimpse_geometry: dict[str, Any],
        grid: dict[str, Any],
        summary_dim: int = 256,
        channels: int = 32,
        score_channels: int = 8,
        score_net: tuple[int, ...] = (64,),
    ) -> None:
        self.grid = GlimpseGrid(**grid)
        super().__init__(observation_space, self.grid.size + summary_dim)
        self.trunk = GlimpseMapExtractor(observation_space, features_dim=summary_dim, channels=channels)
        self.geometry = GlimpseGeometry.from_dict(glimpse_geometry)
        candidates = self.grid.candidates(self.geometry)
        self.register_buffer("candidates", candidates, persistent=False)
        # Every candidate's glimpse box is the same for every state: computed once, moved with the module.
        centres, halves = self.geometry.glimpse_boxes(candidates)
        self.register_buffer("candidate_centres", centres, persistent=False)
        self.register_buffer("candidate_halves", halves, persistent=False)
        self.summary_dim = summary_dim
        self.score_features = nn.Conv2d(channels, score_channels, kernel_size=1)
        input_dim = summary_dim + score_channels * SAMPLES_PER_SIDE**2 + 3
        self.score = nn.Sequential(*create_mlp(input_dim, 1, list(score_net), nn.GELU))

    def forward(self, observations: torch.Tensor) -> torch.Tensor:
        """``(B, C, M, M) -> (B, K + D)``."""
        summary, scored_map = self._state(observations)
        return torch.cat((self._scores(summary, scored_map, None), summary), dim=1)

    def candidate_scores(self, observations: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        """The outputs of some candidates only: what :meth:`forward` gives them, for a fraction of its cost when
        few of the ``K`` are needed (a Q-learning update reads one replayed glimpse and a coarse target grid).

        Args:
            observations: ``(B, C, M, M)`` maps.
            indices: ``(B, n)`` or ``(n,)`` (the same for every map) candidate indices in ``[0, K)``.

        Returns:
            ``(B, n)``.
        """
        summary, scored_map = self._state(observations)
        if indices.dim() == 1:
            indices = indices.expand(len(observations), -1)
        return self._scores(summary, scored_map, indices)

    def _state(self, observations: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(summary (B, D), scored map (B, E, M/s, M/s))``: what every candidate's score reads."""
        feature_map = self.trunk.feature_map(observations.float())
        return self.trunk.summarize(feature_map), self.score_features(nn.functional.gelu(feature_map))

    def _scores(self, summary: torch.Tensor, scored_map: torch.Tensor, indices: torch.Tensor | None) -> torch.Tensor:
        """``(B, n)`` scores of the candidates ``indices`` ``(B, n)`` (None: all ``K``, in order)."""
        batch = len(summary)
        if indices is None:
            candidates = self.candidates.expand(batch, -1, -1)  # (B, K, 3)
            centre = self.candidate_centres.expand(batch, -1, -1)  # (B, K, 2)
            half = self.candidate_halves.expand(batch, -1, -1)
        else:
            candidates, centre, half = (
                self.candidates[indices],
                self.candidate_centres[indices],
                self.candidate_halves[indices],
            )
        per_candidate = torch.cat((sample_under_glimpses(scored_map, centre, half), candidates), dim=-1)
        return head_over_candidates(self.score, summary, per_candidate)[..., 0]


class _SplitLatents(nn.Module):
    """SB3's ``mlp_extractor`` for a grid policy: the actor's latent is the logits, the critic's an MLP over the
    summary."""

    def __init__(self, candidates: int, summary_dim: int, value_arch: list[int], activation_fn: type[nn.Module]):
        super().__init__()
        self.candidates = candidates
        self.latent_dim_pi = candidates
        self.latent_dim_vf = value_arch[-1] if value_arch else summary_dim
        self.value_net = nn.Sequential(*create_mlp(summary_dim, -1, value_arch, activation_fn)) if value_arch else None

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.forward_actor(features), self.forward_critic(features)

    def forward_actor(self, features: torch.Tensor) -> torch.Tensor:
        return features[:, : self.candidates]

    def forward_critic(self, features: torch.Tensor) -> torch.Tensor:
        summary = features[:, self.candidates :]
        return summary if self.value_net is None else self.value_net(summary)


def check_map_observation(observation_space: spaces.Space, policy: str) -> None:
    """Refuse any observation but the ``map`` preset's ``(C, M, M)`` Box, naming ``policy``.

    Raises:
        ValueError: another observation space.
    """
    shape = getattr(observation_space, "shape", None)
    if not isinstance(observation_space, spaces.Box) or shape is None or len(shape) != 3:
        raise ValueError(
            f"{policy} requires the 'map' observation, a (C, M, M) Box; got {observation_space}. "
            "Make the env with observation=map."
        )


def grid_extractor_kwargs(
    given: dict[str, Any] | None, glimpse_geometry: dict[str, Any], grid: dict[str, Any]
) -> dict[str, Any]:
    """A grid policy's :class:`GlimpseGridExtractor` arguments: the user's, with the policy's geometry and grid."""
    return {**(given or {}), "glimpse_geometry": glimpse_geometry, "grid": grid}


def grid_constructor_parameters(
    data: dict[str, Any], glimpse_geometry: dict[str, Any], grid: dict[str, Any]
) -> dict[str, Any]:
    """SB3's ``_get_constructor_parameters`` of a grid policy: the geometry and grid saved as the policy's own
    arguments (plain JSON, readable without unpickling), not inside the extractor's, and no extractor class (the
    policy sets it)."""
    extractor_kwargs = {
        key: value
        for key, value in data.get("features_extractor_kwargs", {}).items()
        if key not in ("glimpse_geometry", "grid")
    }
    data.update(glimpse_geometry=glimpse_geometry, grid=grid, features_extractor_kwargs=extractor_kwargs)
    data.pop("features_extractor_class", None)
    return data


class GlimpseGridPolicy(ActorCriticPolicy):
    """SB3 ``ActorCriticPolicy`` (PPO, A2C) over a grid of glimpses on the ``map`` observation (see the module).

    Args:
        observation_space: the ``map`` observation ``Box`` ``(C, M, M)``.
        action_space: the glimpse action ``Box(-1, 1, (3,))``.
        lr_schedule: SB3's learning-rate schedule.
        glimpse_geometry: :class:`~agents.map_critic.GlimpseGeometry` fields as a dict, e.g. from
            :func:`agents.map_critic.glimpse_geometry_of`.
        grid: :class:`GlimpseGrid` fields as a dict (default: its defaults).
        value_arch: hidden widths of the value MLP over the summary.
        **kwargs: SB3's ``ActorCriticPolicy`` keyword arguments (``features_extractor_kwargs`` go to
            :class:`GlimpseGridExtractor`); the actor and the value share one trunk.

    Raises:
        ValueError: an observation that is not the map, another action space, or an SB3 option this policy has
            no use for (``use_sde``, ``squash_output``, ``net_arch``, ``share_features_extractor=False``).
    """

    def __init__(
        self,
        observation_space: spaces.Space,
        action_space: spaces.Space,
        lr_schedule: Any,
        glimpse_geometry: dict[str, Any] | None = None,
        grid: dict[str, Any] | None = None,
        value_arch: list[int] | None = None,
        **kwargs: Any,
    ) -> None:
        check_map_observation(observation_space, "GlimpseGridPolicy")
        if not isinstance(action_space, spaces.Box) or action_space.shape != (3,):
            raise ValueError(f"GlimpseGridPolicy requires the glimpse action Box of shape (3,), got {action_space}")
        if glimpse_geometry is None:
            raise ValueError("GlimpseGridPolicy needs glimpse_geometry (agents.map_critic.glimpse_geometry_of(env))")
        self.glimpse_geometry = glimpse_geometry
        self.grid_settings = GlimpseGrid(**(grid or {})).to_dict()
        unsupported = {
            "use_sde": "no Gaussian noise to make state-dependent",
            "squash_output": "actions are grid points already in the box",
            "net_arch": "the logits come from the per-glimpse scorer and the value from value_arch",
        }
        given = sorted(name for name in unsupported if kwargs.get(name))
        if kwargs.get("share_features_extractor") is False:
            raise ValueError("GlimpseGridPolicy reads the map with one trunk for the actor and the value")
        if given:
            raise ValueError(f"GlimpseGridPolicy takes no {given[0]}: {unsupported[given[0]]}")
        self.value_arch = [256] if value_arch is None else list(value_arch)
        extractor_kwargs = grid_extractor_kwargs(
            kwargs.pop("features_extractor_kwargs", None), glimpse_geometry, self.grid_settings
        )
        kwargs.setdefault("activation_fn", nn.GELU)
        kwargs.setdefault("normalize_images", False)
        super().__init__(
            observation_space,
            action_space,
            lr_schedule,
            features_extractor_class=GlimpseGridExtractor,
            features_extractor_kwargs=extractor_kwargs,
            **kwargs,
        )

    def _build(self, lr_schedule: Any) -> None:
        extractor = self.features_extractor
        assert isinstance(extractor, GlimpseGridExtractor)
        grid = extractor.grid
        self.action_dist = GlimpseGridDistribution(extractor.candidates, grid.positions, grid.scales)
        self.mlp_extractor = _SplitLatents(  # type: ignore[assignment]  # SB3 types it as its MlpExtractor
            grid.size, extractor.summary_dim, self.value_arch, self.activation_fn
        )
        self.action_net = nn.Identity()
        self.value_net = nn.Linear(self.mlp_extractor.latent_dim_vf, 1)
        if self.ortho_init:  # SB3's gains: sqrt(2) inside, 1 for the value's output
            for module in (self.features_extractor, self.mlp_extractor):
                module.apply(lambda layer: self.init_weights(layer, gain=2**0.5))
            self.init_weights(self.value_net, gain=1.0)
        # The logits' last layer starts near zero: the first policy is uniform over the grid, as random.
        last = [layer for layer in extractor.score if isinstance(layer, nn.Linear)][-1]
        nn.init.orthogonal_(last.weight, gain=0.01)
        nn.init.zeros_(last.bias)
        self.optimizer = self.optimizer_class(  # type: ignore[call-arg]  # as SB3's _build
            self.parameters(), lr=lr_schedule(1), **self.optimizer_kwargs
        )

    def _get_constructor_parameters(self) -> dict[str, Any]:
        data = grid_constructor_parameters(
            super()._get_constructor_parameters(), self.glimpse_geometry, self.grid_settings
        )
        data["value_arch"] = self.value_arch
        return data
