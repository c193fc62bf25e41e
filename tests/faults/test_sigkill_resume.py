"""train_sac.py killed with SIGKILL at seeded-random moments (some while a checkpoint is being written) and resumed
with ``--resume`` each time until it finishes: no file is ever corrupt, every resume starts from the step
``progress.json`` names, and the finished run has every step and every transition."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from stable_baselines3 import SAC
from stable_baselines3.common.save_util import load_from_zip_file

from agents.replay import read_replay_meta, stored_transitions

ROOT = Path(__file__).resolve().parents[2]
TOTAL = 400  # env steps; checkpoints every 16 and at most ~2 checkpoints per attempt: 6 kills never finish the run
KILLS = 6
RESUMED = re.compile(r"resumed .* at (\d+) env steps \(replay buffer: (\d+) transitions\)")
CHECKPOINT_FILE = re.compile(r"(model_(\d+)\.zip|replay_buffer_(\d+)\.npz)")
TOP_LEVEL = {"config.json", "progress.json", "model.zip", "replay_buffer.npz", "evaluation.json", "tensorboard",
             "checkpoints", "run_manifest.json", "agent.pt", "agent.json"}  # fmt: skip


def transitions(buffer: Any) -> int:
    return buffer.size() * buffer.n_envs  # size() counts rows of n_envs transitions


def committed_step(output: Path) -> int:
    path = output / "progress.json"
    return json.loads(path.read_text())["num_timesteps"] if path.exists() else 0


def temporaries(output: Path) -> list[Path]:
    return [path for path in output.rglob(".*.tmp") if path.is_file()]


def assert_nothing_corrupt(output: Path) -> int:
    """Every file of the run folder is whole and the committed checkpoint is consistent; returns its step."""
    step = committed_step(output)
    for path in output.glob("*.json"):
        json.loads(path.read_text())
    leftovers = set(temporaries(output))
    assert {path.name for path in output.iterdir() if path not in leftovers} <= TOP_LEVEL
    for path in (output / "checkpoints").glob("*") if (output / "checkpoints").exists() else ():
        if path in leftovers:
            continue  # a write the kill interrupted: never read, removed by the next run
        assert CHECKPOINT_FILE.fullmatch(path.name), path
        if path.suffix == ".zip":
            load_from_zip_file(path, device="cpu")  # every complete zip reads, committed or not
        else:
            read_replay_meta(path)
    if step:
        model_path = output / "checkpoints" / f"model_{step}.zip"
        assert SAC.load(model_path, device="cpu").num_timesteps == step
        assert stored_transitions(output / "checkpoints" / f"replay_buffer_{step}.npz") == step
        # The published copies are the committed checkpoint or the one before it (a kill between commit and link).
        assert 0 < load_from_zip_file(output / "model.zip", device="cpu")[0]["num_timesteps"] <= step
        assert 0 < stored_transitions(output / "replay_buffer.npz") <= step
    return step


def wait_until(condition: Callable[[], bool], process: subprocess.Popen, timeout: float = 120) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.poll() is None:
        if condition():
            return True
        time.sleep(0.002)
    return False


def kill_at_random_moment(
    process: subprocess.Popen, log: Path, output: Path, start: int, mode: str, rng: np.random.Generator
) -> bool:
    """SIGKILL ``process`` once past start-up (models loaded, the run folder cleaned), after 0-2 new checkpoints,
    then either as soon as a checkpoint write begins (``mode="during_write"``) or 0-0.3 s later; returns whether
    the kill interrupted a write (a temporary file is left)."""
    assert wait_until(lambda: "replay buffer" in log.read_text(), process), log.read_text()
    commits = int(rng.integers(0, 3))
    assert wait_until(lambda: committed_step(output) >= start + 16 * commits, process), log.read_text()
    if mode == "during_write":
        wait_until(lambda: bool(temporaries(output)), process)
    else:
        time.sleep(rng.uniform(0.0, 0.3))
    assert process.poll() is None, f"the run finished before its kill:\n{log.read_text()}"
    os.kill(process.pid, signal.SIGKILL)
    assert process.wait(timeout=60) == -signal.SIGKILL
    return bool(temporaries(output))


def test_sigkill_at_random_moments_then_resume_until_done(sac_args: Callable[..., list[str]], tmp_path: Path) -> None:
    rng = np.random.default_rng(8)
    output = tmp_path / "run"
    command = [sys.executable, str(ROOT / "scripts" / "train_sac.py"), *sac_args(output, TOTAL), "--resume"]
    environment = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    # Half the kills wait for a checkpoint write to start, the others for 0-2 commits plus a random delay.
    modes = rng.permutation(["during_write"] * (KILLS // 2) + ["random"] * (KILLS - KILLS // 2))
    resumed_from, during_writes = [], 0
    for attempt in range(KILLS + 1):
        start = committed_step(output)
        log_path = tmp_path / f"attempt_{attempt}.log"
        with log_path.open("w") as log:
            process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=environment)
        try:
            if attempt < KILLS:
                interrupted = kill_at_random_moment(process, log_path, output, start, modes[attempt], rng)
                during_writes += interrupted
                step = assert_nothing_corrupt(output)
                leftovers = sorted(path.name for path in temporaries(output))
                print(f"attempt {attempt} from step {start}: {modes[attempt]} kill at step {step}, left {leftovers}")
            else:
                assert process.wait(timeout=300) == 0, log_path.read_text()[-3000:]
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
        text = log_path.read_text()
        if start:  # the resumed run starts from the last complete checkpoint, with all its transitions
            assert [tuple(map(int, m)) for m in RESUMED.findall(text)] == [(start, start)], text
            resumed_from.append(start)
        else:
            assert "no complete checkpoint" in text, text

    assert during_writes >= 1, "no kill landed during a checkpoint write"
    assert len(resumed_from) >= 3 and resumed_from == sorted(resumed_from)
    assert assert_nothing_corrupt(output) == TOTAL
    model = SAC.load(output / "model.zip", device="cpu")
    assert model.num_timesteps == TOTAL and stored_transitions(output / "replay_buffer.npz") == TOTAL  # holds 512
    assert json.loads((output / "evaluation.json").read_text())["num_timesteps"] == TOTAL
    assert not temporaries(output)
    assert sorted(p.name for p in (output / "checkpoints").iterdir()) == [f"model_{TOTAL}.zip",
                                                                           f"replay_buffer_{TOTAL}.npz"]  # fmt: skip
