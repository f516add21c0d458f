"""Interactive prompts, shown only on a TTY.

Every prompt shows its default and range, Enter takes the default and `?` prints the help.
With `--yes`, or when stdin/stdout is not a terminal, the default is taken silently, so every
prompt must also have a command-line flag.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from facelab.errors import UsageError
from facelab.options import Option

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


def ask_option(opt: Option, default: Any = None, label: str | None = None) -> Any:
    """Ask for an option's value, checked by its own spec (`Option.parse`), as flags and config
    files are; `default` replaces the spec's (e.g. an earlier run's value)."""
    default = opt.default if default is None else default
    if opt.type is bool:
        shown = ask(label or opt.name, "y" if default else "n", lambda t: "y" if opt.parse(t) else "n",
                    "y/n", opt.help)  # fmt: skip
        return shown == "y"
    return ask(label or opt.name, default, opt.parse, opt.allowed(), opt.help)


def ask_choice(label: str, default: str, choices: Sequence[str], help_text: str = "") -> str:
    return ask_option(Option(label, str, default, help_text, choices=tuple(choices)))


def confirm(action: str, question: str) -> bool:
    """Whether to go ahead with `action`: yes with --yes, else the answer to `question` on a terminal
    (default no); without a terminal, a UsageError saying that `action` needs --yes."""
    if _assume_yes:
        return True
    if not interactive():
        raise UsageError(f"{action} needs confirmation: add --yes")
    return ask_bool(question, False)


def ask_bool(label: str, default: bool, help_text: str = "") -> bool:
    return ask_option(Option(label, bool, default, help_text))
