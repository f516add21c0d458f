"""XSeg, the reference's face segmentation network (occlusion masks), laid out so its weights map
one to one: the module names are DeepFaceLab's variable paths (`conv01.frn.eps` is
`conv01/frn/eps:0`).

A U-Net on 256 px BGR faces (base 32 channels): six levels of 3x3 conv + FRN + TLU blocks
(32, 64, 128, 256, 256, 256 channels), each level downsampled by an anti-aliasing BlurPool, a dense
bottleneck at 4x4, and a decoder of stride-2 transposed convs with skip connections. It returns
logits; the mask is their sigmoid.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from facelab.models.blocks import glorot_

_BLUR = {2: (1.0, 1.0), 3: (1.0, 2.0, 1.0), 4: (1.0, 3.0, 3.0, 1.0)}


class FRN(nn.Module):
    """Filter response normalisation: x / sqrt(mean_HW(x^2) + |eps|) * weight + bias."""

    def __init__(self, ch: int):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(ch))
        self.bias = nn.Parameter(torch.zeros(ch))
        self.eps = nn.Parameter(torch.full((1,), 1e-6))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        nu2 = x.pow(2).mean(dim=(2, 3), keepdim=True)
        x = x * torch.rsqrt(nu2 + self.eps.abs())
        return x * self.weight.view(1, -1, 1, 1) + self.bias.view(1, -1, 1, 1)


class TLU(nn.Module):
    """Thresholded linear unit: max(x, tau)."""

    def __init__(self, ch: int):
        super().__init__()
        self.tau = nn.Parameter(torch.zeros(ch))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.maximum(x, self.tau.view(1, -1, 1, 1))


class _FRNTLU(torch.autograd.Function):
    """TLU(FRN(x)) with a hand-written backward. Autograd's version of these few elementwise ops
    (pow, mean, rsqrt, two multiplies, add, maximum) keeps each intermediate and runs about twenty
    full-size kernels backwards; this keeps only x and the per-channel scale and runs about half as
    many (XSeg's training step is mostly these, its convolutions being narrow). At least float32
    inside, whatever the input's dtype (bf16 under autocast)."""

    @staticmethod
    def forward(ctx, x, weight, bias, eps, tau):
        x32 = x.to(torch.promote_types(x.dtype, torch.float32))
        r = torch.rsqrt(x32.square().mean(dim=(2, 3), keepdim=True) + eps.abs())
        y = torch.addcmul(bias.view(1, -1, 1, 1), x32 * r, weight.view(1, -1, 1, 1))
        ctx.save_for_backward(x, r, weight, bias, eps, tau)
        return torch.maximum(y, tau.view(1, -1, 1, 1)).to(x.dtype)

    @staticmethod
    def backward(ctx, grad):
        x, r, weight, bias, eps, tau = ctx.saved_tensors
        g = grad.to(r.dtype)
        xhat = x.to(r.dtype) * r
        y = torch.addcmul(bias.view(1, -1, 1, 1), xhat, weight.view(1, -1, 1, 1))
        passed = y > tau.view(1, -1, 1, 1)  # where the output is y (else tau)
        gy = g * passed
        g_tau = (g - gy).sum(dim=(0, 2, 3))
        g_bias = gy.sum(dim=(0, 2, 3))
        gy_xhat = (gy * xhat).sum(dim=(2, 3), keepdim=True)  # per sample and channel
        g_weight = gy_xhat.sum(dim=(0, 2, 3))
        # gxhat = gy * weight; dx = r * (gxhat - xhat * mean_HW(gxhat * xhat))
        mean = gy_xhat * weight.view(1, -1, 1, 1) / (x.shape[2] * x.shape[3])
        g_x = (gy * weight.view(1, -1, 1, 1) - xhat * mean) * r
        # d xhat / d|eps| = -xhat * r^2 / 2, summed against gxhat
        g_eps = (-0.5 * torch.sign(eps)) * (gy_xhat * weight.view(1, -1, 1, 1) * r.square()).sum()
        return g_x.to(x.dtype), g_weight, g_bias, g_eps.view(1), g_tau


class ConvBlock(nn.Module):
    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 3, padding=1)
        self.frn = FRN(cout)
        self.tlu = TLU(cout)

    def activate(self, x: torch.Tensor) -> torch.Tensor:
        """self.tlu(self.frn(x)); fused when training (the plain ops otherwise, which is also what
        an ONNX export traces)."""
        f = self.frn
        if not torch.is_grad_enabled() or torch.jit.is_tracing() or torch.onnx.is_in_onnx_export():
            return self.tlu(f(x))
        return _FRNTLU.apply(x, f.weight, f.bias, f.eps, self.tlu.tau)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.activate(self.conv(x))


