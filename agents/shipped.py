"""Trained agents shipped with the package, stored without pickle: the weights of the network that acts (a plain
tensor state dict, read with ``torch.load(weights_only=True)``) beside a small JSON of the settings needed to rebuild
it. That network is SAC's actor, or the map critic for an agent that acts by searching it
(:mod:`agents.critic_search`; the settings then hold the search and the glimpse geometry).

``sb3:sac:embedded`` in ``scripts/evaluate.py`` and ``scripts/visualize_episode.py`` loads the SAC agent trained by the
default ``train_sac.py`` run on ``AdaGlimpse-ClutteredDigits-Fast-v0`` (it acts on ``AdaGlimpse-ClutteredDigits-v0``
too; its command, wall time and results are in its JSON and docs/results.md), so a new user sees a trained policy in
seconds. :func:`export_agent` writes the same pair for any SAC run.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from gymnasium import spaces
from stable_baselines3 import SAC
from stable_baselines3.common.policies import BasePolicy
from stable_baselines3.sac.policies import MlpPolicy, MultiInputPolicy

from adaglimpse_env import GlimpseVectorEnv
from agents.map_critic import MapSACPolicy, glimpse_geometry_of
from agents.trunks import policy_setup

#: Shipped agents by name: ``sb3:sac:<name>``.
SHIPPED_AGENTS = {"embedded": "sac_digits"}
#: Where they lie: beside this module, found from its own file rather than by looking the name ``agents`` up
#: again, which under an editable install resolves to any folder called ``agents`` without an ``__init__.py`` on
#: ``sys.path`` (the path search runs before setuptools' editable finder), as the test folder once named
#: ``tests/agents`` did under pytest (now ``tests/agent_tests``) and a user's own ``agents`` folder can.
ASSETS = Path(__file__).resolve().parent / "assets"
#: 2: "acts_with" says which network the weights are ("actor" or "critic_search"); 1 (actor only) still loads.
#: Since format 2 a ``map`` agent may record its "features_extractor_kwargs" and "net_arch"; files without them
#: hold the networks of earlier agents (the stride-4 trunk of :class:`agents.map_features.GlimpseMapExtractor`,
#: 256-wide heads).
FORMAT_VERSION = 2
#: The map trunk of agents whose settings do not record one.
_LEGACY_MAP_TRUNK = {"feature_stride": 4}
#: Policy arguments a ``map`` agent's settings record, so that later defaults never change what it rebuilds.
_RECORDED_MAP_ARCHITECTURE = ("features_extractor_kwargs", "net_arch")


class ShippedAgentError(ValueError):
    """A shipped-agent file pair is missing, malformed, or does not fit the env it is loaded for."""


def agent_files(name_or_stem: str | Path) -> tuple[Path, Path]:
    """``(weights .pt, settings .json)`` of a shipped agent name or of a path stem (``runs/x/agent``)."""
    if isinstance(name_or_stem, str) and name_or_stem in SHIPPED_AGENTS:
        stem = ASSETS / SHIPPED_AGENTS[name_or_stem]
    else:
        stem = Path(name_or_stem)
        stem = stem.with_suffix("") if stem.suffix in (".pt", ".json") else stem
    return stem.with_suffix(".pt"), stem.with_suffix(".json")


def export_agent(
    model: SAC,
    stem: str | Path,
    env_id: str,
    observation: str,
    metadata: dict[str, Any],
    num_glimpses: int | None = None,
) -> tuple[Path, Path]:
    """Write the network that acts for ``model`` (its actor, or its critic when it acts by critic search) as
    ``<stem>.pt`` (float32 tensors only) and its settings as ``<stem>.json``.

    Args:
        model: a trained SAC on a glimpse env.
        stem: path without suffix.
        env_id: the id it was trained on.
        observation: the env's observation preset (``full``, ``latent``, ``flat`` or ``map``).
        metadata: anything worth keeping (command, wall time, results); must be JSON-serialisable.
        num_glimpses: the episode budget it was trained with, recorded for its users (an agent may act in an env of
            another budget: the critic-search agent trained on the 6-glimpse fast id reads as many digits on the
            14-glimpse id, docs/results.md).
    """
    weights, settings = agent_files(stem)
    weights.parent.mkdir(parents=True, exist_ok=True)
    search = getattr(model.policy, "critic_search_settings", None)
    acting = model.critic if search is not None else model.actor
    state = {key: value.detach().float().cpu().contiguous() for key, value in acting.state_dict().items()}
    torch.save(state, weights)
    record: dict[str, Any] = {
        **metadata,  # first: the fields below describe the files and must not be overwritten
        "format_version": FORMAT_VERSION,
        "algorithm": "sac",
        "env_id": env_id,
        "observation": observation,
        "policy": type(model.policy).__name__,
        "observation_shape": list(model.observation_space.shape) if model.observation_space.shape else None,
        "num_glimpses": num_glimpses,
        "acts_with": "critic_search" if search is not None else "actor",
        "parameters": int(sum(t.numel() for t in state.values())),
    }
    if observation == "map":
        for key in _RECORDED_MAP_ARCHITECTURE:
            if key in model.policy_kwargs:
                record[key] = model.policy_kwargs[key]
        # The stride the trunk was built with, even where policy_kwargs left it to the default.
        extractor = model.policy.actor.features_extractor
        stride = getattr(extractor, "feature_stride", None)
        if stride is not None:
            record["features_extractor_kwargs"] = {
                **record.get("features_extractor_kwargs", {}),
                "feature_stride": stride,
            }
    if search is not None:
        record["critic_search"] = dict(search)
        record["glimpse_geometry"] = model.policy.glimpse_geometry
    settings.write_text(json.dumps(record, indent=1) + "\n")
    return weights, settings


def load_agent(name_or_stem: str | Path, env: GlimpseVectorEnv, device: str = "cpu") -> BasePolicy:
    """The SB3 SAC policy of a shipped (or exported) agent, ready for ``predict(observation, deterministic=True)``
    on ``env``.

    Nothing is unpickled: the weights are read with ``torch.load(weights_only=True)`` and the architecture is
    rebuilt from the env's spaces (the trunk :func:`agents.sac.make_sac` gives the env's observation preset).

    Raises:
        ShippedAgentError: missing files, a malformed settings file, or an env whose observation preset or
            spaces do not match the agent.
    """
    weights, settings_path = agent_files(name_or_stem)
    if not weights.is_file() or not settings_path.is_file():
        raise ShippedAgentError(
            f"agent {str(name_or_stem)!r} requires {weights} and {settings_path}; shipped names: {list(SHIPPED_AGENTS)}"
        )
    try:
        settings = json.loads(settings_path.read_text())
        preset = settings["observation"]
    except (json.JSONDecodeError, KeyError, TypeError) as error:
        raise ShippedAgentError(f"{settings_path} is not an agent settings file: {error}") from error
    if env.episode.observation != preset:
        raise ShippedAgentError(
            f"agent {str(name_or_stem)!r} was trained with observation={preset!r} on {settings.get('env_id')}; "
            f"the env has observation={env.episode.observation!r}: make it with observation={preset!r}"
        )
    space, action_space = env.single_observation_space, env.single_action_space
    assert isinstance(action_space, spaces.Box)
    shape = settings.get("observation_shape")
    if shape is not None and tuple(shape) != space.shape:
        raise ShippedAgentError(
            f"agent {str(name_or_stem)!r} was trained on observations of shape {tuple(shape)}; the env gives "
            f"{space.shape} (e.g. another map_size): make the env as the agent's settings file says"
        )
    setup = policy_setup(space)
    policy_class = {"MultiInputPolicy": MultiInputPolicy, "MlpPolicy": MlpPolicy, "CnnPolicy": MapSACPolicy}
    kwargs = dict(setup.policy_kwargs)
    if setup.policy == "CnnPolicy":
        trunk = settings.get("features_extractor_kwargs", _LEGACY_MAP_TRUNK)
        if not isinstance(trunk, dict):
            raise ShippedAgentError(f"{settings_path}: features_extractor_kwargs must be a JSON object, got {trunk!r}")
        kwargs["features_extractor_kwargs"] = {**kwargs["features_extractor_kwargs"], **_LEGACY_MAP_TRUNK, **trunk}
        if "net_arch" in settings:
            kwargs["net_arch"] = settings["net_arch"]
    acts_with = settings.get("acts_with", "actor")  # format 1 files hold an actor
    if acts_with == "critic_search":
        geometry = glimpse_geometry_of(env)
        if geometry != settings.get("glimpse_geometry"):
            raise ShippedAgentError(
                f"agent {str(name_or_stem)!r} searches glimpses of geometry {settings.get('glimpse_geometry')} (image "
                f"size, smallest and largest glimpse); the env cuts {geometry}: make the env as its settings say"
            )
        if not isinstance(settings.get("critic_search"), dict):
            raise ShippedAgentError(f"{settings_path}: acts_with 'critic_search' requires the search's settings")
        kwargs.update(glimpse_geometry=geometry, critic_search=settings["critic_search"])
    elif acts_with != "actor":
        raise ShippedAgentError(f"{settings_path}: acts_with must be 'actor' or 'critic_search', got {acts_with!r}")
    try:
        policy = policy_class[setup.policy](space, action_space, lambda _: 0.0, **kwargs)
    except (TypeError, ValueError) as error:
        raise ShippedAgentError(f"{settings_path} does not describe a policy for this env: {error}") from error
    state = torch.load(weights, map_location="cpu", weights_only=True)
    try:
        (policy.critic if acts_with == "critic_search" else policy.actor).load_state_dict(state)
    except RuntimeError as error:
        raise ShippedAgentError(
            f"agent {str(name_or_stem)!r} does not fit this env (trained on {settings.get('env_id')}): {error}"
        ) from error
    return policy.to(device).eval()
