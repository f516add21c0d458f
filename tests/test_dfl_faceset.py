"""DeepFaceLab aligned faces with XSeg labels and applied masks (written by DeepFaceLab itself, in
shared/dfl-files/aligned_xseg): read exactly as DFL stores and renders them, and converted to
facelab's metadata without touching the image data or losing a label."""

from __future__ import annotations

import json
import shutil
import struct
from pathlib import Path

import cv2
import numpy as np
import pytest

from facelab.faces import masks, meta
from facelab.faces.faceset import load_faceset
from tests.conftest import SHARED, assert_clean_error, run_cli

LABELLED = SHARED / "dfl-files" / "aligned_xseg"


@pytest.fixture
def labelled() -> Path:
    if not LABELLED.is_dir():
        pytest.skip(f"DeepFaceLab's labelled faces not found at {LABELLED} (the shared/ folder is absent)")
    return LABELLED


def _faces(folder: Path) -> list[Path]:
    return sorted(folder.glob("*.jpg"))


def _scan(data: bytes) -> bytes:
    """A JPEG's image data: everything from its start-of-scan marker on."""
    i = 2
    while data[i + 1] != 0xDA:
        i += 2 + struct.unpack(">H", data[i + 2 : i + 4])[0]
    return data[i:]


def _check_labels(folder: Path, labelled: Path) -> None:
    """The polygons, their rendering and the applied masks are DeepFaceLab's, exactly."""
    truth = json.loads((labelled / "labels.json").read_text())["faces"]
    ref = np.load(labelled / "label_masks.npz")
    for path in _faces(folder):
        face, want = meta.read(path), truth[path.name]
        stored = [{"type": int(p.include), "pts": p.points.tolist()} for p in face.polygons]
        assert stored == [{"type": w["type"], "pts": w["pts"]} for w in want["polys_as_stored"]], path.name
        rendered = masks.label_mask(face.polygons, 512)
        assert np.array_equal(rendered, ref[f"label_mask__{path.stem}"]), path.name
        assert int(rendered.sum()) == want["label_mask_pixels_on"]
        assert (face.xseg_mask is not None) == want["has_xseg_mask"], path.name
        if face.xseg_mask is not None:
            decoded = masks.decode_xseg_mask(face.xseg_mask).astype(int)
            diff = np.abs(decoded - ref[f"xseg_mask__{path.stem}"]).max()
            assert diff <= (3 if want["xseg_mask"]["encoding"] == "jpeg" else 0), (path.name, diff)


def test_dfl_labels_and_masks_read_as_dfl_stores_and_renders_them(labelled: Path):
    _check_labels(labelled, labelled)
    # the check can fail: DFL's draw order matters (00090_0 stores its exclude polygon first, and
    # drawing in stored order would let the include polygon cover it)
    face = meta.read(labelled / "00090_0.jpg")
    stored_order = np.zeros((512, 512), np.uint8)
    for p in face.polygons:
        cv2.fillPoly(stored_order, [p.points.astype(np.int32)], int(p.include))
    assert not np.array_equal(stored_order, masks.label_mask(face.polygons, 512))


def test_convert_dfl_keeps_labels_masks_and_image_data_and_resumes(labelled: Path, tmp_path: Path):
    ws = tmp_path / "ws"
    aligned = ws / "data_dst" / "aligned"
    aligned.mkdir(parents=True)
    for p in _faces(labelled):
        shutil.copy(p, aligned / p.name)
        (aligned / p.name).chmod(0o644)
    originals = {p.name: p.read_bytes() for p in _faces(aligned)}
    # a face whose DFL metadata is damaged: skipped, counted, left as it was
    data = originals["00030_0.jpg"]
    start = data.index(b"\xff\xef")
    broken = data[: start + 4] + b"\x80\x04garbage" + data[start + 13 :]
    (aligned / "00030_0.jpg").write_bytes(broken)
    # a conversion killed after keeping its original: the next run neither loses nor doubles it
    backup = ws / "data_dst" / "aligned_dfl_backup"
    backup.mkdir()
    (backup / "00010_0.jpg").write_bytes(originals["00010_0.jpg"])

    proc = run_cli("faceset", "convert-dfl", "dst", "-w", ws, "-q")
    assert proc.returncode == 0, proc.stderr
    assert "converted 5 faces" in proc.stdout and "1 with damaged metadata" in proc.stdout, proc.stdout
    assert "skipped 00030_0.jpg" in proc.stdout
    assert (aligned / "00030_0.jpg").read_bytes() == broken
    assert sorted(p.name for p in backup.iterdir()) == sorted(set(originals) - {"00030_0.jpg"})
    for name, original in originals.items():
        if name == "00030_0.jpg":
            continue
        converted = (aligned / name).read_bytes()
        header = converted[: len(converted) - len(_scan(converted))]
        assert meta.written_by(converted) == "facelab" and b"\xff\xef" not in header, name  # no pickle left
        assert _scan(converted) == _scan(original), name  # the image data is untouched
        assert (backup / name).read_bytes() == original
    (aligned / "00030_0.jpg").write_bytes(originals["00030_0.jpg"])
    again = run_cli("faceset", "convert-dfl", "dst", "-w", ws, "-q")
    assert "converted 1 faces" in again.stdout and "5 already facelab's" in again.stdout, again.stdout
    _check_labels(aligned, labelled)

    # labels survive sorting and the trash
    assert run_cli("sort", "dst", "--by", "blur", "--trash-worst", "20", "-w", ws, "-q").returncode == 0
    kept = load_faceset(aligned).faces
    trashed = load_faceset(ws / "data_dst" / "aligned_trash").faces
    assert len(kept) + len(trashed) == 6 and trashed
    assert sum(len(f.meta.polygons) for f in kept + trashed) == 13
    assert sum(f.meta.xseg_mask is not None for f in kept + trashed) == 3


def test_convert_dfl_needs_a_folder(tmp_path: Path):
    proc = run_cli("faceset", "convert-dfl", "src", "-w", tmp_path / "none")
    assert_clean_error(proc, 1, "aligned does not exist", "--dir")
