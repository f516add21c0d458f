"""Running `.dfm` files (ours or DeepFaceLive's) through onnxruntime, with the same predict contract
as a native model: NHWC crops in, (face, face mask, dst mask) out.

DeepFaceLive accepts any file whose first input's name contains `in_face`, and treats a second
input named `morph_value` as AMP; so does this loader. The outputs are found by name, or by order
(mask, face, mask) when a file names them otherwise.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
from pathlib import Path

import numpy as np

from facelab.dfm import FACE_OUTPUTS, META_PREFIX
from facelab.errors import FacelabError

SUFFIXES = (".dfm", ".onnx")


class DFMError(FacelabError):
    pass


def is_dfm_path(spec: str | Path | None) -> bool:
    """Whether a --model value names an exported file rather than a model folder."""
    return spec is not None and Path(spec).suffix.lower() in SUFFIXES


def onnxruntime():
    try:
        import onnxruntime
    except ImportError:
        raise FacelabError("running .dfm/.onnx models needs onnxruntime: pip install 'facelab[onnx]'"
                           ) from None  # fmt: skip
    return onnxruntime


def providers(device: str = "auto") -> list:
    """onnxruntime's execution providers for a --device choice (auto: CUDA when onnxruntime has it)."""
    have = onnxruntime().get_available_providers()
    if device.startswith("cuda"):
        if "CUDAExecutionProvider" not in have:
            raise FacelabError(f"--device {device}: this onnxruntime has no CUDA provider "
                               "(pip install onnxruntime-gpu), or use --device cpu")  # fmt: skip
        index = int(device.partition(":")[2] or 0)
        return [("CUDAExecutionProvider", {"device_id": index}), "CPUExecutionProvider"]
    if device == "auto" and "CUDAExecutionProvider" in have:
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


class DFMModel:
    """A face-swap ONNX file ready to run: `res`, `amp`, `face_type` (None unless facelab wrote it)."""

    def __init__(self, path: str | Path, device: str = "auto"):
        self.path = Path(path)
        if not self.path.is_file():
            raise DFMError(f"{self.path} does not exist: give the path of a .dfm file")
        ort = onnxruntime()
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        try:
            # A file it cannot read makes onnxruntime print an "EP Error" banner (and retry) on
            # stdout before it raises: the one-line error below says it instead.
            with contextlib.redirect_stdout(io.StringIO()):
                self.session = ort.InferenceSession(str(self.path), opts, providers=providers(device))
        except Exception as exc:  # onnxruntime raises its own types for unreadable files
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise DFMError(f"{self.path} is not a model onnxruntime can load ({first[:200]})") from None
        self.provider = self.session.get_providers()[0]
        inputs = self.session.get_inputs()
        self.input = inputs[0].name if inputs else ""
        if "in_face" not in self.input:
            raise DFMError(f"{self.path}: its first input is {self.input or 'missing'!r}, but a .dfm's first "
                           "input must be named in_face (DeepFaceLive's contract): export it with "
                           "`facelab export` or DeepFaceLab's exportdfm")  # fmt: skip
        shape = inputs[0].shape
        if len(shape) != 4 or shape[3] != 3 or not isinstance(shape[1], int) or shape[1] != shape[2]:
            raise DFMError(f"{self.path}: in_face has shape {shape}, not (N, res, res, 3) with a fixed res")
        self.res = int(shape[1])
        self.batch_one = shape[0] == 1
        others = [i.name for i in inputs[1:]]
        self.morph_input = next((n for n in others if "morph_value" in n), None)
        extra = [n for n in others if n != self.morph_input]
        if extra:
            raise DFMError(f"{self.path}: unknown inputs {', '.join(extra)} (a .dfm takes in_face and, for "
                           "AMP, morph_value)")  # fmt: skip
        self.amp = self.morph_input is not None
        outs = [o.name for o in self.session.get_outputs()]
        if set(FACE_OUTPUTS) <= set(outs):
            self.outputs = list(FACE_OUTPUTS)
        elif len(outs) == 3:  # other names: DeepFaceLive's order
            self.outputs = outs
        else:
            raise DFMError(f"{self.path}: outputs {', '.join(outs)}; a .dfm has three (out_face_mask, "
                           "out_celeb_face, out_celeb_face_mask)")  # fmt: skip
        meta = self.session.get_modelmeta().custom_metadata_map
        self.meta = {k.removeprefix(META_PREFIX): v for k, v in meta.items() if k.startswith(META_PREFIX)}
        self.face_type = self.meta.get("face_type")
        self.name = self.path.stem

    def digest(self) -> str:
        h = hashlib.sha256()
        with open(self.path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        return h.hexdigest()

    def run(self, crops: np.ndarray, morph: float = 1.0) -> list[np.ndarray]:
        """The three outputs, NHWC, in the contract's order (dst mask, face, face mask)."""
        x = np.ascontiguousarray(crops, np.float32)
        if x.shape[1:] != (self.res, self.res, 3):
            raise DFMError(f"{self.path} takes ({self.res}, {self.res}, 3) crops, not {x.shape[1:]}")
        feed = {self.input: x}
        if self.amp:
            feed[self.morph_input] = np.array([morph], np.float32)
        if self.batch_one and len(x) > 1:
            parts = [self.run(x[i : i + 1], morph) for i in range(len(x))]
            return [np.concatenate(p) for p in zip(*parts, strict=True)]
        return self.session.run(self.outputs, feed)

    def predict(self, crops: np.ndarray, morph: float = 1.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(faces (N, res, res, 3), face masks (N, res, res), dst masks (N, res, res))."""
        dst_mask, face, mask = self.run(crops, morph)
        return face, mask[..., 0], dst_mask[..., 0]
