"""Load SB3 model zips without unpickling anything in them.

An SB3 zip stores its settings in a JSON ``data`` entry; whatever JSON cannot hold (spaces, classes, schedules,
the last observations) is a base64 cloudpickle under ``":serialized:"``, which ``BaseAlgorithm.load`` unpickles:
a crafted zip runs code. SB3 skips the unpickling of every key given in ``custom_objects``, so
:func:`load_sb3` builds a replacement for *every* serialized key from plain data instead, and refuses a zip holding
one it cannot rebuild:

* ``observation_space`` / ``action_space``: the env's (checked against the readable copy SB3 writes beside the
  pickle);
* ``policy_class``, ``replay_buffer_class``, ``rollout_buffer_class``: looked up by name in an allow-list;
* ``policy_kwargs``: its readable copy, with class names resolved through the same allow-list;
* schedules (``learning_rate``, ``lr_schedule``, ``clip_range``, ...): a constant read from the readable copy, or
  one that fails clearly if training ever calls it (pass the real one in ``custom_objects`` to train);
* run state that ``learn`` rebuilds when it is ``None`` (last observations, episode buffers, train frequency,
  batch-norm statistics).

The weights (``*.pth``) are read by SB3 with ``torch.load(weights_only=True)``. ``trust_pickle=True`` is the
explicit opt-out for third-party zips with other pickled entries (``--trust-pickle`` on the command line).
"""

from __future__ import annotations

import importlib
import json
import re
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import gymnasium as gym
from stable_baselines3.common.base_class import BaseAlgorithm

Algorithm = TypeVar("Algorithm", bound=BaseAlgorithm)

#: Largest ``data`` entry read (it holds settings and base64 observations; ours are a few MB).
MAX_DATA_BYTES = 256 * 2**20
#: Classes a zip may name (in ``policy_class``, buffer classes and ``policy_kwargs``): the project's and SB3's.
ALLOWED_CLASSES = {
    "agents.features.GlimpseFeaturesExtractor",
    "agents.replay.Float16DictReplayBuffer",
    "agents.replay.Float16ReplayBuffer",
    "agents.replay.Float16NStepReplayBuffer",
    "agents.map_features.GlimpseMapExtractor",
    "stable_baselines3.common.buffers.ReplayBuffer",
    "stable_baselines3.common.buffers.DictReplayBuffer",
    "stable_baselines3.common.buffers.NStepReplayBuffer",
    "stable_baselines3.common.buffers.RolloutBuffer",
    "stable_baselines3.common.buffers.DictRolloutBuffer",
    "stable_baselines3.common.torch_layers.FlattenExtractor",
    "stable_baselines3.common.torch_layers.CombinedExtractor",
    "stable_baselines3.common.torch_layers.NatureCNN",
    *(f"torch.nn.modules.activation.{name}" for name in ("ReLU", "GELU", "Tanh", "SiLU", "ELU", "LeakyReLU")),
    *(
        f"torch.optim.{module}.{name}"
        for module, name in (("adam", "Adam"), ("adamw", "AdamW"), ("rmsprop", "RMSprop"))
    ),
}
#: The project's own policy classes a zip may name, beside the algorithm's SB3 aliases (for the ``map`` preset).
PROJECT_POLICIES = {
    "agents.map_critic.MapSACPolicy",
    "agents.grid_policy.GlimpseGridPolicy",
    "agents.grid_dqn.GlimpseGridQPolicy",
}
#: Serialized keys that ``learn`` / ``_setup_model`` rebuild when absent: replaced by ``None``.
REBUILT_KEYS = (
    "_last_obs",
    "_last_original_obs",
    "_last_episode_starts",
    "ep_info_buffer",
    "ep_success_buffer",
    "batch_norm_stats",
    "batch_norm_stats_target",
)
#: Serialized schedule keys.
SCHEDULE_KEYS = ("learning_rate", "lr_schedule", "clip_range", "clip_range_vf", "exploration_schedule")
_CLASS_REPR = re.compile(r"<class '([\w.]+)'>")
_FUNCTION_REPR = re.compile(r"<function ([\w.]+)\.__init__ at")
_CONSTANT = re.compile(r"ConstantSchedule\(val=([-+0-9.eE]+|inf|nan)\)")


class SB3FileError(ValueError):
    """An SB3 zip is unreadable, holds pickled entries this loader will not rebuild, or does not fit the env."""


