"""Acting by searching the critic: a Boltzmann policy over a grid of candidate glimpses, scored by the map critic.

SAC's actor improves by following ``d Q / d action`` from where it already looks. On find-and-zoom the value of a
glimpse is a few narrow peaks over the image (the digit inside one of the glimpse's cells), and the map critic
(:class:`agents.map_critic.GlimpseMapCritic`) learns where they are long before the actor follows it
(docs/results.md: its best glimpse holds the digit 16-38% of the time, the actor's about as often as chance). Here
the policy *is* the critic's: every candidate of a grid over ``(x, y, scale)`` is scored from one pass of the trunk
over the map, and the action is drawn from ``softmax(sharpness * (Q - mean) / std)`` over them (values standardised
per state, so that the policy is as greedy early, when values differ by thousandths, as late), mixed with a uniform
share, then jittered within its grid cell so that the replayed actions cover the continuous box. Glimpse sides on
the grid are spaced geometrically (zoom levels: 32, 52, 85, 138, 224 px on a 224 px image), so that most of them are
sizes that read a small target. Deterministic acting takes the best candidate, then the best of a finer local grid
around it (as the ``greedy`` oracle of :mod:`agents.baselines` refines its pick): a digit has to land inside one
cell of the glimpse, a tighter tolerance than the coarse grid's spacing. The critic's bootstrap target is the
expected value of the next state under the same kind of distribution on a coarser grid, scored by the target critic
(expected SARSA; the coarse grid keeps the target's cost at a few thousand candidates per batch, and can miss a
narrow peak between its points, so it is a conservative estimate of the acting policy's value). As in discrete SAC
(Christodoulou, 2019) the policy is a softmax of the critic's values over the actions, here without an entropy term
in the target, and as in QT-Opt (Kalashnikov et al., 2018) acting is a search over the critic; the map critic makes
the search cheap: one trunk pass per state, then a small MLP per candidate. SAC's actor is still built and saved
with the agent (SB3's layout) but neither acts nor trains.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:  # map_critic builds its policy from this module
    from agents.map_critic import GlimpseGeometry, GlimpseMapCritic


#: How :attr:`CriticSearch.scale_spacing` spreads the grid's glimpse sides.
SCALE_SPACINGS = ("geometric", "linear")
#: Fields added after the first critic-search agents were saved, with the behaviour those agents had.
LEGACY_SETTINGS: dict[str, Any] = {"scale_spacing": "linear", "refine": 0}


@dataclass(frozen=True)
class CriticSearch:
    """How the policy searches the critic (see the module).

    Attributes:
        positions: grid points per image side for ``x`` and ``y`` (evenly over ``[-1, 1]``).
        scales: grid points for the scale action (evenly over ``[-1, 1]``: smallest to largest glimpse).
        sharpness: inverse temperature, in standard deviations of the candidates' values (3 and 6 both learnt on
            the fast digits id; 6 ended higher: docs/results.md).
        explore: share of actions drawn uniformly over the candidates instead.
        target_positions: ``positions`` of the grid that values the next state in the critic's target (coarser:
            it is scored for every replayed transition).
        target_scales: ``scales`` of that grid.
        scale_spacing: ``"geometric"`` (glimpse sides evenly spread in log scale) or ``"linear"`` (evenly in the
            scale action, as agents saved before this setting existed were trained; the shipped agent acts better
            with geometric: docs/results.md).
        refine: deterministic acting scores ``refine x refine x 3`` more glimpses around the best candidate
            (half a grid step either way in position, a quarter of the scale gap in scale); 0 or 1: none.
    """

    positions: int = 13
    scales: int = 5
    sharpness: float = 6.0
    explore: float = 0.1
    target_positions: int = 7
    target_scales: int = 3
    scale_spacing: str = "geometric"
    refine: int = 5

    def __post_init__(self) -> None:
        for name in ("positions", "scales", "target_positions", "target_scales"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"CriticSearch.{name} must be an integer >= 1, got {value!r}")
        if not isinstance(self.refine, int) or self.refine < 0:
            raise ValueError(f"CriticSearch.refine must be an integer >= 0 (0: no refinement), got {self.refine!r}")
        if self.scale_spacing not in SCALE_SPACINGS:
            raise ValueError(f"CriticSearch.scale_spacing must be one of {SCALE_SPACINGS}, got {self.scale_spacing!r}")
        if not self.sharpness >= 0.0:
            raise ValueError(f"CriticSearch.sharpness must be >= 0 (0: uniform over the grid), got {self.sharpness!r}")
        if not 0.0 <= self.explore <= 1.0:
            raise ValueError(f"CriticSearch.explore must be a share in [0, 1], got {self.explore!r}")

    def to_dict(self) -> dict[str, Any]:
        """The fields as plain JSON values (SB3 saves policy arguments as readable JSON)."""
        return asdict(self)

    @classmethod
    def from_settings(cls, settings: dict[str, Any]) -> CriticSearch:
        """The search a saved agent's settings describe (:meth:`to_dict`); fields added since it was saved take
        the values it was trained with (:data:`LEGACY_SETTINGS`), so a loaded agent acts as it did.

        Raises:
            ValueError: a key that is not a field.
        """
        unknown = sorted(set(settings) - set(cls.__dataclass_fields__))
        if unknown:
            raise ValueError(
                f"critic_search settings have unknown keys {unknown}; fields: {list(cls.__dataclass_fields__)}"
            )
        return cls(**{**LEGACY_SETTINGS, **settings})

    @torch.no_grad()
    def act(self, critic: GlimpseMapCritic, observations: torch.Tensor, deterministic: bool) -> torch.Tensor:
        """Actions for a batch of observations.

        Args:
            critic: the map critic whose values the policy follows.
            observations: ``(B, C, M, M)`` map observations.
            deterministic: take each state's best candidate (else draw, explore and jitter).

        Returns:
            ``(B, 3)`` actions in ``[-1, 1]``.
        """
        scales = self.scale_values(critic, self.scales)
        candidates = glimpse_candidates(self.positions, self.scales, _parameter(critic), scales)  # (K, 3)
        below, above = grid_cells(candidates, self.positions, scales)  # (K, 3) each: each candidate's cell
        state = critic.state_features(observations)
        values = candidate_values(critic, state, candidates)  # (B, K)
        if deterministic:
            best = values.argmax(dim=1)
            return self.refined(critic, state, candidates[best], below[best], above[best])
        probabilities = self.probabilities(values)
        drawn = torch.multinomial(probabilities, 1)[:, 0]
        chosen = candidates[drawn]  # (B, 3)
        # Jitter within the chosen grid cell, so that replayed actions fill the box between grid points.
        # Uniform over the cell, which on a geometric scale axis reaches further up than down.
        low, high = chosen - below[drawn], chosen + above[drawn]
        jittered = low + torch.rand_like(chosen) * (high - low)
        # Reflected at the edges of the box (not clamped): no pile of actions exactly on +-1.
        return torch.where(jittered.abs() > 1.0, torch.sign(jittered) * 2.0 - jittered, jittered).clamp(-1.0, 1.0)

    def scale_values(self, critic: GlimpseMapCritic, points: int) -> torch.Tensor:
        """``(points,)`` scale actions of the grid, ascending, spaced as :attr:`scale_spacing` says."""
        return scale_axis(critic.glimpse_geometry, points, self.scale_spacing, _parameter(critic))

    def refined(
        self,
        critic: GlimpseMapCritic,
        state: tuple[torch.Tensor, torch.Tensor],
        best: torch.Tensor,
        below: torch.Tensor,
        above: torch.Tensor,
    ) -> torch.Tensor:
        """``(B, 3)``: the best of each state's best candidate and a local grid around it (:attr:`refine`)."""
        if self.refine < 2:
            return best
        offsets = torch.linspace(-0.5, 0.5, self.refine, device=best.device, dtype=best.dtype)
        scale_offsets = torch.tensor([-0.25, 0.0, 0.25], device=best.device, dtype=best.dtype)
        grid = torch.meshgrid(offsets, offsets, scale_offsets, indexing="ij")
        unit = torch.stack([axis_values.flatten() for axis_values in grid], dim=-1)  # (R, 3) in cell widths
        # A unit step is the whole cell: the distance to its edge on that side, twice.
        steps = torch.where(unit[None] < 0, 2.0 * below[:, None], 2.0 * above[:, None])  # (B, R, 3)
        local = (best[:, None] + unit[None] * steps).clamp(-1.0, 1.0)  # (B, R, 3)
        local = torch.cat((best[:, None], local), dim=1)  # the coarse pick stays a candidate
        values = candidate_values(critic, state, local)  # (B, R + 1)
        return local[torch.arange(len(local), device=local.device), values.argmax(dim=1)]

    def probabilities(self, values: torch.Tensor) -> torch.Tensor:
        """``(B, K)`` values -> ``(B, K)`` the policy's probabilities over the candidates."""
        return standardised_boltzmann(values, self.sharpness, self.explore)

    @torch.no_grad()
    def next_state_value(self, critic: GlimpseMapCritic, next_observations: torch.Tensor) -> torch.Tensor:
        """``(B, 1)``: the expected value of the next states under the policy, on the target grid (no gradients).

        Args:
            critic: the critic that values them (the target critic in SAC's update).
            next_observations: ``(B, C, M, M)``.
        """
        scales = self.scale_values(critic, self.target_scales)
        candidates = glimpse_candidates(self.target_positions, self.target_scales, _parameter(critic), scales)
        values = candidate_values(critic, critic.state_features(next_observations), candidates)
        return (self.probabilities(values) * values).sum(dim=1, keepdim=True)


