"""The benchmark's worker pool: workers end when the process that started them is killed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from agents.workers import worker_pool

# A parent that starts one worker, reports its pid, hands it a minute-long job and waits.
PARENT = textwrap.dedent(
    """
    import os, sys, time
    from agents.workers import worker_pool

    pool = worker_pool(1, poll_seconds=0.1)
    print(pool.submit(os.getpid).result(), flush=True)
    pool.submit(time.sleep, 60)
    time.sleep(60)
    """
)


def _running(pid: int) -> bool:
    """Whether ``pid`` is a live process (a zombie waiting to be reaped counts as ended)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state not in ("Z", "X")


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads process states from /proc")
@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "sigkill"])
def test_worker_exits_when_its_parent_is_killed(stop: signal.Signals) -> None:
    root = Path(__file__).resolve().parents[2]
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")])}
    parent = subprocess.Popen(
        [sys.executable, "-c", PARENT], stdout=subprocess.PIPE, text=True, env=environment, cwd=root
    )
    try:
        assert parent.stdout is not None
        worker = int(parent.stdout.readline())
        assert _running(worker)
        time.sleep(0.3)  # the worker is now inside its minute-long job
        parent.send_signal(stop)
        parent.wait(timeout=10)
        deadline = time.monotonic() + 10
        while _running(worker) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not _running(worker), "the worker outlived its parent"
    finally:
        parent.kill()
        parent.wait()


def test_worker_pool_refuses_no_workers() -> None:
    with pytest.raises(ValueError, match="at least one worker, got workers=0"):
        worker_pool(0)
