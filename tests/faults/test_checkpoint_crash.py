"""save_checkpoint killed at each of its writes, and CheckpointCallback's timing: whatever moment a run dies,
``progress.json`` names a complete checkpoint whose model, replay buffer and step count agree."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import gymnasium as gym
import pytest
from stable_baselines3 import SAC
from stable_baselines3.common.vec_env import VecMonitor

import agents.callbacks as callbacks
import agents.run_folder as run_folder
from agents.callbacks import CheckpointCallback
from agents.replay import stored_transitions
from agents.run_folder import checkpoint_paths, save_checkpoint
from agents.sac import make_sac
from agents.sb3_adapter import GlimpseSB3VecEnv

#: save_checkpoint's writes, in order: the commit (progress.json) is the third.
WRITES = ["checkpoints/model_32.zip", "checkpoints/replay_buffer_32.npz", "progress.json", "model.zip",
          "replay_buffer.npz"]  # fmt: skip


class Killed(BaseException):
    """Stands for SIGKILL: nothing after it runs, not even ``finally`` clean-ups of the killed write."""


def tiny_sac(env_kwargs: dict[str, Any]) -> SAC:
    env = gym.make_vec("AdaGlimpse-ImageFolder-v0", num_envs=2, autoreset_mode="same_step", **env_kwargs)
    return make_sac(VecMonitor(GlimpseSB3VecEnv(env)), seed=0, learning_starts=8, buffer_size=512, batch_size=8)


@pytest.fixture(scope="module")
def saved_at_16_trained_to_32(env_kwargs: dict[str, Any], tmp_path_factory: pytest.TempPathFactory):
    """A run folder holding the checkpoint of step 16, and the same model trained on to step 32."""
    model = tiny_sac(env_kwargs)
    model.learn(16)
    folder = tmp_path_factory.mktemp("run_at_16")
    save_checkpoint(model, folder, save_replay_buffer=True)
    model.learn(16, reset_num_timesteps=False)
    assert model.num_timesteps == 32
    return folder, model


def transitions(buffer: Any) -> int:
    """Transitions held by an SB3 replay buffer (its ``size()`` counts rows of ``n_envs`` transitions)."""
    return buffer.size() * buffer.n_envs


def assert_committed_checkpoint_is_consistent(run: Path) -> int:
    progress = json.loads((run / "progress.json").read_text())
    step = progress["num_timesteps"]
    model_path, buffer_path = checkpoint_paths(run, step)
    assert SAC.load(model_path, device="cpu").num_timesteps == step
    assert stored_transitions(buffer_path) == step
    return step


@pytest.mark.parametrize("killed_at", WRITES)
def test_kill_during_each_write_leaves_the_last_complete_checkpoint(
    saved_at_16_trained_to_32, killed_at: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    base, model = saved_at_16_trained_to_32
    run = tmp_path / "run"
    shutil.copytree(base, run)
    real_atomic_write = run_folder.atomic_write

    def atomic_write(path: Path, write: Any) -> None:
        if path == run / killed_at:
            # What a kill mid-write leaves: part of a temporary file next to the target, the target untouched.
            (path.parent / f".{path.name}.killed.tmp").write_bytes(b"PK\x03\x04 half a file")
            raise Killed
        real_atomic_write(path, write)

    monkeypatch.setattr(run_folder, "atomic_write", atomic_write)
    with pytest.raises(Killed):
        save_checkpoint(model, run, save_replay_buffer=True)
    monkeypatch.undo()

    committed = WRITES.index(killed_at) > WRITES.index("progress.json")
    assert assert_committed_checkpoint_is_consistent(run) == (32 if committed else 16)
    # The published files are whole: the committed checkpoint's, or the one before it.
    assert SAC.load(run / "model.zip", device="cpu").num_timesteps in (16, 32)
    assert stored_transitions(run / "replay_buffer.npz") in (16, 32)
    assert list(run.rglob("*.killed.tmp"))

    # The resumed run's next save removes every leftover.
    save_checkpoint(model, run, save_replay_buffer=True)
    assert assert_committed_checkpoint_is_consistent(run) == 32
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["model_32.zip", "replay_buffer_32.npz"]
    assert not list(run.rglob("*.tmp"))
    assert (run / "model.zip").samefile(run / "checkpoints" / "model_32.zip")  # a link, not a second copy


def test_callback_saves_when_model_buffer_and_step_agree_and_resumes_on_schedule(
    env_kwargs: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    saves: list[tuple[int, int]] = []
    real_save = callbacks.save_checkpoint

    def recording_save(model: SAC, output: Path, save_replay_buffer: bool) -> None:
        assert model.replay_buffer is not None
        saves.append((model.num_timesteps, transitions(model.replay_buffer)))
        real_save(model, output, save_replay_buffer)

    monkeypatch.setattr(callbacks, "save_checkpoint", recording_save)
    model = tiny_sac(env_kwargs)
    model.learn(40, callback=CheckpointCallback(tmp_path, 16))
    assert saves == [(16, 16), (32, 32)]  # every stored transition of the steps it counts, none missing
    # A resumed run (num_timesteps 40) saves at the next multiples of 16, not at every step until it catches up.
    model.learn(30, callback=CheckpointCallback(tmp_path, 16), reset_num_timesteps=False)
    assert saves[2:] == [(48, 48), (64, 64)]
    assert assert_committed_checkpoint_is_consistent(tmp_path) == 64