def standardised_boltzmann(values: torch.Tensor, sharpness: float, explore: float) -> torch.Tensor:
    """``softmax(sharpness * (Q - mean) / std)`` over each row of candidate values, mixed with a uniform share
    ``explore``: the critic search's policy, and GridDQN's Boltzmann exploration (agents.grid_dqn_learner).
    Standardising per state keeps the policy as greedy early, when values differ by thousandths, as late.

    Args:
        values: ``(B, K)`` the candidates' values.
        sharpness: inverse temperature, in standard deviations of a row's values (0: uniform).
        explore: the uniform share, in ``[0, 1]``.

    Returns:
        ``(B, K)`` probabilities (rows sum to 1).
    """
    spread = values.std(dim=1, keepdim=True).clamp_min(1e-6) if values.shape[1] > 1 else torch.ones_like(values)
    boltzmann = ((values - values.mean(dim=1, keepdim=True)) / spread * sharpness).softmax(dim=1)
    return (1.0 - explore) * boltzmann + explore / values.shape[1]


def scale_axis(geometry: GlimpseGeometry, points: int, spacing: str, like: torch.Tensor) -> torch.Tensor:
    """``(points,)`` scale actions, ascending: glimpse sides evenly spread in log side (``"geometric"``) or evenly
    in the scale action (``"linear"``), in ``like``'s device and float dtype.

    Args:
        geometry: the env's glimpse geometry (its smallest and largest glimpse sides).
        points: values on the axis.
        spacing: one of :data:`SCALE_SPACINGS`.
        like: a tensor whose device and dtype the values take.
    """
    if spacing == "linear" or points == 1:
        return _axis(points, like)
    low, high = float(geometry.min_crop), float(geometry.max_crop)
    if high <= low:  # one glimpse size only: every scale action cuts it
        return _axis(points, like)
    # On the CPU in float64 (not every device has it), then moved.
    sides = torch.logspace(math.log10(low), math.log10(high), points, dtype=torch.float64)
    return ((sides - low) / (high - low) * 2.0 - 1.0).clamp(-1.0, 1.0).to(_axis(1, like))


