"""Building blocks of the DeepFaceLab autoencoders, laid out so DeepFaceLab weights map 1:1.

Convolutions pad symmetrically (k // 2), weights start as Glorot-uniform with zero bias, and
depth-to-space uses TensorFlow's "DCR" channel order rather than PyTorch's pixel_shuffle.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def depth_to_space(x: torch.Tensor, block: int = 2) -> torch.Tensor:
    """TensorFlow's depth_to_space: out[c, h*b+i, w*b+j] = in[(i*b+j)*C + c, h, w]."""
    n, c, h, w = x.shape
    oc = c // (block * block)
    x = x.view(n, block, block, oc, h, w).permute(0, 3, 4, 1, 5, 2)
    return x.reshape(n, oc, h * block, w * block)


def glorot_(module: nn.Module) -> None:
    for m in module.modules():
        if isinstance(m, nn.Conv2d | nn.ConvTranspose2d | nn.Linear):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


def conv(cin: int, cout: int, k: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, k, stride=stride, padding=k // 2)


class Downscale(nn.Module):
    """k x k stride-2 convolution, leaky ReLU 0.1."""

    def __init__(self, cin: int, cout: int, k: int = 5):
        super().__init__()
        self.conv = conv(cin, cout, k, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.leaky_relu(self.conv(x), 0.1)


class Upscale(nn.Module):
    """3x3 convolution to 4x channels, leaky ReLU 0.1, depth-to-space: doubles the resolution."""

    def __init__(self, cin: int, cout: int, k: int = 3):
        super().__init__()
        self.conv = conv(cin, cout * 4, k)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return depth_to_space(F.leaky_relu(self.conv(x), 0.1))


class ResidualBlock(nn.Module):
    """conv, leaky ReLU 0.2, conv; output leaky ReLU 0.2 of the sum."""

    def __init__(self, ch: int, k: int = 3):
        super().__init__()
        self.conv1 = conv(ch, ch, k)
        self.conv2 = conv(ch, ch, k)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv2(F.leaky_relu(self.conv1(x), 0.2))
        return F.leaky_relu(x + y, 0.2)


def pixel_norm(x: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    return x * torch.rsqrt(x.pow(2).mean(dim=-1, keepdim=True) + eps)
