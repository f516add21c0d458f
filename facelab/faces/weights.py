"""Face model weights that ship inside pip packages (nothing is downloaded at run time).

dlib's models come from the `face_recognition_models` package. It is located with
importlib and never imported: its __init__ needs pkg_resources, which recent setuptools lacks.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

DLIB_MODELS = {
    "landmarks68": "shape_predictor_68_face_landmarks.dat",
    "landmarks5": "shape_predictor_5_face_landmarks.dat",
    "cnn_detector": "mmod_human_face_detector.dat",
    "recognition": "dlib_face_recognition_resnet_model_v1.dat",
}


def dlib_models_dir() -> Path | None:
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0]) / "models"


def dlib_model(name: str) -> Path | None:
    folder = dlib_models_dir()
    if folder is None:
        return None
    path = folder / DLIB_MODELS[name]
    return path if path.is_file() else None


def available_models() -> dict[str, Path | None]:
    return {name: dlib_model(name) for name in DLIB_MODELS}
