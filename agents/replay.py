"""Replay buffers that store observations in float16: half the memory of SB3's, same API (dict observations,
``Box`` observations such as the ``map`` preset, and the latter with SB3's n-step returns).

One observation of the paper's agent state holds the latents and every 16x16 patch (about 46k values for the
tiny model, 87k for ViT-B with 14 glimpses), and SB3 keeps ``obs`` and ``next_obs`` apart, so the paper's
10k-transition buffer is 3.7 GB (tiny) to 7 GB (base) in float32. float16 keeps every value the env produces
representable (box coordinates are integers below 2048; normalised pixels and latents are O(1) to O(100)) and
halves that. Samples come back as float32 tensors.

Replay buffers are saved as plain arrays (:func:`save_replay_buffer`, an uncompressed ``.npz``) and read back with
``allow_pickle=False`` (:func:`load_replay_buffer`): unlike SB3's pickled buffers, a crafted file cannot run code.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
from gymnasium import spaces
from stable_baselines3.common.buffers import DictReplayBuffer, NStepReplayBuffer, ReplayBuffer
from stable_baselines3.common.type_aliases import DictReplayBufferSamples, ReplayBufferSamples
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


def _store_box_observations_in_float16(buffer: ReplayBuffer) -> None:
    # np.zeros pages are not touched yet, so replacing the float32 arrays costs nothing.
    buffer.observations = np.zeros(buffer.observations.shape, dtype=np.float16)
    if not buffer.optimize_memory_usage:
        buffer.next_observations = np.zeros(buffer.next_observations.shape, dtype=np.float16)


def _as_float32(samples: ReplayBufferSamples) -> ReplayBufferSamples:
    return samples._replace(
        observations=samples.observations.float(), next_observations=samples.next_observations.float()
    )


# Each buffer class defines its own __init__: the pickle-free loader (agents/sb3_files.py) names a zip's buffer
# class by the qualified name in the readable copy of its __init__.
class Float16ReplayBuffer(ReplayBuffer):
    """:class:`~stable_baselines3.common.buffers.ReplayBuffer` with float16 observation storage, for ``Box``
    observations such as the ``map`` preset (values O(1): pixels, detail, budget share). Samples are float32."""

    def __init__(self, buffer_size: int, observation_space: spaces.Space, *args: Any, **kwargs: Any) -> None:
        super().__init__(buffer_size, observation_space, *args, **kwargs)
        _store_box_observations_in_float16(self)

    def _get_samples(self, batch_inds: np.ndarray, env: VecNormalize | None = None) -> ReplayBufferSamples:
        return _as_float32(super()._get_samples(batch_inds, env))


class Float16NStepReplayBuffer(NStepReplayBuffer):
    """:class:`~stable_baselines3.common.buffers.NStepReplayBuffer` (n-step returns, SB3's ``n_steps``) with the
    float16 storage of :class:`Float16ReplayBuffer`. SB3 builds its own n-step buffer only when no
    ``replay_buffer_class`` is given, so the float16 presets switch to this one through
    :func:`float16_n_step_settings`."""

    def __init__(self, buffer_size: int, observation_space: spaces.Space, *args: Any, **kwargs: Any) -> None:
        super().__init__(buffer_size, observation_space, *args, **kwargs)
        _store_box_observations_in_float16(self)

    def _get_samples(self, batch_inds: np.ndarray, env: VecNormalize | None = None) -> ReplayBufferSamples:
        return _as_float32(super()._get_samples(batch_inds, env))


def float16_n_step_settings(settings: dict[str, Any]) -> dict[str, Any]:
    """An off-policy algorithm's constructor ``settings`` with SB3's ``n_steps`` honoured by the float16 buffer.

    SB3 ignores ``n_steps`` (with a warning) when a ``replay_buffer_class`` is given, which the ``map`` preset
    always does. Where ``settings`` ask for ``n_steps > 1`` with :class:`Float16ReplayBuffer`, this switches to
    :class:`Float16NStepReplayBuffer`. The dict presets (``full``, ``latent``) are left to SB3, which has no dict
    n-step buffer and drops ``n_steps`` with its warning.

    Args:
        settings: keyword arguments for an SB3 off-policy algorithm.

    Returns:
        ``settings`` unchanged, or with the n-step buffer, its ``n_steps`` and ``gamma`` (0.99 unless given: SB3's
        default for all its off-policy algorithms) in ``replay_buffer_kwargs``, and ``n_steps`` taken out of the
        algorithm's own arguments: the buffer computes the returns, so a saved model's ``n_steps`` reads 1 and
        its ``replay_buffer_kwargs`` hold the real value.

    Raises:
        ValueError: ``replay_buffer_kwargs`` that give another ``n_steps`` or ``gamma`` than the settings.
    """
    n_steps = settings.get("n_steps", 1)
    if n_steps <= 1 or settings.get("replay_buffer_class") is not Float16ReplayBuffer:
        return settings
    buffer_kwargs = {"n_steps": n_steps, "gamma": settings.get("gamma", 0.99)}
    given = dict(settings.get("replay_buffer_kwargs") or {})
    for key, value in buffer_kwargs.items():
        if key in given and given[key] != value:
            raise ValueError(
                f"n-step returns: replay_buffer_kwargs give {key}={given[key]!r} but the algorithm's {key} is "
                f"{value!r}; give {key} once, as the algorithm's argument"
            )
    rest = {key: value for key, value in settings.items() if key != "n_steps"}
    return {**rest, "replay_buffer_class": Float16NStepReplayBuffer, "replay_buffer_kwargs": {**given, **buffer_kwargs}}


def replay_buffer_bytes(
    buffer_size: int, observation_space: spaces.Dict | spaces.Box, dtype: np.dtype | type = np.float16
) -> int:
    """Bytes of observation storage (``obs`` + ``next_obs``) for ``buffer_size`` transitions (a flat ``Box``, the
    ``flat`` preset, is stored by SB3's plain replay buffer in float32 whatever ``dtype`` says; the ``map`` preset's
    image ``Box`` in ``dtype``)."""
    if isinstance(observation_space, spaces.Box):
        itemsize = np.dtype(dtype if len(observation_space.shape) == 3 else np.float32).itemsize
        return 2 * buffer_size * int(np.prod(observation_space.shape)) * itemsize
    per_observation = 0
    for space in observation_space.spaces.values():
        assert space.shape is not None
        per_observation += int(np.prod(space.shape))
    return 2 * buffer_size * per_observation * np.dtype(dtype).itemsize


# ------------------------------------------------------------------------------------------ pickle-free files
#: Written in the ``meta`` entry of every replay-buffer file; a file without it is not ours.
REPLAY_FORMAT = "adaglimpse-env/replay-buffer"
REPLAY_FORMAT_VERSION = 1
#: The arrays of an SB3 replay buffer that a file carries (``observations`` and ``next_observations`` are dicts of
#: arrays for Dict observation spaces; ``next_observations`` is absent with ``optimize_memory_usage``).
REPLAY_ARRAYS = ("observations", "next_observations", "actions", "rewards", "dones", "timeouts")
#: Bytes a ``.npy`` header may take beyond the array itself (NumPy pads headers to 64 bytes; 4 KiB is generous).
NPY_HEADER_BYTES = 4096


class ReplayBufferFileError(ValueError):
    """A replay-buffer file is unreadable, not ours, or does not fit the model it is loaded into."""


def _buffer_arrays(buffer: ReplayBuffer) -> dict[str, np.ndarray]:
    """``name -> array`` of every array ``buffer`` holds (dict observations as ``observations.<key>``)."""
    arrays: dict[str, np.ndarray] = {}
    for name in REPLAY_ARRAYS:
        value = getattr(buffer, name, None)
        if isinstance(value, dict):
            arrays.update({f"{name}.{key}": array for key, array in value.items()})
        elif isinstance(value, np.ndarray):
            arrays[name] = value
    return arrays


def save_replay_buffer(buffer: ReplayBuffer, path: str | Path, num_timesteps: int) -> None:
    """Write ``buffer`` as plain arrays: an uncompressed ``.npz`` that :func:`load_replay_buffer` reads with
    ``allow_pickle=False``, so the file can hold no code.

    Args:
        buffer: an SB3 replay buffer (plain or dict).
        path: destination (write it through :func:`adaglimpse_env.atomic.atomic_write`).
        num_timesteps: the model's step count, stored so that a loader can check the file belongs to its model.
    """
    meta = {
        "format": REPLAY_FORMAT,
        "format_version": REPLAY_FORMAT_VERSION,
        "num_timesteps": int(num_timesteps),
        "pos": int(buffer.pos),
        "full": bool(buffer.full),
        "buffer_size": int(buffer.buffer_size),
        "n_envs": int(buffer.n_envs),
    }
    arrays: dict[str, Any] = dict(_buffer_arrays(buffer))
    arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    with open(path, "wb") as handle:  # a file handle: np.savez would append .npz to a bare temporary name
        np.savez(handle, **arrays)


def read_replay_meta(path: str | Path) -> dict[str, Any]:
    """The ``meta`` record of a replay-buffer file, checked to be ours (nothing else is read).

    Raises:
        ReplayBufferFileError: the file is missing, not a zip of arrays, or has no valid ``meta`` record.
    """
    try:
        with zipfile.ZipFile(path) as archive:
            info = archive.getinfo("meta.npy")
            if info.file_size > NPY_HEADER_BYTES + 65_536 or info.compress_type != zipfile.ZIP_STORED:
                raise ReplayBufferFileError(f"replay buffer '{path}': its meta record is compressed or oversized")
            with archive.open(info) as handle:
                record = np.lib.format.read_array(handle, allow_pickle=False)
        meta = json.loads(record.tobytes().decode())
    except ReplayBufferFileError:
        raise
    except (OSError, KeyError, ValueError, zipfile.BadZipFile, UnicodeDecodeError) as error:
        raise ReplayBufferFileError(
            f"replay buffer '{path}' could not be read: it is missing, truncated or not a replay-buffer file "
            f"({type(error).__name__}: {str(error)[:200]})"
        ) from error
    if not isinstance(meta, dict) or meta.get("format") != REPLAY_FORMAT:
        raise ReplayBufferFileError(f"replay buffer '{path}' requires format {REPLAY_FORMAT!r}, got {meta!r:.200}")
    return meta


def load_replay_buffer(buffer: ReplayBuffer, path: str | Path, num_timesteps: int | None = None) -> None:
    """Fill ``buffer`` (already allocated by the model, e.g. ``model.replay_buffer``) from a file of
    :func:`save_replay_buffer`, in place.

    Every entry is checked before anything is allocated: stored uncompressed, its declared size no larger than the
    array it fills, then read with ``allow_pickle=False`` (an object array is refused, never unpickled) and
    required to have the buffer's exact shape and dtype.

    Args:
        buffer: the replay buffer to fill.
        path: the file.
        num_timesteps: if given, the step count the file must have been saved at.

    Raises:
        ReplayBufferFileError: naming the file and what does not match.
    """
    meta = read_replay_meta(path)
    expected = {"buffer_size": int(buffer.buffer_size), "n_envs": int(buffer.n_envs)}
    if num_timesteps is not None:
        expected["num_timesteps"] = int(num_timesteps)
    wrong = {key: meta.get(key) for key, value in expected.items() if meta.get(key) != value}
    pos: Any = meta.get("pos")
    if not isinstance(pos, int) or not 0 <= pos < buffer.buffer_size or not isinstance(meta.get("full"), bool):
        wrong["pos/full"] = (pos, meta.get("full"))
    if wrong:
        raise ReplayBufferFileError(f"replay buffer '{path}' requires {expected} and a valid position, got {wrong}")
    targets = _buffer_arrays(buffer)
    try:
        with zipfile.ZipFile(path) as archive:
            stored = {name.removesuffix(".npy"): archive.getinfo(name) for name in archive.namelist()}
            if set(stored) - {"meta"} != set(targets):
                got = sorted(set(stored) - {"meta"})
                raise ReplayBufferFileError(f"replay buffer '{path}' requires the arrays {sorted(targets)}, got {got}")
            for name, target in targets.items():
                info = stored[name]
                if info.compress_type != zipfile.ZIP_STORED or info.file_size > target.nbytes + NPY_HEADER_BYTES:
                    raise ReplayBufferFileError(
                        f"replay buffer '{path}': entry {name!r} declares {info.file_size} bytes "
                        f"(compression {info.compress_type}), but the buffer's array takes {target.nbytes}; refused "
                        "before reading it"
                    )
                with archive.open(info) as handle:
                    array = np.lib.format.read_array(handle, allow_pickle=False)
                if array.shape != target.shape or array.dtype != target.dtype:
                    raise ReplayBufferFileError(
                        f"replay buffer '{path}': entry {name!r} requires shape {target.shape} {target.dtype}, got "
                        f"{array.shape} {array.dtype} (saved with another --buffer-size, env or storage dtype?)"
                    )
                target[...] = array
    except ReplayBufferFileError:
        raise
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as error:
        raise ReplayBufferFileError(
            f"replay buffer '{path}' could not be read: it is truncated or corrupt "
            f"({type(error).__name__}: {str(error)[:200]})"
        ) from error
    buffer.pos, buffer.full = int(pos), bool(meta["full"])


def stored_transitions(path: str | Path) -> int:
    """Transitions held by the replay-buffer file at ``path`` (from its ``meta`` record alone)."""
    meta = read_replay_meta(path)
    return int(meta["buffer_size"] if meta["full"] else meta["pos"]) * int(meta["n_envs"])
