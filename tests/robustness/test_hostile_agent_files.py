"""Hostile agent files: SB3 model zips and replay buffers carrying a pickle whose ``__reduce__`` writes a marker
file. Nothing in them may run: every path that reads an agent file (``load_policy`` for ``evaluate.py`` and
``visualize_episode.py``, ``train_sac.py --resume``, the replay-buffer loader) either rebuilds the entry from plain
data or refuses the file. A control test runs each payload the way plain SB3 / NumPy would, proving it is live."""

from __future__ import annotations

import base64
import json
import pickle
import shutil
import sys
import zipfile
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
from PIL import Image
from stable_baselines3 import SAC
from stable_baselines3.common.vec_env import VecMonitor
from tiny_models import tiny_model

import adaglimpse_env  # noqa: F401  (registers the ids)
from adaglimpse_env.models import save_model
from agents.policies import load_policy
from agents.replay import ReplayBufferFileError, load_replay_buffer
from agents.run_folder import RunFolderError, save_checkpoint
from agents.sac import make_sac
from agents.sb3_adapter import GlimpseSB3VecEnv
from agents.sb3_files import SB3FileError, load_sb3

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))
import train_sac


class WritesMarker:
    """Unpickling this calls ``Path.write_text(marker, "ran")``: the stand-in for any code a pickle can run."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> Any:
        return (Path.write_text, (self.marker, "ran"))


@pytest.fixture(scope="module")
def env_kwargs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("agent_files_env")
    for i in range(3):
        Image.fromarray(np.random.default_rng(i).integers(0, 255, (64, 80, 3), dtype=np.uint8)).save(root / f"{i}.png")
    save_model(root / "tiny.pt", tiny_model(), "reconstruction")
    return {"data_root": str(root), "checkpoint": str(root / "tiny.pt"), "num_glimpses": 2}


@pytest.fixture(scope="module")
def run(env_kwargs: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run folder with the checkpoint of a tiny SAC at step 16 (model and replay buffer)."""
    env = gym.make_vec("AdaGlimpse-ImageFolder-v0", num_envs=2, autoreset_mode="same_step", **env_kwargs)
    model = make_sac(VecMonitor(GlimpseSB3VecEnv(env)), seed=0, learning_starts=8, buffer_size=64, batch_size=8)
    model.learn(16)
    folder = tmp_path_factory.mktemp("agent_files_run")
    save_checkpoint(model, folder, save_replay_buffer=True)
    return folder


@pytest.fixture
def env(env_kwargs: dict[str, Any]) -> Any:
    vector = gym.make_vec("AdaGlimpse-ImageFolder-v0", num_envs=2, **env_kwargs)
    yield vector
    vector.close()


def serialized(payload: Any) -> dict[str, str]:
    return {":type:": "<class 'object'>", ":serialized:": base64.b64encode(pickle.dumps(payload)).decode()}


def with_data(source: Path, target: Path, change: dict[str, Any]) -> Path:
    """A copy of the SB3 zip ``source`` whose ``data`` entries in ``change`` are replaced."""
    with zipfile.ZipFile(source) as original, zipfile.ZipFile(target, "w") as copy:
        for name in original.namelist():
            content = original.read(name)
            if name == "data":
                content = json.dumps({**json.loads(content), **change}).encode()
            copy.writestr(name, content)
    return target


@pytest.mark.parametrize("key", ["observation_space", "policy_class", "lr_schedule", "_last_obs", "ep_info_buffer"])
def test_payload_in_a_rebuilt_entry_never_runs(run: Path, env: Any, tmp_path: Path, key: str) -> None:
    marker = tmp_path / "marker"
    readable = json.loads(zipfile.ZipFile(run / "model.zip").read("data"))[key]  # SB3's readable copy stays
    entry = {**readable, ":serialized:": serialized(WritesMarker(marker))[":serialized:"]}
    crafted = with_data(run / "model.zip", tmp_path / "model.zip", {key: entry})
    policy = load_policy(f"sb3:sac:{crafted}", env)
    assert isinstance(policy, SAC) and policy.num_timesteps == 16
    assert not marker.exists()


