"""DeepFaceLab's DF and LIAE autoencoders with the `-u`, `-d` and `-t` variants.

- `u`: pixel-normalise the encoder's flattened output;
- `d`: the decoder emits four 3-channel maps that depth-to-space doubles: twice the output
  resolution for about the same cost (the dense bottleneck works at res/32);
- `t`: a deeper encoder (res/32) and decoder (one more upscale), with residual blocks.
"""

from __future__ import annotations

import torch
from torch import nn

from facelab.models.blocks import Downscale, ResidualBlock, Upscale, conv, depth_to_space, glorot_, pixel_norm


def parse_archi(archi: str) -> tuple[str, set[str]]:
    kind, _, flags = archi.lower().partition("-")
    if kind not in ("df", "liae") or set(flags) - set("udt"):
        raise ValueError(
            f"unknown architecture {archi!r}: df or liae, optionally with -u, -d, -t (e.g. liae-ud)"
        )
    return kind, set(flags)


class Encoder(nn.Module):
    def __init__(self, e_dims: int, flags: set[str], in_ch: int = 3):
        super().__init__()
        e = e_dims
        if "t" in flags:
            layers = [Downscale(in_ch, e), ResidualBlock(e), Downscale(e, 2 * e), Downscale(2 * e, 4 * e),
                      Downscale(4 * e, 8 * e), Downscale(8 * e, 8 * e), ResidualBlock(8 * e)]  # fmt: skip
        else:
            layers = [
                Downscale(in_ch, e),
                Downscale(e, 2 * e),
                Downscale(2 * e, 4 * e),
                Downscale(4 * e, 8 * e),
            ]
        self.body = nn.Sequential(*layers)
        self.use_pixel_norm = "u" in flags

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = torch.flatten(self.body(x), 1)  # C, H, W order
        return pixel_norm(z) if self.use_pixel_norm else z


class Inter(nn.Module):
    """Dense bottleneck: flat code -> ae_dims -> a low x low x ae_out map (then one upscale unless -t)."""

    def __init__(self, in_flat: int, ae_dims: int, ae_out: int, low: int, flags: set[str]):
        super().__init__()
        self.low, self.ae_out = low, ae_out
        self.dense1 = nn.Linear(in_flat, ae_dims)
        self.dense2 = nn.Linear(ae_dims, low * low * ae_out)
        self.up = None if "t" in flags else Upscale(ae_out, ae_out)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = self.dense2(self.dense1(z)).view(-1, self.ae_out, self.low, self.low)
        return x if self.up is None else self.up(x)


