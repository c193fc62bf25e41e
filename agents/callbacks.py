"""SB3 callbacks for glimpse agents: per-episode task metrics, held-out evaluation with pictures, atomic
checkpoints, and a progress bar."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.logger import Image

from adaglimpse_env import GlimpseVectorEnv
from adaglimpse_env.rendering import animation_frame, draw_curves, glimpse_heatmap, vstack
from adaglimpse_env.tasks import get_task
from agents.evaluation import EpisodeRecorder, run_policy


class EpisodeMetricsCallback(BaseCallback):
    """Logs, for every finished training episode, its final score, task metric and fraction of pixels seen."""

    def __init__(self, task: str) -> None:
        super().__init__()
        self.metric = get_task(task).metric_name
        # TensorBoard tag (episode/<tag>) -> the info key of the finished episode that holds it. The env reports
        # the current score as "score"; at the end of an episode that is its final score.
        self.sources = {"final_score": "score", self.metric: self.metric, "pixel_fraction": "pixel_fraction"}
        self.buffer: dict[str, list[float]] = {tag: [] for tag in self.sources}

    def _on_step(self) -> bool:
        for info, done in zip(self.locals["infos"], self.locals["dones"], strict=True):
            if done:
                for tag, key in self.sources.items():
                    if key in info:
                        self.buffer[tag].append(float(info[key]))
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
        sheet_episodes: episodes drawn in the ``eval/episodes`` image.
    """

    def __init__(
        self, env: GlimpseVectorEnv, every: int, episodes: int, seed: int = 12345, sheet_episodes: int = 4
    ) -> None:
        super().__init__()
        self.env, self.every, self.episodes, self.seed = env, every, episodes, seed
        self.sheet_episodes = sheet_episodes
        self.next_evaluation = every
        self.history: list[dict[str, Any]] = []

    def _on_training_start(self) -> None:
        # A resumed run starts at num_timesteps > 0: evaluate at the next multiple of `every`, not at every step
        # until the count catches up.
        self.next_evaluation = (self.model.num_timesteps // self.every + 1) * self.every

    def _on_step(self) -> bool:
        if self.num_timesteps >= self.next_evaluation:
            self.next_evaluation = (self.num_timesteps // self.every + 1) * self.every
            self.evaluate()
        return True

    def evaluate(self) -> dict[str, Any]:
        """Run the evaluation now and log it; returns the result."""
        pictures = self.env.render_mode == "rgb_array"
        recorder = EpisodeRecorder(render_episodes=self.sheet_episodes if pictures else 0)
        result = run_policy(self.env, self.model, self.episodes, self.seed, recorder)
        metric = result["metric"]
        for glimpses, value in enumerate(result["metric_by_glimpse"]):
            self.logger.record(f"eval/{metric}_after_{glimpses:02d}_glimpses", value)
        self.logger.record("eval/final_score", result["final_score"])
        self.logger.record("eval/return", result["return"])
        self.logger.record("eval/pixel_fraction", result["pixel_fraction"])
        if pictures:
            for key, picture in self.pictures(recorder, result).items():
                self.logger.record(key, Image(picture, "HWC"), exclude=("stdout", "log", "json", "csv"))
        self.history.append({"timesteps": self.num_timesteps, **result})
        self.logger.dump(self.num_timesteps)
        return result

    def pictures(self, recorder: EpisodeRecorder, result: dict[str, Any]) -> dict[str, np.ndarray]:
        """The evaluation's TensorBoard images, drawn by :mod:`adaglimpse_env.rendering` like ``env.render()``:
        a sheet of episodes (final frame and score curve), the metric after each glimpse, and a heat map of
        where the policy looks (glimpse centres weighted by scale, over all evaluation episodes)."""
        steps = self.env.num_glimpses
        rows = [
            animation_frame(frames[-1], scores, steps, steps, f"episode {index}")
            for index, (frames, scores) in enumerate(zip(recorder.frames, recorder.scores, strict=False))
        ]
        metric = result["metric"]
        curve = draw_curves({metric: result["metric_by_glimpse"]}, (240, 320), f"{metric} after each glimpse")
        heatmap = glimpse_heatmap(np.concatenate(recorder.boxes), self.env.image_size)
        return {
            "eval/episodes": vstack(rows, gap=4),
            f"eval/{metric}_by_glimpse": curve,
            "eval/where_it_looks": heatmap,
        }


def atomic_write(path: Path, write: Any) -> None:
    """Call ``write(tmp_path)`` then rename onto ``path``: a crash never leaves a half-written file.

    The temporary file (``.<name>.<random>.tmp``, next to ``path`` so that the rename is atomic) is synced before
    the rename and gets the permissions of a plain new file. A process killed mid-write leaves it behind;
    :func:`remove_stale_checkpoint_files` removes such leftovers.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        written = tmp if Path(tmp).exists() else tmp + path.suffix  # SB3 appends .zip when missing
        with open(written, "rb") as handle:
            os.fsync(handle.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(written, 0o666 & ~umask)  # mkstemp creates 0600
        os.replace(written, path)
        if os.name == "posix":  # make the rename itself durable (a power cut, not only a killed process)
            directory = os.open(path.parent, os.O_RDONLY)
            try:
                os.fsync(directory)
            finally:
                os.close(directory)
    finally:
        for leftover in (tmp, tmp + path.suffix):
            Path(leftover).unlink(missing_ok=True)


class CheckpointCallback(BaseCallback):
    """Every ``every`` env steps saves a complete checkpoint with :func:`save_checkpoint`.

    It saves at the start of a rollout, the one moment where the model, its replay buffer and ``num_timesteps``
    agree: SB3 calls ``_on_step`` before storing that step's transition, and trains after the rollout ends, so a
    checkpoint taken in ``_on_step`` would lack one transition and one gradient step per resume.

    Args:
        output: run folder.
        every: env steps between checkpoints.
        save_replay_buffer: also save the replay buffer (needed to resume with nothing lost).
    """

    def __init__(self, output: Path, every: int, save_replay_buffer: bool = True) -> None:
        super().__init__()
        self.output, self.every, self.save_replay_buffer = Path(output), every, save_replay_buffer
        self.next_save = every

    def _on_training_start(self) -> None:
        # A resumed run starts at num_timesteps > 0: save at the next multiple of `every`, not at every step.
        self.next_save = (self.model.num_timesteps // self.every + 1) * self.every

    def _on_rollout_start(self) -> None:
        if self.model.num_timesteps >= self.next_save:
            self.next_save = (self.model.num_timesteps // self.every + 1) * self.every
            self.save()

    def _on_step(self) -> bool:
        return True

    def save(self) -> None:
        """Write the checkpoint now."""
        save_checkpoint(self.model, self.output, self.save_replay_buffer)


#: Where the checkpoint of step N lives inside a run folder (``progress.json`` names N).
CHECKPOINT_FOLDER = "checkpoints"


def checkpoint_paths(output: Path, num_timesteps: int) -> tuple[Path, Path]:
    """``(model, replay buffer)`` files of the checkpoint at ``num_timesteps`` in the run folder ``output``."""
    folder = Path(output) / CHECKPOINT_FOLDER
    return folder / f"model_{num_timesteps}.zip", folder / f"replay_buffer_{num_timesteps}.pkl"


def save_checkpoint(model: Any, output: Path, save_replay_buffer: bool) -> None:
    """Save a checkpoint of ``model`` at its ``num_timesteps`` N that a kill at any instant cannot corrupt.

    Writes ``checkpoints/model_N.zip`` and (optionally) ``checkpoints/replay_buffer_N.pkl``, each atomically,
    then commits by replacing ``progress.json`` (``{"num_timesteps": N, "replay_buffer": bool}``). Only then do
    ``model.zip`` and ``replay_buffer.pkl`` become the new files (hard links, copies where links fail) and the
    previous checkpoint goes. Two files cannot be replaced together atomically, so overwriting ``model.zip`` and
    ``replay_buffer.pkl`` in place would let a kill between them pair a new model with an old buffer.
    """
    output = Path(output)
    step = int(model.num_timesteps)
    model_path, buffer_path = checkpoint_paths(output, step)
    with_buffer = save_replay_buffer and getattr(model, "replay_buffer", None) is not None
    atomic_write(model_path, lambda tmp: model.save(tmp))
    if with_buffer:
        atomic_write(buffer_path, lambda tmp: model.save_replay_buffer(tmp))
    progress = {"num_timesteps": step, "replay_buffer": with_buffer}
    atomic_write(output / "progress.json", lambda tmp: Path(tmp).write_text(json.dumps(progress) + "\n"))
    _publish(model_path, output / "model.zip")
    if with_buffer:
        _publish(buffer_path, output / "replay_buffer.pkl")
    else:
        (output / "replay_buffer.pkl").unlink(missing_ok=True)  # never pair the new model with an old buffer
    remove_stale_checkpoint_files(output, step)


def _publish(source: Path, destination: Path) -> None:
    """Atomically make ``destination`` the file ``source`` (a hard link: no second copy on disk)."""

    def link(tmp: str) -> None:
        Path(tmp).unlink()
        try:
            os.link(source, tmp)
        except OSError:  # a filesystem without hard links
            shutil.copyfile(source, tmp)

    atomic_write(destination, link)


def remove_stale_checkpoint_files(output: Path, keep: int | None) -> None:
    """Remove what killed or superseded saves left in the run folder ``output``: the temporary files of
    interrupted :func:`atomic_write` calls and every checkpoint but the one at step ``keep`` (``None``: all)."""
    output = Path(output)
    kept = {path.name for path in checkpoint_paths(output, keep)} if keep is not None else set()
    folder = output / CHECKPOINT_FOLDER
    stale = [path for path in folder.iterdir() if path.is_file() and path.name not in kept] if folder.is_dir() else []
    stale += [path for path in output.glob(".*.tmp") if path.is_file()]
    for path in stale:
        path.unlink(missing_ok=True)


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