class UpConvBlock(ConvBlock):
    """TensorFlow's stride-2 SAME transposed conv (out[2i + k] += in[i] * w[k]: unpadded, then the
    last row and column cut), FRN, TLU. PyTorch's padding=1 would shift the output by a pixel."""

    def __init__(self, cin: int, cout: int):
        super().__init__(cin, cout)
        self.conv = nn.ConvTranspose2d(cin, cout, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[2] * 2, x.shape[3] * 2
        return self.activate(self.conv(x)[..., :h, :w])


class BlurPool(nn.Module):
    """Anti-aliased stride-2 downsampling: a normalised binomial filter, zero-padded
    floor((size-1)/2) before and ceil((size-1)/2) after, per channel. The filter is a fixed,
    unsaved buffer (the reference's BlurPool has no weights)."""

    def __init__(self, ch: int, size: int):
        super().__init__()
        a = torch.tensor(_BLUR[size])
        k = a[:, None] * a[None, :]
        self.register_buffer("kernel", (k / k.sum()).expand(ch, 1, size, size).clone(), persistent=False)
        self.pad = ((size - 1) // 2, size // 2) * 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(F.pad(x, self.pad), self.kernel.to(x.dtype), stride=2, groups=x.shape[1])


class XSegNet(nn.Module):
    kind = "xseg"

    def __init__(self, resolution: int = 256, base_ch: int = 32, in_ch: int = 3):
        super().__init__()
        if resolution % 64:
            raise ValueError(f"resolution {resolution} must be a multiple of 64 for XSeg")
        self.resolution, self.base_ch = resolution, base_ch
        b = base_ch
        self.low = resolution // 64  # the bottleneck's side (4 at 256 px)
        c, w = ConvBlock, 8 * b
        self.conv01, self.conv02 = c(in_ch, b), c(b, b)
        self.conv11, self.conv12 = c(b, 2 * b), c(2 * b, 2 * b)
        self.conv21, self.conv22 = c(2 * b, 4 * b), c(4 * b, 4 * b)
        self.conv31, self.conv32, self.conv33 = c(4 * b, w), c(w, w), c(w, w)
        self.conv41, self.conv42, self.conv43 = c(w, w), c(w, w), c(w, w)
        self.conv51, self.conv52, self.conv53 = c(w, w), c(w, w), c(w, w)
        flat = self.low * self.low * w
        self.dense1 = nn.Linear(flat, 512)
        self.dense2 = nn.Linear(512, flat)
        self.bp = nn.ModuleList([BlurPool(b, 4), BlurPool(2 * b, 3), BlurPool(4 * b, 2), BlurPool(w, 2),
                                 BlurPool(w, 2), BlurPool(w, 2)])  # fmt: skip
        self.up5 = UpConvBlock(w, 4 * b)
        self.uconv53, self.uconv52, self.uconv51 = c(w + 4 * b, w), c(w, w), c(w, w)
        self.up4 = UpConvBlock(w, 4 * b)
        self.uconv43, self.uconv42, self.uconv41 = c(w + 4 * b, w), c(w, w), c(w, w)
        self.up3 = UpConvBlock(w, 4 * b)
        self.uconv33, self.uconv32, self.uconv31 = c(w + 4 * b, w), c(w, w), c(w, w)
        self.up2 = UpConvBlock(w, 4 * b)
        self.uconv22, self.uconv21 = c(8 * b, 4 * b), c(4 * b, 4 * b)
        self.up1 = UpConvBlock(4 * b, 2 * b)
        self.uconv12, self.uconv11 = c(4 * b, 2 * b), c(2 * b, 2 * b)
        self.up0 = UpConvBlock(2 * b, b)
        self.uconv02, self.uconv01 = c(2 * b, b), c(b, b)
        self.out_conv = nn.Conv2d(b, 1, 3, padding=1)
        glorot_(self)

    def forward(self, x: torch.Tensor, pretrain: bool = False) -> torch.Tensor:
        """Logits (N, 1, H, W) for BGR faces in [0, 1], NCHW. `pretrain` drops the skips, as the
        reference's pretraining (reconstruction without shortcuts) does."""
        bp = self.bp
        x = x0 = self.conv02(self.conv01(x))
        x = x1 = self.conv12(self.conv11(bp[0](x)))
        x = x2 = self.conv22(self.conv21(bp[1](x)))
        x = x3 = self.conv33(self.conv32(self.conv31(bp[2](x))))
        x = x4 = self.conv43(self.conv42(self.conv41(bp[3](x))))
        x = x5 = self.conv53(self.conv52(self.conv51(bp[4](x))))
        x = torch.flatten(bp[5](x), 1)  # C, H, W order
        x = self.dense2(self.dense1(x)).view(-1, 8 * self.base_ch, self.low, self.low)
        skips = [x5, x4, x3, x2, x1, x0]
        if pretrain:
            skips = [torch.zeros_like(s) for s in skips]
        levels = ((self.up5, (self.uconv53, self.uconv52, self.uconv51)),
                  (self.up4, (self.uconv43, self.uconv42, self.uconv41)),
                  (self.up3, (self.uconv33, self.uconv32, self.uconv31)),
                  (self.up2, (self.uconv22, self.uconv21)),
                  (self.up1, (self.uconv12, self.uconv11)),
                  (self.up0, (self.uconv02, self.uconv01)))  # fmt: skip
        for (up, convs), skip in zip(levels, skips, strict=True):
            x = torch.cat([up(x), skip], dim=1)
            for conv in convs:
                x = conv(x)
        return self.out_conv(x)

    @torch.no_grad()
    def mask(self, x: torch.Tensor) -> torch.Tensor:
        """The predicted mask in [0, 1] as the reference's apply step takes it (values under 0.1
        set to 0)."""
        m = torch.sigmoid(self.forward(x)).clamp(0, 1)
        return torch.where(m < 0.1, torch.zeros_like(m), m)
