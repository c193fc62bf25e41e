"""Callback scheduling: a resumed run keeps the evaluation schedule of the run it continues; a time budget and the
learning curves count training time, not the evaluations'."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from agents.callbacks import EvaluationCallback, WallClockLimitCallback


def test_resumed_run_evaluates_at_the_next_multiple_not_at_every_step() -> None:
    callback = EvaluationCallback(env=None, every=16, episodes=1)  # type: ignore[arg-type]
    evaluated: list[int] = []
    callback.evaluate = lambda: evaluated.append(callback.num_timesteps) or {}  # type: ignore[method-assign]
    model: Any = SimpleNamespace(num_timesteps=40)
    callback.model = model
    callback._on_training_start()
    for steps in range(42, 100, 2):  # two envs: the count moves by 2 per call
        callback.num_timesteps = model.num_timesteps = steps
        callback._on_step()
    assert evaluated == [48, 64, 80, 96]


class FakeClock:
    """``time.perf_counter`` that moves only when told to."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_time_limit_leaves_evaluations_out_and_curves_record_training_time(monkeypatch) -> None:
    clock = FakeClock()
    monkeypatch.setattr("agents.callbacks.time.perf_counter", clock)
    evaluation = EvaluationCallback(env=None, every=10, episodes=1)  # type: ignore[arg-type]

    def evaluate_for_thirty_seconds() -> dict[str, Any]:
        clock.now += 30.0
        return {
            "metric": "accuracy",
            "metric_by_glimpse": [0.5],
            "final_score": 0.5,
            "return": 0.5,
            "pixel_fraction": 0.1,
        }

    monkeypatch.setattr("agents.callbacks.run_policy", lambda *args: evaluate_for_thirty_seconds())
    evaluation.env = SimpleNamespace(render_mode=None)  # type: ignore[assignment]
    limit = WallClockLimitCallback(minutes=1.0, evaluation=evaluation)
    logger = SimpleNamespace(record=lambda *args, **kwargs: None, dump=lambda *args: None)
    model: Any = SimpleNamespace(num_timesteps=0, logger=logger)
    evaluation.model = limit.model = model
    evaluation._on_training_start()
    limit._on_training_start()
    steps = 0
    while True:  # 10 s of training per call, an evaluation (30 s) after every 10 steps; SB3 stops at False
        clock.now += 10.0
        steps += 10
        evaluation.num_timesteps = limit.num_timesteps = model.num_timesteps = steps
        evaluation._on_step()
        if not limit._on_step():
            break
    # 60 s of training are reached at the 6th call although 60 + 5 * 30 s have passed on the clock by then.
    assert limit.stopped_at == 60 and len(evaluation.history) == 6
    first, second = evaluation.history[:2]
    assert (first["wall_s"], first["train_wall_s"]) == (10.0, 10.0)
    assert (second["wall_s"], second["train_wall_s"]) == (50.0, 20.0)


def test_time_limit_refuses_a_budget_that_is_not_positive() -> None:
    with pytest.raises(ValueError, match="minutes > 0"):
        WallClockLimitCallback(minutes=0)
