"""`--precision auto`, decided by measuring rather than by CPU flags.

bf16 autocast was 20x slower than fp32 on an AVX2-only EPYC, 1.5x faster on one with AVX512_BF16
and 3-5x faster with AMX: a rule written from flags is wrong somewhere. So the actual model is timed
at the actual batch in each candidate (fp32 and bf16 autocast, each with and without channels_last),
the fastest is kept, and bf16 only when it beats fp32 by at least 10 %. The decision is cached in
the user's cache folder per machine (CPU or GPU name, threads), torch version, model and batch, so
it costs seconds once, not at every start. `--precision fp32|bf16` skips all of this.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from facelab.device import cpu_summary
from facelab.fsutil import parse_json, write_json_atomic

CANDIDATES = (("fp32", False), ("fp32", True), ("bf16", False), ("bf16", True))
MIN_BF16_GAIN = 1.10
REPEATS = 3  # timed calls per candidate, after one warm-up; the fastest counts
HOPELESS = 5.0  # a bf16 candidate this much slower than fp32 on its first call is not timed again
CACHE_ENV = "FACELAB_CACHE_DIR"
PRECISION_HELP = ("auto (default): the faster of fp32 and bf16 for this model here, measured once and "
                  "cached; or fp32 or bf16")  # fmt: skip

Timer = Callable[[str, bool], float]  # (precision, channels_last) -> seconds of one call


def label(precision: str, channels_last: bool) -> str:
    return precision + ("+channels_last" if channels_last else "")


@dataclass
class Choice:
    precision: str
    channels_last: bool
    times_ms: dict[str, float]  # per candidate label; missing: not timed (see HOPELESS)
    cached: bool = False

    @property
    def speedup(self) -> float:
        """How much faster the choice is than the fastest fp32 candidate."""
        fp32 = min(v for k, v in self.times_ms.items() if k.startswith("fp32"))
        return fp32 / self.times_ms[label(self.precision, self.channels_last)]

    def line(self) -> str:
        how = "cached measurement" if self.cached else "measured"
        layout = ", channels_last" if self.channels_last else ""
        if self.precision == "bf16":
            return f"precision: bf16{layout} ({self.speedup:.2f}x faster than fp32 here, {how})"
        bf16 = [v for k, v in self.times_ms.items() if k.startswith("bf16")]
        fp32 = self.times_ms[label("fp32", self.channels_last)]
        why = f"bf16 was {fp32 / min(bf16):.2f}x its speed" if bf16 else "bf16 is not available"
        return f"precision: fp32{layout} ({why}, {how})"


def cache_file() -> Path:
    root = os.environ.get(CACHE_ENV) or os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(root) / "facelab" / "precision.json"


def _read_cache() -> dict:
    try:
        data = parse_json(cache_file().read_text())
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def decisions() -> list[dict]:
    """Every cached decision (for `facelab info`)."""
    return [v for v in _read_cache().values() if isinstance(v, dict)]


def machine(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)}"
    return f"{cpu_summary()[0]}, {torch.get_num_threads()} threads"


def choose(what: str, config: dict, batch: int, device: torch.device, timer: Timer,
           bf16: bool = True) -> Choice:  # fmt: skip
    """The fastest candidate for `what` (e.g. "merge") of the model `config` at `batch` on `device`,
    from the cache or timed with `timer`; `bf16`: whether bf16 is a candidate at all."""
    key_fields = {"what": what, "machine": machine(device), "torch": torch.__version__, "batch": batch,
                  "model": config}  # fmt: skip
    key = hashlib.sha256(json.dumps(key_fields, sort_keys=True, default=str).encode()).hexdigest()[:24]
    cache = _read_cache()
    hit = cache.get(key)
    if isinstance(hit, dict):
        try:
            return Choice(hit["precision"], bool(hit["channels_last"]), dict(hit["times_ms"]), cached=True)
        except (KeyError, TypeError, ValueError):
            pass  # a damaged entry is measured again
    times: dict[str, float] = {}
    for precision, cl in CANDIDATES:
        if precision == "bf16" and not bf16:
            continue
        timer(precision, cl)  # warm-up: the first call builds kernels
        best = timer(precision, cl)
        fp32 = min((v for k, v in times.items() if k.startswith("fp32")), default=None)
        if not (precision == "bf16" and fp32 is not None and best > HOPELESS * fp32 / 1000):
            best = min([best] + [timer(precision, cl) for _ in range(REPEATS - 1)])
        times[label(precision, cl)] = 1000 * best
    best_of = {p: min((k for k in times if k.split("+")[0] == p), key=times.get, default=None)
               for p in ("fp32", "bf16")}  # fmt: skip
    pick = best_of["fp32"]
    if best_of["bf16"] and times[best_of["fp32"]] >= MIN_BF16_GAIN * times[best_of["bf16"]]:
        pick = best_of["bf16"]
    choice = Choice(pick.split("+")[0], pick.endswith("channels_last"), times)
    kept = {k: v for k, v in asdict(choice).items() if k != "cached"}
    cache[key] = {**kept, **{k: v for k, v in key_fields.items() if k != "model"},
                  "model": config.get("name", "?"), "decided": time.strftime("%Y-%m-%d %H:%M")}  # fmt: skip
    try:
        cache_file().parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(cache_file(), cache)
    except OSError:
        pass  # a read-only home: measured again next time
    return choice


def model_timer(call: Callable[[torch.Tensor], object], module: torch.nn.Module, shape: tuple[int, ...],
                device: torch.device) -> Timer:  # fmt: skip
    """A `Timer` of `call(x)` on a seeded random input of `shape` (NCHW), under inference mode."""
    x = torch.rand(shape, generator=torch.Generator().manual_seed(0)).to(device)

    def timed(precision: str, channels_last: bool) -> float:
        fmt = torch.channels_last if channels_last else torch.contiguous_format
        module.to(memory_format=fmt)
        inp = x.contiguous(memory_format=fmt)
        ctx = torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")
        with torch.inference_mode(), ctx:
            start = time.perf_counter()
            call(inp)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            return time.perf_counter() - start

    return timed
