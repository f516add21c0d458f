"""Batch sampling and augmentation, on the training device, from counter-based random numbers.

Every random draw is a pure function of (run seed, side, counter): sample order comes from a
seeded permutation per epoch, and each sample's warp/affine/flip from a generator seeded with
its position in the run's sample stream. A resumed run therefore needs only the counters to
continue exactly, no random-number state has to be pickled, and a sample gets the same draws
whichever batch or process (multi-GPU rank) it lands in.

The augmentation is the reference tool's: a random warp on a 2/4/8-cell grid (the network's
input only), then a random rotation/scale/shift and an optional horizontal flip (input, target
and mask alike), with edge pixels replicated.
"""

from __future__ import annotations

import functools
import hashlib
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F


def derive_seed(*parts: int | str) -> int:
    digest = hashlib.blake2b(repr(parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << 63) - 1)


def generator(*parts: int | str) -> torch.Generator:
    g = torch.Generator()
    g.manual_seed(derive_seed(*parts))
    return g


def sample_generators(*parts: int | str, start: int, count: int) -> list[torch.Generator]:
    """One generator per sample position start .. start + count - 1."""
    return [generator(*parts, p) for p in range(start, start + count)]


class EpochSampler:
    """Sample indices by position: position p is permutation(epoch p // n)[p % n]."""

    def __init__(self, n: int, seed: int, side: str):
        self.n, self.seed, self.side = n, seed, side
        self._epoch, self._perm = -1, torch.empty(0, dtype=torch.long)

    def indices(self, start: int, count: int) -> torch.Tensor:
        out = []
        for p in range(start, start + count):
            epoch = p // self.n
            if epoch != self._epoch:
                self._epoch = epoch
                self._perm = torch.randperm(self.n, generator=generator(self.seed, self.side, "epoch", epoch))
            out.append(int(self._perm[p % self.n]))
        return torch.tensor(out, dtype=torch.long)


class YawSampler:
    """SAEHD's uniform_yaw: a random one of 128 head-turn bins in [-1.2, 1.2], then a random face in it,
    so rare side views come up as often as frontal ones. Drawn by position, like EpochSampler."""

    BINS = 128

    def __init__(self, yaws: list[float], seed: int, side: str):
        edges = torch.linspace(-1.2, 1.2, self.BINS + 1)
        which = torch.bucketize(torch.tensor(yaws, dtype=torch.float32).clamp(-1.2, 1.2), edges[1:-1])
        self.bins = [torch.nonzero(which == b).flatten() for b in range(self.BINS)]
        self.bins = [b for b in self.bins if len(b)]
        self.seed, self.side = seed, side

    def indices(self, start: int, count: int) -> torch.Tensor:
        out = []
        for p in range(start, start + count):
            g = generator(self.seed, self.side, "yaw", p)
            members = self.bins[int(torch.randint(len(self.bins), (1,), generator=g))]
            out.append(int(members[int(torch.randint(len(members), (1,), generator=g))]))
        return torch.tensor(out, dtype=torch.long)


@dataclass(frozen=True)
class AugmentSpec:
    random_warp: bool = True
    random_flip: bool = False
    rotation_deg: float = 10.0
    scale: float = 0.05  # scale drawn from 1 +- scale
    shift: float = 0.05  # fraction of the width
    flip_prob: float = 0.4


def _pixel_grid(res: int, device: torch.device) -> torch.Tensor:
    c = (torch.arange(res, device=device, dtype=torch.float32) * 2 + 1) / res - 1
    y, x = torch.meshgrid(c, c, indexing="ij")
    return torch.stack([x, y], dim=-1)  # (R, R, 2), grid_sample's (x, y) order


def _draws(g: torch.Generator, res: int, warp: bool, points: int) -> tuple[torch.Tensor, int, torch.Tensor]:
    """One sample's draws, in the order its generator has always made them: 5 uniforms (rotation,
    scale, shift x/y, flip), then for the warp a grid of 2, 4 or 8 cells and a normal offset per
    inner grid point (zero-padded to `points` x `points`). Only these scalars are drawn per sample;
    every pixel operation runs on the whole batch."""
    u = torch.rand(5, generator=g)
    coarse = torch.zeros(2, points, points)
    if not warp:
        return u, 0, coarse
    level = int(torch.randint(1, 4, (1,), generator=g)) - 1  # 2, 4 or 8 cells
    cell = res // 2 ** (level + 1)
    n = res // cell + 1
    coarse[:, 1 : n - 1, 1 : n - 1] = torch.randn(2, n - 2, n - 2, generator=g) * (cell * 0.24 * 2 / res)
    return u, level, coarse


