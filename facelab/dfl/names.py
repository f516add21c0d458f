"""Where each of our tensors lives in a DeepFaceLab model, and how its layout differs.

Our networks are built so DeepFaceLab's weights map one to one (facelab/models/blocks.py): the
same layers in the same order, symmetric padding, TensorFlow's DCR depth-to-space, channel-major
flatten. What differs is only the naming and the kernel layout:
- conv kernels: DFL HWIO, ours OIHW; transposed-conv kernels: DFL (H, W, out, in), ours
  (in, out, H, W);
- dense weights: DFL (in, out), ours (out, in).

`parts(model)` gives, for every tensor of the network, the DFL file part (`encoder`, `inter_AB`,
`decoder_src`, ...) and the variable name inside that file (`down1/conv1/weight:0`).
"""

from __future__ import annotations

import torch
from torch import nn

from facelab.models.amp import AMPNet
from facelab.models.archi import Autoencoder
from facelab.models.discriminators import CodeDiscriminator, UNetPatchDiscriminator
from facelab.models.xseg import XSegNet

# The -t encoder's layers, as DeepFaceLab names them.
_T_ENCODER = ("down1", "res1", "down2", "down3", "down4", "down5", "res5")


def _leaf(name: str) -> str:
    return {"weight": "weight:0", "bias": "bias:0"}[name]


def _encoder(key: str, deep: bool) -> str:
    # body.<i>.conv.<w> (Downscale) or body.<i>.conv1|conv2.<w> (ResidualBlock)
    _, i, layer, leaf = key.split(".")
    block = _T_ENCODER[int(i)] if deep else f"down1/downs_{i}"
    return f"{block}/{'conv1' if layer == 'conv' else layer}/{_leaf(leaf)}"


def _inter(key: str) -> str:
    parts = key.split(".")
    if parts[0] == "up":  # the upscale after the dense layers (no -t)
        return f"upscale1/conv1/{_leaf(parts[-1])}"
    if parts[0] == "dense":  # AMP's inter: its one dense layer is DFL's dense2
        return f"dense2/{_leaf(parts[-1])}"
    return f"{parts[0]}/{_leaf(parts[-1])}"


def _decoder(key: str) -> str:
    parts = key.split(".")
    if parts[0] == "face":  # Upscale, ResidualBlock, Upscale, ResidualBlock, ...
        j, layer = int(parts[1]), parts[2]
        block = f"upscale{j // 2}" if j % 2 == 0 else f"res{j // 2}"
        return f"{block}/{'conv1' if layer == 'conv' else layer}/{_leaf(parts[-1])}"
    if parts[0] == "mask":
        return f"upscalem{parts[1]}/conv1/{_leaf(parts[-1])}"
    if parts[0] == "out":
        i = int(parts[1])
        return f"out_conv{i if i else ''}/{_leaf(parts[-1])}"
    if parts[0] == "mask_out":
        return f"out_convm/{_leaf(parts[-1])}"
    raise KeyError(key)


def parts(model: nn.Module) -> dict[str, tuple[str, str]]:
    """{our state_dict key: (DFL part, DFL variable name)} for a network from our registry."""
    if isinstance(model, XSegNet):  # one file, XSeg_<resolution>.npy, named as our modules are
        return {k: (str(model.resolution), f"{k.replace('.', '/')}:0") for k in model.state_dict()}
    out = {}
    for key in model.state_dict():
        top, _, rest = key.partition(".")
        if top == "encoder":
            deep = isinstance(model, AMPNet) or len(model.encoder.body) == len(_T_ENCODER)
            out[key] = ("encoder", _encoder(rest, deep))
        elif top == "encoder_dense":  # AMP: the dense layer inside DFL's encoder
            out[key] = ("encoder", f"dense1/{_leaf(rest)}")
        elif top.startswith("inter"):
            out[key] = (top, _inter(rest))
        elif top.startswith("decoder"):
            out[key] = (top, _decoder(rest))
        else:
            raise KeyError(f"no DeepFaceLab name for {key}")
    if not isinstance(model, Autoencoder | AMPNet):
        raise TypeError(f"{type(model).__name__} has no DeepFaceLab layout")
    return out


def discriminator_names(net: nn.Module) -> dict[str, str]:
    """{our state_dict key: DFL variable name} for the GAN or the true-face code discriminator."""
    out = {}
    for key in net.state_dict():
        parts_ = key.split(".")
        if isinstance(net, UNetPatchDiscriminator) and parts_[0] == "upconvs":
            # DeepFaceLab inserts each level's upconv at the front of its list
            name = f"upconvs_{len(net.upconvs) - 1 - int(parts_[1])}"
        elif parts_[0] in ("convs", "upconvs"):
            name = f"{parts_[0]}_{parts_[1]}"
        elif isinstance(net, UNetPatchDiscriminator | CodeDiscriminator):
            name = parts_[0]
        else:
            raise TypeError(f"{type(net).__name__} has no DeepFaceLab layout")
        out[key] = f"{name}/{_leaf(parts_[-1])}"
    return out


def to_dfl(t: torch.Tensor) -> torch.Tensor:
    """Our layout to DeepFaceLab's. One permutation serves convs (OIHW -> HWIO) and transposed
    convs ((in, out, H, W) -> (H, W, out, in)) alike."""
    if t.ndim == 4:
        return t.permute(2, 3, 1, 0)
    return t.T if t.ndim == 2 else t


def from_dfl(a: torch.Tensor) -> torch.Tensor:
    """DeepFaceLab's layout to ours (the inverse of `to_dfl`)."""
    if a.ndim == 4:
        return a.permute(3, 2, 0, 1)
    return a.T if a.ndim == 2 else a
