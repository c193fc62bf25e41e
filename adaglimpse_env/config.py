"""Episode configuration with the paper's defaults (original action space; original `_forward_task`).

Two types, one resolution: :class:`EpisodeConfig` is what a caller writes (the glimpse budget and grid may be left
to the task), :class:`ResolvedEpisodeConfig` is what the env and everything downstream read (every value plain and
typed). :meth:`EpisodeConfig.resolve` is the only place the task's defaults are filled in.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

from adaglimpse_env.models.heads import TASKS, TaskName
from adaglimpse_env.tasks import get_task

REWARD_TYPES = ("diff", "final", "raw")
OBSERVATION_PRESETS = ("full", "latent", "flat", "map")


@dataclass(frozen=True, kw_only=True)
class EpisodeOptions:
    """The episode settings that need no resolving, shared by :class:`EpisodeConfig` and
    :class:`ResolvedEpisodeConfig` (keyword-only; see :class:`EpisodeConfig` for their meaning)."""

    max_glimpse_ratio: float = 1.0
    reward: str = "diff"
    early_stop_threshold: float | None = None
    observation: str = "full"
    extract_latent_layer: int | None = None
    map_size: int = 64


@dataclass(frozen=True)
class ResolvedEpisodeConfig(EpisodeOptions):
    """What an episode is and what the agent sees, every value given (see :class:`EpisodeConfig` for the fields).

    Built by :meth:`EpisodeConfig.resolve`; an env keeps one as ``env.episode``.

    Raises:
        ValueError: on construction, for a value out of range (the message names the field).
    """

    task: TaskName
    num_glimpses: int
    grid_size: int

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise ValueError(f"task must be one of {list(TASKS)}, got {self.task!r}")
        if not isinstance(self.num_glimpses, int) or self.num_glimpses < 1:
            raise ValueError(f"num_glimpses must be a positive int, got {self.num_glimpses!r}")
        if not isinstance(self.grid_size, int) or self.grid_size < 1:
            raise ValueError(f"grid_size must be a positive int, got {self.grid_size!r}")
        if self.early_stop_threshold is not None and (
            isinstance(self.early_stop_threshold, bool)
            or not isinstance(self.early_stop_threshold, int | float)
            or not math.isfinite(self.early_stop_threshold)
        ):
            raise ValueError(
                f"early_stop_threshold must be a finite number (a score, e.g. 0.9 true-class probability) or None, "
                f"got {self.early_stop_threshold!r}"
            )
        if not 0.0 < self.max_glimpse_ratio <= 1.0:
            raise ValueError(f"max_glimpse_ratio must be in (0, 1], got {self.max_glimpse_ratio}")
        if self.reward not in REWARD_TYPES:
            raise ValueError(f"reward must be one of {list(REWARD_TYPES)}, got {self.reward!r}")
        if self.observation not in OBSERVATION_PRESETS:
            raise ValueError(f"observation must be one of {list(OBSERVATION_PRESETS)}, got {self.observation!r}")
        if isinstance(self.map_size, bool) or not isinstance(self.map_size, int) or not 8 <= self.map_size <= 1024:
            raise ValueError(f"map_size must be an int in [8, 1024] (the map observation side), got {self.map_size!r}")

    def resolve(self) -> ResolvedEpisodeConfig:
        """Itself: already resolved (so code taking either type calls ``resolve()`` once)."""
        return self

    @property
    def tokens_per_glimpse(self) -> int:
        """``g * g``."""
        return self.grid_size**2

    @property
    def max_tokens(self) -> int:
        """``P = num_glimpses * g * g``, the padded token budget of an observation."""
        return self.num_glimpses * self.tokens_per_glimpse


@dataclass(frozen=True)
class EpisodeConfig(EpisodeOptions):
    """What an episode is and what the agent sees, as a caller writes it.

    Attributes:
        task: ``reconstruction``, ``classification`` or ``segmentation``.
        num_glimpses: glimpses per episode (None: the paper's value for the task).
        grid_size: ``g``; each glimpse gives ``g * g`` patch tokens (None: the paper's value for the task).
        max_glimpse_ratio: largest glimpse side as a fraction of the image side.
        reward: ``diff`` (score improvement, the paper's default), ``final`` (final minus initial score, paid at
            the last step) or ``raw`` (the score itself at every step).
        early_stop_threshold: end an episode as soon as its score reaches this value (original `_forward_task`).
        observation: ``full`` (the original agent's state), ``latent`` (latent, coords, mask), ``flat``
            (one vector: cls latent, normalised boxes, mask) or ``map`` (a ``(5, M, M)`` picture of what the
            glimpses showed, where they showed it; :mod:`adaglimpse_env.envs.glimpse_map`).
        extract_latent_layer: observe the input of this encoder block instead of the final latent (original
            `aux_latent_layer`).
        map_size: ``M``, the side of the ``map`` observation.

    Raises:
        ValueError: on construction, for an unknown task or a value out of range.
    """

    task: str = "reconstruction"
    num_glimpses: int | None = None
    grid_size: int | None = None

    def __post_init__(self) -> None:
        self.resolve()  # a bad value fails where it is written, not when an env is built from it

    def resolve(self) -> ResolvedEpisodeConfig:
        """The same settings with the task's own glimpse budget and grid where none was given.

        Raises:
            ValueError: for an unknown task or a value out of range.
        """
        task = get_task(self.task)
        return ResolvedEpisodeConfig(
            task=task.name,
            num_glimpses=task.default_num_glimpses if self.num_glimpses is None else self.num_glimpses,
            grid_size=task.default_grid_size if self.grid_size is None else self.grid_size,
            **{option.name: getattr(self, option.name) for option in fields(EpisodeOptions)},
        )
