"""`facelab export`: a model as a `.dfm` (DeepFaceLive) or `.onnx` file, checked before it is written.

The graph is traced from the PyTorch network inside an NHWC wrapper, so the file has DeepFaceLab's
exporter's names and layout (see `facelab.dfm`). Before the file is moved into place, onnxruntime
runs it on real aligned faces and every output must match PyTorch's (1e-4, or 1e-2 with `--fp16`,
which stores the weights in float16 and computes in float32, so it runs on every provider).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import torch
from torch import nn

from facelab import locks
from facelab.dfm import FACE_INPUT, FACE_OUTPUTS, META_PREFIX, MORPH_INPUT, XSEG_OUTPUT
from facelab.dfm.runtime import DFMModel, onnxruntime
from facelab.errors import FacelabError
from facelab.faces.align import crop_for_model
from facelab.faces.faceset import load_faceset
from facelab.fsutil import atomic_path, remove_stale_temps
from facelab.media.images import DamagedImage, read_image
from facelab.models.folder import ModelFolder, load_network

# Opset 13 runs on onnxruntime's CPU and CUDA providers (and DirectML): every op used here has
# had kernels there since onnxruntime 1.8; DeepFaceLab's exporter writes 12.
OPSET = 13
TOLERANCE = {False: 1e-4, True: 1e-2}
CHECK_FACES = 8
MORPHS = (0.0, 0.5, 1.0)  # AMP is checked at these morph values


class _FaceGraph(nn.Module):
    """NHWC in, (dst mask, swap, swap mask) NHWC out: the .dfm contract around a face model."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, face: torch.Tensor, morph: torch.Tensor | None = None) -> tuple[torch.Tensor, ...]:
        x = face.permute(0, 3, 1, 2)
        swap, swap_mask, dst_mask = self.net.swap(x) if morph is None else self.net.swap(x, morph)
        return tuple(t.permute(0, 2, 3, 1) for t in (dst_mask, swap, swap_mask))


class _XSegGraph(nn.Module):
    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, face: torch.Tensor) -> torch.Tensor:
        return self.net.mask(face.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)


@dataclass
class Exported:
    path: Path
    resolution: int
    inputs: list[str]
    outputs: list[str]
    faces_checked: int
    max_error: dict[str, float] = field(default_factory=dict)  # output (at a morph) -> max |ort - torch|


def check_faces(dirs: list[Path], res: int, face_type: str, count: int = CHECK_FACES) -> np.ndarray:
    """Up to `count` aligned faces from the first of `dirs` that has any, cropped as the model sees
    them: (N, res, res, 3) float32 BGR in 0..1."""
    for folder in dirs:
        faces = load_faceset(folder).faces if folder.is_dir() else []
        spread = np.linspace(0, len(faces) - 1, min(count, len(faces))) if faces else []
        picked = [faces[int(i)] for i in spread]
        crops = []
        for f in picked:
            try:
                image = read_image(str(f.path))
            except DamagedImage:
                continue
            lm = f.meta.landmarks * (image.shape[0] / f.meta.size)
            mat = crop_for_model(f.meta.face_type, image.shape[0], lm, res, face_type)
            crops.append(cv2.warpAffine(image, mat, (res, res), flags=cv2.INTER_CUBIC,
                                        borderMode=cv2.BORDER_REPLICATE))  # fmt: skip
        if crops:
            return np.stack(crops).astype(np.float32) / 255
    where = " or ".join(str(d) for d in dirs)
    raise FacelabError(f"the export is checked on real aligned faces, and {where} has none: extract faces "
                       "first, or name a folder of aligned faces with --faces DIR")  # fmt: skip


def _store_fp16(model) -> None:
    """Weights stored as float16, each cast back to float32 where it is used."""
    from onnx import TensorProto, helper, numpy_helper

    casts = []
    for init in model.graph.initializer:
        if init.data_type != TensorProto.FLOAT or np.prod(init.dims) < 16:
            continue
        name = init.name
        half = numpy_helper.to_array(init).astype(np.float16)
        init.CopyFrom(numpy_helper.from_array(half, f"{name}__fp16"))
        casts.append(helper.make_node("Cast", [f"{name}__fp16"], [name], to=TensorProto.FLOAT))
    nodes = casts + list(model.graph.node)
    del model.graph.node[:]
    model.graph.node.extend(nodes)


def _fix_output_shapes(model, res: int, channels: list[int]) -> None:
    """Static H, W and C on every output (the tracer leaves them symbolic after reshapes)."""
    for out, c in zip(model.graph.output, channels, strict=True):
        dims = out.type.tensor_type.shape.dim
        del dims[:]
        for value in ("N", res, res, c):
            d = dims.add()
            if isinstance(value, str):
                d.dim_param = value
            else:
                d.dim_value = value


