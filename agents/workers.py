"""Worker processes for long runs (benchmarks) that end when the process that started them ends.

A :class:`concurrent.futures.ProcessPoolExecutor` worker does not notice that its parent is gone: when a benchmark
is stopped with ``kill`` (or its terminal closes), the run each worker is training goes on to the end, on the
cores the user meant to free, and the next benchmark started beside it runs at half speed. The pool built here
gives every worker a watcher thread that ends the worker within a second of its parent's death, however the parent
died (``SIGTERM``, ``SIGKILL``, a crash). ``Ctrl-C`` already reaches the workers, which share the terminal's
process group.
"""

from __future__ import annotations

import os
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context

#: How often a worker checks that its parent is alive, in seconds.
PARENT_POLL_SECONDS = 0.5

#: The exit status of a worker whose parent died (``128 + SIGTERM``, as if it had been terminated).
ORPHAN_EXIT_STATUS = 143


def _exit_when_orphaned(parent_pid: int, poll_seconds: float) -> None:
    """Poll until the parent ``parent_pid`` is gone (the worker is re-parented), then exit at once.

    ``os._exit`` skips the worker's clean-up on purpose: nothing is waiting for its result, and a run interrupted
    half-way has nothing worth saving that the parent has not already written.
    """
    while os.getppid() == parent_pid:
        time.sleep(poll_seconds)
    os._exit(ORPHAN_EXIT_STATUS)


def watch_parent(parent_pid: int, poll_seconds: float = PARENT_POLL_SECONDS) -> None:
    """Worker initializer: start a daemon thread that ends this process once ``parent_pid`` is no longer its
    parent. The check is ``os.getppid()``, which works on Linux and macOS without platform calls."""
    watcher = threading.Thread(
        target=_exit_when_orphaned, args=(parent_pid, poll_seconds), name="exit-with-parent", daemon=True
    )
    watcher.start()


def worker_pool(workers: int, poll_seconds: float = PARENT_POLL_SECONDS) -> ProcessPoolExecutor:
    """A pool of ``workers`` spawned processes (``spawn``: no CUDA or thread state inherited from the parent)
    that exit when this process dies.

    Args:
        workers: number of worker processes (at least 1).
        poll_seconds: how often each worker checks that this process is alive.

    Raises:
        ValueError: ``workers`` below 1.
    """
    if workers < 1:
        raise ValueError(f"worker_pool needs at least one worker, got workers={workers}")
    return ProcessPoolExecutor(
        workers, mp_context=get_context("spawn"), initializer=watch_parent, initargs=(os.getpid(), poll_seconds)
    )
