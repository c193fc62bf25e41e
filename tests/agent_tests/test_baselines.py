"""Baseline policies: the boxes they produce, hand computed, and SB3's predict() signature."""

from __future__ import annotations

from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch

from agents.baselines import (
    BASELINES,
    CentreZoomOutPolicy,
    GreedyOraclePolicy,
    RasterPolicy,
    SalientPolicy,
    WholeImageFirstPolicy,
    make_baseline,
)


@pytest.fixture()
def env(tiny_folder: Path, tiny_checkpoint: Path):
    vector = gym.make_vec(
        "AdaGlimpse-ImageFolder-v0",
        num_envs=2,
        data_root=str(tiny_folder),
        checkpoint=str(tiny_checkpoint),
        num_glimpses=12,
    )
    yield vector
    vector.close()


def episode_boxes(env, policy) -> np.ndarray:
    observation, _ = env.reset(seed=0)
    for _ in range(12):
        actions, _ = policy.predict(observation, deterministic=True)
        observation, _, terminated, _, info = env.step(actions)
    assert terminated.all()
    return info["glimpse_boxes"][0]


def test_raster_tiles_the_image(env) -> None:
    policy = make_baseline("raster", env)
    assert isinstance(policy, RasterPolicy) and policy.tiles == 4
    boxes = episode_boxes(env, policy)
    # 4x4 tiles of 56 px (scale (56-32)/192 = 0.125); row-major, the first 12 of 16.
    expected = [[56 * r, 56 * c, 56 * r + 56, 56 * c + 56] for r in range(4) for c in range(4)][:12]
    np.testing.assert_array_equal(boxes, expected)


def test_centre_zoom_out(env) -> None:
    boxes = episode_boxes(env, make_baseline("centre-zoom", env))
    np.testing.assert_array_equal(boxes[0], [96, 96, 128, 128])  # smallest glimpse, centred
    np.testing.assert_array_equal(boxes[-1], [0, 0, 224, 224])  # the whole image last
    sides = boxes[:, 2] - boxes[:, 0]
    assert np.all(np.diff(sides) > 0)


def test_whole_image_first(env) -> None:
    policy = make_baseline("whole-first", env)
    assert isinstance(policy, WholeImageFirstPolicy)
    boxes = episode_boxes(env, policy)
    np.testing.assert_array_equal(boxes[0], [0, 0, 224, 224])
    np.testing.assert_array_equal(boxes[1], [0, 0, 56, 56])  # then the 4x4 raster (11 glimpses -> 4 tiles)


def test_random_is_seeded_and_single_observations_work(env) -> None:
    observation, _ = env.reset(seed=0)
    first, _ = make_baseline("random", env, seed=4).predict(observation)
    second, _ = make_baseline("random", env, seed=4).predict(observation)
    np.testing.assert_array_equal(first, second)
    single = {key: value[0] for key, value in observation.items()}
    action, state = CentreZoomOutPolicy.for_env(env).predict(single)
    assert action.shape == (3,) and state is None


def test_unknown_baseline(env) -> None:
    with pytest.raises(ValueError, match=str(list(BASELINES))[:20].replace("[", r"\[")):
        make_baseline("spiral", env)


