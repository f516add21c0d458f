"""SAEHD's two discriminators: the UNet patch discriminator behind `gan_power`, and the code
discriminator behind `true_face_power` (DF only)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from facelab.models.blocks import glorot_

# Their weights are saved beside the network's under these prefixes (models/folder.AUX_PREFIXES).
GAN, CODE = "gan.", "code_d."


def _receptive_field(layers: list[tuple[int, int]]) -> int:
    rf, stride = 0, 1
    for i, (k, s) in enumerate(layers):
        rf = k if i == 0 else rf + (k - 1) * stride
        stride *= s
    return rf


def patch_layers(patch_size: int, max_layers: int = 9) -> list[tuple[int, int]]:
    """3x3 convolutions (the first of stride 2, the rest stride 1 or 2) whose receptive field is
    closest to `patch_size`; among equals, fewer layers and then more downsampling win."""
    best: dict[int, tuple[int, int, list[tuple[int, int]]]] = {}
    for count in range(1, max_layers + 1):
        for bits in range((1 << (count - 1)) - 1, -1, -1):
            layers = [(3, 2)] + [(3, 2 if bits & (1 << i) else 1) for i in range(count - 1)]
            strides = sum(s for _, s in layers)
            rf = _receptive_field(layers)
            known = best.get(rf)
            if known is None or count < known[0] or (count == known[0] and strides > known[1]):
                best[rf] = (count, strides, layers)
    closest = min(best, key=lambda rf: (abs(rf - patch_size), rf))
    return best[closest][2]


class UNetPatchDiscriminator(nn.Module):
    """Encoder of strided 3x3 convs (channels base*2^i up to 512), a 1x1 centre head, and a
    transposed-conv decoder with skips to a per-pixel head. Returns (centre logits, pixel logits)."""

    def __init__(self, patch_size: int, in_ch: int = 3, base_ch: int = 16):
        super().__init__()
        layers = patch_layers(patch_size)
        chs = [min(base_ch * 2**i, 512) for i in range(len(layers) + 1)]
        self.in_conv = nn.Conv2d(in_ch, chs[0], 1)
        self.convs = nn.ModuleList(
            nn.Conv2d(chs[i], chs[i + 1], k, s, padding=1) for i, (k, s) in enumerate(layers)
        )
        # TensorFlow's SAME transposed conv: unpadded, then cut to the skip's size in forward()
        # (PyTorch's padding=1 would shift every stride-2 level by a pixel against the reference).
        self.upconvs = nn.ModuleList(
            nn.ConvTranspose2d(chs[i + 1] * (1 if i == len(layers) - 1 else 2), chs[i], k, s,
                               padding=1 if s == 1 else 0)
            for i, (k, s) in enumerate(layers)
        )  # fmt: skip
        self.center_conv = nn.Conv2d(chs[-1], chs[-1], 1)
        self.center_out = nn.Conv2d(chs[-1], 1, 1)
        self.out_conv = nn.Conv2d(chs[0] * 2, 1, 1)
        glorot_(self)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = F.leaky_relu(self.in_conv(x), 0.2)
        skips = []
        for conv in self.convs:
            skips.append(x)
            x = F.leaky_relu(conv(x), 0.2)
        center = self.center_out(x)
        x = F.leaky_relu(self.center_conv(x), 0.2)
        for up, skip in zip(reversed(self.upconvs), reversed(skips), strict=True):
            x = F.leaky_relu(up(x), 0.2)
            x = torch.cat([skip, x[..., : skip.shape[2], : skip.shape[3]]], dim=1)
        return center, self.out_conv(x)


class CodeDiscriminator(nn.Module):
    """Tells src codes from dst codes: strided convs (256*2^i channels, k4 then k3), mean, dense."""

    def __init__(self, in_ch: int, code_res: int, ch: int = 256):
        super().__init__()
        convs, prev = [], in_ch
        for i in range(1 + code_res // 8):
            cur = ch * min(2**i, 8)
            k = 4 if i == 0 else 3
            convs.append(nn.Conv2d(prev, cur, k, 2, padding=(k - 1) // 2))  # the reference's symmetric pad
            prev = cur
        self.convs = nn.ModuleList(convs)
        self.out = nn.Linear(prev, 1)
        glorot_(self)

    def forward(self, code: torch.Tensor) -> torch.Tensor:
        x = code
        for conv in self.convs:
            x = F.leaky_relu(conv(x), 0.1)
        return self.out(x.mean(dim=(2, 3)))


def for_options(model: nn.Module, options: dict) -> dict[str, nn.Module]:
    """The discriminators a model's options (gan_power, gan_patch_size, gan_dims, true_face_power)
    ask for, keyed by the prefix their weights are saved under: the GAN (gan_power > 0) and, for
    DF, the true-face code discriminator."""
    res = model.config["resolution"]
    nets: dict[str, nn.Module] = {}
    if options.get("gan_power"):
        patch = options.get("gan_patch_size") or res // 8
        nets[GAN] = UNetPatchDiscriminator(patch, 3, options.get("gan_dims", 16))
    if options.get("true_face_power") and getattr(model, "kind", None) == "df":
        device = next(model.parameters()).device
        with torch.no_grad():
            probe = model.inter(model.encoder(torch.zeros(1, 3, res, res, device=device)))
        nets[CODE] = CodeDiscriminator(probe.shape[1], probe.shape[2])
    return nets
