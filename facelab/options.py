"""Typed option specs: one definition drives the command-line flags, the config file and prompts.

An `Option` knows its type, default, range or choices and help; `parse` refuses a bad value
with a message that names the allowed range, whichever way the value arrived.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from facelab.errors import UsageError


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

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    def allowed(self) -> str:
        if self.choices:
            return ", ".join(self.choices)
        if self.range:
            lo, hi = self.range
            return f"{lo} to {hi}" if self.type is int else f"{lo:g} to {hi:g}"
        return "yes or no" if self.type is bool else self.type.__name__

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
        except (TypeError, ValueError):
            raise ValueError(f"{self.name} must be {self.allowed()}, not {value!r}") from None
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


def add_arguments(group: argparse._ArgumentGroup, options: list[Option]) -> None:
    """One flag per option; an unset flag stays None so a config file or a saved session can fill it."""
    for opt in options:

        def parse(text: str, opt: Option = opt) -> Any:
            try:
                return opt.parse(text)
            except ValueError as exc:
                raise argparse.ArgumentTypeError(str(exc)) from None

        metavar = None if opt.type is not bool else "y|n"
        group.add_argument(
            opt.flag, dest=opt.name, type=parse, default=None, metavar=metavar,
            help=f"{opt.help} ({opt.allowed()}; default: {opt.default})",
        )  # fmt: skip


def load_config(path: Path, options: list[Option]) -> dict:
    """Settings from a YAML or JSON file, checked against `options`; errors name the file."""
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise UsageError(f"{path}: cannot read the config file ({exc.strerror})") from None
    try:
        if Path(path).suffix.lower() == ".json":
            data = json.loads(text)
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


def defaults(options: list[Option]) -> dict:
    return {o.name: o.default for o in options}