def _parameter(critic: GlimpseMapCritic) -> torch.Tensor:
    """A parameter of the critic: candidates take its device and dtype, whatever the observations' dtype."""
    return next(critic.parameters())


def grid_step(points: int) -> float:
    """Spacing of ``points`` evenly spread over ``[-1, 1]`` (2 for a single point: jitter covers the whole box)."""
    return 2.0 / (points - 1) if points > 1 else 2.0


def _axis(points: int, like: torch.Tensor) -> torch.Tensor:
    """``points`` values evenly over ``[-1, 1]`` (a single one at 0), in ``like``'s device and float dtype."""
    dtype = like.dtype if like.is_floating_point() else torch.float32
    if points == 1:
        return torch.zeros(1, device=like.device, dtype=dtype)
    return torch.linspace(-1.0, 1.0, points, device=like.device, dtype=dtype)


def glimpse_candidates(
    positions: int, scales: int, like: torch.Tensor, scale_values: torch.Tensor | None = None
) -> torch.Tensor:
    """``(positions^2 * scales, 3)`` actions ``(x, y, scale)`` on a grid over ``[-1, 1]^3``, on ``like``'s device.

    A single point on an axis sits at 0 (the centre, or the middle scale).

    Args:
        positions: points per position axis.
        scales: points on the scale axis.
        like: a tensor whose device and float dtype the candidates take.
        scale_values: ``(scales,)`` the scale axis's values (default: evenly spread, as the position axes).
    """
    scale_axis = _axis(scales, like) if scale_values is None else scale_values.to(_axis(1, like))
    grid = torch.meshgrid(_axis(positions, like), _axis(positions, like), scale_axis, indexing="ij")
    return torch.stack([axis_values.flatten() for axis_values in grid], dim=-1)


