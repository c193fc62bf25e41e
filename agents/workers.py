"""Worker processes for long runs (benchmarks) that end when the process that started them ends.

A :class:`concurrent.futures.ProcessPoolExecutor` worker does not notice that its parent is gone: when a benchmark
is stopped with ``kill`` (or its terminal closes), the run each worker is training goes on to the end, on the
cores the user meant to free, and the next benchmark started beside it runs at half speed. And a ``Ctrl-C``
leaves the parent waiting, in the pool's shutdown, for the runs already handed out. The pool of
:func:`worker_pool` gives every worker a watcher thread that ends it as soon as its parent is gone, however the
parent died (``SIGTERM``, ``SIGKILL``, a crash), and ends its workers at once when the code using it raises (a
``Ctrl-C`` included).
"""

from __future__ import annotations

import multiprocessing
import os
import threading
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from multiprocessing.connection import wait

#: The exit status of a worker whose parent died (``128 + SIGTERM``, as if it had been terminated).
ORPHAN_EXIT_STATUS = 143


def _exit_when_orphaned(parent_sentinel: int) -> None:
    """Block until the parent's sentinel is ready (the parent has exited), then exit at once.

    ``os._exit`` skips the worker's clean-up on purpose: nothing is waiting for its result, and a run interrupted
    half-way has nothing worth saving that the parent has not already written.
    """
    wait([parent_sentinel])
    os._exit(ORPHAN_EXIT_STATUS)


def watch_parent() -> None:
    """Worker initializer: start a daemon thread that ends this process once its parent has exited.

    The thread waits on the parent's sentinel from :func:`multiprocessing.parent_process` (a pipe the parent holds
    open on POSIX, its process handle on Windows), so it needs no polling and works wherever ``spawn`` does. In a
    process that multiprocessing did not start there is no parent to watch and nothing is started.
    """
    parent = multiprocessing.parent_process()
    if parent is None:
        return
    watcher = threading.Thread(target=_exit_when_orphaned, args=(parent.sentinel,), name="exit-with-parent")
    watcher.daemon = True  # a worker that finishes normally does not wait for it
    watcher.start()


def _end_workers(pool: ProcessPoolExecutor) -> None:
    """Cancel the jobs not yet started and terminate the workers, without waiting for their running jobs.

    ``ProcessPoolExecutor`` has no public way to stop a running job before Python 3.14 (``terminate_workers``), so
    this reads its ``_processes`` (pid -> process, present since Python 3.2).
    """
    for process in list((getattr(pool, "_processes", None) or {}).values()):
        process.terminate()
    # The pool's manager thread sees its workers gone and fails what they held, so this does not wait on them.
    pool.shutdown(wait=True, cancel_futures=True)


@contextmanager
def worker_pool(workers: int) -> Iterator[ProcessPoolExecutor]:
    """A pool of ``workers`` spawned processes (``spawn``: no CUDA or thread state inherited from the parent)
    that exit when this process dies; used as a context manager.

    On leaving the ``with`` block normally the pool waits for its jobs, as ``ProcessPoolExecutor`` does; on an
    exception (a ``Ctrl-C``, a failed run) it terminates the workers at once instead of letting the jobs already
    handed out run to the end.

    Args:
        workers: number of worker processes (at least 1).

    Yields:
        The pool.

    Raises:
        ValueError: ``workers`` below 1.
    """
    if workers < 1:
        raise ValueError(f"worker_pool needs at least one worker, got workers={workers}")
    pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"), initializer=watch_parent)
    try:
        yield pool
    except BaseException:
        _end_workers(pool)
        raise
    pool.shutdown(wait=True)