def scores_after(env, policy, glimpses: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Each env's score and correctness after ``policy``'s first ``glimpses`` glimpses of the episodes from
    ``reset(seed)`` (``glimpses`` at most the budget, so no episode has ended and restarted)."""
    assert glimpses <= env.num_glimpses
    observation, _ = env.reset(seed=seed)
    for _ in range(glimpses):
        actions, _ = policy.predict(observation, deterministic=True)
        observation, _, _, _, info = env.step(actions)
    return info["score"], info["correct"]


def test_greedy_oracle_beats_random_on_the_digits() -> None:
    # The shipped classifier on 6 fixed val scenes of the fast id: after two glimpses the oracle reads most digits,
    # random after all six few. (Two, not six: each greedy glimpse scores 480 candidates, the test's whole cost.)
    env = gym.make_vec("AdaGlimpse-ClutteredDigits-Fast-v0", num_envs=6, split="val")
    greedy_score, greedy_correct = scores_after(env, make_baseline("greedy", env), glimpses=2)
    random_score, _ = scores_after(env, make_baseline("random", env, seed=0), glimpses=env.num_glimpses)
    assert greedy_score.mean() > random_score.mean() + 0.2
    assert greedy_correct.mean() >= 4 / 6
    env.close()


def test_greedy_takes_the_best_candidate(env) -> None:
    default = make_baseline("greedy", env)
    assert len(default.candidates) == 9 * 9 * 5 and len(default.refinements) == 5 * 5 * 3
    # The choice is checked on a smaller grid: every candidate is a forward of the model, scored three times here.
    greedy = GreedyOraclePolicy.for_env(env, oracle_env=env, positions=5, scales=3, refine=3)
    assert len(greedy.candidates) == 5 * 5 * 3 and len(greedy.refinements) == 3 * 3 * 3
    observation, _ = env.reset(seed=0)
    env.step(np.zeros((2, 3), dtype=np.float32))
    observation, *_ = env.step(np.array([[0.5, -0.5, -0.5], [-0.2, 0.3, 0.0]], dtype=np.float32))
    actions, _ = greedy.predict(observation)
    coarse = env.score_candidates(np.broadcast_to(greedy.candidates, (2, *greedy.candidates.shape)))
    chosen = env.score_candidates(actions[:, None])[:, 0]
    # The refined choice is at least as good as the best coarse candidate, and it is what the scores say.
    assert (chosen >= coarse.max(axis=1) - 1e-6).all()
    for row in range(2):
        best = greedy.candidates[coarse[row].argmax()]
        local = np.clip(best + greedy.refinements, -1, 1).astype(np.float32)
        local_scores = env.score_candidates(np.broadcast_to(local, (2, *local.shape)))[row]
        expected = local[local_scores.argmax()] if local_scores.max() > coarse[row].max() else best
        np.testing.assert_array_equal(actions[row], expected)
    with pytest.raises(NotImplementedError, match="predict"):
        greedy.action(0)


def _spot_map(spots: list[tuple[int, int]], glimpses: int, num_glimpses: int = 6, size: int = 32) -> np.ndarray:
    """A ``(5, size, size)`` map seen at whole-image detail, grey, with a dark 2x2 blob at each ``(row, col)``."""
    glimpse_map = np.zeros((5, size, size), dtype=np.float32)
    glimpse_map[:3] = 0.5
    glimpse_map[3] = 0.3
    glimpse_map[4] = glimpses / num_glimpses
    for row, col in spots:
        glimpse_map[:3, row : row + 2, col : col + 2] = -1.5
    return glimpse_map


def test_salient_looks_at_the_blob_inside_one_cell_then_moves_on() -> None:
    from adaglimpse_env.glimpse import action_to_unit, compute_glimpse_boxes

    policy = SalientPolicy(6, 4, 224, 32, 224.0)
    first, _ = policy.predict(_spot_map([], glimpses=0))
    np.testing.assert_array_equal(first, [0.0, 0.0, 1.0])  # the whole image first
    glimpse_map = _spot_map([(4, 20), (24, 8)], glimpses=1)
    glimpse_map[:3, 24:26, 8:10] = -0.5  # the second blob is fainter
    action, _ = policy.predict(glimpse_map)
    unit = action_to_unit(torch.as_tensor(action[None]))
    cells = compute_glimpse_boxes(unit, (224, 224), 2).cells[0].float()  # (4, 4) y1 x1 y2 x2
    blob = torch.tensor([(4 + 1) * 7.0, (20 + 1) * 7.0])  # the blob's centre in image pixels
    holding = ((cells[:, :2] <= blob) & (cells[:, 2:] > blob)).all(dim=1)
    assert holding.sum() == 1
    cell_centre = (cells[holding, :2] + cells[holding, 2:])[0] / 2
    assert torch.all((cell_centre - blob).abs() <= 7.0)  # the blob sits mid-cell, not on the cut between cells
    # Once the bright blob has been seen at close detail, the next look goes to the fainter one.
    glimpse_map[3, 2:8, 18:24] = 1.0
    glimpse_map[4] = 2 / 6
    action, _ = policy.predict(glimpse_map[None])
    cells = compute_glimpse_boxes(action_to_unit(torch.as_tensor(action)), (224, 224), 2).cells[0].float()
    second = torch.tensor([(24 + 1) * 7.0, (8 + 1) * 7.0])
    assert ((cells[:, :2] <= second) & (cells[:, 2:] > second)).all(dim=1).sum() == 1
    with pytest.raises(ValueError, match="observation='map'"):
        policy.predict({"mask": np.zeros((24, 1))})
