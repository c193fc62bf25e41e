"""Acting by searching the critic: a Boltzmann policy over a grid of candidate glimpses, scored by the map critic.

SAC's actor improves by following ``d Q / d action`` from where it already looks. On find-and-zoom the value of a
glimpse is a few narrow peaks over the image (the digit inside one of the glimpse's cells), and the map critic
(:class:`agents.map_critic.GlimpseMapCritic`) learns where they are long before the actor follows it
(docs/results.md: its best glimpse holds the digit 16-38% of the time, the actor's about as often as chance).
Here the policy *is* the critic's: every candidate of a grid over ``(x, y, scale)`` is scored from one pass of the
trunk over the map, and the action is drawn from ``softmax(sharpness * (Q - mean) / std)`` over them (values
standardised per state, so that the policy is as greedy early, when values differ by thousandths, as late), mixed
with a uniform share, then jittered within its grid cell so that the replayed actions cover the continuous box.
Deterministic acting takes the best candidate. The critic's bootstrap target is the expected value of the next
state under the same kind of distribution on a coarser grid, scored by the target critic (expected SARSA; the
coarse grid keeps the target's cost at a few thousand candidates per batch, and can miss a narrow peak between
its points, so it is a conservative estimate of the acting policy's value). As in discrete SAC (Christodoulou,
2019) the policy is a softmax of the critic's values over the actions, here without an entropy term in the
target, and as in QT-Opt (Kalashnikov et al., 2018) acting is a search over the critic; the map critic makes the
search cheap: one trunk pass per state, then a small MLP per candidate. SAC's actor is still built and saved
with the agent (SB3's layout) but neither acts nor trains.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:  # map_critic builds its policy from this module
    from agents.map_critic import GlimpseMapCritic


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
    """

    positions: int = 13
    scales: int = 5
    sharpness: float = 6.0
    explore: float = 0.1
    target_positions: int = 7
    target_scales: int = 3

    def __post_init__(self) -> None:
        for name in ("positions", "scales", "target_positions", "target_scales"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"CriticSearch.{name} must be an integer >= 1, got {value!r}")
        if not self.sharpness >= 0.0:
            raise ValueError(f"CriticSearch.sharpness must be >= 0 (0: uniform over the grid), got {self.sharpness!r}")
        if not 0.0 <= self.explore <= 1.0:
            raise ValueError(f"CriticSearch.explore must be a share in [0, 1], got {self.explore!r}")

    def to_dict(self) -> dict[str, Any]:
        """The fields as plain JSON values (SB3 saves policy arguments as readable JSON)."""
        return asdict(self)

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
        candidates = glimpse_candidates(self.positions, self.scales, _parameter(critic))  # (K, 3)
        values = candidate_values(critic, critic.state_features(observations), candidates)  # (B, K)
        if deterministic:
            return candidates[values.argmax(dim=1)]
        probabilities = self.probabilities(values)
        chosen = candidates[torch.multinomial(probabilities, 1)[:, 0]]  # (B, 3)
        # Jitter within the chosen grid cell, so that replayed actions fill the box between grid points.
        steps = torch.tensor(
            [grid_step(self.positions), grid_step(self.positions), grid_step(self.scales)],
            dtype=chosen.dtype,
            device=chosen.device,
        )
        jittered = chosen + (torch.rand_like(chosen) - 0.5) * steps
        # Reflected at the edges of the box (not clamped): no pile of actions exactly on +-1.
        return torch.where(jittered.abs() > 1.0, torch.sign(jittered) * 2.0 - jittered, jittered).clamp(-1.0, 1.0)

    def probabilities(self, values: torch.Tensor) -> torch.Tensor:
        """``(B, K)`` values -> ``(B, K)`` the policy's probabilities over the candidates."""
        spread = values.std(dim=1, keepdim=True).clamp_min(1e-6) if values.shape[1] > 1 else torch.ones_like(values)
        boltzmann = ((values - values.mean(dim=1, keepdim=True)) / spread * self.sharpness).softmax(dim=1)
        return (1.0 - self.explore) * boltzmann + self.explore / values.shape[1]

    @torch.no_grad()
    def next_state_value(self, critic: GlimpseMapCritic, next_observations: torch.Tensor) -> torch.Tensor:
        """``(B, 1)``: the expected value of the next states under the policy, on the target grid (no gradients).

        Args:
            critic: the critic that values them (the target critic in SAC's update).
            next_observations: ``(B, C, M, M)``.
        """
        candidates = glimpse_candidates(self.target_positions, self.target_scales, _parameter(critic))
        values = candidate_values(critic, critic.state_features(next_observations), candidates)
        return (self.probabilities(values) * values).sum(dim=1, keepdim=True)


def _parameter(critic: GlimpseMapCritic) -> torch.Tensor:
    """A parameter of the critic: candidates take its device and dtype, whatever the observations' dtype."""
    return next(critic.parameters())


def grid_step(points: int) -> float:
    """Spacing of ``points`` evenly spread over ``[-1, 1]`` (2 for a single point: jitter covers the whole box)."""
    return 2.0 / (points - 1) if points > 1 else 2.0


def glimpse_candidates(positions: int, scales: int, like: torch.Tensor) -> torch.Tensor:
    """``(positions^2 * scales, 3)`` actions ``(x, y, scale)`` on a grid over ``[-1, 1]^3``, on ``like``'s device.

    A single point on an axis sits at 0 (the centre, or the middle scale).
    """

    dtype = like.dtype if like.is_floating_point() else torch.float32

    def axis(points: int) -> torch.Tensor:
        if points == 1:
            return torch.zeros(1, device=like.device, dtype=dtype)
        return torch.linspace(-1.0, 1.0, points, device=like.device, dtype=dtype)

    grid = torch.meshgrid(axis(positions), axis(positions), axis(scales), indexing="ij")
    return torch.stack([axis_values.flatten() for axis_values in grid], dim=-1)


def candidate_values(
    critic: GlimpseMapCritic, state: tuple[torch.Tensor, torch.Tensor], candidates: torch.Tensor
) -> torch.Tensor:
    """``(B, K)``: the smaller of the critic's heads for each state and each of the ``(K, 3)`` candidates.

    Args:
        critic: the map critic.
        state: its :meth:`~agents.map_critic.GlimpseMapCritic.state_features` for ``B`` observations.
        candidates: ``(K, 3)`` actions shared by every state.
    """
    batch = state[0].shape[0]
    actions = candidates[None].expand(batch, -1, -1)
    return torch.min(torch.cat(critic.q_values(state, actions), dim=-1), dim=-1).values
