"""Learning: where all the information sits in one corner of each image, SAC learns to look there and beats the
random baseline (issue #5).

The task (:mod:`corner_task`): 128-px images of pixel noise whose class, stripe orientation, is drawn only in the
top-left 48-px square; a small elastic MAE classifier is trained on random glimpses of them in the module fixture,
then frozen behind ``AdaGlimpse-ImageFolder-v0``. Glimpses are capped at half the image side, so one glimpse sees
at most a quarter of the image: a random glimpse covers the corner in about a quarter of the episodes and scores
about 0.6 (true-class probability), a glimpse on the corner about 1.0. The one observation before the glimpse is
the same for every image, so the agent has to learn where to look before seeing anything. Agents train on one
folder and are measured with :func:`agents.evaluation.run_policy` on a held-out one.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch
from corner_task import covers_corner, load_folder, train_corner_classifier, write_corner_folder
from stable_baselines3 import PPO, SAC

from adaglimpse_env import GlimpseVectorEnv
from adaglimpse_env.models import save_model
from agents.baselines import make_baseline
from agents.evaluation import EpisodeRecorder, run_policy
from agents.features import sac_policy_kwargs
from agents.grid_dqn import GlimpseGridQPolicy, GridActing, GridActions
from agents.grid_dqn_learner import GridDQN
from agents.grid_policy import GlimpseGrid, GlimpseGridPolicy
from agents.map_critic import glimpse_geometry_of
from agents.sac import make_sac
from agents.sb3_adapter import make_sb3_vec_env

ENV_ID = "AdaGlimpse-ImageFolder-v0"
#: One glimpse per episode, at most half the image side (32 to 64 px on 128-px images).
TASK = {"task": "classification", "num_glimpses": 1, "max_glimpse_ratio": 0.5}
VAL_IMAGES_PER_CLASS = 32
EVAL_EPISODES = 2 * VAL_IMAGES_PER_CLASS
EVAL_SEED = 100
#: SAC's held-out final score must beat random's by this much. Measured on 2 CPU cores: random 0.586-0.600 on tasks
#: built with seeds 0-2 (this one: 0.600); flat SAC 0.969-1.000 on this task (SAC seeds 0-9), 0.896-0.997 on tasks
#: 1-2 (seeds 0-4); the paper's SAC 0.987-0.999 on this task (seeds 0-9), 0.910-0.984 on task 1 (seeds 0-2).
#: Smallest gap: 0.30.
SCORE_MARGIN = 0.25


@dataclass(frozen=True)
class CornerTask:
    train: Path
    val: Path
    checkpoint: Path


@pytest.fixture(scope="module")
def one_thread() -> Iterator[None]:
    """Run the tiny networks on one thread: on a busy 2-core machine two OpenMP threads made each training step
    of the classifier about 90 times slower, and one thread keeps the float reductions, hence the runs,
    reproducible."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def corner_task(tmp_path_factory: pytest.TempPathFactory, one_thread: None) -> CornerTask:
    root = tmp_path_factory.mktemp("corner_task")
    train = write_corner_folder(root / "train", images_per_class=64, seed=0)
    val = write_corner_folder(root / "val", images_per_class=VAL_IMAGES_PER_CLASS, seed=1)
    images, labels = load_folder(train)
    checkpoint = root / "corner_classifier.pt"
    model = train_corner_classifier(images, labels, steps=300, seed=0)
    save_model(checkpoint, model, "classification")
    return CornerTask(train, val, checkpoint)


def training_env(task: CornerTask, observation: str) -> Any:
    """8 training envs on the fixed (not augmented: a random crop would move the corner) training images."""
    return make_sb3_vec_env(
        ENV_ID,
        num_envs=8,
        data_root=str(task.train),
        checkpoint=str(task.checkpoint),
        augment=False,
        observation=observation,
        **TASK,
    )


def held_out_env(task: CornerTask, observation: str) -> GlimpseVectorEnv:
    """Every held-out image once, in one batch of ``EVAL_EPISODES`` envs."""
    env = gym.make_vec(
        ENV_ID,
        num_envs=EVAL_EPISODES,
        data_root=str(task.val),
        checkpoint=str(task.checkpoint),
        split="val",
        observation=observation,
        **TASK,
    )
    assert isinstance(env, GlimpseVectorEnv)
    return env


def evaluate(env: GlimpseVectorEnv, policy: Any) -> tuple[dict[str, Any], float, np.ndarray]:
    """Held-out result, the fraction of glimpses that overlap the informative corner, and the mean glimpse centre
    ``(y, x)``."""
    recorder = EpisodeRecorder()
    result = run_policy(env, policy, EVAL_EPISODES, seed=EVAL_SEED, recorder=recorder)
    boxes = np.stack([episode[0] for episode in recorder.boxes])  # (episodes, 4) the one glimpse
    centre = (boxes[:, :2] + boxes[:, 2:]).mean(axis=0) / 2
    return result, float(covers_corner(boxes).mean()), centre