@functools.lru_cache(maxsize=8)
def _warp_basis(res: int, device: torch.device = torch.device("cpu")) -> torch.Tensor:
    """(3, R, P): for 2, 4 and 8 cells, the weights that take a coarse grid of offsets to the
    R x R field: bilinear upsampling (align_corners=False) to R + cell, cropped by half a cell
    each side, so the grid's points fall on cell corners inside the face. Upsampling is linear and
    separable, so field = W @ coarse @ W^T, one batched matmul for every sample at once."""
    cells = [res // 2**k for k in (1, 2, 3)]
    points = max(res // c + 1 for c in cells)
    basis = torch.zeros(3, res, points)
    for level, cell in enumerate(cells):
        n = res // cell + 1
        up = F.interpolate(torch.eye(n)[None], size=res + cell, mode="linear", align_corners=False)[0]
        basis[level, :, :n] = up.T[cell // 2 : cell // 2 + res]
    return basis.to(device)  # cached per device: no copy to the GPU at every batch


def warp_fields(levels: torch.Tensor, coarse: torch.Tensor, res: int) -> torch.Tensor:
    """(B, 2, R, R) displacement fields from per-sample grid levels and coarse offsets."""
    w = _warp_basis(res, coarse.device)[levels]  # (B, R, P)
    return w[:, None] @ coarse @ w[:, None].transpose(-1, -2)


def augment(
    images: torch.Tensor, face_masks: torch.Tensor, spec: AugmentSpec, gens: list[torch.Generator], warp: bool
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(network input, target, target mask) as float in [0, 1] from uint8 images and masks;
    `gens` holds one generator per sample."""
    b, _, res, _ = images.shape
    dev = images.device
    warp = warp and spec.random_warp
    points = _warp_basis(res).shape[-1]
    us, levels, coarse = zip(*(_draws(g, res, warp, points) for g in gens), strict=True)
    u = torch.stack(us).to(dev) * 2 - 1  # uniform in [-1, 1)
    angle = u[:, 0] * math.radians(spec.rotation_deg)
    scale = 1 + u[:, 1] * spec.scale
    shift = u[:, 2:4] * spec.shift * 2
    flip = (u[:, 4] + 1) / 2 < spec.flip_prob if spec.random_flip else torch.zeros(b, dtype=torch.bool)
    flip = flip.to(dev)

    # Output pixel q comes from source point p = R(-angle) (q - shift) / scale (after undoing the flip).
    q = _pixel_grid(res, dev).expand(b, res, res, 2).clone()
    q[..., 0] = torch.where(flip[:, None, None], -q[..., 0], q[..., 0])
    q = q - shift[:, None, None, :]
    cos, sin = torch.cos(angle), torch.sin(angle)
    rot = torch.stack([torch.stack([cos, sin], -1), torch.stack([-sin, cos], -1)], -2)  # R(-angle)
    p = torch.einsum("bij,bhwj->bhwi", rot, q) / scale[:, None, None, None]

    pixels = images.float().div_(255)
    target = grid_sample(pixels, p, "bicubic", "border").clamp_(0, 1)
    mask = grid_sample(face_masks.float().div_(255), p, "bilinear", "zeros")
    if not warp:
        return target, target, mask
    fields = warp_fields(torch.tensor(levels, device=dev), torch.stack(coarse).to(dev), res)
    disp = grid_sample(fields, p, "bilinear", "border").permute(0, 2, 3, 1)
    warped = grid_sample(pixels, p + disp, "bicubic", "border").clamp_(0, 1)
    return warped, target, mask


def grid_sample(x: torch.Tensor, grid: torch.Tensor, mode: str, padding: str) -> torch.Tensor:
    return F.grid_sample(x, grid, mode=mode, padding_mode=padding, align_corners=False)


def xseg_input_augment(images: torch.Tensor, masks: torch.Tensor, others: torch.Tensor,
                       gens: list[torch.Generator]) -> torch.Tensor:  # fmt: skip
    """XSeg's input augmentation (the target mask is left as it is), one generator per sample:
    half the faces get another face as their background (mirrored, so its face is elsewhere), then
    brightness, contrast and per-channel colour shifts, and a random blur or none."""
    b = images.shape[0]
    u = torch.stack([torch.rand(8, generator=g) for g in gens]).to(images.device)
    composite = (u[:, 0] < 0.5).view(b, 1, 1, 1).float()
    keep = masks.clamp(0, 1) + (1 - composite) * (1 - masks.clamp(0, 1))
    out = images * keep + others.flip(-1).flip(-2) * (1 - keep)
    gain = 1 + (u[:, 1] - 0.5) * 0.6  # contrast +-30 %
    shift = (u[:, 2:5] - 0.5) * 0.3  # per-channel colour +-15 %
    mean = out.mean(dim=(1, 2, 3), keepdim=True)
    out = (out - mean) * gain.view(b, 1, 1, 1) + mean + shift.view(b, 3, 1, 1)
    return blur_each(out, u[:, 5] * 2.0, u[:, 6] >= 0.5).clamp_(0, 1)


def blur_each(x: torch.Tensor, sigma: torch.Tensor, on: torch.Tensor, max_sigma: float = 2.0) -> torch.Tensor:
    """`gaussian_blur(x[i], sigma[i])` for each sample where on[i] (and sigma >= 0.3), in two
    grouped convolutions for the whole batch: each sample's kernel is its own Gaussian, truncated
    to its own size and zero-padded to the largest, so the result equals the per-sample blur."""
    b, c, h, w = x.shape
    size = max(3, 2 * math.ceil(2 * max_sigma) + 1)
    taps = torch.arange(size, device=x.device, dtype=torch.float32) - size // 2
    sigma = sigma.to(x.device, torch.float32).clamp(min=1e-3)[:, None]
    reach = (2 * torch.ceil(2 * sigma) + 1).clamp(min=3) // 2  # each sample's own kernel half-width
    k = torch.exp(-(taps**2) / (2 * sigma**2)) * (taps.abs() <= reach)
    k = k / k.sum(dim=1, keepdim=True)
    delta = (taps == 0).float().expand(b, size)
    k = torch.where((on.to(x.device) & (sigma[:, 0] >= 0.3))[:, None], k, delta)
    k = k.repeat_interleave(c, dim=0)  # (B*C, size)
    pad = size // 2
    y = F.pad(x.float().reshape(1, b * c, h, w), (pad, pad, pad, pad))
    y = F.conv2d(y, k.view(b * c, 1, 1, size), groups=b * c)
    y = F.conv2d(y, k.view(b * c, 1, size, 1), groups=b * c)
    return y.view(b, c, h, w)
