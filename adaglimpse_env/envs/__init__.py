"""The environments: a native batched vector env and its single-env view."""

from adaglimpse_env.envs.glimpse_env import GlimpseEnv
from adaglimpse_env.envs.vector_env import GlimpseVectorEnv

__all__ = ["GlimpseEnv", "GlimpseVectorEnv"]