def assert_beats_random(env: GlimpseVectorEnv, model: Any) -> None:
    trained, trained_hits, trained_centre = evaluate(env, model)
    random, random_hits, random_centre = evaluate(env, make_baseline("random", env, seed=0))
    summary = (
        f"SAC {trained}, {trained_hits:.0%} of glimpses on the corner, mean centre {trained_centre}; "
        f"random {random}, {random_hits:.0%}, mean centre {random_centre}"
    )
    assert trained["final_score"] >= random["final_score"] + SCORE_MARGIN, summary
    assert trained["metric_by_glimpse"][-1] >= 0.9 > random["metric_by_glimpse"][-1], summary  # accuracy
    assert trained_hits >= 0.9 and random_hits <= 0.5, summary


def assert_learns(
    task: CornerTask, observation: str, model: Any, train_env: Any, steps: int, acting: Any = None
) -> None:
    """Train ``model`` for ``steps`` env steps, then :func:`assert_beats_random` on the held-out images (``acting``
    acts there if given, else the model); closes both envs."""
    model.learn(steps)
    env = held_out_env(task, observation)
    assert_beats_random(env, model if acting is None else acting)
    env.close()
    train_env.close()


def test_only_a_glimpse_on_the_corner_is_rewarded(corner_task: CornerTask) -> None:
    env = held_out_env(corner_task, "flat")
    smallest = np.array([[-1.0, -1.0, -1.0]] * env.num_envs, dtype=np.float32)
    # The smallest glimpse in each corner and at the centre; only the top-left one sees the stripes.
    for position, expected in (((-1, -1), 1.0), ((1, -1), 0.5), ((-1, 1), 0.5), ((1, 1), 0.5), ((0, 0), 0.5)):
        env.reset(seed=0)
        actions = smallest.copy()
        actions[:, :2] = position
        _, reward, terminated, _, info = env.step(actions)
        assert terminated.all()
        assert np.all(covers_corner(info["glimpse_boxes"][:, 0]) == (position == (-1, -1)))
        assert info["score"].mean() == pytest.approx(expected, abs=0.06), position  # true-class probability
        assert info["correct"].mean() == pytest.approx(expected, abs=0.1), position
        np.testing.assert_allclose(reward, info["score"] - info["initial_score"])
    env.close()


def test_sac_learns_to_look_at_the_informative_corner(corner_task: CornerTask) -> None:
    """SB3's SAC with an MLP on the ``flat`` observation, through the vector-env adapter: 1000 steps (~3 s)."""
    train_env = training_env(corner_task, "flat")
    model = SAC(
        "MlpPolicy",
        train_env,
        learning_rate=3e-3,
        learning_starts=200,
        batch_size=64,
        policy_kwargs={"net_arch": [64, 64]},
        seed=0,
        device="cpu",
    )
    assert_learns(corner_task, "flat", model, train_env, 1000)


def test_paper_sac_learns_to_look_at_the_informative_corner(corner_task: CornerTask) -> None:
    """The paper's SAC (:func:`agents.sac.make_sac`: original actor and critic trunks on the ``full`` observation,
    float16 replay), smaller and with a short warm-up: 2000 steps (15-30 s)."""
    train_env = training_env(corner_task, "full")
    model = make_sac(
        train_env,
        seed=0,
        device="cpu",
        lr_schedule=False,
        learning_starts=200,
        batch_size=64,
        policy_kwargs=sac_policy_kwargs(hidden_dim=64, num_heads=4),
    )
    assert_learns(corner_task, "full", model, train_env, 2000)


def test_ppo_with_the_grid_policy_learns_to_look_at_the_informative_corner(corner_task: CornerTask) -> None:
    """SB3's PPO with a categorical policy over a grid of glimpses scored from the map (:mod:`agents.grid_policy`):
    1024 steps (~10 s)."""
    train_env = training_env(corner_task, "map")
    model = PPO(
        GlimpseGridPolicy,
        train_env,
        n_steps=32,
        batch_size=64,
        learning_rate=1e-3,
        policy_kwargs={"glimpse_geometry": glimpse_geometry_of(train_env), "grid": {"positions": 5, "scales": 3}},
        seed=0,
        device="cpu",
    )
    assert_learns(corner_task, "map", model, train_env, 1024)


def test_dqn_over_discrete_glimpses_learns_to_look_at_the_informative_corner(corner_task: CornerTask) -> None:
    """DQN on the grid of glimpses as discrete actions, with the Q-network that reads the map under each glimpse
    (:mod:`agents.grid_dqn`): 1024 steps. GridDQN (:mod:`agents.grid_dqn_learner`), whose update is SB3's DQN's
    at a lower cost (test_grid_dqn_learner.py checks the two take the same step); no symmetry augmentation, since
    the corner is a fixed place."""
    train_env = GridActions(training_env(corner_task, "map"), GlimpseGrid(positions=5, scales=3))
    model = GridDQN(
        GlimpseGridQPolicy,
        train_env,
        learning_starts=128,
        buffer_size=2048,
        batch_size=32,
        train_freq=1,
        gradient_steps=1,
        target_update_interval=128,
        exploration_fraction=0.4,
        learning_rate=1e-3,
        policy_kwargs=train_env.policy_kwargs(),
        seed=0,
        device="cpu",
    )
    assert_learns(corner_task, "map", model, train_env, 1024, acting=GridActing(model))
