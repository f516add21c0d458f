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

import hashlib
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from facelab.train.losses import gaussian_blur


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


def _warp_field(res: int, g: torch.Generator) -> torch.Tensor:
    """One sample's random warp as a displacement field (2, R, R) in normalised coordinates."""
    cell = res // (2 ** int(torch.randint(1, 4, (1,), generator=g)))
    points = res // cell + 1
    coarse = torch.zeros(2, points, points)
    coarse[:, 1:-1, 1:-1] = torch.randn(2, points - 2, points - 2, generator=g) * (cell * 0.24 * 2 / res)
    fine = F.interpolate(coarse[None], size=(res + cell, res + cell), mode="bilinear", align_corners=False)[0]
    half = cell // 2
    return fine[:, half : half + res, half : half + res]


def augment(
    images: torch.Tensor, face_masks: torch.Tensor, spec: AugmentSpec, gens: list[torch.Generator], warp: bool
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(network input, target, target mask) as float in [0, 1] from uint8 images and masks;
    `gens` holds one generator per sample."""
    b, _, res, _ = images.shape
    dev = images.device
    u = torch.stack([torch.rand(5, generator=g) for g in gens]) * 2 - 1  # uniform in [-1, 1)
    angle = u[:, 0] * math.radians(spec.rotation_deg)
    scale = 1 + u[:, 1] * spec.scale
    shift = u[:, 2:4] * spec.shift * 2
    flip = (u[:, 4] + 1) / 2 < spec.flip_prob if spec.random_flip else torch.zeros(b, dtype=torch.bool)
    fields = torch.stack([_warp_field(res, g) for g in gens]) if warp and spec.random_warp else None

    # Output pixel q comes from source point p = R(-angle) (q - shift) / scale (after undoing the flip).
    q = _pixel_grid(res, dev).expand(b, res, res, 2).clone()
    q[..., 0] = torch.where(flip.to(dev)[:, None, None], -q[..., 0], q[..., 0])
    q = q - shift.to(dev)[:, None, None, :]
    cos, sin = torch.cos(angle).to(dev), torch.sin(angle).to(dev)
    rot = torch.stack([torch.stack([cos, sin], -1), torch.stack([-sin, cos], -1)], -2)  # R(-angle)
    p = torch.einsum("bij,bhwj->bhwi", rot, q) / scale.to(dev)[:, None, None, None]

    pixels = images.float().div_(255)
    target = grid_sample(pixels, p, "bicubic", "border").clamp_(0, 1)
    mask = grid_sample(face_masks.float().div_(255), p, "bilinear", "zeros")
    if fields is None:
        return target, target, mask
    disp = grid_sample(fields.to(dev), p, "bilinear", "border").permute(0, 2, 3, 1)
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
    sigma = u[:, 5] * 2.0
    blurred = [gaussian_blur(out[i : i + 1], float(sigma[i])) if u[i, 6] >= 0.5 and sigma[i] >= 0.3
               else out[i : i + 1] for i in range(b)]  # fmt: skip
    return torch.cat(blurred).clamp_(0, 1)