def export(folder: ModelFolder, out: Path, face_dirs: list[Path], fp16: bool = False,
           overwrite: bool = False) -> Exported:  # fmt: skip
    """Write `folder`'s network to `out` (.dfm or .onnx), checked against PyTorch first."""
    out = Path(out)
    if out.exists() and not overwrite:
        raise FacelabError(f"{out} already exists: add --overwrite or choose another --out")
    try:
        import onnx
    except ImportError:
        raise FacelabError("export needs the onnx package: pip install 'facelab[onnx]'") from None
    onnxruntime()
    net, ckpt = load_network(folder)
    kind = ckpt.config["architecture"]["name"]
    res, face_type = int(net.config["resolution"]), ckpt.config["face_type"]
    faces = check_faces(face_dirs, res, face_type)
    xseg = kind == "xseg"
    amp = getattr(net, "kind", None) == "amp"
    graph = _XSegGraph(net) if xseg else _FaceGraph(net)
    example = (torch.from_numpy(faces[:1]),) + ((torch.tensor([0.5]),) if amp else ())
    inputs = [FACE_INPUT] + ([MORPH_INPUT] if amp else [])
    outputs = [XSEG_OUTPUT] if xseg else list(FACE_OUTPUTS)
    dynamic = {FACE_INPUT: {0: "N"}} | {o: {0: "N"} for o in outputs}

    out.parent.mkdir(parents=True, exist_ok=True)
    # One export into a folder at a time, which clears what a killed one left (found by the kill harness).
    with locks.hold(out.parent, f"export {out.name}"):
        remove_stale_temps(out, 0)
        with atomic_path(out) as tmp:
            with torch.no_grad(), warnings.catch_warnings():
                warnings.simplefilter("ignore")  # the tracer's notes on constants, not problems of this model
                torch.onnx.export(graph.eval(), example, str(tmp), input_names=inputs, output_names=outputs,
                                  dynamic_axes=dynamic, opset_version=OPSET, dynamo=False)  # fmt: skip
            model = onnx.load(str(tmp))
            _fix_output_shapes(model, res, [1] if xseg else [1, 3, 1])
            if fp16:
                _store_fp16(model)
            meta = {"kind": kind, "face_type": face_type, "resolution": str(res), "model": folder.path.name,
                    "iteration": str(ckpt.state.get("iteration", 0)), "precision": "fp16" if fp16 else "fp32"}
            for key, value in meta.items():
                entry = model.metadata_props.add()
                entry.key, entry.value = META_PREFIX + key, value
            model.producer_name = "facelab"
            onnx.checker.check_model(model)
            onnx.save(model, str(tmp))
            result = Exported(out, res, inputs, outputs, len(faces))
            _check(graph, tmp, faces, fp16, amp, xseg, result)
    return result


def _check(graph: nn.Module, path: Path, faces: np.ndarray, fp16: bool, amp: bool, xseg: bool,
           result: Exported) -> None:  # fmt: skip
    """onnxruntime's outputs against PyTorch's; raises (so nothing is written) when they differ."""
    tol = TOLERANCE[fp16]
    # A face model goes through the .dfm loader's own contract checks first, as DeepFaceLive's.
    session = (onnxruntime().InferenceSession(str(path), providers=["CPUExecutionProvider"]) if xseg
               else DFMModel(path, device="cpu").session)  # fmt: skip
    got_in = [(i.name, i.shape) for i in session.get_inputs()]
    got_out = [(o.name, o.shape) for o in session.get_outputs()]
    res = faces.shape[1]
    channels = [1] if xseg else [1, 3, 1]
    want_out = [(n, ["N", res, res, c]) for n, c in zip(result.outputs, channels, strict=True)]
    want_in = [(FACE_INPUT, ["N", res, res, 3])] + ([(MORPH_INPUT, [1])] if amp else [])
    if got_in != want_in or got_out != want_out:
        raise FacelabError(f"the exported graph has inputs {got_in} and outputs {got_out}, not {want_in} and "
                           f"{want_out}: nothing was written (please report this)")  # fmt: skip
    x = torch.from_numpy(faces)
    for morph in MORPHS if amp else (None,):
        feed = {FACE_INPUT: faces} | ({MORPH_INPUT: np.array([morph], np.float32)} if amp else {})
        ours = session.run(None, feed)
        with torch.no_grad():
            ref = graph(x, torch.tensor([morph])) if amp else graph(x)
        ref = ref if isinstance(ref, tuple) else (ref,)
        for name, a, b in zip(result.outputs, ours, ref, strict=True):
            err = float(np.abs(a - b.numpy()).max())
            label = f"{name} at morph {morph:g}" if amp else name
            result.max_error[label] = err
            if not err <= tol:
                raise FacelabError(f"onnxruntime's {label} differs from PyTorch's by {err:.2g} (more "
                                   f"than {tol:g}) on real faces: nothing was written (please report "
                                   "this)")  # fmt: skip
