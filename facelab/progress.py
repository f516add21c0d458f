"""Progress bars with rate and ETA; silent with `--quiet` and for steps under ~1 s.

When `FACELAB_EVENTS` names a file (as `facelab ui` does for the jobs it starts), progress and
errors are also appended to it as JSON lines, so the UI reads them instead of scraping the
terminal text: {"event": "progress", "label", "done", "total"}, {"event": "error", "message"},
{"event": "end", "code"}.
"""

from __future__ import annotations

import json
import os
import time

from tqdm import tqdm

EVENTS_ENV = "FACELAB_EVENTS"
_quiet = False


def set_quiet(quiet: bool) -> None:
    global _quiet
    _quiet = quiet


def event(kind: str, **fields) -> None:
    """One JSON line in the events file, when there is one."""
    path = os.environ.get(EVENTS_ENV)
    if not path:
        return
    line = json.dumps({"event": kind, "time": round(time.time(), 3), **fields})
    try:
        with open(path, "a") as f:
            f.write(line + "\n")
    except OSError:
        pass  # progress reporting must never stop the work


class Bar(tqdm):
    """tqdm that also reports its progress as events (at most twice a second, and at the end)."""

    def __init__(self, total: int | None, desc: str, **kwargs):
        super().__init__(total=total, desc=desc, **kwargs)
        # Kept here too: a disabled (quiet) tqdm keeps neither its count nor its description.
        self.label, self.goal, self.done, self._reported = desc, total, 0, 0.0

    def update(self, n: float = 1):
        self.done += n
        now = time.monotonic()
        if now - self._reported >= 0.5 or self.done == self.goal:
            self._reported = now
            event("progress", label=self.label, done=self.done, total=self.goal)
        return super().update(n)


def bar(total: int | None, desc: str, unit: str = "frame") -> Bar:
    return Bar(
        total=total,
        desc=desc,
        unit=unit,
        disable=_quiet,
        delay=1.0,
        mininterval=0.5,
        dynamic_ncols=True,
        leave=True,
    )


def say(msg: str) -> None:
    """A result line; shown even with --quiet (quiet silences progress, not results)."""
    print(msg, flush=True)


def is_quiet() -> bool:
    return _quiet
