"""The XSeg page: label polygons on the aligned faces of src or dst, see the applied mask, and have the
faces the model is least sure about proposed for labelling next. Saves go through
`facelab.xseg.labels.set_labels`, the same call as `facelab xseg labels import`."""

from __future__ import annotations

import threading

import cv2
import numpy as np
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from facelab.faces import masks, meta
from facelab.faces.faceset import editing, load_faceset
from facelab.models.folder import STATE, model_folders
from facelab.ui.common import ApiError, Body, Context
from facelab.xseg import labels

PROPOSE = 8  # faces proposed at a time
SCAN = 400  # unlabelled faces scored per proposal (the rest wait for the next one)


class XSegPage:
    def __init__(self, ctx: Context):
        self.ctx = ctx
        self._lock = threading.Lock()
        self._models: dict[str, tuple[int, object]] = {}  # folder name -> (iteration, XSegPredictor)

    async def faces(self, request: Request) -> JSONResponse:
        side = self.ctx.side(request.path_params["side"])
        folder = self.ctx.ws.aligned_dir(side)
        fs = load_faceset(folder) if folder.is_dir() else None
        faces = [{"name": f.path.name, "polygons": len(f.meta.polygons),
                  "masked": f.meta.xseg_mask is not None} for f in (fs.faces if fs else [])]  # fmt: skip
        xseg = [f.path.name for f in model_folders(self.ctx.ws.model_dir, "XSeg")]
        return JSONResponse({"side": side, "faces": faces, "models": xseg})

    async def face(self, request: Request) -> JSONResponse:
        path = self.ctx.face_path(request.path_params["side"], request.path_params["name"])
        m = self._meta(path)
        return JSONResponse({"name": path.name, "size": m.size, "masked": m.xseg_mask is not None,
                             "polygons": [p.to_json() for p in m.polygons]})  # fmt: skip

    async def save(self, request: Request) -> JSONResponse:
        side = request.path_params["side"]
        path = self.ctx.face_path(side, request.path_params["name"])
        polygons = labels.parse_polygons((await Body.of(request)).raw("polygons", list, []), path.name)
        with editing(self.ctx.ws.aligned_dir(side), f"ui xseg labels ({side})"):
            checked = await run_in_threadpool(labels.set_labels, path, polygons)
        return JSONResponse({"polygons": [p.to_json() for p in checked.polygons], "dropped": checked.dropped,
                             "clipped": checked.clipped})  # fmt: skip

    async def mask(self, request: Request) -> Response:
        """The applied mask, at the face's size (PNG, white inside)."""
        path = self.ctx.face_path(request.path_params["side"], request.path_params["name"])
        m = self._meta(path)
        applied = masks.decode_xseg_mask(m.xseg_mask) if m.xseg_mask is not None else None
        if applied is None:
            raise ApiError("this face has no applied XSeg mask" if m.xseg_mask is None else
                           "this face's XSeg mask is damaged", 404)  # fmt: skip
        big = cv2.resize(applied, (m.size, m.size), interpolation=cv2.INTER_LINEAR)
        return Response(cv2.imencode(".png", big)[1].tobytes(), media_type="image/png",
                        headers={"Cache-Control": "no-store"})  # fmt: skip

    async def propose(self, request: Request) -> JSONResponse:
        side = self.ctx.side(request.path_params["side"])
        model = self.ctx.model(request.query_params.get("model", "xseg_XSeg"))
        return JSONResponse(await run_in_threadpool(self._propose, side, model))

    def _propose(self, side: str, folder) -> dict:
        """The unlabelled faces whose predicted mask is least certain: the mean distance of the
        prediction from 0/1, plus how much it changes when the face is mirrored."""
        from facelab.xseg.apply import XSegPredictor

        iteration = folder.read_json(STATE).get("iteration")
        with self._lock:
            cached = self._models.get(folder.path.name)
            if cached is None or cached[0] != iteration:
                cached = (iteration, XSegPredictor(folder))
                self._models[folder.path.name] = cached
        model = cached[1]
        faces = [f for f in load_faceset(self.ctx.ws.aligned_dir(side)).faces if not f.meta.polygons][:SCAN]
        scores = []
        for start in range(0, len(faces), 16):
            chunk, crops, _, _, _ = model.crops(faces[start : start + 16])  # damaged images are skipped
            if not crops:
                continue
            plain = model.predict(crops)
            mirrored = model.predict([c[:, ::-1].copy() for c in crops])[:, :, ::-1]
            unsure = np.minimum(plain, 1 - plain).mean(axis=(1, 2))
            doubt = unsure + np.abs(plain - mirrored).mean(axis=(1, 2))
            scores += [(float(d), f.path.name) for d, f in zip(doubt, chunk, strict=True)]
        scores.sort(reverse=True)
        return {"model": folder.path.name, "iteration": iteration, "scanned": len(scores),
                "faces": [{"name": n, "doubt": round(d, 4)} for d, n in scores[:PROPOSE]]}  # fmt: skip

    @staticmethod
    def _meta(path) -> meta.FaceMeta:
        try:
            return meta.read(path)
        except meta.MetadataError as exc:
            raise ApiError(f"{path.name}: {exc}", 422) from None

