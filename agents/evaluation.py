"""Run a glimpse policy for whole episodes and measure it: the task metric after every glimpse, the final score,
the return and the fraction of pixels seen. Used by ``scripts/evaluate.py``, ``scripts/train_sac.py`` (periodic
held-out evaluation) and ``scripts/benchmark_agents.py``."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import torch

from adaglimpse_env import GlimpseVectorEnv

METRIC_NAMES = {"reconstruction": "rmse", "classification": "correct", "segmentation": "miou"}


def run_policy(env: GlimpseVectorEnv, policy: Any, episodes: int, seed: int) -> dict[str, Any]:
    """Run ``episodes`` full episodes (in batches of ``num_envs``); per-glimpse metric and final numbers."""
    task = env.episode.task
    metric = METRIC_NAMES[task]
    steps = env.episode.num_glimpses or 0
    per_step: list[list[np.ndarray]] = [[] for _ in range(steps + 1)]
    finals, fractions, returns, lengths = [], [], [], []
    done_episodes, round_index = 0, 0
    while done_episodes < episodes:
        observation, info = env.reset(seed=seed + round_index)
        round_index += 1
        current = info[metric].astype(np.float64)
        per_step[0].append(current.copy())
        total = np.zeros(env.num_envs)
        finished = np.zeros(env.num_envs, dtype=bool)
        final_score = info["score"].copy()
        fraction = np.zeros(env.num_envs)
        length = np.zeros(env.num_envs, dtype=np.int64)
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
            finished |= terminated | truncated
            if finished.all():
                for later in range(step + 1, steps + 1):
                    per_step[later].append(current.copy())
                break
        take = min(env.num_envs, episodes - done_episodes)
        finals.append(final_score[:take])
        fractions.append(fraction[:take])
        returns.append(total[:take])
        lengths.append(length[:take])
        for step in range(steps + 1):
            per_step[step][-1] = per_step[step][-1][:take]
        done_episodes += take

    def aggregate(values: np.ndarray) -> float:
        if metric == "rmse":  # global RMSE: every image has the same pixel count
            return float(np.sqrt(np.mean(np.square(values))))
        return float(np.nanmean(values))

    return {
        "episodes": done_episodes,
        "metric": metric,
        "metric_by_glimpse": [aggregate(np.concatenate(v)) for v in per_step],
        "final_score": float(np.mean(np.concatenate(finals))),
        "return": float(np.mean(np.concatenate(returns))),
        "pixel_fraction": float(np.mean(np.concatenate(fractions))),
        "mean_glimpses": float(np.mean(np.concatenate(lengths))),
    }


def mean_image_rmse(env_id: str, env_kwargs: dict[str, Any], episodes: int, seed: int) -> float:
    """RMSE (0-255) of predicting every held-out image by the per-pixel mean of ``episodes`` training crops."""
    from adaglimpse_env.normalization import to_pixels

    def pixels(split: str, count: int) -> torch.Tensor:
        env = gym.make_vec(env_id, num_envs=1, **{**env_kwargs, "split": split, "num_glimpses": 1})
        assert isinstance(env, GlimpseVectorEnv)
        env.stream.reseed(seed)
        images = torch.stack([to_pixels(sample["image"]) for sample in env.stream.next_samples(count)])
        env.close()
        return images.double()

    mean = pixels("train", max(episodes, 64)).mean(dim=0)
    held_out = pixels("val", episodes)
    return float((held_out - mean).square().mean().sqrt())
