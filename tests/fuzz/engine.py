"""Run one fuzz target for a time budget: hypothesis draws damaged inputs from the target's seeds,
each is read in a fresh folder under a time and memory watch, and anything but a parse or
facelab's own error is a finding (kept with its input, once per place it was raised)."""

from __future__ import annotations

import contextlib
import hashlib
import resource
import signal
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import seed as hypothesis_seed

from facelab.errors import FacelabError
from tests.fuzz.targets import Target

HANG_S = 10.0  # one input may take this long
MEMORY_MB = 100  # nor raise the process's peak memory by more than this


class Hang(BaseException):  # not an Exception: a reader's `except Exception` must not swallow it
    pass


def slug(target: str) -> str:
    """A target's name as a file or folder name."""
    return target.replace(" ", "_").strip("-.")


@dataclass
class Finding:
    target: str
    kind: str  # "exception", "hang" or "memory"
    where: str  # exception type and the innermost facelab line that raised it
    detail: str
    data: bytes

    def save(self, folder: Path) -> Path:
        folder.mkdir(parents=True, exist_ok=True)
        name = f"{slug(self.target)}-{hashlib.sha1(self.data).hexdigest()[:12]}.bin"
        (folder / name).write_bytes(self.data)
        return folder / name


@dataclass
class Stats:
    target: str
    inputs: int = 0
    parsed: int = 0  # read without an error
    refused: int = 0  # a clean FacelabError
    seconds: float = 0.0
    findings: list[Finding] = field(default_factory=list)


def _reset_peak() -> None:
    """Linux: start the process's peak resident size (VmHWM) afresh, so one input's growth shows even
    in a process that has been larger before (a test suite)."""
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")


def _max_rss_mb() -> float:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _on_alarm(signum, frame):
    raise Hang()


def _where(exc: BaseException) -> str:
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if "/facelab/" in f.filename]
    last = frames[-1] if frames else traceback.extract_tb(exc.__traceback__)[-1]
    return f"{type(exc).__name__} at {Path(last.filename).name}:{last.lineno}"


def check(target: Target, data: bytes) -> tuple[str, Finding | None]:
    """("parsed" | "refused" | "finding", the finding) of reading `data` once."""
    _reset_peak()
    before = _max_rss_mb()
    old = signal.signal(signal.SIGALRM, _on_alarm)
    signal.setitimer(signal.ITIMER_REAL, HANG_S)
    outcome, finding = "parsed", None
    try:
        with tempfile.TemporaryDirectory(prefix="facelab-fuzz-") as tmp:
            target.read(data, Path(tmp))
    except FacelabError:
        outcome = "refused"
    except Hang:
        outcome, finding = "finding", Finding(target.name, "hang", f"over {HANG_S:.0f} s", "", data)
    except Exception as exc:  # noqa: BLE001 - any other exception is what the fuzzer looks for
        tb = "".join(traceback.format_exception(exc)[-6:])
        outcome, finding = "finding", Finding(target.name, "exception", _where(exc), tb, data)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
    grew = _max_rss_mb() - before
    if finding is None and grew > MEMORY_MB:
        outcome, finding = "finding", Finding(target.name, "memory", f"peak memory +{grew:.0f} MB", "", data)
    return outcome, finding


def warm_up(target: Target) -> None:
    """Read the target's seeds once: imports and caches are not the inputs' memory."""
    for data in target.seeds():
        check(target, data)


def fuzz(target: Target, seconds: float, seed: int = 0, batch: int = 25) -> Stats:
    """Fuzz `target` for `seconds`; the same seed gives the same inputs (up to the time cut)."""
    stats = Stats(target.name)
    strategy = target.inputs()
    seen: set[str] = set()
    warm_up(target)
    start = time.monotonic()
    deadline = start + seconds

    def one(data: bytes) -> None:
        if time.monotonic() > deadline:
            return
        outcome, finding = check(target, data)
        stats.inputs += 1
        stats.parsed += outcome == "parsed"
        stats.refused += outcome == "refused"
        if finding is not None and finding.where not in seen:
            seen.add(finding.where)
            stats.findings.append(finding)

    run = 0
    while time.monotonic() < deadline:
        test = settings(max_examples=batch, deadline=None, database=None, phases=[Phase.generate],
                        suppress_health_check=list(HealthCheck))(given(strategy)(one))  # fmt: skip
        hypothesis_seed(seed * 1_000_003 + run)(test)()
        run += 1
    stats.seconds = time.monotonic() - start
    return stats
