"""The benchmark's worker pool: workers end when the process that started them is killed."""

from __future__ import annotations

import os
import select
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

    with worker_pool(1) as pool:
        print(pool.submit(os.getpid).result(), flush=True)
        pool.submit(time.sleep, 60)
        time.sleep(60)
    """
)
# The same, stopped by an exception in the with block after the job is handed out (as Ctrl-C stops it).
INTERRUPTED = textwrap.dedent(
    """
    import os, sys, time
    from agents.workers import worker_pool

    with worker_pool(1) as pool:
        print(pool.submit(os.getpid).result(), flush=True)
        pool.submit(time.sleep, 60)
        time.sleep(0.5)
        raise KeyboardInterrupt
    """
)


def _running(pid: int) -> bool:
    """Whether ``pid`` is a live process (a zombie waiting to be reaped counts as ended)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state not in ("Z", "X")


def _ends_before_its_parent_is_done(script: str, stop: str | None) -> None:
    """Run ``script`` as a parent process, read its worker's pid, send the parent ``stop`` (a signal name; None:
    let it end by itself) and check that the worker ends within 10 seconds, long before its minute-long job."""
    root = Path(__file__).resolve().parents[2]
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")])}
    worker = None
    with subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        env=environment, cwd=root,
    ) as parent:  # fmt: skip
        try:
            assert parent.stdout is not None
            ready, _, _ = select.select([parent.stdout], [], [], 60)
            assert ready, "the parent did not report its worker within 60 s"
            worker = int(parent.stdout.readline())
            assert _running(worker)
            time.sleep(0.3)  # the job has been handed to the worker (running, or next in its queue)
            if stop is not None:
                parent.send_signal(getattr(signal, stop))
            parent.wait(timeout=10)
            deadline = time.monotonic() + 10
            while _running(worker) and time.monotonic() < deadline:
                time.sleep(0.05)
            assert not _running(worker), "the worker outlived its parent"
        finally:
            parent.kill()
            if worker is not None and _running(worker):
                os.kill(worker, signal.SIGKILL)


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads process states from /proc")
@pytest.mark.parametrize("stop", ["SIGTERM", "SIGKILL"])
def test_worker_exits_when_its_parent_is_killed(stop: str) -> None:
    _ends_before_its_parent_is_done(PARENT, stop)


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads process states from /proc")
def test_an_exception_in_the_with_block_ends_the_workers_at_once() -> None:
    # Without it the parent would wait in the pool's shutdown for the minute-long job.
    _ends_before_its_parent_is_done(INTERRUPTED, None)


def test_worker_pool_refuses_no_workers() -> None:
    with pytest.raises(ValueError, match="at least one worker, got workers=0"), worker_pool(0):
        pass
