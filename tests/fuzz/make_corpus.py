"""Write the committed seed corpus of tests/fuzz/corpus/ from real files facelab writes.

    python tests/fuzz/make_corpus.py

The aligned faces come from facelab's own extraction of scikit-image's astronaut portrait (public
domain), at 256 px; the DeepFaceLab-format files (an APP15 aligned JPG, a model's data.dat and
.npy parts) are written the way DeepFaceLab writes them, by facelab's export-dfl writer and pickler.
A DeepFaceLab model's .npy parts are megabytes even for a tiny network: only its data.dat is
committed, and `dfl_model` writes the whole model (the same seeded weights) when a run needs it.
The files DeepFaceLab itself wrote (../shared/dfl-files) are not ours to commit; the fuzz runner adds
them as seeds when they are there. Model-folder seeds are the v1 fixture in tests/fixtures.
"""

from __future__ import annotations

import io
import json
import shutil
import struct
import subprocess
import sys
import tempfile
from pathlib import Path

import cv2
import numpy as np
import skimage.data

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from facelab.dfl import pickles  # noqa: E402
from facelab.dfl.models import export_model  # noqa: E402
from facelab.faces import meta  # noqa: E402
from tests.test_dfl_models import _saved_model  # noqa: E402

CORPUS = Path(__file__).resolve().parent / "corpus"
TINY_SAEHD = {
    "resolution": 64,
    "archi": "df-ud",
    "ae_dims": 32,
    "e_dims": 16,
    "d_dims": 16,
    "d_mask_dims": 16,
}


def _extract(tmp: Path, fmt: str) -> Path:
    ws = tmp / fmt
    (ws / "data_src").mkdir(parents=True)
    cv2.imwrite(str(ws / "data_src" / "00001.png"), skimage.data.astronaut()[:, :, ::-1])
    subprocess.run(
        [
            sys.executable,
            "-m",
            "facelab",
            "extract-faces",
            "src",
            "-w",
            str(ws),
            "--yes",
            "--quiet",
            "--size",
            "256",
            "--format",
            fmt,
        ],
        check=True,
    )
    return next((ws / "data_src" / "aligned").glob(f"*.{fmt}"))


def dfl_jpeg(face_jpeg: bytes) -> bytes:
    """The face as DeepFaceLab's DFLJPG writer stores it: the JPEG with its dict pickled in APP15."""
    m = meta.parse(face_jpeg)
    d = {
        "face_type": "whole_face",
        "landmarks": np.asarray(m.landmarks, np.float32),
        "source_filename": "00001.png",
        "source_rect": [int(v) for v in m.source_rect],
        "source_landmarks": np.asarray(m.source_landmarks, np.float32),
        "image_to_face_mat": np.asarray(m.image_to_face_mat, np.float32),
    }
    buf = io.BytesIO()
    pickles._DflPickler(buf, protocol=4).dump(d)
    payload = buf.getvalue()
    plain = cv2.imencode(".jpg", cv2.imdecode(np.frombuffer(face_jpeg, np.uint8), cv2.IMREAD_COLOR))[
        1
    ].tobytes()
    return plain[:2] + b"\xff\xef" + struct.pack(">H", len(payload) + 2) + payload + plain[2:]


def dfl_model(out: Path) -> Path:
    """A tiny SAEHD in DeepFaceLab's files (without the optimiser file, which import does not need)."""
    with tempfile.TemporaryDirectory() as t:
        folder = _saved_model(Path(t), "saehd", TINY_SAEHD, {"face_type": "f"})
        for p in export_model(folder, out):
            if p.name.endswith("_opt.npy"):
                p.unlink()
    return out


def _small_files() -> None:
    """The workspace's and model folder's JSON files, as facelab writes them, and --config files."""
    fixture = ROOT / "tests" / "fixtures" / "models_v1" / "tiny_Quick96"
    for name in ("config.json", "state.json", "merge_session.json"):
        shutil.copy(fixture / name, CORPUS / "json" / name)
    write = {
        "json/run.json": {
            "done": {"1 extract src frames": {"detail": "259 frames -> ws/data_src", "seconds": 0.5}},
            "videos": {"dst": "/videos/dst.mp4", "src": "/videos/src.mp4"},
        },
        "json/live.json": {
            "iteration": 41,
            "ms_per_iter": 369.5,
            "batch": 4,
            "target_iter": 0,
            "running": True,
            "pid": 8151,
            "updated": 1796251298.9,
            "points": [[1, 4.29, 3.67], [2, 4.40, 3.67]],
        },
        "json/data_dst_video.json": {
            "audio_codec": "aac",
            "duration": 5.015011,
            "extracted_fps": None,
            "fps": "25/1",
            "fps_float": 25.0,
            "frame_count": 125,
            "frame_format": "jpg",
            "frames_dir": "data_dst",
            "frames_written": 125,
            "has_audio": True,
            "height": 720,
            "path": "/videos/dst.mp4",
            "video_codec": "h264",
            "width": 720,
        },
        "config/merge.json": {"mode": "seamless", "erode": 10, "blur": 80, "color-transfer": "lct"},
    }
    for rel, data in write.items():
        (CORPUS / rel).write_text(json.dumps(data, indent=1))
    (CORPUS / "config" / "saehd.yaml").write_text(
        "resolution: 128\narchi: liae-ud\nae_dims: 256\nface_type: wf\nlearn_mask: true\ngan_power: 0.1\n"
    )
    (CORPUS / "config" / "merge.yaml").write_text("mode: overlay\nmask_mode: learned-prd\nmorph: 0.5\n")


def main() -> None:
    shutil.rmtree(CORPUS, ignore_errors=True)
    for sub in ("aligned", "dfl_model", "labels", "json", "config"):
        (CORPUS / sub).mkdir(parents=True)
    with tempfile.TemporaryDirectory() as t:
        tmp = Path(t)
        jpg, png = _extract(tmp, "jpg"), _extract(tmp, "png")
        shutil.copy(jpg, CORPUS / "aligned" / "facelab.jpg")
        shutil.copy(png, CORPUS / "aligned" / "facelab.png")
        (CORPUS / "aligned" / "deepfacelab.jpg").write_bytes(dfl_jpeg(jpg.read_bytes()))
        data = next(dfl_model(tmp / "dfl").glob("*_data.dat"))
        shutil.copy(data, CORPUS / "dfl_model" / data.name)
        labels = tmp / "labels.json"
        from facelab.xseg import labels as xlabels

        xlabels.set_labels(
            jpg,
            [
                meta.Polygon(True, np.array([[30, 30], [220, 40], [200, 230], [40, 210]], float)),
                meta.Polygon(False, np.array([[100, 150], [160, 150], [130, 190]], float)),
            ],
        )
        xlabels.export_labels([jpg.parent], labels)
        shutil.copy(labels, CORPUS / "labels" / "labels.json")
    _small_files()
    for p in sorted(CORPUS.rglob("*")):
        if p.is_file():
            print(f"{p.relative_to(CORPUS)}  {p.stat().st_size} bytes")


if __name__ == "__main__":
    main()
