"""Long steps started from the browser, run as subprocesses of the same `facelab` CLI.

Each job gets its own session (so closing the browser or stopping the server does not stop it)
and a log in `<workspace>/.facelab-ui/jobs/`. The server only ever builds the command lines
itself, from a fixed set of commands: no endpoint runs what a request sends.
"""

from __future__ import annotations

import itertools
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

COMMANDS = ("extract-faces", "sort", "train", "merge", "make-video")
_PERCENT = re.compile(r"(\d{1,3})%\|")
_ERROR = re.compile(r"^facelab [\w-]+: (?:internal )?error: (.*)$")


@dataclass
class Job:
    id: int
    command: str
    args: list[str]
    log: Path
    proc: subprocess.Popen
    started: float

    def describe(self) -> dict:
        code = self.proc.poll()
        lines = self.tail()
        error = next((m.group(1) for ln in reversed(lines) if (m := _ERROR.match(ln))), None)
        percent = None
        for ln in reversed(lines):
            found = _PERCENT.findall(ln)
            if found:
                percent = int(found[-1])
                break
        return {
            "id": self.id, "command": self.command, "args": self.args, "running": code is None,
            "exit_code": code, "error": error, "percent": percent, "last": lines[-12:],
            "seconds": round(time.time() - self.started, 1),
        }  # fmt: skip

    def tail(self, size: int = 16384) -> list[str]:
        try:
            with self.log.open("rb") as f:
                f.seek(max(0, self.log.stat().st_size - size))
                text = f.read().decode(errors="replace")
        except OSError:
            return []
        return [ln.strip() for ln in re.split(r"[\r\n]+", text) if ln.strip()]


class Jobs:
    def __init__(self, workspace: Path):
        self.workspace = workspace
        self.jobs: dict[int, Job] = {}
        self._ids = itertools.count(1)

    def start(self, command: str, args: list[str]) -> Job:
        if command not in COMMANDS:
            raise ValueError(f"not a job: {command}")
        folder = self.workspace / ".facelab-ui" / "jobs"
        folder.mkdir(parents=True, exist_ok=True)
        job_id = next(self._ids)
        log = folder / f"{time.strftime('%Y%m%d-%H%M%S')}-{job_id}-{command}.log"
        cmd = [sys.executable, "-m", "facelab", command, *args, "-w", str(self.workspace)]
        with log.open("wb") as out:
            proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    start_new_session=True)  # fmt: skip
        job = Job(job_id, command, args, log, proc, time.time())
        self.jobs[job_id] = job
        return job

    def running(self, command: str) -> Job | None:
        return next((j for j in self.jobs.values() if j.command == command and j.proc.poll() is None), None)

    def describe(self) -> list[dict]:
        return [j.describe() for j in sorted(self.jobs.values(), key=lambda j: -j.id)]
