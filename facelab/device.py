"""Where and in which precision a model runs: the device, bf16 or fp32, and what counts as out of memory.

Training, merge (and later export and live) all ask here, so one rule decides for every step.
"""

from __future__ import annotations

import platform
from pathlib import Path

import torch

from facelab import progress
from facelab.errors import FacelabError

_CPU_FLAGS = ("sse4_2", "avx", "avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni", "amx_tile", "amx_bf16")
DEVICES = ("auto", "cpu", "cuda", "mps")  # and cuda:N
PRECISIONS = ("auto", "fp32", "bf16")

# How allocators report a failed allocation. oneDNN (PyTorch's CPU convolutions) says only that it
# "could not create a primitive" when its workspace cannot be allocated, so that counts as well.
OOM_MESSAGES = ("out of memory", "can't allocate memory", "could not create a primitive")


def cpu_summary() -> tuple[str, list[str]]:
    """The CPU's model name and the vector/matrix features that matter for speed."""
    name, flags = platform.processor() or platform.machine(), set()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name") and ":" in line:
                name = line.split(":", 1)[1].strip()
            elif line.startswith("flags") and ":" in line:
                flags = set(line.split(":", 1)[1].split())
                break
    return name, [f for f in _CPU_FLAGS if f in flags]


def has_amx() -> bool:
    """True when this CPU has AMX tiles for bf16, which is when bf16 autocast pays on CPU."""
    check = getattr(torch.cpu, "_is_amx_tile_supported", None)
    if check is not None:
        try:
            return bool(check())
        except RuntimeError:
            return False
    return "amx_bf16" in cpu_summary()[1]


def check_device_name(choice: str) -> str:
    """`choice` if it names a device kind PyTorch knows (auto, cpu, cuda, cuda:N, mps), else ValueError."""
    kind, _, index = choice.partition(":")
    if kind not in DEVICES or (index and (kind != "cuda" or not index.isdigit())):
        raise ValueError(f"use auto, cpu, cuda, cuda:N or mps, not {choice!r}")
    return choice


def pick_device(choice: str) -> torch.device:
    try:
        check_device_name(choice)
    except ValueError as exc:
        raise FacelabError(f"--device: {exc}") from None
    if choice == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    dev = torch.device(choice)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise FacelabError("--device cuda: no CUDA GPU is visible to PyTorch; use --device cpu")
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise FacelabError("--device mps: Metal is not available here; use --device cpu")
    return dev


def pick_precision(choice: str, device: torch.device) -> str:
    """bf16 autocast only where it pays: a CPU with AMX tiles, or a CUDA GPU with bf16."""
    if choice != "auto":
        if choice == "bf16" and device.type == "cpu" and not has_amx():
            progress.say("note: this CPU has no AMX; bf16 will be much slower than fp32 here")
        return choice
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    if device.type == "cpu":
        return "bf16" if has_amx() else "fp32"
    return "fp32"


def is_oom(exc: BaseException) -> bool:
    text = str(exc).lower()
    return isinstance(exc, torch.OutOfMemoryError | MemoryError) or (
        isinstance(exc, RuntimeError) and any(m in text for m in OOM_MESSAGES)
    )
