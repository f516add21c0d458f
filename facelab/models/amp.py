"""AMP, the reference's model for live use: one encoder and decoder, and two fixed random "inters"
whose channels are mixed by a morph factor.

Training gives the src code a random subset of int(inter_dims * morph_factor) channels from
inter_src and the rest from inter_dst (both of src's encoding); the dst code is all inter_dst.
Only the encoder and decoder learn: the inters keep their random initial weights (as in the
reference's final code). At inference a morph value m takes the first int(inter_dims * m)
channels from inter_src: 1 gives the src identity, 0 reconstructs dst.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from facelab.models.archi import Decoder, Encoder
from facelab.models.blocks import glorot_

FROZEN_PREFIXES = ("inter_src.", "inter_dst.")  # never optimised


class AmpInter(nn.Module):
    def __init__(self, ae_dims: int, inter_dims: int, low: int):
        super().__init__()
        self.low, self.inter_dims = low, inter_dims
        self.dense = nn.Linear(ae_dims, low * low * inter_dims)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.dense(z).view(-1, self.inter_dims, self.low, self.low)


class AMPNet(nn.Module):
    kind = "amp"

    def __init__(self, resolution: int, ae_dims: int, inter_dims: int, e_dims: int, d_dims: int,
                 d_mask_dims: int, morph_factor: float):  # fmt: skip
        super().__init__()
        if resolution % 32:
            raise ValueError(f"resolution {resolution} must be a multiple of 32 for AMP")
        self.resolution, self.inter_dims, self.morph_factor = resolution, inter_dims, morph_factor
        low = resolution // 32
        self.encoder = Encoder(e_dims, {"t", "u"})
        self.encoder_dense = nn.Linear(8 * e_dims * low * low, ae_dims)
        self.inter_src = AmpInter(ae_dims, inter_dims, low)
        self.inter_dst = AmpInter(ae_dims, inter_dims, low)
        self.decoder = Decoder(inter_dims, d_dims, d_mask_dims, {"t", "d"})
        glorot_(self)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder_dense(self.encoder(x))

    def morph_mask(self, batch: int, morph: float, device) -> torch.Tensor:
        """(B, C, 1, 1): 1 for the first int(C * morph) channels (taken from inter_src), the product
        taken in float32 and truncated, as the reference's graph does."""
        k = int(np.float32(self.inter_dims) * np.float32(morph))
        mask = torch.zeros(batch, self.inter_dims, 1, 1, device=device)
        mask[:, :k] = 1
        return mask

    def random_mix(self, gens: list[torch.Generator]) -> torch.Tensor:
        """Training's mix: a random int(C * morph_factor) channels per sample (one generator each)
        from inter_src."""
        batch, k = len(gens), int(self.inter_dims * self.morph_factor)
        order = torch.stack([torch.rand(self.inter_dims, generator=g) for g in gens]).argsort(dim=1)
        mask = torch.zeros(batch, self.inter_dims)
        mask.scatter_(1, order[:, :k], 1.0)
        return mask.view(batch, self.inter_dims, 1, 1)

    def forward(self, src: torch.Tensor, dst: torch.Tensor, swap: bool = True, with_codes: bool = False,
                mix: torch.Tensor | None = None) -> dict[str, torch.Tensor]:  # fmt: skip
        """src and dst reconstructions (src through its channel mix), optionally the swap at morph 1."""
        z_src, z_dst = self.encode(src), self.encode(dst)
        if mix is None:
            mix = self.morph_mask(src.shape[0], self.morph_factor, src.device)
        mix = mix.to(src.device, src.dtype)
        src_code = self.inter_src(z_src) * mix + self.inter_dst(z_src) * (1 - mix)
        dst_code = self.inter_dst(z_dst)
        out = {}
        out["src"], out["src_mask"] = self.decoder(src_code)
        out["dst"], out["dst_mask"] = self.decoder(dst_code)
        if swap:
            code = self.inter_src(z_dst)
            out["swap"], out["swap_mask"] = self.decoder(code.detach() if torch.is_grad_enabled() else code)
        if with_codes:
            out["src_code"], out["dst_code"] = src_code, dst_code
        return out

    def traced_morph_mask(self, morph: torch.Tensor) -> torch.Tensor:
        """`morph_mask` from a morph tensor of shape (1,), as graph operations (for ONNX export)."""
        k = torch.floor(torch.tensor(float(self.inter_dims)) * morph.float())  # morph >= 0: truncation
        return (torch.arange(self.inter_dims, device=morph.device).float() < k).float().view(1, -1, 1, 1)

    @torch.no_grad()
    def swap(self, dst: torch.Tensor, morph: float | torch.Tensor = 1.0
             ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:  # fmt: skip
        """(face, its mask, the dst mask) with `morph` of the identity taken from src (a number, or a
        (1,) tensor when exporting)."""
        z = self.encode(dst)
        if isinstance(morph, torch.Tensor):
            m = self.traced_morph_mask(morph).to(dst.dtype)
        else:
            m = self.morph_mask(dst.shape[0], morph, dst.device).to(dst.dtype)
        dst_code = self.inter_dst(z)
        face, mask = self.decoder(self.inter_src(z) * m + dst_code * (1 - m))
        return face, mask, self.decoder.mask_only(dst_code)
