"""A loss history that stays small: per-iteration means in buckets that double in width.

At most `MAX_BUCKETS` points are kept; when full, neighbouring buckets merge. The whole
history (including the unfinished bucket) round-trips through JSON exactly, so a resumed run
continues the same curve.
"""

from __future__ import annotations

MAX_BUCKETS = 4096


class LossHistory:
    def __init__(self, n_losses: int = 2):
        self.width = 1  # iterations per bucket
        self.buckets: list[list[float]] = []  # [first iteration, mean loss 0, mean loss 1, ...]
        self.pending: list[float] = [0.0] * n_losses
        self.pending_count = 0
        self.pending_first = 1

    def add(self, iteration: int, losses: list[float]) -> None:
        if self.pending_count == 0:
            self.pending_first = iteration
        self.pending = [a + b for a, b in zip(self.pending, losses, strict=True)]
        self.pending_count += 1
        if self.pending_count == self.width:
            self.buckets.append([self.pending_first] + [v / self.width for v in self.pending])
            self.pending, self.pending_count = [0.0] * len(self.pending), 0
            if len(self.buckets) >= MAX_BUCKETS:
                merged = []
                for a, b in zip(self.buckets[0::2], self.buckets[1::2], strict=False):
                    merged.append([a[0]] + [(x + y) / 2 for x, y in zip(a[1:], b[1:], strict=True)])
                self.buckets, self.width = merged, self.width * 2

    def points(self) -> list[list[float]]:
        """[iteration, losses...] for every bucket plus the unfinished one."""
        pts = list(self.buckets)
        if self.pending_count:
            pts.append([self.pending_first] + [v / self.pending_count for v in self.pending])
        return pts

    def to_json(self) -> dict:
        return {"width": self.width, "buckets": self.buckets, "pending": self.pending,
                "pending_count": self.pending_count, "pending_first": self.pending_first}  # fmt: skip

    @classmethod
    def from_json(cls, d: dict) -> LossHistory:
        """ValueError when `d` is not a history this class wrote."""
        try:
            h = cls(len(d["pending"]))
            h.width, h.buckets = int(d["width"]), [[float(v) for v in b] for b in d["buckets"]]
            h.pending, h.pending_count = [float(v) for v in d["pending"]], int(d["pending_count"])
            h.pending_first = int(d["pending_first"])
        except (KeyError, TypeError, ValueError, OverflowError) as exc:
            raise ValueError(f"not a loss history ({type(exc).__name__}: {exc})") from None
        if h.width < 1 or h.pending_count < 0 or any(len(b) != len(h.pending) + 1 for b in h.buckets):
            raise ValueError("not a loss history (its buckets and sums disagree)")
        return h
