"""Determinism on CPU (docs/determinism.md): fresh envs with the same seed play identical episodes, whatever the
number of decoding workers; two SAC trainings with the same seed are identical bit for bit; so is pretraining,
whatever the number of loader workers.

``tests/envs/test_vector_env.py`` already replays one env twice after ``reset(seed)``; here each run builds
everything anew, from the registered id and the checkpoint file, and compares every output, infos included.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch
from tiny_models import tiny_model, write_images

import adaglimpse_env  # noqa: F401  (registers the ids)
from adaglimpse_env.models import save_model

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))


#: Run name -> whether torch's deterministic-algorithms mode was on when its train_sac.main returned.
DETERMINISTIC_MODE: dict[str, bool] = {}


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread() -> Iterator[None]:
    """Tiny models run ~10x faster on one thread than on threads fighting over a busy machine's cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def env_kwargs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("determinism")
    write_images(root / "images", 6, seed=5)
    save_model(root / "tiny.pt", tiny_model(), "reconstruction")
    return {"data_root": str(root / "images"), "checkpoint": str(root / "tiny.pt"), "num_glimpses": 3}


def assert_identical(a: Any, b: Any, where: str = "") -> None:
    """Equal structure and bit-for-bit equal arrays (NaNs included), recursively through dicts and sequences."""
    if isinstance(a, Mapping):
        assert isinstance(b, Mapping) and set(a) == set(b), f"{where}: keys {sorted(a)} != {sorted(b)}"
        for key in a:
            assert_identical(a[key], b[key], f"{where}/{key}")
    elif isinstance(a, (list, tuple)):
        assert isinstance(b, (list, tuple)) and len(a) == len(b), f"{where}: lengths differ"
        for index, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_identical(x, y, f"{where}[{index}]")
    elif isinstance(a, (np.ndarray, np.generic, torch.Tensor)):
        x = a.detach().cpu().numpy() if isinstance(a, torch.Tensor) else np.asarray(a)
        y = b.detach().cpu().numpy() if isinstance(b, torch.Tensor) else np.asarray(b)
        assert (x.dtype, x.shape) == (y.dtype, y.shape), f"{where}: {x.dtype}{x.shape} != {y.dtype}{y.shape}"
        assert x.tobytes() == y.tobytes(), f"{where}: values differ"
    else:
        assert a == b or (a != a and b != b), f"{where}: {a!r} != {b!r}"


def play(env_kwargs: dict[str, Any], num_workers: int, steps: int = 10, seed: int = 3) -> list[Any]:
    """Everything a freshly built vector env returns over ``steps`` steps of seeded random actions (several
    episodes: 3 glimpses each, next-step autoreset), with random-crop augmentation on."""
    envs = gym.make_vec(
        "AdaGlimpse-ImageFolder-v0", num_envs=3, split="train", num_workers=num_workers, device="cpu", **env_kwargs
    )
    try:
        actions = np.random.default_rng(seed).uniform(-1, 1, size=(steps, 3, 3)).astype(np.float32)
        trace: list[Any] = [envs.reset(seed=seed)]
        trace += [envs.step(action) for action in actions]
        return trace
    finally:
        envs.close()


@pytest.mark.parametrize("num_workers", [0, 2])
def test_fresh_envs_with_the_same_seed_play_identical_episodes(env_kwargs: dict[str, Any], num_workers: int) -> None:
    reference = play(env_kwargs, num_workers=0)
    assert_identical(reference, play(env_kwargs, num_workers=num_workers))
    # Not trivially equal: the episodes differ between envs and steps, and another seed plays other images.
    first_scores = np.array([step[4]["score"] for step in reference[1:]])
    assert len(np.unique(first_scores)) > 10
    with pytest.raises(AssertionError, match="values differ"):
        assert_identical(reference, play(env_kwargs, num_workers=0, seed=4))


