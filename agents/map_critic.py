"""A critic for the ``map`` observation that reads the map *where the action looks*.

SB3's critic concatenates the action to a global feature vector, so ``Q(s, a)`` has to learn the relation between
the action's ``(x, y)`` and wherever the trunk put the blob's coordinates: a relational function of few samples
when only glimpses that land on the digit earn anything (docs/results.md). :class:`GlimpseMapCritic` samples the
trunk's feature map at a 4 x 4 grid of points inside the glimpse the action would cut (2 x 2 points per cell,
exact geometry of :func:`adaglimpse_env.glimpse.compute_glimpse_boxes` up to flooring), so the value of a
glimpse is a function of what the map shows under it, the same everywhere on the map, in the spirit of spatial
action maps (Wu et al., *Spatial Action Maps for Mobile Manipulation*, 2020) and RoI pooling (Girshick,
*Fast R-CNN*, 2015). The sampling is bilinear, so ``d Q / d action`` exists for the actor's loss::

    map -> trunk conv features F (B, C, M/s, M/s) -> global vector g (B, D)       (GlimpseMapExtractor)
    action -> glimpse box -> F sampled at 4 x 4 points (B, 16 C)
    Q = MLP(g ++ sampled ++ action)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from gymnasium import spaces
from stable_baselines3.common.policies import ContinuousCritic
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor, create_mlp
from stable_baselines3.sac.policies import Actor, CnnPolicy
from torch import nn

from adaglimpse_env.glimpse import glimpse_size_range
from agents.critic_search import CriticSearch, candidate_values
from agents.map_features import GlimpseMapExtractor, SpatialActor, cell_positions

#: Sampling points per glimpse side: 2 per cell of the 2 x 2 grid, at the cell quarters.
SAMPLES_PER_SIDE = 4


@dataclass(frozen=True)
class GlimpseGeometry:
    """How an action's scale becomes a glimpse side (:func:`adaglimpse_env.glimpse.glimpse_size_range`).

    Attributes:
        image_size: ``(H, W)`` in pixels.
        min_crop: smallest glimpse side in pixels.
        max_crop: largest glimpse side in pixels.
    """

    image_size: tuple[int, int]
    min_crop: float
    max_crop: float

    @classmethod
    def from_dict(cls, fields: dict[str, Any]) -> GlimpseGeometry:
        """The geometry from its fields as plain JSON values (``image_size`` a list), as policies save them and
        :func:`glimpse_geometry_of` returns them."""
        height, width = fields["image_size"]
        return cls(image_size=(int(height), int(width)), min_crop=float(fields["min_crop"]),
                   max_crop=float(fields["max_crop"]))  # fmt: skip

    def glimpse_boxes(self, actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Centres and half sides of the glimpses in the ``[-1, 1]`` frame of ``grid_sample``.

        Args:
            actions: ``(B, 3)`` ``(x, y, scale)`` in ``[-1, 1]``.

        Returns:
            ``(centre, half)``: ``(B, 2)`` ``(x, y)`` each; differentiable in ``actions``.
        """
        height, width = self.image_size
        side = self.min_crop + (actions[:, 2:3] + 1.0) / 2.0 * (self.max_crop - self.min_crop)  # (B, 1) px
        extent = torch.tensor([width, height], dtype=actions.dtype, device=actions.device)
        half = side / extent  # (B, 2): half the side in [-1, 1] units is side / length
        # corner = u * (L - side) with u = (a + 1) / 2, so the centre is a * (1 - side / L) in [-1, 1] units.
        return actions[:, :2] * (1.0 - half), half


