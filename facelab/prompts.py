"""Interactive prompts, shown only on a TTY.

Every prompt shows its default and range, Enter takes the default and `?` prints the help.
With `--yes`, or when stdin/stdout is not a terminal, the default is taken silently, so every
prompt must also have a command-line flag.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from typing import TypeVar

T = TypeVar("T")

_assume_yes = False


def set_assume_yes(value: bool) -> None:
    global _assume_yes
    _assume_yes = value


def interactive() -> bool:
    return not _assume_yes and sys.stdin.isatty() and sys.stdout.isatty()


def ask(label: str, default: T, parse: Callable[[str], T], hint: str, help_text: str = "") -> T:
    """Ask until the answer parses; `parse` raises ValueError with the reason."""
    if not interactive():
        return default
    while True:
        try:
            answer = input(f"[{default}] {label} ({hint}{', ? for help' if help_text else ''}): ").strip()
        except EOFError:
            return default
        if answer == "":
            return default
        if answer == "?" and help_text:
            print(help_text)
            continue
        try:
            return parse(answer)
        except ValueError as exc:
            print(f"  {exc}")


def ask_int(label: str, default: int, lo: int, hi: int, help_text: str = "") -> int:
    def parse(text: str) -> int:
        value = int(text)
        if not lo <= value <= hi:
            raise ValueError(f"enter a whole number from {lo} to {hi}")
        return value

    return ask(label, default, parse, f"{lo}-{hi}", help_text)


def ask_float(label: str, default: float, lo: float, hi: float, help_text: str = "") -> float:
    def parse(text: str) -> float:
        value = float(text)
        if not lo <= value <= hi:
            raise ValueError(f"enter a number from {lo} to {hi}")
        return value

    return ask(label, default, parse, f"{lo}-{hi}", help_text)


def ask_choice(label: str, default: str, choices: Sequence[str], help_text: str = "") -> str:
    def parse(text: str) -> str:
        if text not in choices:
            raise ValueError(f"choose one of: {', '.join(choices)}")
        return text

    return ask(label, default, parse, "/".join(choices), help_text)


def ask_bool(label: str, default: bool, help_text: str = "") -> bool:
    def parse(text: str) -> bool:
        if text.lower() in ("y", "yes", "1", "true"):
            return True
        if text.lower() in ("n", "no", "0", "false"):
            return False
        raise ValueError("answer y or n")

    shown = ask(label, "y" if default else "n", lambda t: "y" if parse(t) else "n", "y/n", help_text)
    return shown == "y"
