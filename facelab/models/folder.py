"""A model's folder, `model/<name>_<Class>/`: the one module that knows its files, and saves that
survive a kill at any instant. Training, merge and the UI read and write model folders only
through here; `load_network` is the one way back from a folder to a network.

A save writes every file into `.saving/`, fsyncs them, then renames the folder to `.commit/`
(the commit point) and moves the files into place one rename at a time. Opening the folder
finishes a `.commit/` that a crash interrupted and discards a `.saving/`; readers that do not
hold the lock read through `.commit/` first. So a loader always sees the previous save or the
new one, never a mix, and `state.json` records each tensor file's SHA-256 to catch damage.

Autobackups are full copies of a save (not hard links: a damaged block must not damage the
backup too), rotated `_autobackups/01` (newest) to `24`.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_bytes
from safetensors.torch import save_file
from torch import nn

from facelab.errors import FacelabError, UsageError
from facelab.fsutil import default_mode, fsync_dir, parse_json, read_json
from facelab.models.discriminators import CODE, GAN
from facelab.models.registry import create_model

CONFIG, WEIGHTS, OPTIMIZER, STATE, SUMMARY, PREVIEW = (
    "config.json", "model.safetensors", "optimizer.safetensors", "state.json", "summary.txt", "preview.jpg",
)  # fmt: skip
CHECKPOINT_FILES = (CONFIG, WEIGHTS, OPTIMIZER, STATE, SUMMARY)
LIVE = "live.json"  # progress for `facelab ui`, rewritten every few seconds while training
COMMAND = "command"  # a key (s, b, p, enter) for the trainer, left by `facelab ui`
SESSION = "merge_session.json"  # the merge settings chosen with this model
HISTORY = "history"  # preview images every 10 iterations (write_preview_history)
# Weights saved beside the network's under these prefixes belong to training's discriminators
# (GAN, true face) or are the moving average of its weights (the ema option, train/ema.py): a
# network loaded for training leaves them all out; one loaded for merge or export takes the average.
EMA = "ema."
AUX_PREFIXES = (GAN, CODE, EMA)
STAGING, COMMIT, LOCK = ".saving", ".commit", ".lock"
BACKUPS, MAX_BACKUPS = "_autobackups", 24
REPLACED = "replaced"  # _autobackups/replaced-<time>-<iteration>: what a restore replaced
TRASH = "_trash"
LOAD_TRIES = 20  # re-reads of a checkpoint seen mid-commit (a commit takes milliseconds)


class CheckpointError(FacelabError):
    """A save is missing or damaged."""


class ModelLocked(FacelabError):
    pass


@dataclass
class Checkpoint:
    config: dict
    weights: dict[str, torch.Tensor]
    optimizer: dict[str, torch.Tensor]
    state: dict


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            h.update(chunk)
    return h.hexdigest()


def _fsync_file(path: Path) -> None:
    default_mode(path)
    with open(path, "rb+") as f:
        os.fsync(f.fileno())


def _write_json(path: Path, obj: object) -> None:
    path.write_text(json.dumps(obj, indent=1, sort_keys=True) + "\n")


class ModelFolder:
    def __init__(self, path: Path):
        self.path = Path(path)
        self.name, _, self.class_name = self.path.name.rpartition("_")

    @classmethod
    def of(cls, model_root: Path, name: str, class_name: str) -> ModelFolder:
        return cls(Path(model_root) / f"{name}_{class_name}")

    def __str__(self) -> str:
        return str(self.path)

    # ------------------------------------------------------------------ reading
    def file(self, name: str) -> Path:
        """Where a checkpoint file is now: inside an unfinished commit if there is one."""
        pending = self.path / COMMIT / name
        return pending if pending.exists() else self.path / name

    def exists(self) -> bool:
        """Whether anything was ever saved here (a damaged save still counts: it must not be replaced)."""
        return any(self.file(n).exists() for n in CHECKPOINT_FILES) or (self.path / BACKUPS).is_dir()

    def read_json(self, name: str) -> dict:
        path = self.file(name)
        try:
            return read_json(path)
        except FileNotFoundError:
            raise CheckpointError(f"{path} is missing") from None
        except (OSError, ValueError) as exc:
            raise CheckpointError(f"{path} is damaged ({exc})") from None

    def load(self, device: str | torch.device = "cpu", optimizer: bool = True) -> Checkpoint:
        """The saved checkpoint, every tensor file checked against its recorded SHA-256.
        `optimizer=False` (merge, export) reads the weights only; `optimizer` is then empty.

        A reader that does not hold the lock can meet a save half-way through its commit (the
        files move into place one rename at a time), and read an old state.json beside a new
        weights file. Such a mix shows as a mismatch while state.json changes under the reader,
        or while a commit is pending: it is read again. Damage is reported only when the same
        state.json, with no commit pending, still disagrees with its files."""
        attempt = 0
        while True:
            before = self._state_bytes()
            try:
                return self._load_once(device, optimizer)
            except CheckpointError:
                moving = (self.path / COMMIT).exists() or self._state_bytes() != before
                if not moving or attempt >= LOAD_TRIES:
                    raise
            attempt += 1
            time.sleep(min(0.05 * attempt, 0.5))

    def problem(self) -> str | None:
        """What is wrong with the current checkpoint (missing or damaged files), or None when it
        is whole: every file there and every tensor file matching its recorded SHA-256."""
        try:
            state = self.read_json(STATE)
            self.read_json(CONFIG)
        except CheckpointError as exc:
            return str(exc)
        digests = state.get("digests", {}) if isinstance(state, dict) else {}
        for name in (WEIGHTS, OPTIMIZER):
            path = self.file(name)
            if not path.exists():
                return f"{path} is missing"
            if isinstance(digests, dict) and name in digests and sha256(path) != digests[name]:
                return f"{path} is damaged (its checksum does not match state.json)"
        return None

    def restore_hint(self) -> str:
        """What to add to an error about a damaged checkpoint: the autobackup that can replace it."""
        backups = self.backups()
        if not backups:
            return "; there is no autobackup to restore"
        slot, state = backups[0]
        return (f"; the latest autobackup is {slot.name} (iteration {state.get('iteration')}): "
                f"restore it with `facelab models restore {self.name}`")  # fmt: skip

    def _state_bytes(self) -> bytes | None:
        try:
            return self.file(STATE).read_bytes()
        except OSError:
            return None

    def _load_once(self, device: str | torch.device, optimizer: bool) -> Checkpoint:
        config, state = self.read_json(CONFIG), self.read_json(STATE)
        if not isinstance(config, dict) or not isinstance(state, dict):
            raise CheckpointError(f"{self.file(CONFIG)} or {self.file(STATE)} is damaged (not a JSON object)")
        digests = state.get("digests", {})
        tensors = {WEIGHTS: {}, OPTIMIZER: {}}
        for name in (WEIGHTS, OPTIMIZER) if optimizer else (WEIGHTS,):
            path = self.file(name)
            try:
                data = path.read_bytes()  # read once: checked and parsed from the same bytes
            except FileNotFoundError:
                raise CheckpointError(f"{path} is missing") from None
            except OSError as exc:
                raise CheckpointError(f"{path} cannot be read ({exc.strerror})") from None
            expected = digests.get(name) if isinstance(digests, dict) else None
            if expected is not None and hashlib.sha256(data).hexdigest() != expected:
                raise CheckpointError(f"{path} is damaged (its checksum does not match state.json)")
            try:
                loaded = load_bytes(data)
            except (SafetensorError, OSError, ValueError) as exc:
                raise CheckpointError(f"{path} is damaged ({exc})") from None
            del data
            tensors[name] = {k: v.to(device) for k, v in loaded.items()} if str(device) != "cpu" else loaded
        return Checkpoint(config, tensors[WEIGHTS], tensors[OPTIMIZER], state)

    # ------------------------------------------------------------------ writing (hold the lock)
    def recover(self) -> None:
        """Finish a save a crash interrupted after its commit point; drop one interrupted before it."""
        staging, commit = self.path / STAGING, self.path / COMMIT
        if staging.exists():
            shutil.rmtree(staging)
        if commit.exists():
            for f in sorted(commit.iterdir()):
                os.replace(f, self.path / f.name)
            fsync_dir(self.path)
            commit.rmdir()
            fsync_dir(self.path)

    def save(self, config: dict, weights: dict[str, torch.Tensor], optimizer: dict[str, torch.Tensor],
             state: dict, summary: str) -> None:  # fmt: skip
        try:
            self._save(config, weights, optimizer, state, summary)
        except OSError as exc:
            if exc.filename is not None or exc.errno is None:
                raise
            # An fsync that failed names no file: name the model folder, for the one-line error.
            raise OSError(exc.errno, exc.strerror, str(self.path)) from exc

    def _save(self, config: dict, weights: dict[str, torch.Tensor], optimizer: dict[str, torch.Tensor],
              state: dict, summary: str) -> None:  # fmt: skip
        self.path.mkdir(parents=True, exist_ok=True)
        self.recover()
        staging = self.path / STAGING
        staging.mkdir()
        digests = {}
        for name, tensors in ((WEIGHTS, weights), (OPTIMIZER, optimizer)):
            cpu = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
            try:
                save_file(cpu, str(staging / name), metadata={"iteration": str(state.get("iteration", 0))})
            except SafetensorError as exc:  # a full disk comes back as "I/O error: ... (os error 28)"
                number = re.search(r"os error (\d+)", str(exc))
                if number is None:
                    raise
                raise OSError(int(number[1]), os.strerror(int(number[1])), str(staging / name)) from None
            _fsync_file(staging / name)
            digests[name] = sha256(staging / name)
        _write_json(staging / CONFIG, config)
        _write_json(staging / STATE, state | {"digests": digests})
        (staging / SUMMARY).write_text(summary)
        for name in (CONFIG, STATE, SUMMARY):
            _fsync_file(staging / name)
        fsync_dir(staging)
        os.replace(staging, self.path / COMMIT)  # the commit point
        fsync_dir(self.path)
        self.recover()

    # ------------------------------------------------------------------ lock
    @contextlib.contextmanager
    def lock(self) -> Iterator[str | None]:
        """Hold the model for one process. Yields a note when a dead process's lock was cleared.

        flock is released by the kernel when its holder dies, so a lock file left by a killed
        trainer never blocks; its recorded pid tells us it was stale.
        """
        self.path.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            if not _flock_soon(fd):
                holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "another process"
                raise ModelLocked(
                    f"{self.path} is in use by {holder}: stop that trainer first (or train another model)"
                )
            previous = os.pread(fd, 200, 0).decode(errors="replace").strip()
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"process {os.getpid()} since {time.strftime('%Y-%m-%d %H:%M:%S')}".encode(), 0)
            yield f"cleared a stale lock left by {previous}" if previous else None
        finally:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)
            os.close(fd)

    def holder(self) -> str:
        """Who holds the model's lock, as its holder wrote it ("process 123 since ...")."""
        try:
            return (self.path / LOCK).read_text(errors="replace").strip()[:200] or "another process"
        except OSError:
            return "another process"

    def is_locked(self) -> bool:
        """Whether a trainer holds the model. The probe holds the lock for microseconds, and `lock()`
        retries for a moment, so a trainer starting during a probe is not refused."""
        if not (self.path / LOCK).exists():
            return False
        fd = os.open(self.path / LOCK, os.O_RDWR)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return False
        except BlockingIOError:
            return True
        finally:
            os.close(fd)

    # ------------------------------------------------------------------ backups
    def backups(self) -> list[tuple[Path, dict]]:
        """Loadable-looking backups with their state.json: the rotated ones newest first, then the
        checkpoints a restore replaced (`replaced-*`, newest first)."""
        out = []
        root = self.path / BACKUPS
        slots = sorted(root.glob("[0-9][0-9]")) + sorted(root.glob(f"{REPLACED}-*"), reverse=True)
        for slot in slots if root.is_dir() else []:
            with contextlib.suppress(OSError, ValueError):
                state = read_json(slot / STATE)
                if isinstance(state, dict):
                    out.append((slot, state))
        return out

    def backup(self) -> Path:
        root = self.path / BACKUPS
        root.mkdir(exist_ok=True)
        new = root / ".new"
        if new.exists():
            shutil.rmtree(new)
        new.mkdir()
        for name in (*CHECKPOINT_FILES, PREVIEW):
            src = self.file(name)
            if src.exists():
                shutil.copy2(src, new / name)
                _fsync_file(new / name)
        fsync_dir(new)
        oldest = root / f"{MAX_BACKUPS:02d}"
        if oldest.exists():
            shutil.rmtree(oldest)
        for i in range(MAX_BACKUPS - 1, 0, -1):
            if (root / f"{i:02d}").exists():
                os.replace(root / f"{i:02d}", root / f"{i + 1:02d}")
        os.replace(new, root / "01")
        fsync_dir(root)
        return root / "01"

    def restore(self, slot: Path) -> Path | None:
        """Make backup `slot` the current checkpoint (through the same commit as a save). The
        checkpoint it replaces is first copied to `_autobackups/replaced-<time>-<iteration>/`
        (outside the rotation, so nothing is dropped for it); returns that folder."""
        self.recover()
        kept = None
        current = [n for n in (*CHECKPOINT_FILES, PREVIEW) if (self.path / n).exists()]
        if current:
            try:
                iteration = parse_json((self.path / STATE).read_text()).get("iteration", "unknown")
            except (OSError, ValueError, AttributeError):
                iteration = "damaged"
            kept = self.path / BACKUPS / f"{REPLACED}-{time.strftime('%Y%m%d-%H%M%S')}-{iteration}"
            n = 1
            while kept.exists():
                kept, n = kept.with_name(f"{kept.name.rsplit('.', 1)[0]}.{n}"), n + 1
            new = self.path / BACKUPS / ".replaced"
            if new.exists():
                shutil.rmtree(new)
            new.mkdir(parents=True)
            for name in current:
                shutil.copy2(self.path / name, new / name)
                _fsync_file(new / name)
            fsync_dir(new)
            os.replace(new, kept)
            fsync_dir(kept.parent)
        staging = self.path / STAGING
        staging.mkdir()
        for name in CHECKPOINT_FILES:
            if (slot / name).exists():
                shutil.copy2(slot / name, staging / name)
                _fsync_file(staging / name)
        fsync_dir(staging)
        os.replace(staging, self.path / COMMIT)
        fsync_dir(self.path)
        self.recover()
        return kept


