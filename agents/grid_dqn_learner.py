"""DQN's update for the glimpse-grid Q-network, at the cost of the glimpses it reads, with symmetry augmentation.

SB3's ``DQN.train`` scores every one of the ``K`` actions twice per replayed transition: all ``K`` of the state
with the online network to pick the replayed one out, all ``K`` of the next state with the target network for the
max. With :class:`~agents.grid_dqn.GlimpseGridQPolicy` (845 glimpses) that was 8.6 env steps/s on the fast digits
id, the slowest entry of the benchmark (docs/results.md). :class:`GridDQN` is the same algorithm with three changes:

- the online network scores only the replayed glimpse (its value is read from the map under that glimpse alone);
- the max of the bootstrap target runs over a coarser sub-grid of the actions (by default every other place and
  zoom level: 7 x 7 x 3 = 147 of the 845), as the critic search's target does (:mod:`agents.critic_search`); a
  max over fewer actions can miss a peak between its points: it is a lower bound on the max over the full grid;
- optionally (``symmetry_augment``), each replayed transition is seen under a random one of the square's eight
  symmetries (maps mirrored or transposed, the glimpse index moved with them: :mod:`agents.symmetry`), as the
  critic search's SAC replays.

Acting, the policy and what is saved are SB3's DQN's: a saved ``GridDQN`` loads with ``DQN.load``. Exploration is
SB3's epsilon-greedy unless ``boltzmann_sharpness`` is given: then every non-deterministic action is drawn per env
from a softmax of the state's Q-values over the grid, standardised per state as the critic search's policy is
(:func:`agents.critic_search.standardised_boltzmann`), mixed with SB3's decaying exploration rate as a uniform
share (Boltzmann exploration, Sutton & Barto 2018, section 13.2; over 845 glimpses most uniform draws are
useless). As the sharpness grows this becomes epsilon-greedy per env.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from stable_baselines3 import DQN
from torch.nn import functional as F

from agents.critic_search import standardised_boltzmann
from agents.grid_dqn import GlimpseGridQNetwork
from agents.grid_policy import GlimpseGrid, GlimpseGridExtractor
from agents.symmetry import all_symmetries, apply_symmetries, apply_to_actions, random_symmetries, symmetry_codes


def sub_grid_indices(grid: GlimpseGrid, positions: int, scales: int) -> torch.Tensor:
    """``(positions^2 * scales,)`` indices of the grid's candidates on a coarser grid over the same range: the
    points nearest to ``positions`` (and ``scales``) evenly spaced points of each axis's index range, ends
    included (every other point of a 13 x 13 x 5 grid for 7 x 7 x 3); a single point is the middle one, as on
    the grid itself (:func:`agents.critic_search.glimpse_candidates`). Sub-grids that do not divide the grid's
    spacing evenly take the nearest points, rounded half to even (4 of 13 divide it: 0, 4, 8, 12; 3 of 4 do
    not: 0, 2, 3).

    Args:
        grid: the action grid.
        positions: points per position axis of the sub-grid.
        scales: points of its scale axis.

    Raises:
        ValueError: a sub-grid with more points on an axis than the grid.
    """
    if not 1 <= positions <= grid.positions or not 1 <= scales <= grid.scales:
        raise ValueError(
            f"a target grid of {positions} places per side and {scales} zoom levels does not fit in the action "
            f"grid ({grid.positions} x {grid.scales}); give 1 <= target_positions <= {grid.positions} and "
            f"1 <= target_scales <= {grid.scales}"
        )
    place, zoom = _sub_axis(grid.positions, positions), _sub_axis(grid.scales, scales)
    ix, iy, iscale = np.meshgrid(place, place, zoom, indexing="ij")
    return torch.as_tensor(((ix * grid.positions + iy) * grid.scales + iscale).reshape(-1))


def _sub_axis(points: int, chosen: int) -> np.ndarray:
    """``chosen`` of the indices ``0 .. points - 1``, evenly spread, ends included (one: the middle one)."""
    if chosen == 1:
        return np.array([(points - 1) // 2])
    return np.unique(np.round(np.linspace(0, points - 1, chosen)).astype(np.int64))


def symmetry_permutations(candidates: torch.Tensor) -> torch.Tensor:
    """``(8, K)``: for each symmetry code (:func:`agents.symmetry.symmetry_codes`), the index of the candidate that
    candidate ``k`` becomes (:func:`agents.symmetry.apply_to_actions`; the grid is symmetric, so it is one of
    them).

    Args:
        candidates: ``(K, 3)`` the grid's actions.
    """
    table = []
    for draw in all_symmetries():
        moved = apply_to_actions(candidates, draw.expand(len(candidates), -1))
        table.append(torch.cdist(moved.double(), candidates.double()).argmin(dim=1))
    return torch.stack(table)


class GridDQN(DQN):
    """SB3's DQN for :class:`~agents.grid_dqn.GlimpseGridQPolicy` with the update described in the module.

    Args:
        *args: SB3's ``DQN`` arguments (the policy must be a :class:`~agents.grid_dqn.GlimpseGridQPolicy`).
        target_positions: places per side of the target's max, at most the grid's ``positions`` (None: every
            other one, ``(positions + 1) // 2``: 7 of the default grid's 13).
        target_scales: zoom levels of the target's max, at most the grid's ``scales`` (None: every other one,
            ``(scales + 1) // 2``: 3 of 5).
        symmetry_augment: replay each transition under a random symmetry of the square; for tasks whose content
            can be anywhere (find-and-zoom: the benchmark's ``dqn_grid`` turns it on), not where a place is
            special (a target always in one corner: mirroring would teach that every corner pays).
        boltzmann_sharpness: None: SB3's epsilon-greedy exploration; a number: non-deterministic actions are
            drawn from the standardised softmax of the Q-values with this inverse temperature (in standard
            deviations of a state's values; the critic search uses 6), mixed with the exploration rate as a
            uniform share (``exploration_final_eps``' defaults were chosen for epsilon-greedy).
        **kwargs: SB3's ``DQN`` keyword arguments.

    Raises:
        ValueError: a policy whose Q-network is not a glimpse grid's, or a target grid larger than the grid.
    """

    # (*args, **kwargs) hides DQN's signature: agents.algorithms checks overrides against both GridDQN and DQN.
    def __init__(
        self,
        *args: Any,
        target_positions: int | None = None,
        target_scales: int | None = None,
        symmetry_augment: bool = False,
        boltzmann_sharpness: float | None = None,
        **kwargs: Any,
    ) -> None:
        if boltzmann_sharpness is not None and not boltzmann_sharpness >= 0.0:
            raise ValueError(f"boltzmann_sharpness must be None or >= 0 (0: uniform), got {boltzmann_sharpness!r}")
        self.target_positions = target_positions
        self.target_scales = target_scales
        self.symmetry_augment = symmetry_augment
        self.boltzmann_sharpness = boltzmann_sharpness
        super().__init__(*args, **kwargs)

    def _setup_model(self) -> None:
        super()._setup_model()
        extractor = self.q_net.features_extractor
        # The extractor's candidate scores are the Q-values only under GlimpseGridQNetwork (no head after them).
        if not isinstance(self.q_net, GlimpseGridQNetwork) or not isinstance(extractor, GlimpseGridExtractor):
            raise ValueError(
                f"GridDQN trains a GlimpseGridQPolicy (agents.grid_dqn), got a {type(self.policy).__name__} "
                f"whose Q-network is a {type(self.q_net).__name__} over {type(extractor).__name__}"
            )
        grid = extractor.grid
        positions = (grid.positions + 1) // 2 if self.target_positions is None else self.target_positions
        scales = (grid.scales + 1) // 2 if self.target_scales is None else self.target_scales
        self._target_indices = sub_grid_indices(grid, positions, scales).to(self.device)
        self._permutations = symmetry_permutations(extractor.candidates.cpu()).to(self.device)

    def predict(
        self,
        observation: np.ndarray | dict[str, np.ndarray],
        state: tuple[np.ndarray, ...] | None = None,
        episode_start: np.ndarray | None = None,
        deterministic: bool = False,
    ) -> tuple[np.ndarray, tuple[np.ndarray, ...] | None]:
        """SB3's ``DQN.predict``, except that with ``boltzmann_sharpness`` a non-deterministic action is drawn per
        env from :func:`~agents.critic_search.standardised_boltzmann` of its Q-values (uniform share: the
        exploration rate) instead of SB3's whole batch being uniform with the exploration rate's chance.

        Args:
            observation: ``(n_envs, C, M, M)`` maps, or one ``(C, M, M)``.
            state: passed through (the policy is not recurrent).
            episode_start: unused, as in SB3's DQN.
            deterministic: the greedy action (SB3's argmax).

        Returns:
            ``(n_envs,)`` grid indices (a 0-d array for one observation), and ``state``.
        """
        if deterministic or self.boltzmann_sharpness is None:
            return super().predict(observation, state, episode_start, deterministic)
        self.policy.set_training_mode(False)
        tensor, vectorized = self.policy.obs_to_tensor(observation)
        with torch.no_grad():
            values = self.q_net(tensor)  # (B, K)
            probabilities = standardised_boltzmann(values, self.boltzmann_sharpness, self.exploration_rate)
            actions = torch.multinomial(probabilities, 1)[:, 0].cpu().numpy()
        return (actions if vectorized else actions.reshape(())), state

    def train(self, gradient_steps: int, batch_size: int = 100) -> None:
        """SB3's ``DQN.train`` with the online values of the replayed glimpses only, the target's max over the
        coarse grid and symmetry augmentation."""
        self.policy.set_training_mode(True)
        self._update_learning_rate(self.policy.optimizer)
        online = self.q_net.features_extractor
        target = self.q_net_target.features_extractor
        assert isinstance(online, GlimpseGridExtractor) and isinstance(target, GlimpseGridExtractor)
        losses = []
        for _ in range(gradient_steps):
            replay_data = self.replay_buffer.sample(batch_size, env=self._vec_normalize_env)  # type: ignore[union-attr]
            discounts = replay_data.discounts if replay_data.discounts is not None else self.gamma
            observations, next_observations = replay_data.observations, replay_data.next_observations
            indices = replay_data.actions.long().reshape(-1, 1)  # (B, 1)
            if self.symmetry_augment:
                height, width = online.geometry.image_size
                square = height == width and observations.shape[-1] == observations.shape[-2]
                draws = random_symmetries(len(indices), square, observations.device)
                observations = apply_symmetries(observations, draws)
                next_observations = apply_symmetries(next_observations, draws)
                indices = self._permutations[symmetry_codes(draws), indices[:, 0]].reshape(-1, 1)
            with torch.no_grad():
                next_values = target.candidate_scores(next_observations, self._target_indices).amax(dim=1)
                target_values = replay_data.rewards + (1 - replay_data.dones) * discounts * next_values[:, None]
            values = online.candidate_scores(observations, indices)  # (B, 1)
            loss = F.smooth_l1_loss(values, target_values)
            losses.append(loss.item())
            self.policy.optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.policy.parameters(), self.max_grad_norm)
            self.policy.optimizer.step()
        self._n_updates += gradient_steps
        self.logger.record("train/n_updates", self._n_updates, exclude="tensorboard")
        self.logger.record("train/loss", np.mean(losses))

    def _excluded_save_params(self) -> list[str]:
        # Rebuilt from the policy on load (_setup_model); tensors would be pickled into the zip's data.
        return [*super()._excluded_save_params(), "_target_indices", "_permutations"]
