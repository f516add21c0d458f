"""The merge session: settings for all frames plus per-range overrides, kept in the model folder.

`merge_session.json` holds what the user chose; `data_dst/merged/.merge.jsonl` records which
frames are done and with which settings, so a rerun skips finished frames and re-merges only
those whose settings changed.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

from facelab.errors import FacelabError
from facelab.fsutil import is_file_name, parse_json, read_json, remove_stale_temps, write_json_atomic
from facelab.merge import settings as merge_settings
from facelab.models.folder import SESSION, ModelFolder

JOURNAL = ".merge.jsonl"


class SessionError(FacelabError):
    pass


@dataclass
class MergeSession:
    path: Path
    settings: dict = field(default_factory=lambda: merge_settings.validate({}))
    overrides: list[dict] = field(default_factory=list)  # {"first": n, "last": n, "settings": {...}}

    @classmethod
    def of(cls, folder: ModelFolder, fresh: bool = False) -> MergeSession:
        """The session kept in a model's folder (`fresh`: the defaults, ignoring a saved one)."""
        path = folder.path / SESSION
        return cls(path) if fresh else cls.load(path)

    @classmethod
    def for_model(cls, model_root: Path, model: ModelFolder | Path, fresh: bool = False) -> MergeSession:
        """The session of a model folder, or of an exported model file (a .dfm has no folder: its
        session is kept in the workspace's model/ as `<file>.merge_session.json`)."""
        if isinstance(model, ModelFolder):
            return cls.of(model, fresh)
        path = Path(model_root) / f"{Path(model).name}.{SESSION}"
        return cls(path) if fresh else cls.load(path)

    @classmethod
    def load(cls, path: Path) -> MergeSession:
        if not path.exists():
            return cls(path)
        try:
            data = read_json(path)
            if not isinstance(data, dict) or not isinstance(data.get("settings"), dict) or not all(
                isinstance(o, dict) and isinstance(o.get("settings"), dict) for o in data.get("overrides", [])
            ):
                raise ValueError("not a merge session")
            settings = merge_settings.validate(data["settings"])
            overrides = [
                {"first": int(o["first"]), "last": int(o["last"]),
                 "settings": {k: merge_settings.BY_NAME[k].parse(v) for k, v in o["settings"].items()}}
                for o in data.get("overrides", [])
            ]  # fmt: skip
        except (OSError, ValueError, KeyError, TypeError, OverflowError) as exc:
            raise SessionError(
                f"{path} is damaged ({exc}): run again with --fresh-session to start from the defaults"
            ) from None
        return cls(path, settings, overrides)

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # What a save killed half-way left (found by the kill harness); a live save takes milliseconds,
        # so a temp file a second old is no one's.
        remove_stale_temps(self.path, 1.0)
        write_json_atomic(self.path, {"format": "facelab-merge-session", "version": 1,
                                      "settings": self.settings, "overrides": self.overrides})  # fmt: skip

    def for_frame(self, number: int | None) -> dict:
        s = dict(self.settings)
        for o in self.overrides:
            if number is not None and o["first"] <= number <= o["last"]:
                s |= o["settings"]
        return s

    def override(self, first: int, last: int, changes: dict) -> None:
        self.overrides.append({"first": first, "last": last, "settings": changes})

    def set_frames(self, first: int, last: int, wanted: dict) -> None:
        """The interactive merger's save: `wanted` for frames first..last, replacing an earlier
        override of exactly that range. One frame keeps only what differs from what it would get
        anyway, so setting a value back works under a range override too; a range copies all."""
        self.overrides = [o for o in self.overrides if (o["first"], o["last"]) != (first, last)]
        current = self.for_frame(first)
        changes = dict(wanted) if last > first else {k: v for k, v in wanted.items() if v != current[k]}
        if changes:
            self.override(first, last, changes)


def settings_hash(s: dict, model_id: str, frame: Path | None = None, previous: Path | None = None) -> str:
    """What a merged frame was made from: its settings, the model and the dst frame file (its name,
    size and time: frames extracted again, e.g. as PNG instead of JPEG, are merged again), and the
    previous frame's file when the merge blends with it (--temporal)."""

    def made_from(path: Path | None) -> list | None:
        st = path.stat() if path is not None else None
        return [path.name, st.st_size, st.st_mtime_ns] if st is not None else None

    record = {"s": s, "m": model_id, "f": made_from(frame)}
    if previous is not None:
        record["p"] = made_from(previous)
    blob = json.dumps(record, sort_keys=True).encode()
    return hashlib.blake2b(blob, digest_size=8).hexdigest()


def _records(merged_dir: Path) -> list[dict]:
    path = merged_dir / JOURNAL
    out = []
    if path.exists():
        for line in path.read_text(errors="replace").splitlines():
            try:
                rec = parse_json(line)
            except ValueError:
                continue  # a line cut by a crash: that frame is simply merged again
            if isinstance(rec, dict) and isinstance(rec.get("hash"), str) and is_file_name(rec.get("frame")):
                out.append(rec)
    return out


def read_journal(merged_dir: Path) -> tuple[dict[str, str], dict[str, str]]:
    """({frame name: settings hash}, {frame name: model folder}) of the frames merged so far, from
    one read of the journal; lines written before the journal named the model have no model."""
    records = _records(merged_dir)
    models = {rec["frame"]: rec["model"] for rec in records if isinstance(rec.get("model"), str)}
    return {rec["frame"]: rec["hash"] for rec in records}, models


def merged_by_other(merged_dir: Path, model_folder: str, models: dict[str, str] | None = None) -> str | None:
    """The model folder that made frames still in `merged_dir`, when it is not `model_folder`
    (those frames may hold hours of per-frame tuning), else None. Frames recorded before the
    journal named its model are taken as the current model's. `models`: read_journal's, if read."""
    latest = models if models is not None else read_journal(merged_dir)[1]
    others = {m for frame, m in latest.items()
              if m != model_folder and (merged_dir / f"{frame}.png").exists()}  # fmt: skip
    return ", ".join(sorted(others)) or None

