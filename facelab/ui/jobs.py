"""Long steps started from the browser, run as subprocesses of the same `facelab` CLI.

Each job gets its own session (so closing the browser or stopping the server does not stop it)
and a log in `<workspace>/.facelab-ui/jobs/`, with a small JSON record beside it (command, pid), so
a restarted server shows the jobs still running and does not start a second merge beside one.
The job's progress and errors come from its events file (JSON lines, see progress.py), not from
its terminal text. The server only ever builds the command lines itself, from a fixed set of
commands: no endpoint runs what a request sends.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from facelab.fsutil import parse_json
from facelab.progress import EVENTS_ENV

COMMANDS = ("extract-faces", "sort", "train", "merge", "make-video", "eval")


@dataclass
class Job:
    id: int
    command: str
    args: list[str]
    log: Path
    pid: int
    started: float
    proc: subprocess.Popen | None = None  # None: started by an earlier server (exit code unknown)
    ended: float | None = None  # when this server first saw it stopped

    def running(self) -> bool:
        if self.proc is not None:
            return self.proc.poll() is None
        return _is_facelab_process(self.pid, self.command)

    def describe(self) -> dict:
        running = self.running()
        if not running and self.ended is None:
            self.ended = time.time()
        code = self.proc.poll() if self.proc is not None else None
        lines = self.tail()
        error, percent = None, None
        for e in self.events():
            if e.get("event") == "progress" and e.get("total"):
                percent = min(100, int(100 * float(e.get("done", 0)) / float(e["total"])))
            elif e.get("event") == "error":
                error = str(e.get("message"))
            elif e.get("event") == "end" and code is None and self.proc is None:
                code = e.get("code")
        return {
            "id": self.id, "command": self.command, "args": self.args, "running": running,
            "exit_code": code, "error": error, "percent": percent, "last": lines[-12:],
            "seconds": round((self.ended or time.time()) - self.started, 1),
        }  # fmt: skip

    @property
    def events_path(self) -> Path:
        return self.log.with_suffix(".events.jsonl")

    def events(self, size: int = 65536) -> list[dict]:
        """The job's progress and error events (progress.event), last `size` bytes."""
        out = []
        for line in _tail_text(self.events_path, size).splitlines():
            with contextlib.suppress(ValueError):
                e = parse_json(line)
                if isinstance(e, dict):
                    out.append(e)
        return out

    def tail(self, size: int = 16384) -> list[str]:
        text = _tail_text(self.log, size)
        return [ln.strip() for ln in re.split(r"[\r\n]+", text) if ln.strip()]


def _tail_text(path: Path, size: int) -> str:
    try:
        with path.open("rb") as f:
            f.seek(max(0, path.stat().st_size - size))
            return f.read().decode(errors="replace")
    except OSError:
        return ""


def _is_facelab_process(pid: int, command: str) -> bool:
    """Whether `pid` still runs `facelab <command>` (not a later process that reuses the number)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return True  # no /proc (macOS): the pid is alive, which is all we can tell
    return b"facelab" in argv and command.encode() in argv


class Jobs:
    def __init__(self, workspace: Path):
        self.workspace = workspace
        self.folder = workspace / ".facelab-ui" / "jobs"
        self.jobs: dict[int, Job] = {}
        self._ids = itertools.count(1)
        self._adopt()

    def _adopt(self) -> None:
        """Jobs an earlier server started that are still running."""
        for record in sorted(self.folder.glob("*.json")) if self.folder.is_dir() else []:
            with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
                r = parse_json(record.read_text())
                if r["command"] in COMMANDS and _is_facelab_process(int(r["pid"]), r["command"]):
                    job = Job(next(self._ids), r["command"], list(r["args"]), record.with_suffix(".log"),
                              int(r["pid"]), float(r["started"]))  # fmt: skip
                    self.jobs[job.id] = job

    def start(self, command: str, args: list[str]) -> Job:
        if command not in COMMANDS:
            raise ValueError(f"not a job: {command}")
        self.folder.mkdir(parents=True, exist_ok=True)
        job_id = next(self._ids)
        log = self.folder / f"{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}-{job_id}-{command}.log"
        cmd = [sys.executable, "-m", "facelab", command, *args, "-w", str(self.workspace)]
        env = os.environ | {EVENTS_ENV: str(log.with_suffix(".events.jsonl"))}
        with log.open("wb") as out:
            proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    start_new_session=True, env=env)  # fmt: skip
        job = Job(job_id, command, args, log, proc.pid, time.time(), proc)
        record = {"command": command, "args": args, "pid": proc.pid, "started": job.started}
        log.with_suffix(".json").write_text(json.dumps(record) + "\n")
        self.jobs[job_id] = job
        return job

    def running(self, command: str) -> Job | None:
        return next((j for j in self.jobs.values() if j.command == command and j.running()), None)

    def describe(self) -> list[dict]:
        return [j.describe() for j in sorted(self.jobs.values(), key=lambda j: -j.id)]