def read_sb3_data(path: str | Path) -> dict[str, Any]:
    """The raw JSON ``data`` of an SB3 zip, without unpickling anything (serialized entries stay as dicts).

    Raises:
        SB3FileError: the file is missing, not a zip, or its ``data`` is oversized or not JSON.
    """
    try:
        with zipfile.ZipFile(path) as archive:
            info = archive.getinfo("data")
            if info.file_size > MAX_DATA_BYTES:
                raise SB3FileError(
                    f"SB3 zip '{path}': its data entry declares {info.file_size} bytes, more than the "
                    f"{MAX_DATA_BYTES} this loader reads; refused before reading it"
                )
            data = json.loads(archive.read(info))
    except SB3FileError:
        raise
    except (OSError, KeyError, ValueError, zipfile.BadZipFile) as error:
        raise SB3FileError(
            f"SB3 zip '{path}' could not be read: it is missing, truncated or not an SB3 model zip "
            f"({type(error).__name__}: {str(error)[:200]})"
        ) from error
    if not isinstance(data, dict):
        raise SB3FileError(f"SB3 zip '{path}': its data entry requires a JSON object, got {type(data).__name__}")
    return data


def allowed_class(name: str, path: str | Path, key: str, allowed: set[str] = ALLOWED_CLASSES) -> type:
    """Import the class ``name`` if it is in ``allowed`` (:data:`ALLOWED_CLASSES` by default), else refuse."""
    if name not in allowed:
        raise SB3FileError(
            f"SB3 zip '{path}': {key} names the class {name!r}, which is not one this loader rebuilds "
            f"({len(allowed)} allowed); if you trust the file, load it with --trust-pickle"
        )
    module, _, attribute = name.rpartition(".")
    return getattr(importlib.import_module(module), attribute)


def _class_from_readable(item: dict[str, Any], path: str | Path, key: str) -> type:
    """A class from SB3's readable copy of a pickled class: its ``__module__`` plus the name in its ``__init__``."""
    init = _FUNCTION_REPR.match(str(item.get("__init__", "")))
    if not init or not isinstance(item.get("__module__"), str):
        raise SB3FileError(f"SB3 zip '{path}': {key} is a pickled object this loader cannot identify by name")
    return allowed_class(f"{item['__module__']}.{init.group(1)}", path, key)


def _policy_class(algorithm: type[BaseAlgorithm], item: dict[str, Any], path: str | Path) -> type:
    init = _FUNCTION_REPR.match(str(item.get("__init__", "")))
    name = init.group(1) if init else ""
    aliases = getattr(algorithm, "policy_aliases", {})
    for alias, policy in aliases.items():  # SB3's MlpPolicy *is* SACPolicy: a zip names the class, not the alias
        if name in (alias, policy.__name__) and policy.__module__ == item.get("__module__"):
            return policy
    module = str(item.get("__module__", "?"))
    if f"{module}.{name}" in PROJECT_POLICIES:
        policy_class = allowed_class(f"{module}.{name}", path, "policy_class", PROJECT_POLICIES)
        if any(issubclass(policy_class, alias) for alias in aliases.values()):
            return policy_class
    trained = re.match(r"(?:stable_baselines3|sb3_contrib)\.(\w+)\.policies", module)
    hint = f" (it is a {trained.group(1)} zip: load it as sb3:{trained.group(1)}:<path>)" if trained else ""
    raise SB3FileError(
        f"SB3 zip '{path}': policy_class requires one of {algorithm.__name__}'s own policies {sorted(aliases)}, got "
        f"{module}.{name or '?'}{hint}; if you trust the file, load it with --trust-pickle"
    )


def _resolve_readable(value: Any, path: str | Path, key: str) -> Any:
    """Plain JSON values as they are; ``"<class 'x.Y'>"`` strings through the allow-list (recursively)."""
    if isinstance(value, dict):
        return {name: _resolve_readable(item, path, f"{key}.{name}") for name, item in value.items()}
    if isinstance(value, list):
        return [_resolve_readable(item, path, key) for item in value]
    if isinstance(value, str):
        found = _CLASS_REPR.fullmatch(value)
        if found:
            return allowed_class(found.group(1), path, key)
    return value


