"""`facelab faceset convert-dfl`: rewrite DeepFaceLab aligned faces with facelab's JSON metadata.

The landmarks, crop matrix, XSeg label polygons and applied XSeg mask move from DeepFaceLab's
APP15 pickle into our JSON; the JPEG image data is not re-encoded. Each file is replaced
atomically after its original was copied to `aligned_dfl_backup/`, so a killed conversion loses
nothing and the next run continues with the files still in DeepFaceLab's format.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from facelab import progress
from facelab.faces import meta
from facelab.faces.faceset import editing
from facelab.fsutil import remove_temps_in, write_bytes_atomic
from facelab.workspace import image_files

BACKUP_SUFFIX = "_dfl_backup"


@dataclass
class Converted:
    converted: int = 0
    already: int = 0  # facelab's metadata already (an earlier run, or our own extraction)
    labelled: int = 0  # converted faces with XSeg polygons
    masked: int = 0  # converted faces with an applied XSeg mask
    damaged: list[tuple[str, str]] = field(default_factory=list)  # (file, why), left as they were
    no_metadata: list[str] = field(default_factory=list)
    backup: Path | None = None


def backup_dir(folder: Path) -> Path:
    return folder.with_name(folder.name + BACKUP_SUFFIX)


def _keep_original(backup: Path, name: str, data: bytes) -> None:
    """Copy the original to the backup folder, beside (never over) a different earlier one."""
    target, n = backup / name, 1
    while target.exists():
        if target.read_bytes() == data:
            return  # a conversion killed after its backup: already kept
        target, n = backup / f"{Path(name).stem}.{n}{Path(name).suffix}", n + 1
    write_bytes_atomic(target, data)


def convert_faceset(folder: Path, backup: bool = True) -> Converted:
    result = Converted(backup=backup_dir(folder) if backup else None)
    with editing(folder, "faceset convert-dfl"):  # listed once held: a killed run's temp files are gone
        if result.backup is not None and result.backup.is_dir():
            remove_temps_in(result.backup)  # and those of its backup copies (found by the kill harness)
        files = image_files(Path(folder))
        with progress.bar(len(files), "convert-dfl", "face") as bar:
            for path in files:
                bar.update(1)
                data = path.read_bytes()
                who = meta.written_by(data)
                if who != "deepfacelab":
                    if who == "facelab":
                        result.already += 1
                    else:
                        result.no_metadata.append(path.name)
                    continue
                try:
                    face = meta.parse(data)
                except meta.MetadataError as exc:
                    result.damaged.append((path.name, str(exc)))
                    continue
                if result.backup is not None:
                    result.backup.mkdir(exist_ok=True)
                    _keep_original(result.backup, path.name, data)
                write_bytes_atomic(path, meta.embed(data, face))
                result.converted += 1
                result.labelled += bool(face.polygons)
                result.masked += face.xseg_mask is not None
    return result
