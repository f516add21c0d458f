"""Progress bars with rate and ETA; silent with `--quiet` and for steps under ~1 s."""

from __future__ import annotations

from tqdm import tqdm

_quiet = False


def set_quiet(quiet: bool) -> None:
    global _quiet
    _quiet = quiet


def bar(total: int | None, desc: str, unit: str = "frame") -> tqdm:
    return tqdm(
        total=total,
        desc=desc,
        unit=unit,
        disable=_quiet,
        delay=1.0,
        mininterval=0.5,
        dynamic_ncols=True,
        leave=True,
    )


def say(msg: str) -> None:
    """A result line; shown even with --quiet (quiet silences progress, not results)."""
    print(msg, flush=True)


def is_quiet() -> bool:
    return _quiet
