"""adaglimpse-env: Gymnasium environments for active visual exploration with arbitrary glimpse position and
scale, after AdaGlimpse (Pardyl et al., ECCV 2024).

Importing the package registers the env ids (see :mod:`adaglimpse_env.registration`).
"""

from adaglimpse_env.config import EpisodeConfig, ResolvedEpisodeConfig
from adaglimpse_env.envs import GlimpseEnv, GlimpseVectorEnv
from adaglimpse_env.registration import ENV_PRESETS, register_envs

__version__ = "0.1.0"

register_envs()

__all__ = [
    "ENV_PRESETS",
    "EpisodeConfig",
    "GlimpseEnv",
    "GlimpseVectorEnv",
    "ResolvedEpisodeConfig",
    "__version__",
    "register_envs",
]
