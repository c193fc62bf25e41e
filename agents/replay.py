"""A dict replay buffer that stores observations in float16: half the memory of SB3's, same API.

One observation of the paper's agent state holds the latents and every 16x16 patch (about 46k values for the
tiny model, 87k for ViT-B with 14 glimpses), and SB3 keeps ``obs`` and ``next_obs`` apart, so the paper's
10k-transition buffer is 3.7 GB (tiny) to 7 GB (base) in float32. float16 keeps every value the env produces
representable (box coordinates are integers below 2048; normalised pixels and latents are O(1) to O(100)) and
halves that. Samples come back as float32 tensors.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from gymnasium import spaces
from stable_baselines3.common.buffers import DictReplayBuffer
from stable_baselines3.common.type_aliases import DictReplayBufferSamples
from stable_baselines3.common.vec_env import VecNormalize


class Float16DictReplayBuffer(DictReplayBuffer):
    """:class:`~stable_baselines3.common.buffers.DictReplayBuffer` with float16 observation storage.

    Pass it to an SB3 off-policy algorithm with ``replay_buffer_class=Float16DictReplayBuffer``.
    """

    def __init__(self, buffer_size: int, observation_space: spaces.Dict, *args: Any, **kwargs: Any) -> None:
        super().__init__(buffer_size, observation_space, *args, **kwargs)
        # np.zeros pages are not touched yet, so replacing the float32 arrays costs nothing.
        for storage in (self.observations, self.next_observations):
            for key, array in storage.items():
                if np.issubdtype(array.dtype, np.floating):
                    storage[key] = np.zeros(array.shape, dtype=np.float16)

    def _get_samples(  # type: ignore[override]
        self, batch_inds: np.ndarray, env: VecNormalize | None = None
    ) -> DictReplayBufferSamples:
        samples = super()._get_samples(batch_inds, env)
        return DictReplayBufferSamples(
            observations={k: v.float() if v.is_floating_point() else v for k, v in samples.observations.items()},
            actions=samples.actions,
            next_observations={
                k: v.float() if v.is_floating_point() else v for k, v in samples.next_observations.items()
            },
            dones=samples.dones,
            rewards=samples.rewards,
        )


def replay_buffer_bytes(
    buffer_size: int, observation_space: spaces.Dict | spaces.Box, dtype: np.dtype | type = np.float16
) -> int:
    """Bytes of observation storage (``obs`` + ``next_obs``) for ``buffer_size`` transitions (a ``Box`` space, the
    ``flat`` preset, is stored by SB3's plain replay buffer in float32 whatever ``dtype`` says)."""
    if isinstance(observation_space, spaces.Box):
        return 2 * buffer_size * int(np.prod(observation_space.shape)) * np.dtype(np.float32).itemsize
    per_observation = 0
    for space in observation_space.spaces.values():
        assert space.shape is not None
        per_observation += int(np.prod(space.shape))
    return 2 * buffer_size * per_observation * np.dtype(dtype).itemsize
