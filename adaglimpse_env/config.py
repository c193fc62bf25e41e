"""Episode configuration with the paper's defaults (original action space; original `_forward_task`)."""

from __future__ import annotations

import math
from dataclasses import dataclass

from adaglimpse_env.models.heads import TASKS
from adaglimpse_env.tasks import get_task

REWARD_TYPES = ("diff", "final", "raw")
OBSERVATION_PRESETS = ("full", "latent", "flat", "map")


@dataclass(frozen=True)
class EpisodeConfig:
    """What an episode is and what the agent sees.

    Attributes:
        task: ``reconstruction``, ``classification`` or ``segmentation``.
        num_glimpses: glimpses per episode (None: the paper's value for the task).
        grid_size: ``g``; each glimpse gives ``g * g`` patch tokens (None: the paper's value for the task).
        max_glimpse_ratio: largest glimpse side as a fraction of the image side.
        reward: ``diff`` (score improvement, the paper's default), ``final`` (final minus initial score, paid at
            the last step) or ``raw`` (the score itself at every step).
        early_stop_threshold: end an episode as soon as its score reaches this value (original `_forward_task`).
        observation: ``full`` (the original agent's state), ``latent`` (latent, coords, mask) or ``flat``
            (one vector: cls latent, normalised boxes, mask) or ``map`` (a ``(5, M, M)`` picture of what the
            glimpses showed, where they showed it; :mod:`adaglimpse_env.envs.glimpse_map`).
        map_size: ``M``, the side of the ``map`` observation.
        extract_latent_layer: observe the input of this encoder block instead of the final latent (original
        `aux_latent_layer`).
    """

    task: str = "reconstruction"
    num_glimpses: int | None = None
    grid_size: int | None = None
    max_glimpse_ratio: float = 1.0
    reward: str = "diff"
    early_stop_threshold: float | None = None
    observation: str = "full"
    extract_latent_layer: int | None = None
    map_size: int = 64

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise ValueError(f"task must be one of {list(TASKS)}, got {self.task!r}")
        task = get_task(self.task)
        if self.num_glimpses is None:
            object.__setattr__(self, "num_glimpses", task.default_num_glimpses)
        if self.grid_size is None:
            object.__setattr__(self, "grid_size", task.default_grid_size)
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

    @property
    def tokens_per_glimpse(self) -> int:
        """``g * g``."""
        assert self.grid_size is not None
        return self.grid_size**2

    @property
    def max_tokens(self) -> int:
        """``P = num_glimpses * g * g``, the padded token budget of an observation."""
        assert self.num_glimpses is not None
        return self.num_glimpses * self.tokens_per_glimpse