def test_payload_in_an_unknown_entry_is_refused_unrun(run: Path, env: Any, tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    crafted = with_data(run / "model.zip", tmp_path / "model.zip", {"_evil": serialized(WritesMarker(marker))})
    with pytest.raises(SB3FileError, match=r"the entry '_evil' is pickled .* --trust-pickle"):
        load_policy(f"sb3:sac:{crafted}", env)
    assert not marker.exists()


def test_class_outside_the_allow_list_is_refused(run: Path, env: Any, tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    data = json.loads(zipfile.ZipFile(run / "model.zip").read("data"))
    kwargs = {**data["policy_kwargs"], ":serialized:": serialized(WritesMarker(marker))[":serialized:"]}
    kwargs["features_extractor_class"] = "<class 'os.system'>"
    crafted = with_data(run / "model.zip", tmp_path / "model.zip", {"policy_kwargs": kwargs})
    with pytest.raises(SB3FileError, match=r"names the class 'os.system', which is not one this loader rebuilds"):
        load_policy(f"sb3:sac:{crafted}", env)
    assert not marker.exists()


def test_control_the_payload_is_live_with_trust_pickle(run: Path, env: Any, tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    crafted = with_data(run / "model.zip", tmp_path / "model.zip", {"_evil": serialized(WritesMarker(marker))})
    load_policy(f"sb3:sac:{crafted}", env, trust_pickle=True)
    assert marker.read_text() == "ran"  # what plain SAC.load does with the same file


def test_wrong_algorithm_is_named(run: Path, env: Any) -> None:
    with pytest.raises(SB3FileError, match=r"it is a sac zip: load it as sb3:sac:<path>"):
        load_policy(f"sb3:td3:{run / 'model.zip'}", env)


@pytest.mark.parametrize(
    "content", [b"", b"PK\x03\x04 half a zip", b"not a zip at all"], ids=["empty", "truncated", "text"]
)
def test_broken_model_zip_is_a_clear_error(env: Any, tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "model.zip"
    path.write_bytes(content)
    with pytest.raises(SB3FileError, match=r"could not be read: it is missing, truncated or not an SB3 model zip"):
        load_policy(f"sb3:sac:{path}", env)


def test_oversized_data_entry_is_refused_before_reading(env: Any, tmp_path: Path) -> None:
    path = tmp_path / "model.zip"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("data", b" " * (300 * 2**20))  # 300 MiB of spaces, 300 KB compressed
    assert path.stat().st_size < 2**20
    with pytest.raises(SB3FileError, match=r"declares 314572800 bytes, more than"):
        load_policy(f"sb3:sac:{path}", env)


# ------------------------------------------------------------------------------------------ replay buffers
@pytest.fixture
def buffer(run: Path, env: Any) -> Any:
    model = load_sb3(SAC, run / "model.zip", env.single_observation_space, env.single_action_space, device="cpu")
    assert model.replay_buffer is not None
    return model.replay_buffer


def test_saved_buffer_round_trips(run: Path, buffer: Any) -> None:
    load_replay_buffer(buffer, run / "replay_buffer.npz", num_timesteps=16)
    assert buffer.pos == 8 and not buffer.full  # 16 transitions, 2 envs per row
    assert buffer.observations["coords"][:8].any() and not buffer.observations["coords"][8:].any()


def test_pickle_file_as_replay_buffer_is_refused_unrun(buffer: Any, tmp_path: Path) -> None:
    marker, path = tmp_path / "marker", tmp_path / "replay_buffer.npz"
    path.write_bytes(pickle.dumps(WritesMarker(marker)))
    with pytest.raises(ReplayBufferFileError, match=r"could not be read: it is missing, truncated or not a replay"):
        load_replay_buffer(buffer, path)
    assert not marker.exists()


def test_object_array_in_replay_buffer_is_refused_unrun(run: Path, buffer: Any, tmp_path: Path) -> None:
    marker, path = tmp_path / "marker", tmp_path / "replay_buffer.npz"
    with np.load(run / "replay_buffer.npz") as stored:
        arrays = dict(stored)
    arrays["actions"] = np.array([WritesMarker(marker)], dtype=object)
    with path.open("wb") as handle:
        np.savez(handle, **arrays)
    with pytest.raises(ReplayBufferFileError, match=r"Object arrays cannot be loaded when allow_pickle=False"):
        load_replay_buffer(buffer, path)
    assert not marker.exists()
    with np.load(path, allow_pickle=True) as stored:  # control: NumPy with pickles allowed runs it
        stored["actions"]
    assert marker.read_text() == "ran"


def test_compressed_replay_entry_is_refused_before_reading(run: Path, buffer: Any, tmp_path: Path) -> None:
    path = tmp_path / "replay_buffer.npz"
    with np.load(run / "replay_buffer.npz") as stored:
        arrays = dict(stored)
    arrays["rewards"] = np.zeros((2**16, 2**10), dtype=np.float32)  # 256 MiB of zeros, a few hundred KB deflated
    with path.open("wb") as handle:
        np.savez_compressed(handle, **arrays)
    with pytest.raises(ReplayBufferFileError, match=r"entry 'meta'|entry 'actions'|entry 'rewards'|compressed"):
        load_replay_buffer(buffer, path)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"buffer_size": 128}, r"requires \{'buffer_size': 32"),
        ({"pos": 99}, r"a valid position"),
        ({"num_timesteps": 32}, r"'num_timesteps': 16"),
        ({"format": "other"}, r"requires format 'adaglimpse-env/replay-buffer'"),
    ],
)
def test_replay_meta_that_does_not_fit_is_refused(
    run: Path, buffer: Any, tmp_path: Path, change: dict[str, Any], message: str
) -> None:
    path = tmp_path / "replay_buffer.npz"
    with np.load(run / "replay_buffer.npz") as stored:
        arrays = dict(stored)
    meta = {**json.loads(arrays["meta"].tobytes()), **change}
    arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    with path.open("wb") as handle:
        np.savez(handle, **arrays)
    with pytest.raises(ReplayBufferFileError, match=message):
        load_replay_buffer(buffer, path, num_timesteps=16)