def network_weights(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The network's own tensors from a saved weights or optimizer file (without discriminators)."""
    return {k: v for k, v in tensors.items() if not k.startswith(AUX_PREFIXES)}


def architecture(config: dict) -> tuple[str, dict]:
    """(registered model name, its options) from a config.json."""
    arch = config.get("architecture") if isinstance(config, dict) else None
    if not isinstance(arch, dict) or not isinstance(arch.get("name"), str):
        raise CheckpointError("config.json has no architecture: the model folder is damaged or not facelab's")
    return arch["name"], {k: v for k, v in arch.items() if k != "name"}


def build_network(config: dict) -> nn.Module:
    """The network a config.json describes, freshly initialised."""
    name, options = architecture(config)
    try:
        return create_model(name, **options)
    except (ValueError, TypeError) as exc:
        raise CheckpointError(f"config.json describes no network facelab can build ({exc})") from None


def load_weights(model: nn.Module, folder: ModelFolder, weights: dict[str, torch.Tensor]) -> None:
    try:
        model.load_state_dict(network_weights(weights))
    except RuntimeError as exc:
        missing = sorted(set(model.state_dict()) - set(weights))[:3]
        detail = f"missing e.g. {', '.join(missing)}" if missing else str(exc).splitlines()[0]
        raise CheckpointError(f"{folder.file(WEIGHTS)} does not match its config.json ({detail})") from None


def averaged_weights(weights: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The network's weights with their moving average in place of each averaged tensor (the same
    as network_weights for a model trained without the ema option)."""
    average = {k[len(EMA) :]: v for k, v in weights.items() if k.startswith(EMA)}
    return {k: average.get(k, v) for k, v in network_weights(weights).items()}


def load_network(folder: ModelFolder, device: str | torch.device = "cpu") -> tuple[nn.Module, Checkpoint]:
    """The saved network with its weights (in eval mode, without discriminators; the moving average
    where the model keeps one) and the checkpoint it came from (weights only: `checkpoint.optimizer`
    is empty). Merge, the UI, xseg apply and export use this."""
    ckpt = folder.load(optimizer=False)
    model = build_network(ckpt.config)
    load_weights(model, folder, averaged_weights(ckpt.weights))
    return model.to(device).eval(), ckpt


def model_folders(model_root: Path, class_name: str | None = None) -> list[ModelFolder]:
    """Model folders under `model_root`, newest save first."""
    if not Path(model_root).is_dir():
        return []
    found = []
    for p in Path(model_root).iterdir():
        if p.is_dir() and "_" in p.name and not p.name.startswith(("_", ".")):
            folder = ModelFolder(p)
            if folder.exists() and (class_name is None or folder.class_name == class_name):
                found.append(folder)
    return sorted(
        found, key=lambda f: f.file(STATE).stat().st_mtime if f.file(STATE).exists() else 0, reverse=True
    )


def find_model(model_root: Path, name: str | None = None, class_name: str | None = None,
               exclude: tuple[str, ...] = ()) -> ModelFolder:  # fmt: skip
    """The model called `name` (its name, or its folder's `<name>_<Class>`), or without a name the
    most recently saved one; `class_name` picks one kind when a name has several, and the classes in
    `exclude` are never picked (merge wants a face model, not an XSeg one)."""
    folders = [f for f in model_folders(model_root, class_name) if f.class_name not in exclude]
    if name is None:
        if not folders:
            raise FacelabError(f"no trained model in {model_root}: run `facelab train` first")
        return folders[0]
    matches = [f for f in folders if name in (f.name, f.path.name)]
    if not matches:
        known = ", ".join(sorted({f.name for f in model_folders(model_root)})) or "none"
        raise FacelabError(f"no model named {name!r} in {model_root} (models there: {known})")
    if len(matches) > 1:
        kinds = ", ".join(sorted(f.class_name for f in matches))
        raise UsageError(f"{name!r} names several models ({kinds}): add --kind")
    return matches[0]


def _flock_soon(fd: int, tries: int = 25) -> bool:
    """Take an exclusive flock, retrying for ~0.25 s: long enough to outlast an `is_locked` probe."""
    for i in range(tries):
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if i + 1 < tries:
                time.sleep(0.01)
    return False