def _unrestored_schedule(key: str, path: str | Path) -> Callable[[float], float]:
    """Stands for a pickled schedule function: 0 when SB3 builds the optimisers (``progress_remaining == 1``; the
    saved optimiser state then sets the real rate), a clear error if training ever asks for a rate."""

    def schedule(progress_remaining: float) -> float:
        if progress_remaining == 1.0:
            return 0.0
        raise RuntimeError(
            f"the {key} schedule of '{path}' was a pickled function and was not restored; to train this model "
            f"further, load it with custom_objects={{{key!r}: <schedule>}}"
        )

    return schedule


def _schedule(item: dict[str, Any], key: str, path: str | Path) -> Any:
    constant = _CONSTANT.fullmatch(str(item.get("value_schedule", "")))
    return float(constant.group(1)) if constant else _unrestored_schedule(key, path)


def _check_space(item: dict[str, Any], space: gym.Space, key: str, path: str | Path) -> None:
    """Compare SB3's readable copy of a pickled space with the env's space (sub-spaces or shape)."""
    if isinstance(space, gym.spaces.Dict) and "spaces" in item:
        got, expected = str(item["spaces"]), str(space.spaces)
    elif "_shape" in item:
        got, expected = str(item["_shape"]), str(list(space.shape or ()))
    else:
        return
    if got != expected:
        raise SB3FileError(
            f"SB3 zip '{path}': {key} requires the env's {expected}, got {got} (trained on another env or preset)"
        )


def safe_custom_objects(
    algorithm: type[BaseAlgorithm],
    path: str | Path,
    observation_space: gym.Space,
    action_space: gym.Space,
    given: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A replacement for every pickled entry of the zip at ``path`` (SB3's ``custom_objects``), built from plain
    data only.

    Raises:
        SB3FileError: an entry cannot be rebuilt, or the zip's spaces are not the env's.
    """
    given = dict(given or {})
    objects: dict[str, Any] = {}
    for key, item in read_sb3_data(path).items():
        if key in given or not (isinstance(item, dict) and ":serialized:" in item):
            continue
        if key in ("observation_space", "action_space"):
            space = observation_space if key == "observation_space" else action_space
            _check_space(item, space, key, path)
            objects[key] = space
        elif key == "policy_class":
            objects[key] = _policy_class(algorithm, item, path)
        elif key in ("replay_buffer_class", "rollout_buffer_class"):
            objects[key] = _class_from_readable(item, path, key)
        elif key == "policy_kwargs":
            objects[key] = _resolve_readable({k: v for k, v in item.items() if not k.startswith(":")}, path, key)
        elif key in SCHEDULE_KEYS:
            objects[key] = _schedule(item, key, path)
        elif key in REBUILT_KEYS:
            objects[key] = None
        elif key == "train_freq":
            objects[key] = 1  # SB3 rebuilds TrainFreq(1, "step"); pass the run's own value to train further
        else:
            raise SB3FileError(
                f"SB3 zip '{path}': the entry {key!r} is pickled and this loader does not rebuild it; if you trust "
                "the file, load it with --trust-pickle"
            )
    return {**objects, **given}


def load_sb3(
    algorithm: type[Algorithm],
    path: str | Path,
    observation_space: gym.Space,
    action_space: gym.Space,
    env: Any = None,
    device: str = "auto",
    custom_objects: dict[str, Any] | None = None,
    trust_pickle: bool = False,
) -> Algorithm:
    """``algorithm.load(path)`` with nothing in the zip unpickled (see the module docstring).

    Args:
        algorithm: the SB3 class (``SAC``, ``PPO``, ...).
        path: the zip.
        observation_space: the single-env observation space the model acts in.
        action_space: its action space.
        env: the SB3 ``VecEnv`` to attach (to train further), or ``None``.
        device: where the networks go.
        custom_objects: replacements that take precedence (e.g. the run's learning-rate schedule).
        trust_pickle: unpickle what the zip holds, as plain SB3 does (only for files you trust).

    Raises:
        SB3FileError: the zip cannot be read, or holds a pickled entry this loader does not rebuild.
    """
    if trust_pickle:
        objects = dict(custom_objects or {})
    else:
        objects = safe_custom_objects(algorithm, path, observation_space, action_space, custom_objects)
    try:
        return algorithm.load(path, env=env, device=device, custom_objects=objects)
    except (OSError, KeyError, RuntimeError, zipfile.BadZipFile) as error:
        raise SB3FileError(
            f"SB3 zip '{path}' could not be loaded as {algorithm.__name__} ({type(error).__name__}: "
            f"{str(error).strip().splitlines()[0][:200] if str(error).strip() else ''})"
        ) from error