def test_truncated_replay_buffer_is_a_clear_error(run: Path, buffer: Any, tmp_path: Path) -> None:
    path = tmp_path / "replay_buffer.npz"
    content = (run / "replay_buffer.npz").read_bytes()
    path.write_bytes(content[: len(content) // 2])
    with pytest.raises(ReplayBufferFileError, match=r"could not be read"):
        load_replay_buffer(buffer, path)


# ------------------------------------------------------------------------------------- train_sac --resume
def test_resume_from_a_crafted_checkpoint_runs_nothing(run: Path, env_kwargs: dict[str, Any], tmp_path: Path) -> None:
    output = tmp_path / "run"
    shutil.copytree(run, output)
    marker = tmp_path / "marker"
    model_path = output / "checkpoints" / "model_16.zip"
    crafted = with_data(model_path, tmp_path / "crafted.zip", {"_evil": serialized(WritesMarker(marker))})
    model_path.unlink()  # model.zip is a hard link to it: replace the checkpoint file, not its content
    shutil.copyfile(crafted, model_path)
    args = [
        "--env-id",
        "AdaGlimpse-ImageFolder-v0",
        "--env-kwargs",
        *(f"{k}={v}" for k, v in env_kwargs.items()),
        "observation=full",
    ]  # the run fixture's preset (train_sac's default is the map)
    args += ["--num-envs", "2", "--total-timesteps", "24", "--learning-starts", "8", "--buffer-size", "64",
             "--batch-size", "8", "--eval-every", "1000000", "--eval-episodes", "2", "--eval-envs", "2",
             "--output", str(output), "--no-progress-bar", "--resume"]  # fmt: skip
    with pytest.raises(RunFolderError, match=r"cannot resume from .*the entry '_evil' is pickled"):
        train_sac.main(args)
    assert not marker.exists()
    assert model_path.exists() and (output / "replay_buffer.npz").exists()  # nothing deleted
