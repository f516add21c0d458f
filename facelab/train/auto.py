"""`run --model auto`: the model kind and resolution from the dst faces' size and the training budget,
decided by timing each candidate's training step here, not by a rule about the hardware.

A larger resolution keeps more of a large face's detail, but each of its training steps costs more,
and it needs to see more faces before its swap holds the src identity. So the candidates, from
Quick96 (96 px) up through SAEHD resolutions no larger than the dst faces, are timed one after
another (with the precision `--precision auto` would pick, measured and cached the same way), and
the largest one that sees enough faces in the budget is chosen: FACES_AT_96 faces at 96 px, more
in proportion to the pixel count above. The first candidate that falls short ends the search
(anything larger is slower still and needs more).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import torch

from facelab.device import is_oom
from facelab.errors import FacelabError
from facelab.models.registry import create_model
from facelab.precision import choose
from facelab.train.losses import masked_face_loss
from facelab.train.recipes import RECIPES

# Faces a 96 px model sees before its swap holds the src identity: issue 19's Quick96 runs scored an
# identity distance of 0.42 after 1,400 iterations of 4 faces per side (the reference tool's 0.38 at
# its same time budget), and 0.48 after 800.
FACES_AT_96 = 5600
SAEHD_RESOLUTIONS = (128, 160, 192, 224, 256, 320, 384, 448, 512)
TIMED_STEPS = 2  # after a warm-up; the fastest counts


@dataclass
class Candidate:
    model: str
    resolution: int
    batch: int
    step_s: float = 0.0  # one training step, measured (0 = not timed)
    precision: str = "fp32"

    @property
    def needed(self) -> int:
        return round(FACES_AT_96 * (self.resolution / 96) ** 2)

    def faces_in(self, budget_s: float) -> int:
        return int(budget_s / self.step_s * self.batch) if self.step_s else 0

    def label(self) -> str:
        return "Quick96" if self.model == "quick96" else f"SAEHD {self.resolution} px"


def candidates(face_px: float | None) -> list[Candidate]:
    """Quick96, then SAEHD at each resolution up to the dst faces' size (rounded up to 32)."""
    out = [Candidate("quick96", 96, RECIPES["quick96"].batch)]
    limit = math.ceil(face_px / 32) * 32 if face_px else 0
    out += [Candidate("saehd", r, RECIPES["saehd"].batch) for r in SAEHD_RESOLUTIONS if r <= limit]
    return out


def time_step(c: Candidate, device: torch.device) -> None:
    """Time one training step of `c` (forward, loss, backward, update) on random faces."""
    options = {} if c.model == "quick96" else {"resolution": c.resolution}
    net = create_model(c.model, **options).to(device)
    opt = torch.optim.RMSprop(net.parameters(), lr=1e-6)
    g = torch.Generator().manual_seed(0)
    faces = torch.rand(c.batch, 3, c.resolution, c.resolution, generator=g).to(device)
    masks = torch.ones(c.batch, 1, c.resolution, c.resolution, device=device)

    def timed(precision: str, channels_last: bool) -> float:
        net.to(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
        ctx = torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")
        start = time.perf_counter()
        with ctx:
            out = net(faces, faces)
        loss = sum(masked_face_loss(out[s], out[f"{s}_mask"], faces, masks).mean() for s in ("src", "dst"))
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return time.perf_counter() - start

    bf16 = device.type == "cpu" or torch.cuda.is_bf16_supported()
    choice = choose("train step", net.config, c.batch, device, timed, bf16)
    c.precision = choice.precision
    # The precision decision may come from the cache; the speed is timed now, as the machine is today.
    timed(choice.precision, choice.channels_last)
    c.step_s = min(timed(choice.precision, choice.channels_last) for _ in range(TIMED_STEPS))


def pick(face_px: float | None, budget_s: float, device: torch.device,
         say=lambda line: None) -> Candidate:  # fmt: skip
    """The largest candidate that sees its FACES_AT_96-scaled share of faces within `budget_s` of
    training here; Quick96 when none does. `say` gets one line per candidate timed."""
    chosen = None
    for c in candidates(face_px):
        try:
            time_step(c, device)
        except Exception as exc:  # a candidate too large for the device's memory ends the search
            if not is_oom(exc):
                raise
            say(f"  {c.label()}: out of memory at batch {c.batch}")
            break
        seen = c.faces_in(budget_s)
        say(f"  {c.label()}: {c.step_s * 1000:.0f} ms a step of {c.batch} faces ({c.precision}), so "
            f"{seen:,} faces in the budget; it needs about {c.needed:,}")  # fmt: skip
        if chosen is not None and seen < c.needed:
            break
        chosen = c
        if seen < c.needed:  # not even Quick96 gets enough: it is still the best there is
            break
    if chosen is None:
        raise FacelabError(f"this device has not the memory to train even Quick96 at batch "
                           f"{RECIPES['quick96'].batch}: use a machine with more memory")
    return chosen
