"""Typed option specs: one definition drives the command-line flags, the config file, the
terminal prompts, the UI's forms and the checks of JSON bodies.

An `Option` knows its type, default, range or choices and help; `parse` refuses a bad value
with a message that names the allowed range, whichever way the value arrived. The specs live
with the step they configure: extraction (faces/extract.py), training (train/trainer.py and
train/model_options.py), merge (merge/settings.py) and make-video (media/result.py).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from facelab.errors import UsageError
from facelab.fsutil import parse_json


@dataclass(frozen=True)
class Option:
    name: str
    type: type  # int, float, bool or str
    default: Any
    help: str
    range: tuple[float, float] | None = None
    choices: tuple[str, ...] | None = None
    changeable: bool = True  # model options: False = fixed when the model is created
    check: Callable[[Any], Any] | None = None  # extra validation; raises ValueError with the reason
    flags: tuple[str, ...] = ()  # command-line spellings, when not --<name> (e.g. ("--format",))
    normalize: Callable[[str], str] | None = None  # other spellings of a choice -> the choice
    switch: bool = False  # a bool flag as --x/--no-x rather than --x y|n
    prompt: bool = True  # model options: False = not asked on a terminal (--opt and config files set it)

    @property
    def flag(self) -> str:
        return self.flags[0] if self.flags else "--" + self.name.replace("_", "-")

    def allowed(self) -> str:
        if self.choices:
            return ", ".join(self.choices)
        if self.range:
            lo, hi = self.range
            return f"{lo} to {hi}" if self.type is int else f"{lo:g} to {hi:g}"
        return {bool: "yes or no", str: "text"}.get(self.type, self.type.__name__)

    def parse(self, value: Any) -> Any:
        """The value as this option's type, or ValueError naming the allowed values."""
        try:
            if self.type is bool:
                if isinstance(value, bool):
                    return value
                text = str(value).strip().lower()
                if text in ("y", "yes", "true", "1", "on"):
                    return True
                if text in ("n", "no", "false", "0", "off"):
                    return False
                raise ValueError
            if self.type is int and isinstance(value, float) and not value.is_integer():
                raise ValueError
            parsed = self.type(value) if self.type is not int else int(str(value).strip())
            if self.normalize is not None:
                parsed = self.normalize(parsed)
        except (TypeError, ValueError):
            one_of = "one of " if self.choices else ""
            raise ValueError(f"{self.name} must be {one_of}{self.allowed()}, not {value!r}") from None
        if self.type is float and parsed != parsed:
            raise ValueError(f"{self.name} must be {self.allowed()}, not {value!r}")
        if self.choices and parsed not in self.choices:
            raise ValueError(f"{self.name} must be one of {self.allowed()}, not {value!r}")
        if self.range and not self.range[0] <= parsed <= self.range[1]:
            raise ValueError(f"{self.name} must be from {self.allowed()}, not {value!r}")
        if self.check is not None:
            try:
                parsed = self.check(parsed)
            except ValueError as exc:
                raise ValueError(f"{self.name}: {exc}") from None
        return parsed

    def from_json(self, value: Any) -> Any:
        """A value from a JSON body: the JSON type must already be right (`"false"` is not a bool,
        `true` is not a number), then the same checks as `parse`."""
        ok = {bool: lambda v: isinstance(v, bool),
              int: lambda v: isinstance(v, int) and not isinstance(v, bool),
              float: lambda v: isinstance(v, int | float) and not isinstance(v, bool),
              str: lambda v: isinstance(v, str)}[self.type](value)  # fmt: skip
        if not ok:
            raise ValueError(f"{self.name} must be {self.allowed()}, not {value!r}")
        return self.parse(value)


def argtype(opt: Option) -> Callable[[str], Any]:
    """`opt.parse` as an argparse type: a bad value is one line naming the allowed values."""

    def parse(text: str) -> Any:
        try:
            return opt.parse(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    return parse


def add_arguments(
    group: argparse._ArgumentGroup, options: list[Option], defaults: dict | None = None
) -> None:
    """One flag per option; an unset flag stays None so a config file, a prompt or a saved session can
    fill it. `defaults` overrides the default shown in the help (e.g. one that depends on the side)."""
    for opt in options:
        default = (defaults or {}).get(opt.name, opt.default)
        shown = f"{opt.help} ({opt.allowed()}; default: {default})"
        if opt.switch:
            group.add_argument(*_spellings(opt), dest=opt.name, action=argparse.BooleanOptionalAction,
                               default=None, help=f"{opt.help} (default: {default})")  # fmt: skip
            continue
        metavar = "y|n" if opt.type is bool else "{" + ",".join(opt.choices) + "}" if opt.choices else None
        group.add_argument(*_spellings(opt), dest=opt.name, type=argtype(opt), default=None, metavar=metavar,
                           help=shown)  # fmt: skip


def _spellings(opt: Option) -> tuple[str, ...]:
    return opt.flags or (opt.flag,)


MAX_NESTING = 32  # a settings file is one mapping of plain values


def _nesting(text: str) -> int:
    """The deepest nesting of flow brackets in `text`."""
    depth = deepest = 0
    for ch in text:
        if ch in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif ch in "]}":
            depth = max(0, depth - 1)
    return deepest


def load_config(path: Path, options: list[Option]) -> dict:
    """Settings from a YAML or JSON file, checked against `options`; errors name the file."""
    try:
        text = Path(path).read_bytes().decode()
    except OSError as exc:
        raise UsageError(f"{path}: cannot read the config file ({exc.strerror})") from None
    except UnicodeDecodeError:
        raise UsageError(f"{path}: not a text file (a config file is UTF-8 YAML or JSON)") from None
    if _nesting(text) > MAX_NESTING:  # YAML's parser takes seconds to reach its recursion limit
        raise UsageError(f"{path}: nested over {MAX_NESTING} levels deep: not a settings file")
    try:
        if Path(path).suffix.lower() == ".json":
            data = parse_json(text)
        else:
            import yaml

            data = yaml.safe_load(text)
    except Exception as exc:  # noqa: BLE001 - any parse error becomes one line
        raise UsageError(f"{path}: not valid YAML/JSON ({str(exc).splitlines()[0]})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UsageError(f"{path}: expected a mapping of setting: value")
    known = {o.name: o for o in options}
    out = {}
    for key, value in data.items():
        name = str(key).replace("-", "_")
        if name not in known:
            raise UsageError(f"{path}: unknown setting {key!r} (known: {', '.join(known)})")
        try:
            out[name] = known[name].parse(value)
        except ValueError as exc:
            raise UsageError(f"{path}: {exc}") from None
    return out

