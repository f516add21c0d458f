"""Worker processes that are safe to start from a process already running torch.

Forking a process whose OpenMP/torch thread pools are running can deadlock the child on its
first parallel call (it hung the blend workers after training in `facelab run`). Pools that
may start after torch has worked therefore use the forkserver (or spawn) start method, and
their worker functions live in modules that do not import torch.

As with the spawn method, a script that calls facelab's Python API must keep its top-level code
under `if __name__ == "__main__":`, because the workers import the script's module.
"""

from __future__ import annotations

import contextlib
import ctypes
import multiprocessing as mp
import os
import select
import signal
import sys
import threading
import time
from concurrent.futures import ProcessPoolExecutor

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def die_with(pid: int) -> None:
    """In a worker: end when process `pid` (the one that started the work) ends, even by SIGKILL. A
    worker left running by a killed owner would go on writing into the workspace beside the rerun.

    Where the owner is the parent (a forked worker), the kernel kills the worker at once
    (PR_SET_PDEATHSIG, Linux), even in the middle of a long call that holds the GIL. A forkserver's
    workers are the forkserver's children, and the forkserver lives on while any worker holds its
    liveness pipe (a killed merge or trainer left them all running for good): for those, and where
    there is no prctl, a thread waits on the owner's pidfd (Linux 5.3+) or checks on it every second."""
    if os.getppid() == pid and sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:  # it ended before we looked
        os._exit(1)
    except (AttributeError, OSError):
        fd = None

    def watch() -> None:
        if fd is not None:
            select.select([fd], [], [])
        else:
            while _alive(pid):
                time.sleep(1.0)
        os._exit(1)

    threading.Thread(target=watch, name="die-with-owner", daemon=True).start()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        pass
    return True


def _start_worker(owner: int, initializer) -> None:
    """Ctrl-C reaches the whole process group: the parent stops the work and says so once; the
    workers must not each print a KeyboardInterrupt traceback."""
    die_with(owner)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if initializer is not None:
        initializer()


def clean_pool(workers: int, initializer=None) -> ProcessPoolExecutor:
    method = "forkserver" if "forkserver" in mp.get_all_start_methods() else "spawn"
    return ProcessPoolExecutor(workers, mp_context=mp.get_context(method), initializer=_start_worker,
                               initargs=(os.getpid(), initializer))  # fmt: skip
