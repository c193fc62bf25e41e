"""Which SB3 policy, trunk and replay buffer fit each observation preset, for any algorithm.

===========  ====================  ==========================================  ==========================
preset       SB3 policy            trunk                                       replay buffer (off-policy)
===========  ====================  ==========================================  ==========================
``full``     ``MultiInputPolicy``  the paper's (:mod:`agents.features`)        float16 dict
``latent``   ``MultiInputPolicy``  the paper's over latents and boxes          float16 dict
``flat``     ``MlpPolicy``         SB3's MLP                                   SB3's float32
``map``      ``CnnPolicy``         small CNN + soft-argmax                     float16
                                   (:mod:`agents.map_features`)
===========  ====================  ==========================================  ==========================
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from gymnasium import spaces
from stable_baselines3.common.buffers import ReplayBuffer

from agents.features import STREAMS, GlimpseFeaturesExtractor, sac_policy_kwargs
from agents.map_features import map_policy_kwargs
from agents.replay import Float16DictReplayBuffer, Float16ReplayBuffer


@dataclass
class PolicySetup:
    """Arguments of an SB3 algorithm for one observation space.

    Attributes:
        policy: SB3 policy name.
        policy_kwargs: its ``policy_kwargs``.
        replay_buffer_class: the float16 buffer for off-policy algorithms, or None for SB3's default.
    """

    policy: str
    policy_kwargs: dict[str, Any] = field(default_factory=dict)
    replay_buffer_class: type[ReplayBuffer] | None = None


def policy_setup(space: spaces.Space, on_policy: bool = False, float16_buffer: bool = True) -> PolicySetup:
    """The policy, trunk and buffer for a glimpse env's observation space (see the module table).

    Args:
        space: the env's (single or batched SB3) observation space.
        on_policy: for PPO/A2C: their own policy layout (no ``net_arch`` split), no replay buffer.
        float16_buffer: store replayed observations in float16 where the preset allows.

    Raises:
        ValueError: a space no preset makes.
    """
    if isinstance(space, spaces.Dict):
        missing = tuple(name for name in STREAMS if name not in space.spaces)
        if on_policy:
            kwargs: dict[str, Any] = {
                "features_extractor_class": GlimpseFeaturesExtractor,
                "features_extractor_kwargs": {"exclude_inputs": missing},
                "share_features_extractor": False,
            }
            return PolicySetup("MultiInputPolicy", kwargs)
        dict_buffer = Float16DictReplayBuffer if float16_buffer else None
        return PolicySetup("MultiInputPolicy", sac_policy_kwargs(exclude_inputs=missing), dict_buffer)
    if isinstance(space, spaces.Box) and len(space.shape) == 3:
        map_buffer = None if on_policy or not float16_buffer else Float16ReplayBuffer
        return PolicySetup("CnnPolicy", map_policy_kwargs(), map_buffer)
    if isinstance(space, spaces.Box) and len(space.shape) == 1:
        return PolicySetup("MlpPolicy")
    raise ValueError(f"a glimpse agent requires a Dict, (C, M, M) Box or flat Box observation space, got {space}")