def sample_under_glimpses(feature_map: torch.Tensor, centre: torch.Tensor, half: torch.Tensor) -> torch.Tensor:
    """Bilinear samples of a feature map at a ``4 x 4`` grid inside each glimpse.

    Args:
        feature_map: ``(B, C, h, w)``.
        centre: ``(B, 2)`` glimpse centres ``(x, y)`` in ``[-1, 1]``, or ``(B, K, 2)`` for ``K`` glimpses per map.
        half: half sides in the same units, shaped as ``centre``.

    Returns:
        ``(B, 16 C)`` (or ``(B, K, 16 C)``), channel-major, differentiable in ``centre`` and ``half``.
    """
    many = centre.dim() == 3
    if not many:
        centre, half = centre[:, None], half[:, None]
    batch, glimpses = centre.shape[:2]
    steps = (torch.arange(SAMPLES_PER_SIDE, device=centre.device, dtype=centre.dtype) + 0.5) / SAMPLES_PER_SIDE
    offsets = steps * 2.0 - 1.0  # (-3/4, -1/4, 1/4, 3/4)
    grid_y, grid_x = torch.meshgrid(offsets, offsets, indexing="ij")
    unit = torch.stack((grid_x, grid_y), dim=-1).reshape(1, 1, -1, 2)  # (1, 1, S*S, 2) ordered (x, y)
    points = centre[:, :, None, :] + unit * half[:, :, None, :]  # (B, K, S*S, 2)
    sampled = F.grid_sample(feature_map, points, mode="bilinear", padding_mode="border", align_corners=False)
    sampled = sampled.permute(0, 2, 1, 3).reshape(batch, glimpses, -1)  # (B, C, K, S*S) -> (B, K, C*S*S)
    return sampled if many else sampled[:, 0]


