"""Does a map SAC run know where the target is? After a whole-image glance on val scenes: how often the glimpse
its critic values most (over a grid of positions at a few scales) holds the target, how often its own policy's
glimpse does, how often a uniformly placed glimpse of the same size does (chance), and the task's score (for the
digits, the true-class probability) after each of those glimpses, from the env's oracle look-ahead.

It separates a critic that has not learnt where the target is from an actor that does not follow its critic.

Usage::

    python scripts/probe_critic.py runs/sac_digits/model.zip
    python scripts/probe_critic.py runs/pilot/model.zip --env-id AdaGlimpse-ClutteredDigits-Fast-v0 --grid 15
    python scripts/probe_critic.py runs/small_map/model.zip --env-kwargs map_size=32
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

import numpy as np
import torch

import adaglimpse_env  # noqa: F401  (registers the ids)
from agents.config import parse_key_values, positive_int
from agents.critic_search import candidate_values
from agents.map_critic import GlimpseGeometry, GlimpseMapCritic
from agents.sac import GlimpseSAC
from agents.sb3_adapter import make_sb3_vec_env
from agents.sb3_files import load_sb3

WHOLE_IMAGE = (0.0, 0.0, 1.0)


def holds_target(actions: np.ndarray, centres: np.ndarray, geometry: GlimpseGeometry) -> np.ndarray:
    """``(N, K, 3)`` actions and ``(N, 2)`` target centres ``(y, x)`` in pixels -> ``(N, K)``: whether each
    action's glimpse holds its scene's target centre (the critic's geometry: the env's, unfloored)."""
    centre, half = geometry.glimpse_boxes(torch.as_tensor(actions, dtype=torch.float32).reshape(-1, 3))
    height, width = geometry.image_size
    target = np.stack((centres[:, 1] / width, centres[:, 0] / height), axis=1) * 2.0 - 1.0  # (N, 2) (x, y)
    low = (centre - half).numpy().reshape(*actions.shape[:2], 2)
    high = (centre + half).numpy().reshape(*actions.shape[:2], 2)
    return np.asarray(((target[:, None] >= low) & (target[:, None] < high)).all(axis=-1))


def probe(
    model: GlimpseSAC, env_id: str, episodes: int, grid: int, scales: list[float], **env_kwargs: Any
) -> list[dict[str, float]]:
    """One row per scale (and one for the policy): ``{scale, critic, chance}`` hit rates after a glance."""
    critic = model.critic
    if not isinstance(critic, GlimpseMapCritic):
        raise SystemExit(f"probe_critic requires a run with the map critic (observation=map), got {type(critic)}")
    env = make_sb3_vec_env(env_id, num_envs=episodes, **{"observation": "map", **env_kwargs, "split": "val"})
    geometry = critic.glimpse_geometry
    env.reset()
    glanced, _, _, infos = env.step(np.tile(np.asarray([WHOLE_IMAGE], np.float32), (episodes, 1)))
    observation = np.asarray(glanced)  # the map preset's observation is one array
    boxes = np.stack([info["target_box"] for info in infos]).astype(np.float64)  # (N, 4) y1, x1, y2, x2
    centres = np.stack(((boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2), axis=1)
    rows = []
    with torch.no_grad():
        state = critic.state_features(torch.as_tensor(observation).float())
        positions = np.linspace(-1.0, 1.0, grid, dtype=np.float32)
        grid_x, grid_y = np.meshgrid(positions, positions)
        for scale in scales:
            candidates = np.stack((grid_x.ravel(), grid_y.ravel(), np.full(grid_x.size, scale, np.float32)), 1)
            batch = torch.as_tensor(np.broadcast_to(candidates, (episodes, *candidates.shape)).copy())
            values = candidate_values(critic, state, batch).numpy()  # (N, G*G)
            hits = holds_target(batch.numpy(), centres, geometry)  # (N, G*G)
            choice = values.argmax(axis=1)
            best = hits[np.arange(episodes), choice]
            score = env.env.score_candidates(candidates[choice][:, None, :])[:, 0]  # the task's score after it
            rows.append({"scale": scale, "critic": float(best.mean()), "chance": float(hits.mean()),
                         "score": float(score.mean())})  # fmt: skip
        actions, _ = model.predict(observation, deterministic=True)
    own = holds_target(actions[:, None, :], centres, geometry)[:, 0]
    own_score = env.env.score_candidates(actions[:, None, :].astype(np.float32))[:, 0]
    _, half = geometry.glimpse_boxes(torch.as_tensor(actions, dtype=torch.float32))
    area = (half[:, 0] * half[:, 1]).numpy()  # side / W * side / H: the share of the image the glimpse covers
    chance = float(np.mean(np.minimum(area, 1.0)))  # ~ a uniformly placed glimpse's
    rows.append({"scale": float(actions[:, 2].mean()), "policy": float(own.mean()), "chance": chance,
                 "score": float(own_score.mean())})  # fmt: skip
    env.close()
    return rows


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", help="a map SAC run's model.zip (loaded without unpickling anything)")
    parser.add_argument("--env-id", default="AdaGlimpse-ClutteredDigits-Fast-v0", help="registered id it ran on")
    parser.add_argument("--env-kwargs", nargs="*", default=[], metavar="KEY=VALUE", help="the run's env kwargs")
    parser.add_argument("--episodes", type=positive_int, default=64, help="val scenes")
    parser.add_argument("--grid", type=positive_int, default=15, help="positions per side scored by the critic")
    parser.add_argument("--scales", type=float, nargs="+", default=[-1.0, -0.8, -0.6], help="scale actions")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    env_kwargs = parse_key_values(args.env_kwargs)
    env = make_sb3_vec_env(args.env_id, num_envs=1, **{"observation": "map", **env_kwargs})
    model = load_sb3(GlimpseSAC, args.model, env.observation_space, env.action_space, device="cpu")
    env.close()
    print(f"{args.model} on {args.episodes} val scenes of {args.env_id}, after a whole-image glance:")
    print("| glimpse | scale | holds the target | chance | task score after it |\n|---|---|---|---|---|")
    for row in probe(model, args.env_id, args.episodes, args.grid, args.scales, **env_kwargs):
        who, hit = ("the critic's best", row["critic"]) if "critic" in row else ("the policy's own", row["policy"])
        print(f"| {who} | {row['scale']:+.2f} | {hit:.2f} | {row['chance']:.2f} | {row['score']:.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
