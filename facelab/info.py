"""`facelab info`: what a bug report needs."""

from __future__ import annotations

import importlib.metadata
import platform

from facelab import __version__


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def collect() -> list[tuple[str, str]]:
    import os

    import torch

    from facelab import precision
    from facelab.device import cpu_summary, has_amx
    from facelab.faces.weights import available_models
    from facelab.media.ffmpeg import ffmpeg_exe, ffmpeg_version

    rows = [
        ("facelab", __version__),
        ("python", f"{platform.python_version()} ({platform.platform()})"),
        ("torch", f"{torch.__version__} (threads {torch.get_num_threads()})"),
        ("numpy", _version("numpy")),
        ("opencv", _version("opencv-python-headless")),
        ("dlib", _version("dlib-bin")),
        ("av", _version("av")),
        ("ffmpeg", f"{ffmpeg_version()} ({ffmpeg_exe()})"),
    ]
    name, flags = cpu_summary()
    rows.append(("cpu", f"{name}, {os.cpu_count()} logical cores"))
    rows.append(("cpu features", " ".join(flags) or "none detected"))
    rows.append(("amx", "yes" if has_amx() else "no"))
    for d in precision.decisions():
        layout = "+channels_last" if d.get("channels_last") else ""
        times = ", ".join(f"{k} {v:.1f} ms" for k, v in d.get("times_ms", {}).items())
        what = f"{d.get('model')} batch {d.get('batch')} on {d.get('machine')}, torch {d.get('torch')}"
        rows.append((f"precision ({d.get('what')})",
                     f"{what}: {d.get('precision')}{layout} [{times}] ({d.get('decided')})"))  # fmt: skip
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            prop = torch.cuda.get_device_properties(i)
            bf16 = "bf16" if torch.cuda.is_bf16_supported() else "no bf16"
            rows.append(
                (
                    f"cuda:{i}",
                    f"{prop.name}, {prop.total_memory / 2**30:.1f} GiB, sm {prop.major}.{prop.minor}, {bf16}",
                )
            )
    else:
        rows.append(
            (
                "cuda",
                f"none (torch built for CUDA {torch.version.cuda})"
                if torch.version.cuda
                else "none (CPU build of torch)",
            )
        )
    mps = getattr(torch.backends, "mps", None)
    rows.append(("mps", "available" if mps is not None and mps.is_available() else "none"))
    for key, path in available_models().items():
        rows.append(
            (f"face model {key}", str(path) if path else "MISSING (pip install face_recognition_models)")
        )
    return rows