class GlimpseMapCritic(ContinuousCritic):
    """SB3's SAC/TD3 critic for the ``map`` preset with the action read where it looks (see the module).

    Args:
        glimpse_geometry: the env's action-to-glimpse geometry.
        **kwargs: SB3's ``ContinuousCritic`` arguments; the features extractor must be a
            :class:`~agents.map_features.GlimpseMapExtractor`.

    Raises:
        ValueError: another features extractor.
    """

    features_extractor: GlimpseMapExtractor

    def __init__(self, *, glimpse_geometry: GlimpseGeometry, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if not isinstance(self.features_extractor, GlimpseMapExtractor):
            raise ValueError(
                "GlimpseMapCritic requires a GlimpseMapExtractor trunk (the 'map' observation), got "
                f"{type(self.features_extractor).__name__}"
            )
        self.glimpse_geometry = glimpse_geometry
        assert isinstance(self.action_space, spaces.Box)
        sampled_dim = self.features_extractor.channels * SAMPLES_PER_SIDE**2
        input_dim = kwargs["features_dim"] + sampled_dim + self.action_space.shape[0]
        self.q_networks = []
        for index in range(self.n_critics):  # replaces SB3's heads, which take features ++ action only
            q_net = nn.Sequential(*create_mlp(input_dim, 1, kwargs["net_arch"], kwargs["activation_fn"]))
            self.add_module(f"qf{index}", q_net)
            self.q_networks.append(q_net)

    def state_features(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(global (B, D), feature map (B, C, M/s, M/s))`` of the observation: everything that is not the action."""
        preprocessed = obs.float()
        feature_map = self.features_extractor.feature_map(preprocessed)
        return self.features_extractor.summarize(feature_map), feature_map

    def q_values(self, state: tuple[torch.Tensor, torch.Tensor], actions: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Every head's Q-values from :meth:`state_features` and ``(B, 3)`` actions (``(B, 1)`` each), or
        ``(B, K, 3)``: ``K`` actions per state (``(B, K, 1)`` each) from one pass over the feature map."""
        summary, feature_map = state
        flat = actions.reshape(-1, 3)
        centre, half = self.glimpse_geometry.glimpse_boxes(flat)
        if actions.dim() == 3:
            centre, half = centre.reshape(*actions.shape[:2], 2), half.reshape(*actions.shape[:2], 2)
            per_candidate = torch.cat((sample_under_glimpses(feature_map, centre, half), actions), dim=-1)
            return tuple(head_over_candidates(q_net, summary, per_candidate) for q_net in self.q_networks)
        sampled = sample_under_glimpses(feature_map, centre, half)
        q_input = torch.cat((summary, sampled, actions), dim=-1)
        return tuple(q_net(q_input) for q_net in self.q_networks)

    def forward(self, obs: torch.Tensor, actions: torch.Tensor) -> tuple[torch.Tensor, ...]:
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.share_features_extractor):
            state = self.state_features(obs)
        return self.q_values(state, actions)

    def q1_forward(self, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            state = self.state_features(obs)
        return self.q_values(state, actions)[0]


def head_over_candidates(q_net: nn.Module, summary: torch.Tensor, per_candidate: torch.Tensor) -> torch.Tensor:
    """``(B, K, 1)``: a Q head over ``K`` candidates of each state, its first layer's share of the state's summary
    computed once per state instead of once per candidate (the same function as ``q_net(summary ++ candidate)``,
    a third fewer multiply-adds in the first layer when the critic search scores hundreds of candidates per
    state).

    Args:
        q_net: ``Linear -> ... -> (B, K, 1)`` over ``summary ++ per_candidate``.
        summary: ``(B, D)``.
        per_candidate: ``(B, K, E)``: sampled features and action of each candidate.
    """
    assert isinstance(q_net, nn.Sequential)
    first = q_net[0]
    assert isinstance(first, nn.Linear)
    width = summary.shape[-1]
    shared = F.linear(summary, first.weight[:, :width], first.bias)  # (B, H)
    hidden = F.linear(per_candidate, first.weight[:, width:]) + shared[:, None]  # (B, K, H)
    return q_net[1:](hidden)


class MapSACPolicy(CnnPolicy):
    """SB3's SAC ``CnnPolicy`` for the ``map`` preset: :class:`~agents.map_features.SpatialActor`, and
    :class:`GlimpseMapCritic` when the env's glimpse geometry is given (else SB3's critic).

    Args:
        *args: SB3's ``SACPolicy`` arguments.
        glimpse_geometry: :class:`GlimpseGeometry` fields as a dict (``image_size``, ``min_crop``, ``max_crop``;
            a dict so that SB3 saves it as readable JSON), e.g. from :func:`glimpse_geometry_of`.
        critic_search: :class:`agents.critic_search.CriticSearch` fields as a dict, to act by searching the
            map critic instead of with the actor (needs ``glimpse_geometry``); None acts with the actor. Fields
            the dict lacks take the values of agents saved before they existed
            (:meth:`~agents.critic_search.CriticSearch.from_settings`); :func:`agents.sac.make_sac` passes all.
        **kwargs: SB3's ``SACPolicy`` keyword arguments.

    Raises:
        ValueError: ``critic_search`` without ``glimpse_geometry``.
    """

    def __init__(
        self,
        *args: Any,
        glimpse_geometry: dict[str, Any] | None = None,
        critic_search: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        if critic_search is not None and glimpse_geometry is None:
            raise ValueError("critic_search needs the map critic: pass glimpse_geometry too (make_sac does)")
        self.glimpse_geometry = glimpse_geometry  # read by make_critic, which SB3's __init__ calls
        #: How the policy acts from the critic (:mod:`agents.critic_search`), or None: the actor acts.
        self.critic_search = None if critic_search is None else CriticSearch.from_settings(critic_search)
        #: Its settings with every field written out (saved with the agent, so that later defaults never apply).
        self.critic_search_settings = None if self.critic_search is None else self.critic_search.to_dict()
        super().__init__(*args, **kwargs)

    def _predict(self, observation: Any, deterministic: bool = False) -> torch.Tensor:
        if self.critic_search is None:
            return super()._predict(observation, deterministic)
        assert isinstance(self.critic, GlimpseMapCritic)
        return self.critic_search.act(self.critic, observation, deterministic)

    def make_actor(self, features_extractor: BaseFeaturesExtractor | None = None) -> Actor:
        actor_kwargs = self._update_features_extractor(self.actor_kwargs, features_extractor)
        return SpatialActor(**actor_kwargs).to(self.device)

    def make_critic(self, features_extractor: BaseFeaturesExtractor | None = None) -> ContinuousCritic:
        if self.glimpse_geometry is None:
            return super().make_critic(features_extractor)
        critic_kwargs = self._update_features_extractor(self.critic_kwargs, features_extractor)
        geometry = GlimpseGeometry.from_dict(self.glimpse_geometry)
        return GlimpseMapCritic(glimpse_geometry=geometry, **critic_kwargs).to(self.device)

    def _get_constructor_parameters(self) -> dict[str, Any]:
        return {
            **super()._get_constructor_parameters(),
            "glimpse_geometry": self.glimpse_geometry,
            "critic_search": self.critic_search_settings,
        }


def glimpse_geometry_of(env: Any) -> dict[str, Any] | None:
    """The :class:`MapSACPolicy` ``glimpse_geometry`` of a glimpse env, or None for others.

    Args:
        env: a :class:`~adaglimpse_env.envs.vector_env.GlimpseVectorEnv`, or an SB3 ``VecEnv`` (wrappers are looked
            through) whose base wraps one as ``.env``.
    """
    glimpse_env = env if hasattr(env, "episode") else getattr(getattr(env, "unwrapped", env), "env", None)
    image_size = getattr(glimpse_env, "image_size", None)
    episode = getattr(glimpse_env, "episode", None)
    if image_size is None or episode is None:
        return None
    min_crop, max_crop = glimpse_size_range(tuple(image_size), episode.grid_size, episode.max_glimpse_ratio)
    return {"image_size": [int(image_size[0]), int(image_size[1])], "min_crop": min_crop, "max_crop": max_crop}


def where_map_loss(
    where_logits: torch.Tensor,
    where: torch.Tensor,
    critic: GlimpseMapCritic,
    state: tuple[torch.Tensor, torch.Tensor],
    actions: torch.Tensor,
    candidates: int = 16,
    sharpness: float = 3.0,
    candidate_scale: float | None = -1.0,
) -> torch.Tensor:
    """Cross-entropy that moves the actor's "where" heat map towards the cells the critic values most.

    SAC's actor loss moves an action along ``d Q / d action``, which only sees the map near where the policy
    already looks; a digit elsewhere on the map is never found by following it. Here the critic scores, for each
    state, ``candidates`` cells of the heat map drawn uniformly (the action moved there with its offset from the
    "where" point kept, at ``candidate_scale``), and the heat map's softmax is pulled towards
    ``softmax(sharpness * (Q - mean) / std)`` over them (values standardised per state): policy improvement over
    sampled actions, as in MPO (Abdolmaleki et al., 2018) and AWAC, on the position only.

    Args:
        where_logits: ``(B, (M/s)^2)`` the actor's heat-map logits for the batch
            (:attr:`GlimpseMapExtractor.last_where_logits` of the forward that sampled ``actions``).
        where: ``(B, 2)`` their soft-argmax (:attr:`GlimpseMapExtractor.last_where`).
        critic: the online critic.
        state: :meth:`GlimpseMapCritic.state_features` of the same observations (no gradients needed).
        actions: ``(B, 3)`` the actor's actions for them (detached here).
        candidates: cells scored per state.
        sharpness: inverse temperature of the target softmax, in standard deviations of the candidates' values.
        candidate_scale: the scale action the cells are scored at; the default, the smallest glimpse, is where
            the critic's values differ most from place to place (a larger glimpse covers its neighbours' cells
            too); None keeps each action's own scale.

    Returns:
        The scalar loss, with gradients into the actor's trunk (through ``where_logits``) only.
    """
    batch, cells = where_logits.shape
    side = round(cells**0.5)
    with torch.no_grad():
        chosen = torch.randint(cells, (batch, candidates), device=where_logits.device)  # (B, K)
        grid_x, grid_y = cell_positions(side, side, actions)
        centres = torch.stack((grid_x.flatten()[chosen], grid_y.flatten()[chosen]), dim=-1)  # (B, K, 2)
        offset = actions[:, None, :2] - 0.95 * where.detach()[:, None, :]  # the actor's correction and noise, kept
        scale = (
            actions[:, None, 2:] if candidate_scale is None else torch.full_like(actions[:, None, 2:], candidate_scale)
        )
        moved = torch.cat(((0.95 * centres + offset).clamp(-1.0, 1.0), scale.expand(batch, candidates, 1)), dim=-1)
        values = candidate_values(critic, state, moved)  # (B, K)
        # Scores in units of their spread over the candidates: early on the critic's values differ by a few
        # thousandths, and a fixed temperature would make a flat target that flattens the heat map.
        spread = values.std(dim=1, keepdim=True).clamp_min(1e-6)
        target = ((values - values.mean(dim=1, keepdim=True)) / spread * sharpness).softmax(dim=1)  # (B, K)
    log_probs = where_logits.log_softmax(dim=1).gather(1, chosen)  # (B, K)
    return -(target * log_probs).sum(dim=1).mean()