def grid_cells(
    candidates: torch.Tensor, positions: int, scale_values: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """How far each candidate's grid cell reaches below and above it along ``x``, ``y`` and the scale.

    A cell runs halfway to the neighbouring points (at an end of an axis, as far out as in). Positions are evenly
    spaced; on a geometric scale axis the gap above a point is wider than the one below, so the cells of all
    candidates tile ``[-1, 1]`` without holes or overlaps (an end cell's outer half lies outside; acting reflects
    it back).

    Args:
        candidates: ``(K, 3)`` from :func:`glimpse_candidates`.
        positions: points per position axis.
        scale_values: ``(S,)`` the scale axis, ascending.

    Returns:
        ``(below, above)``: ``(K, 3)`` each, non-negative.
    """
    scale_axis = scale_values.to(candidates)
    if len(scale_axis) > 1:
        half_gaps = scale_axis.diff() / 2
        down = torch.cat((half_gaps[:1], half_gaps))  # (S,): the first point mirrors its gap above
        up = torch.cat((half_gaps, half_gaps[-1:]))  # the last point mirrors its gap below
    else:
        down = up = torch.ones_like(scale_axis)  # one point: its cell is the whole axis
    scale_index = (candidates[:, 2:3] - scale_axis[None]).abs().argmin(dim=1)
    position = torch.full_like(candidates[:, 0], grid_step(positions) / 2)
    below = torch.stack((position, position, down[scale_index]), dim=-1)
    above = torch.stack((position, position, up[scale_index]), dim=-1)
    return below, above


def candidate_values(
    critic: GlimpseMapCritic, state: tuple[torch.Tensor, torch.Tensor], candidates: torch.Tensor
) -> torch.Tensor:
    """``(B, K)``: the smaller of the critic's heads for each state and each of its ``K`` candidates.

    Args:
        critic: the map critic.
        state: its :meth:`~agents.map_critic.GlimpseMapCritic.state_features` for ``B`` observations.
        candidates: ``(K, 3)`` actions shared by every state, or ``(B, K, 3)``: each state's own.
    """
    actions = candidates if candidates.dim() == 3 else candidates[None].expand(state[0].shape[0], -1, -1)
    return torch.min(torch.cat(critic.q_values(state, actions), dim=-1), dim=-1).values
