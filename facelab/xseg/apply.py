"""`facelab xseg apply`: predict every aligned face's occlusion mask with an XSeg model and store it
in the face's metadata (a binary PNG over the whole aligned image, as the reference stores it).

Faces are re-cropped to the model's face type and size first (a whole-face model applied to full
faces, say) and the mask is warped back. Each stored mask records the model and iteration that
made it, so a rerun skips the faces already done with the same model and continues a killed run.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import torch

from facelab import progress
from facelab.device import pick_device
from facelab.errors import FacelabError
from facelab.faces.align import crop_for_model
from facelab.faces.faceset import AlignedFace, editing, load_faceset
from facelab.media.images import DamagedImage, read_image
from facelab.models.folder import WEIGHTS, ModelFolder, load_network
from facelab.xseg.labels import write_face


@dataclass
class Applied:
    masked: int = 0
    already: int = 0
    damaged: list[str] = field(default_factory=list)


class XSegPredictor:
    """An XSeg model folder, ready to predict masks for aligned faces of any face type."""

    def __init__(self, folder: ModelFolder, device: str = "auto"):
        self.device = pick_device(device)
        self.net, ckpt = load_network(folder, self.device)
        if getattr(self.net, "kind", None) != "xseg":
            raise FacelabError(f"{folder} is not an XSeg model: name one with --model")
        self.res = self.net.resolution
        self.face_type = ckpt.config["face_type"]
        digest = ckpt.state.get("digests", {}).get(WEIGHTS, "")[:12]
        self.id = f"{folder.path.name}@{ckpt.state.get('iteration', 0)}:{digest}"

    def crop(self, image: np.ndarray, face: AlignedFace) -> tuple[np.ndarray, np.ndarray]:
        """(the model's input crop, the 2x3 matrix from aligned pixels to it)."""
        m = face.meta
        size = image.shape[0]
        landmarks = m.landmarks * (size / m.size)
        mat = crop_for_model(m.face_type, size, landmarks, self.res, self.face_type)
        if m.face_type == self.face_type:
            crop = cv2.resize(image, (self.res, self.res), interpolation=cv2.INTER_LANCZOS4)
        else:
            crop = cv2.warpAffine(image, mat, (self.res, self.res), flags=cv2.INTER_CUBIC,
                                  borderMode=cv2.BORDER_REPLICATE)  # fmt: skip
        return crop, mat

    def crops(self, faces: list[AlignedFace]) -> tuple[list, list, list, list[int], list[str]]:
        """(faces read, their crops, crop matrices, image sizes, error lines of damaged images)."""
        kept, crops, mats, sizes, damaged = [], [], [], [], []
        for f in faces:
            try:
                image = read_image(str(f.path))
            except DamagedImage as exc:
                damaged.append(str(exc))
                continue
            crop, mat = self.crop(image, f)
            kept.append(f)
            crops.append(crop)
            mats.append(mat)
            sizes.append(image.shape[0])
        return kept, crops, mats, sizes, damaged

    @torch.no_grad()
    def predict(self, crops: list[np.ndarray]) -> np.ndarray:
        """(N, res, res) float masks in [0, 1] for BGR uint8 crops."""
        x = torch.from_numpy(np.stack(crops)).to(self.device).permute(0, 3, 1, 2).float().div(255)
        return self.net.mask(x)[:, 0].float().cpu().numpy()

    def to_aligned(self, mask: np.ndarray, mat: np.ndarray, size: int) -> np.ndarray:
        """A predicted mask (model crop) as a binary 0/255 mask over the whole aligned image, stored at
        the model's resolution (`size`: the aligned image's)."""
        store = self.res
        to_crop = mat @ np.array([[size / store, 0, 0], [0, size / store, 0], [0, 0, 1]], np.float64)
        back = cv2.warpAffine(mask, to_crop, (store, store), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP)
        return np.where(back >= 0.5, 255, 0).astype(np.uint8)


def apply_masks(folder: Path, model: XSegPredictor, batch: int = 8) -> Applied:
    result = Applied()
    with editing(folder, "xseg apply"):
        faces = load_faceset(folder).faces
        todo = []
        for f in faces:
            if f.meta.xseg_mask is not None and f.meta.extra.get("xseg_model") == model.id:
                result.already += 1
            else:
                todo.append(f)
        with progress.bar(len(todo), "xseg apply", "face") as bar:
            for start in range(0, len(todo), batch):
                chunk, crops, mats, sizes, damaged = model.crops(todo[start : start + batch])
                result.damaged += damaged
                masks = model.predict(crops) if crops else []
                for f, mask, mat, size in zip(chunk, masks, mats, sizes, strict=True):
                    _, png = cv2.imencode(".png", model.to_aligned(mask, mat, size))
                    f.meta.xseg_mask = png.tobytes()
                    f.meta.extra["xseg_model"] = model.id
                    write_face(f.path, f.meta)
                    result.masked += 1
                bar.update(len(todo[start : start + batch]))
    return result
