"""SB3 callbacks for glimpse agents: per-episode task metrics, held-out evaluation with pictures, atomic
checkpoints, and a progress bar."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.logger import Image

from adaglimpse_env import GlimpseVectorEnv
from agents.evaluation import METRIC_NAMES, run_policy


class EpisodeMetricsCallback(BaseCallback):
    """Logs, for every finished training episode, its final score, task metric and fraction of pixels seen."""

    def __init__(self, task: str) -> None:
        super().__init__()
        self.metric = METRIC_NAMES[task]
        self.buffer: dict[str, list[float]] = {"final_score": [], self.metric: [], "pixel_fraction": []}

    def _on_step(self) -> bool:
        for info, done in zip(self.locals["infos"], self.locals["dones"], strict=True):
            if done:
                for key in self.buffer:
                    if key in info:
                        self.buffer[key].append(float(info[key]))
        return True

    def _on_rollout_end(self) -> None:
        for key, values in self.buffer.items():
            if values:
                self.logger.record(f"episode/{key}", float(np.nanmean(values)))
                values.clear()


class EvaluationCallback(BaseCallback):
    """Every ``every`` env steps, runs the policy deterministically on held-out images and logs the task metric
    after each glimpse count, the final score, a few episode pictures and where the policy looks.

    Args:
        env: a held-out :class:`GlimpseVectorEnv` (``render_mode="rgb_array"`` for pictures).
        every: env steps (summed over envs) between evaluations.
        episodes: episodes per evaluation.
        seed: evaluation seed (the same images every time).
    """

    def __init__(self, env: GlimpseVectorEnv, every: int, episodes: int, seed: int = 12345) -> None:
        super().__init__()
        self.env, self.every, self.episodes, self.seed = env, every, episodes, seed
        self.next_evaluation = every
        self.history: list[dict[str, Any]] = []

    def _on_step(self) -> bool:
        if self.num_timesteps >= self.next_evaluation:
            self.next_evaluation += self.every
            self.evaluate()
        return True

    def evaluate(self) -> dict[str, Any]:
        """Run the evaluation now and log it; returns the result."""
        result = run_policy(self.env, self.model, self.episodes, self.seed)
        metric = result["metric"]
        for glimpses, value in enumerate(result["metric_by_glimpse"]):
            self.logger.record(f"eval/{metric}_after_{glimpses:02d}_glimpses", value)
        self.logger.record("eval/final_score", result["final_score"])
        self.logger.record("eval/return", result["return"])
        self.logger.record("eval/pixel_fraction", result["pixel_fraction"])
        if self.env.render_mode == "rgb_array":
            frames = self.env.render() or ()
            if frames:
                sheet = np.concatenate(list(frames[:4]), axis=0)
                self.logger.record("eval/episodes", Image(sheet, "HWC"), exclude=("stdout", "log", "json", "csv"))
        self.history.append({"timesteps": self.num_timesteps, **result})
        self.logger.dump(self.num_timesteps)
        return result


def atomic_write(path: Path, write: Any) -> None:
    """Call ``write(tmp_path)`` then rename onto ``path``: a crash never leaves a half-written file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        written = tmp if Path(tmp).exists() else tmp + path.suffix  # SB3 appends .zip when missing
        with open(written, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(written, path)
    finally:
        for leftover in (tmp, tmp + path.suffix):
            Path(leftover).unlink(missing_ok=True)


class CheckpointCallback(BaseCallback):
    """Every ``every`` env steps writes ``model.zip``, optionally ``replay_buffer.pkl``, then ``progress.json``
    (the commit marker: it is written last, so a checkpoint it names is complete).

    Args:
        output: run folder.
        every: env steps between checkpoints.
        save_replay_buffer: also save the replay buffer (needed to resume with nothing lost).
    """

    def __init__(self, output: Path, every: int, save_replay_buffer: bool = True) -> None:
        super().__init__()
        self.output, self.every, self.save_replay_buffer = Path(output), every, save_replay_buffer
        self.next_save = every

    def _on_step(self) -> bool:
        if self.num_timesteps >= self.next_save:
            self.next_save += self.every
            self.save()
        return True

    def save(self) -> None:
        """Write the checkpoint now."""
        save_checkpoint(self.model, self.output, self.save_replay_buffer)


def save_checkpoint(model: Any, output: Path, save_replay_buffer: bool) -> None:
    """Atomically save the model, the replay buffer (optional) and the progress marker."""
    atomic_write(output / "model.zip", lambda tmp: model.save(tmp))
    if save_replay_buffer and getattr(model, "replay_buffer", None) is not None:
        atomic_write(output / "replay_buffer.pkl", lambda tmp: model.save_replay_buffer(tmp))
    progress = {"num_timesteps": int(model.num_timesteps), "replay_buffer": bool(save_replay_buffer)}
    atomic_write(output / "progress.json", lambda tmp: Path(tmp).write_text(json.dumps(progress) + "\n"))


class ProgressBarCallback(BaseCallback):
    """A tqdm progress bar over env steps (SB3's own needs ``rich``)."""

    def __init__(self, total: int) -> None:
        super().__init__()
        self.total = total
        self.bar: Any = None

    def _on_training_start(self) -> None:
        from tqdm import tqdm

        self.bar = tqdm(total=self.total, initial=self.num_timesteps, unit="step", desc="train", dynamic_ncols=True)

    def _on_step(self) -> bool:
        assert self.bar is not None
        self.bar.update(self.num_timesteps - self.bar.n)
        return True

    def _on_training_end(self) -> None:
        if self.bar is not None:
            self.bar.close()
