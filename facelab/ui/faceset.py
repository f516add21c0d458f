"""The faceset page: both sides' aligned faces, delete to the trash and undo, sort, extract."""

from __future__ import annotations

from pathlib import Path

import cv2
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response

from facelab import locks
from facelab.faces import meta as face_meta
from facelab.faces.align import face_type_name
from facelab.faces.extract import earlier_options
from facelab.faces.faceset import editing, trash_files
from facelab.media.images import DamagedImage, read_image
from facelab.ui.common import ApiError, Body, Context, jpeg
from facelab.workspace import SIDES, image_files


class FacesetPage:
    """Faces of src and dst; the undo stack of deletions is per side and lives here."""

    def __init__(self, ctx: Context):
        self.ctx = ctx
        self.undo: dict[str, list[list[tuple[Path, Path]]]] = {s: [] for s in SIDES}

    async def faces(self, request: Request) -> JSONResponse:
        side = self.ctx.side(request.path_params["side"])
        folder = self.ctx.ws.aligned_dir(side)
        names = [p.name for p in image_files(folder)]
        trash = folder.with_name(folder.name + "_trash")
        return JSONResponse({"side": side, "faces": names, "undo": len(self.undo[side]),
                             "extraction": self._extraction(side),
                             "trash": len(list(trash.iterdir())) if trash.is_dir() else 0})  # fmt: skip

    async def face_image(self, request: Request) -> Response:
        path = self.ctx.face_path(request.path_params["side"], request.path_params["name"])
        if request.query_params.get("debug") != "1":
            return FileResponse(path, headers={"Cache-Control": "no-store"})
        try:
            img = read_image(path)
        except DamagedImage as exc:
            raise ApiError(str(exc), 422) from None
        try:  # the debug overlay: the landmarks the face was aligned with
            m = face_meta.read(path)
            for x, y in m.landmarks:
                cv2.circle(img, (int(round(x)), int(round(y))), max(1, img.shape[0] // 128), (0, 255, 0), -1)
        except face_meta.MetadataError:
            cv2.putText(img, "no metadata", (8, 24), cv2.FONT_HERSHEY_SIMPLEX, 0.7, (0, 0, 255), 2)
        return jpeg(img)

    async def delete_faces(self, request: Request) -> JSONResponse:
        side = self.ctx.side(request.path_params["side"])
        names = (await Body.of(request)).raw("names", list, [])
        paths = list(dict.fromkeys(self.ctx.face_path(side, str(n)) for n in names))
        if not paths:
            raise ApiError("select faces first")
        with editing(self.ctx.ws.aligned_dir(side), f"ui delete ({side})"):
            moved = trash_files(self.ctx.ws.aligned_dir(side), paths)
        self.undo[side].append(moved)
        return JSONResponse({"moved": len(moved), "trash": str(moved[0][1].parent)})

    async def undo_delete(self, request: Request) -> JSONResponse:
        side = self.ctx.side(request.path_params["side"])
        if not self.undo[side]:
            raise ApiError("nothing to undo")
        restored = 0
        with editing(self.ctx.ws.aligned_dir(side), f"ui undo ({side})"):
            for original, trashed in self.undo[side].pop():
                if trashed.exists() and not original.exists():
                    trashed.replace(original)
                    restored += 1
        return JSONResponse({"restored": restored})

    async def sort_faces(self, request: Request) -> JSONResponse:
        side = self.ctx.side(request.path_params["side"])
        by = (await Body.of(request)).get("by")
        self._faceset_idle(side)
        job = self.ctx.jobs.start("sort", [side, "--by", by, "--yes"])
        return JSONResponse(job.describe())

    def _faceset_idle(self, side: str) -> None:
        """A sort renames the faces an extraction writes: one of them at a time, whoever started it."""
        if job := self.ctx.jobs.running("sort") or self.ctx.jobs.running("extract-faces"):
            raise ApiError(f"{job.command} {' '.join(job.args[:1])} is still running: wait for it (see Jobs)")
        if who := locks.holder(self.ctx.ws.aligned_dir(side)):
            raise ApiError(f"{self.ctx.ws.aligned_dir(side)} is in use by {who}: wait for it to finish", 409)

    def _extraction(self, side: str) -> dict | None:
        """The settings of the extraction already in aligned/, which a rerun continues with."""
        was = earlier_options(self.ctx.ws.aligned_dir(side))
        if was is None:
            return None
        return {"face_type": face_type_name(was.face_type), "size": was.size,
                "detector": was.detector}  # fmt: skip

    async def extract_faces(self, request: Request) -> JSONResponse:
        """Steps 3 and 4 from the page: `facelab extract-faces <side>`, which continues an earlier
        extraction with that one's settings, or (`overwrite`) starts again with the chosen ones."""
        side = self.ctx.side(request.path_params["side"])
        body = await Body.of(request)
        overwrite = body.get("overwrite")
        self._faceset_idle(side)
        frames = self.ctx.ws.frames_dir(side)
        if not image_files(frames):
            raise ApiError(f"{frames} has no frames: run `facelab extract-frames {side}`")
        args = [side, "--debug-images" if side == "dst" else "--no-debug-images", "--yes"]
        if overwrite or not self._extraction(side):  # else: the CLI takes the earlier settings
            face_type, size, detector = body.get("face_type"), body.get("size"), body.get("detector")
            args += ["--face-type", face_type, "--size", str(size), "--detector", detector]
        if overwrite:  # only when asked: aligned/ may hold faces from elsewhere
            args.append("--overwrite")
        return JSONResponse(self.ctx.jobs.start("extract-faces", args).describe())

