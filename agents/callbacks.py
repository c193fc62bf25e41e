"""SB3 callbacks for glimpse agents: per-episode task metrics, held-out evaluation with pictures, atomic
checkpoints, and a progress bar."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.logger import Image

from adaglimpse_env import GlimpseVectorEnv
from adaglimpse_env.rendering import animation_frame, draw_curves, glimpse_heatmap, vstack
from adaglimpse_env.tasks import get_task
from agents.evaluation import EpisodeRecorder, run_policy
from agents.run_folder import save_checkpoint


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
        acting: what acts in ``env`` (SB3's ``predict``), when not the model itself: e.g.
            :class:`agents.grid_dqn.GridActing` for a model trained on discrete glimpses.
    """

    def __init__(
        self,
        env: GlimpseVectorEnv,
        every: int,
        episodes: int,
        seed: int = 12345,
        sheet_episodes: int = 4,
        acting: Any = None,
    ) -> None:
        super().__init__()
        self.env, self.every, self.episodes, self.seed = env, every, episodes, seed
        self.acting = acting
        self.sheet_episodes = sheet_episodes
        self.next_evaluation = every
        self.history: list[dict[str, Any]] = []
        #: Wall seconds spent in :meth:`evaluate` so far (to leave out of training-speed figures).
        self.evaluation_seconds = 0.0

    def _on_training_start(self) -> None:
        # A resumed run starts at num_timesteps > 0: evaluate at the next multiple of `every`, not at every step
        # until the count catches up.
        self.next_evaluation = (self.model.num_timesteps // self.every + 1) * self.every
        self._started = time.perf_counter()

    def _on_step(self) -> bool:
        if self.num_timesteps >= self.next_evaluation:
            self.next_evaluation = (self.num_timesteps // self.every + 1) * self.every
            self.evaluate()
        return True

    def evaluate(self, train_seconds: float | None = None) -> dict[str, Any]:
        """Run the evaluation now and log it; returns the result.

        Args:
            train_seconds: the training seconds to record with it (``train_wall_s``); by default the seconds since
                training began less the evaluations so far. Give it after training, when other work (the final
                checkpoint) has run since the last step.
        """
        started = time.perf_counter()
        pictures = self.env.render_mode == "rgb_array"
        recorder = EpisodeRecorder(render_episodes=self.sheet_episodes if pictures else 0)
        acting = self.acting if self.acting is not None else self.model
        result = run_policy(self.env, acting, self.episodes, self.seed, recorder)
        metric = result["metric"]
        for glimpses, value in enumerate(result["metric_by_glimpse"]):
            self.logger.record(f"eval/{metric}_after_{glimpses:02d}_glimpses", value)
        self.logger.record("eval/final_score", result["final_score"])
        self.logger.record("eval/return", result["return"])
        self.logger.record("eval/pixel_fraction", result["pixel_fraction"])
        if pictures:
            for key, picture in self.pictures(recorder, result).items():
                self.logger.record(key, Image(picture, "HWC"), exclude=("stdout", "log", "json", "csv"))
        # Wall seconds since this (possibly resumed) training call began, with and without the evaluations so
        # far (this one included in neither): learning curves per minute of training.
        wall = train_wall = None
        if hasattr(self, "_started"):
            wall = round(started - self._started, 1)
            train_wall = round(started - self._started - self.evaluation_seconds, 1)
        if train_seconds is not None:
            train_wall = round(train_seconds, 1)
        self.history.append({"timesteps": self.num_timesteps, "wall_s": wall, "train_wall_s": train_wall, **result})
        self.evaluation_seconds += time.perf_counter() - started
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


class CheckpointCallback(BaseCallback):
    """Every ``every`` env steps saves a complete checkpoint with :func:`agents.run_folder.save_checkpoint`.

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


class WallClockLimitCallback(BaseCallback):
    """Stops training once ``minutes`` of wall-clock time have passed since this training call began, less the
    time of a given evaluation callback: runs compared on learning per minute get the same training time,
    whatever their speed. A resumed run gets the budget anew.

    Args:
        minutes: the budget (> 0).
        evaluation: an :class:`EvaluationCallback` of the same run whose time is not counted, so that a run that
            evaluates more often (a faster one, at the same ``every`` in env steps) does not train for less.
    """

    def __init__(self, minutes: float, evaluation: EvaluationCallback | None = None) -> None:
        super().__init__()
        if not minutes > 0:
            raise ValueError(f"WallClockLimitCallback requires minutes > 0, got {minutes}")
        self.minutes, self.evaluation = minutes, evaluation
        self.stopped_at: int | None = None

    def _on_training_start(self) -> None:
        self._started = time.perf_counter()

    def elapsed_seconds(self) -> float:
        """Seconds counted against the budget so far."""
        excluded = self.evaluation.evaluation_seconds if self.evaluation is not None else 0.0
        return time.perf_counter() - self._started - excluded

    def _on_step(self) -> bool:
        if self.elapsed_seconds() < 60.0 * self.minutes:
            return True
        self.stopped_at = self.num_timesteps
        return False


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