class Decoder(nn.Module):
    """Face (3 channels) and mask (1 channel) from a code map, both through sigmoid."""

    def __init__(self, in_ch: int, d_dims: int, d_mask_dims: int, flags: set[str]):
        super().__init__()
        d, m = d_dims, d_mask_dims
        widths = [8 * d, 8 * d, 4 * d, 2 * d] if "t" in flags else [8 * d, 4 * d, 2 * d]
        blocks, cin = [], in_ch
        for w in widths:
            blocks += [Upscale(cin, w), ResidualBlock(w)]
            cin = w
        self.face = nn.Sequential(*blocks)
        mwidths = [8 * m, 8 * m, 4 * m, 2 * m] if "t" in flags else [8 * m, 4 * m, 2 * m]
        if "d" in flags:
            mwidths.append(m)
        mblocks, cin = [], in_ch
        for w in mwidths:
            mblocks.append(Upscale(cin, w))
            cin = w
        self.mask = nn.Sequential(*mblocks)
        self.double = "d" in flags
        if self.double:
            self.out = nn.ModuleList(
                [conv(2 * d, 3, 1), conv(2 * d, 3, 3), conv(2 * d, 3, 3), conv(2 * d, 3, 3)]
            )
        else:
            self.out = nn.ModuleList([conv(2 * d, 3, 1)])
        self.mask_out = conv(cin, 1, 1)

    def forward(self, code: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.face(code)
        if self.double:
            x = depth_to_space(torch.cat([c(x) for c in self.out], dim=1))
        else:
            x = self.out[0](x)
        return torch.sigmoid(x), self.mask_only(code)

    def mask_only(self, code: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.mask_out(self.mask(code)))


class Autoencoder(nn.Module):
    """DF: shared encoder and inter, one decoder per identity.
    LIAE: shared encoder, inter_AB (both) and inter_B (dst only), one decoder on the joined codes.

    Inputs and outputs are BGR in [0, 1], NCHW.
    """

    def __init__(self, resolution: int, archi: str, ae_dims: int, e_dims: int, d_dims: int, d_mask_dims: int):
        super().__init__()
        kind, flags = parse_archi(archi)
        step = 32 if "d" in flags else 16
        if resolution % step:
            raise ValueError(f"resolution {resolution} must be a multiple of {step} for {archi}")
        self.kind, self.resolution = kind, resolution
        low = resolution // step
        enc_res = resolution // (32 if "t" in flags else 16)
        self.encoder = Encoder(e_dims, flags)
        flat = 8 * e_dims * enc_res * enc_res
        if kind == "df":
            self.inter = Inter(flat, ae_dims, ae_dims, low, flags)
            self.decoder_src = Decoder(ae_dims, d_dims, d_mask_dims, flags)
            self.decoder_dst = Decoder(ae_dims, d_dims, d_mask_dims, flags)
        else:
            self.inter_AB = Inter(flat, ae_dims, 2 * ae_dims, low, flags)
            self.inter_B = Inter(flat, ae_dims, 2 * ae_dims, low, flags)
            self.decoder = Decoder(4 * ae_dims, d_dims, d_mask_dims, flags)
        glorot_(self)

    def _codes(self, src: torch.Tensor | None, dst: torch.Tensor) -> dict[str, torch.Tensor]:
        z_dst = self.encoder(dst)
        if self.kind == "df":
            code_dst = self.inter(z_dst)
            codes = {"dst": code_dst, "swap": code_dst}
            if src is not None:
                codes["src"] = self.inter(self.encoder(src))
            return codes
        ab_dst = self.inter_AB(z_dst)
        codes = {"dst": torch.cat([self.inter_B(z_dst), ab_dst], 1), "swap": torch.cat([ab_dst, ab_dst], 1)}
        if src is not None:
            ab_src = self.inter_AB(self.encoder(src))
            codes["src"] = torch.cat([ab_src, ab_src], 1)
        return codes

    def _decode(self, which: str, code: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.kind == "liae":
            return self.decoder(code)
        return (self.decoder_src if which == "src" else self.decoder_dst)(code)

    def forward(
        self, src: torch.Tensor, dst: torch.Tensor, swap: bool = True, with_codes: bool = False
    ) -> dict[str, torch.Tensor]:
        """Reconstructions of both sides and (unless `swap=False`, as in plain training) the
        src-from-dst swap, each with its mask; `with_codes` adds the src and dst codes.
        The swap's code is detached: losses on the swap train the decoder, not the encoder."""
        codes = self._codes(src, dst)
        out = {}
        for name, which in (("src", "src"), ("dst", "dst"), ("swap", "src"))[: 3 if swap else 2]:
            code = codes[name].detach() if name == "swap" and torch.is_grad_enabled() else codes[name]
            out[name], out[f"{name}_mask"] = self._decode(which, code)
        if with_codes:
            out["src_code"], out["dst_code"] = codes["src"], codes["dst"]
        return out

    @torch.no_grad()
    def swap(self, dst: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(swapped face, its mask, the dst decoder's mask) for merging."""
        codes = self._codes(None, dst)
        face, mask = self._decode("src", codes["swap"])
        decoder = self.decoder if self.kind == "liae" else self.decoder_dst
        return face, mask, decoder.mask_only(codes["dst"])  # the dst face itself is not needed
