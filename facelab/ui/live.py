"""The live page: the swapped picture of a running `facelab live --output browser` (an MJPEG stream),
its figures, and the controls (morph, erode, blur, colour transfer, mask mode), which the swapper
takes from the next frame on."""

from __future__ import annotations

import asyncio

from starlette.requests import Request
from starlette.responses import JSONResponse, StreamingResponse

from facelab.merge import settings as merge_settings
from facelab.ui.common import ApiError, option_json

CONTROLS = ("morph", "erode", "blur", "color_transfer", "mask_mode")
BOUNDARY = "facelab-frame"


class LivePage:
    def __init__(self, live=None):
        self.live = live  # a cli.live.LiveControl, or None when no live session runs in this server

    def _need(self):
        if self.live is None:
            raise ApiError("no live session runs here: start one with `facelab live --input 0 --output "
                           "browser`", 404)  # fmt: skip
        return self.live

    async def status(self, request: Request) -> JSONResponse:
        if self.live is None:
            return JSONResponse({"running": False})
        live = self.live
        return JSONResponse({"running": not live.session.stop_event.is_set(), "input": live.source.spec,
                             "model": live.model.name, "amp": live.model.morphs,
                             "stats": live.session.snapshot().as_dict(),
                             "settings": {k: live.swapper.settings[k] for k in CONTROLS},
                             "applied": {k: v for k, v in live.session.applied.items() if k in CONTROLS},
                             "controls": [option_json(merge_settings.BY_NAME[k]) for k in CONTROLS],
                             })  # fmt: skip

    async def settings(self, request: Request) -> JSONResponse:
        live = self._need()
        data = await request.json()
        if not isinstance(data, dict) or set(data) - set(CONTROLS):
            raise ApiError(f"send a JSON object of {', '.join(CONTROLS)}")
        changes = {k: merge_settings.BY_NAME[k].from_json(v) for k, v in data.items()}
        new = live.swapper.update(changes)
        return JSONResponse({"settings": {k: new[k] for k in CONTROLS}})

    async def stream(self, request: Request) -> StreamingResponse:
        out = self._need().browser

        async def frames():
            seq = 0
            while True:
                seq, jpeg = await asyncio.to_thread(out.wait, seq, 1.0)
                if jpeg is None:
                    continue
                yield (f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\nContent-Length: {len(jpeg)}\r\n\r\n"
                       ).encode() + jpeg + b"\r\n"  # fmt: skip

        return StreamingResponse(frames(), media_type=f"multipart/x-mixed-replace; boundary={BOUNDARY}",
                                 headers={"Cache-Control": "no-store"})  # fmt: skip