# ------------------------------------------------------------------------------------------------- training
def scalar_curves(output: Path) -> dict[str, list[tuple[int, float]]]:
    """Every TensorBoard scalar of a run but the wall-clock ones (``time/*``), as ``(step, value)`` lists."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    (run,) = (output / "tensorboard").iterdir()
    events = EventAccumulator(str(run), size_guidance={"scalars": 0})
    events.Reload()
    return {
        tag: [(event.step, event.value) for event in events.Scalars(tag)]
        for tag in events.Tags()["scalars"]
        if not tag.startswith("time/")
    }


def training_record(output: Path) -> dict[str, Any]:
    """What a training run leaves that must repeat: final weights and optimiser states, the replay buffer, the
    loss / entropy / return curves and the held-out evaluation."""
    from stable_baselines3.common.save_util import load_from_zip_file

    _data, params, variables = load_from_zip_file(output / "model.zip", device="cpu")
    with np.load(output / "replay_buffer.npz", allow_pickle=False) as stored:
        arrays = dict(stored)
    buffer = SimpleNamespace(
        observations={k.split(".", 1)[1]: v for k, v in arrays.items() if k.startswith("observations.")},
        next_observations={k.split(".", 1)[1]: v for k, v in arrays.items() if k.startswith("next_observations.")},
        actions=arrays["actions"], rewards=arrays["rewards"], dones=arrays["dones"],
        pos=json.loads(arrays["meta"].tobytes())["pos"],
    )  # fmt: skip
    evaluation = json.loads((output / "evaluation.json").read_text())
    evaluation.pop("wall_time_s")
    for entry in evaluation["evaluations"]:  # wall-clock and training seconds of each evaluation: timing
        entry.pop("wall_s")
        entry.pop("train_wall_s")
    return {
        "params": params,
        "variables": variables,
        "buffer": {
            "observations": buffer.observations,
            "next_observations": buffer.next_observations,
            "actions": buffer.actions,
            "rewards": buffer.rewards,
            "dones": buffer.dones,
            "pos": buffer.pos,
        },
        "curves": scalar_curves(output),
        "evaluation": evaluation,
    }


@pytest.fixture(scope="module")
def trained(env_kwargs: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Any]:
    """``trained(name, *flags)``: the record of a 200-step SAC run on the tiny env (CPU, one thread), cached."""
    import train_sac

    records: dict[str, Any] = {}
    env_args = ["--env-kwargs", *(f"{key}={value}" for key, value in env_kwargs.items())]

    def run(name: str, *flags: str) -> Any:
        if name not in records:
            output = tmp_path_factory.mktemp(name)
            args = ["--env-id", "AdaGlimpse-ImageFolder-v0", *env_args, "--num-envs", "2", "--total-timesteps", "200",
                    "--learning-starts", "16", "--buffer-size", "256", "--batch-size", "8", "--eval-every", "100",
                    "--eval-episodes", "4", "--eval-envs", "2", "--checkpoint-every", "64", "--device", "cpu",
                    "--threads", "1", "--no-progress-bar", "--output", str(output), *flags]  # fmt: skip
            try:
                assert train_sac.main(args) == 0
                DETERMINISTIC_MODE[name] = torch.are_deterministic_algorithms_enabled()
            finally:
                torch.use_deterministic_algorithms(False)
            records[name] = training_record(output)
        return records[name]

    return run


def test_two_trainings_with_the_same_seed_are_identical_with_or_without_deterministic_algorithms(
    trained: Callable[..., Any],
) -> None:
    # One pair shows both: the run repeats bit for bit, and torch's deterministic algorithms (--deterministic), which
    # the second run turns on, change nothing on the CPU (a pair for each claim took a third 200-step run, ~25 s).
    first, second = trained("seed0"), trained("seed0_deterministic", "--deterministic")
    assert_identical(first, second)
    assert len(first["curves"]["train/critic_loss"]) > 10  # a curve, not a point
    assert len(first["evaluation"]["evaluations"]) == 3  # at 100 and 200 steps, and the final one
    # Identical runs alone would not show that --deterministic did anything: the mode must have been on.
    # (Other tests of the module train runs of their own: read these two only.)
    assert {name: DETERMINISTIC_MODE[name] for name in ("seed0", "seed0_deterministic")} == {
        "seed0": False,
        "seed0_deterministic": True,
    }


def test_another_seed_trains_differently(trained: Callable[..., Any]) -> None:
    first, other = trained("seed0"), trained("seed1", "--seed", "1")
    with pytest.raises(AssertionError, match="values differ"):
        assert_identical(first["params"], other["params"])
    assert first["curves"]["train/critic_loss"] != other["curves"]["train/critic_loss"]


# ---------------------------------------------------------------------------------------------- pretraining
def test_pretraining_is_identical_whatever_the_number_of_workers(tmp_path: Path) -> None:
    import pretrain_mae

    write_images(tmp_path / "images", 5, seed=7)
    states = []
    for workers in (0, 1):
        output = tmp_path / f"workers_{workers}"
        args = ["--dataset", "folder", "--data-root", str(tmp_path / "images"), "--model-size", "tiny",
                "--steps", "4", "--batch-size", "4", "--num-workers", str(workers), "--eval-every", "1000",
                "--checkpoint-every", "4", "--eval-glimpses", "1", "--max-glimpses", "2", "--device", "cpu",
                "--output", str(output)]  # fmt: skip
        assert pretrain_mae.main(args) == 0
        states.append(torch.load(output / "training_state.pt", weights_only=True)["model"])
    # One batch per epoch: 4 epochs, each with new crops in both runs (a worker once kept the first epoch's).
    assert_identical(states[0], states[1])
