"""`facelab xseg export --format onnx`: an XSeg model as an ONNX file laid out as DeepFaceLab's export
is (`exportdfm --model XSeg`): input `in_face:0`, float32 [N, res, res, 3] NHWC, BGR in 0..1;
output `out_mask:0`, [N, res, res, 1], the mask in 0..1."""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
from torch import nn

from facelab.errors import FacelabError
from facelab.fsutil import atomic_path
from facelab.models.folder import ModelFolder, load_network

INPUT, OUTPUT = "in_face:0", "out_mask:0"
OPSET = 13  # the reference's


class _NHWC(nn.Module):
    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, face: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.net(face.permute(0, 3, 1, 2))).permute(0, 2, 3, 1)


def export_onnx(folder: ModelFolder, out: Path, overwrite: bool = False) -> Path:
    if Path(out).exists() and not overwrite:
        raise FacelabError(f"{out} already exists: add --overwrite or choose another --out")
    try:
        import onnx  # noqa: F401 - torch's exporter needs it
    except ImportError:
        raise FacelabError("ONNX export needs the onnx package: pip install 'facelab[onnx]'") from None
    net, _ = load_network(folder)
    if getattr(net, "kind", None) != "xseg":
        raise FacelabError(f"{folder} is not an XSeg model")
    res = net.resolution
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out) as tmp, torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the tracer's notes on constants, not problems of this model
        torch.onnx.export(_NHWC(net).eval(), (torch.rand(1, res, res, 3),), str(tmp), input_names=[INPUT],
                          output_names=[OUTPUT], dynamic_axes={INPUT: {0: "N"}, OUTPUT: {0: "N"}},
                          opset_version=OPSET, dynamo=False)  # fmt: skip
    return Path(out)
