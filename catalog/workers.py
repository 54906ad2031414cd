"""Process pools whose workers die with their parent.

A ``kill -9`` of a driver gives its pool no chance to shut down, and forked
``ProcessPoolExecutor`` workers never notice: each holds both ends of the pipe it waits on,
so it waits forever, an orphan. Every stage makes its pools here instead. Each worker first
asks the kernel to SIGKILL it when its parent dies (Linux ``prctl(PR_SET_PDEATHSIG)``), then
checks that its parent is still the process that started the pool, closing the window where
the parent died between the fork and the ``prctl``. Where ``prctl`` is not available a
daemon thread in each worker polls the parent's id once a second instead.

Linux sends the signal when the *thread* that forked the worker ends, not only the process:
create a pool, and make its first submission (when forked workers start), from a thread that
outlives the pool, as every stage does from its main thread.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from typing import Any

log = logging.getLogger(__name__)

PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>
WATCH_SECONDS = 1.0


def process_pool(workers: int, initializer: Callable[..., Any] | None = None,
                 initargs: tuple = ()) -> ProcessPoolExecutor:
    """A ``ProcessPoolExecutor`` of ``workers`` processes that exit when this process dies.

    ``initializer(*initargs)`` runs in each worker after the death signal is armed, as with
    ``ProcessPoolExecutor``.
    """
    return ProcessPoolExecutor(workers, initializer=_start_worker,
                               initargs=(os.getpid(), initializer, initargs))


def _start_worker(parent: int, initializer: Callable[..., Any] | None, initargs: tuple) -> None:
    die_with_parent(parent)
    if initializer is not None:
        initializer(*initargs)


def die_with_parent(parent: int) -> None:
    """Make this process exit when process ``parent`` (its parent now) dies."""
    if not _set_death_signal(signal.SIGKILL):
        threading.Thread(target=_watch_parent, args=(parent,), daemon=True,
                         name="die-with-parent").start()
    if os.getppid() != parent:  # the parent died before the signal was armed
        os._exit(1)


def _set_death_signal(sig: int) -> bool:
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
        if libc.prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0) == 0:
            return True
        log.debug("prctl(PR_SET_PDEATHSIG) failed: errno %d", ctypes.get_errno())
    except (OSError, AttributeError) as e:  # no libc prctl (e.g. an unusual libc)
        log.debug("prctl unavailable: %s", e)
    return False


def _watch_parent(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(WATCH_SECONDS)
    os._exit(1)


def default_workers(workers: int | None = None) -> int:
    """``workers`` when given, else one per core: every stage's default pool size."""
    return workers or os.cpu_count() or 1
