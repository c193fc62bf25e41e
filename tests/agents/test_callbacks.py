"""Callback scheduling: a resumed run keeps the evaluation schedule of the run it continues."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from agents.callbacks import EvaluationCallback


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
