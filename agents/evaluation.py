"""Run a glimpse policy for whole episodes and measure it: the task metric after every glimpse, the final score,
the return and the fraction of pixels seen. Used by ``scripts/evaluate.py``, ``scripts/train_sac.py`` (periodic
held-out evaluation) and ``scripts/benchmark_agents.py``."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from adaglimpse_env import GlimpseVectorEnv
from agents.glimpse_canvas import CanvasScores


@dataclass
class EpisodeRecorder:
    """Keeps what pictures of an evaluation need: per episode, the score after every glimpse and the glimpse boxes,
    and for the first ``render_episodes`` episodes the env frame after every glimpse (the env must be made with
    ``render_mode="rgb_array"``).

    Pass one to :func:`run_policy`; episodes are recorded in the order ``run_policy`` counts them.

    Args:
        render_episodes: keep frames of this many episodes (``None``: all). Rendering draws every env of the
            vector env, so it only happens in rounds that still need frames.
    """

    render_episodes: int | None = 0
    scores: list[list[float]] = field(default_factory=list)
    """Per episode: the score after 0, 1, ... glimpses (an early-stopped episode keeps its last score)."""
    boxes: list[np.ndarray] = field(default_factory=list)
    """Per episode: ``(N, 4)`` crops ``(y1, x1, y2, x2)``; ``-1`` rows for glimpses not taken."""
    frames: list[list[np.ndarray]] = field(default_factory=list)
    """Per rendered episode: the env frame after 0, 1, ... glimpses."""
    _round_scores: list[np.ndarray] = field(default_factory=list, repr=False)
    _round_frames: list[tuple[np.ndarray, ...]] = field(default_factory=list, repr=False)
    _round_boxes: np.ndarray | None = field(default=None, repr=False)

    @property
    def rendering(self) -> bool:
        """Whether the current round still needs frames."""
        return self.render_episodes is None or len(self.frames) < self.render_episodes

    def observe(self, env: GlimpseVectorEnv, score: np.ndarray, glimpse_boxes: np.ndarray, live: np.ndarray) -> None:
        """Called after the reset and after every step of a round with each env's current score and boxes.

        Envs that are not ``live`` (their episode already ended; in next-step autoreset mode the env may already
        show its next image) keep what was recorded at their last live step.
        """
        self._round_scores.append(score.astype(np.float64).copy())
        if self._round_boxes is None:
            self._round_boxes = glimpse_boxes.copy()
        else:
            self._round_boxes[live] = glimpse_boxes[live]
        if self.rendering:
            if self._round_frames and not live.any():
                self._round_frames.append(self._round_frames[-1])
                return
            frames = env.render() or ()
            if self._round_frames:
                pairs = zip(frames, self._round_frames[-1], live, strict=True)
                frames = tuple(now if alive else before for now, before, alive in pairs)
            self._round_frames.append(frames)

    def end_round(self, take: int) -> None:
        """Close a round of ``num_envs`` episodes, of which the first ``take`` count."""
        scores = np.stack(self._round_scores, axis=1)  # (num_envs, steps + 1)
        assert self._round_boxes is not None
        for index in range(take):
            self.scores.append(scores[index].tolist())
            self.boxes.append(self._round_boxes[index])
            if self._round_frames and self.rendering:
                self.frames.append([frames[index] for frames in self._round_frames])
        self._round_scores, self._round_frames, self._round_boxes = [], [], None


def run_policy(
    env: GlimpseVectorEnv,
    policy: Any,
    episodes: int,
    seed: int,
    recorder: EpisodeRecorder | None = None,
    canvas: bool = False,
) -> dict[str, Any]:
    """Run ``episodes`` full episodes (in batches of ``num_envs``); per-glimpse metric and final numbers.

    Args:
        env: the env to run on; the first reset is seeded with ``seed`` and later rounds continue its image
            stream, so the same seed gives the same images and no image repeats before the split is exhausted.
        policy: anything with SB3's ``predict(observation, deterministic=True) -> (actions, state)``.
        episodes: how many episodes to measure.
        seed: first reset seed.
        recorder: optionally keeps scores, boxes and frames of the episodes for pictures.
        canvas: also score the glimpse canvas of the same episodes (reconstruction envs only: the glimpses'
            pixels drawn back with no model, :class:`agents.glimpse_canvas.GlimpseCanvas`), returned as
            ``canvas`` (:meth:`agents.glimpse_canvas.CanvasScores.summary`: its ``metric_by_glimpse`` and
            ``final_score`` aggregated as the model's, and both on the covered pixels only).
    """
    task = env.task
    drawing = CanvasScores(env) if canvas else None
    metric = task.metric_name
    steps = env.num_glimpses
    per_step: list[list[np.ndarray]] = [[] for _ in range(steps + 1)]
    finals, fractions, returns, lengths = [], [], [], []
    done_episodes = 0
    while done_episodes < episodes:
        # Only the first reset is seeded: later rounds continue the same image stream, so an unshuffled val split
        # is walked through in order instead of restarting at its first image every round.
        observation, info = env.reset(seed=seed if done_episodes == 0 else None)
        current = info[metric].astype(np.float64)
        per_step[0].append(current.copy())
        if drawing is not None:
            drawing.observe(np.ones(env.num_envs, dtype=bool))
        total = np.zeros(env.num_envs)
        finished = np.zeros(env.num_envs, dtype=bool)
        final_score = info["score"].copy()
        fraction = np.zeros(env.num_envs)
        length = np.zeros(env.num_envs, dtype=np.int64)
        if recorder is not None:
            recorder.observe(env, final_score, info["glimpse_boxes"], ~finished)
        for step in range(1, steps + 1):
            actions, _ = policy.predict(observation, deterministic=True)
            observation, reward, terminated, truncated, info = env.step(actions)
            live = ~finished
            total[live] += reward[live]
            current = np.where(live, info[metric], current)  # an early-stopped episode keeps its final value
            final_score = np.where(live, info["score"], final_score)
            fraction = np.where(live, info["pixel_fraction"], fraction)
            length = np.where(live, info["num_glimpses"], length)
            per_step[step].append(current.copy())
            if drawing is not None:
                drawing.observe(live)
            if recorder is not None:
                recorder.observe(env, final_score, info["glimpse_boxes"], live)
            finished |= terminated | truncated
            if finished.all():
                for later in range(step + 1, steps + 1):
                    per_step[later].append(current.copy())
                    if drawing is not None:
                        drawing.observe(~finished)
                    if recorder is not None:
                        recorder.observe(env, final_score, info["glimpse_boxes"], ~finished)
                break
        take = min(env.num_envs, episodes - done_episodes)
        if recorder is not None:
            recorder.end_round(take)
        if drawing is not None:
            drawing.end_round(take)
        finals.append(final_score[:take])
        fractions.append(fraction[:take])
        returns.append(total[:take])
        lengths.append(length[:take])
        for step in range(steps + 1):
            per_step[step][-1] = per_step[step][-1][:take]
        done_episodes += take

    canvas_result = {} if drawing is None else {"canvas": drawing.summary()}
    return {
        "episodes": done_episodes,
        "metric": metric,
        "metric_by_glimpse": [task.aggregate(np.concatenate(v)) for v in per_step],
        "final_score": float(np.mean(np.concatenate(finals))),
        "return": float(np.mean(np.concatenate(returns))),
        "pixel_fraction": float(np.mean(np.concatenate(fractions))),
        "mean_glimpses": float(np.mean(np.concatenate(lengths))),
        **canvas_result,
    }


def mean_image_rmse(
    env_id: str, env_kwargs: dict[str, Any], image_size: int, episodes: int, seed: int, split: str = "val"
) -> float:
    """RMSE (0-255) of predicting every held-out image by the per-pixel mean of ``episodes`` training crops.

    Reads the images an env of ``env_id`` would see (train split for the mean, ``split`` to score it), through
    the env's own image stream but without building the env or loading its model.

    Args:
        env_id: a registered id.
        env_kwargs: its ``gym.make`` keywords (``split`` is set here).
        image_size: the model's input side in pixels (an env's ``image_size[0]``).
        episodes: held-out images scored; the mean is taken over at least 64 training images.
        seed: the streams' seed, as ``env.reset(seed=seed)``.
        split: the held-out split scored (``val``, or ``heldout`` for the shipped photos).
    """
    from adaglimpse_env.envs.factory import make_image_stream
    from adaglimpse_env.normalization import to_pixels

    def pixels(split: str, count: int) -> torch.Tensor:
        stream = make_image_stream(env_id, image_size, seed, **{**env_kwargs, "split": split})
        try:
            images = torch.stack([to_pixels(sample["image"]) for sample in stream.next_samples(count)])
        finally:
            stream.close()
        return images.double()

    mean = pixels("train", max(episodes, 64)).mean(dim=0)
    held_out = pixels(split, episodes)
    return float((held_out - mean).square().mean().sqrt())
