"""The merge page: one frame merged at the current settings (in this process, one at a time), the
merge session's per-frame settings, merge all and make video as jobs."""

from __future__ import annotations

import threading

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response

from facelab.errors import FacelabError
from facelab.fsutil import parse_json
from facelab.merge import settings as merge_settings
from facelab.merge.session import MergeSession, merged_by_other
from facelab.models.folder import SESSION, STATE, ModelFolder, find_model
from facelab.ui.common import FIELDS, ApiError, Body, Context, jpeg, option_json


class MergePage:
    """The merger's model (loaded once per saved checkpoint) and the frames it merges."""

    def __init__(self, ctx: Context):
        self.ctx = ctx
        self._merge_lock, self._render_lock = threading.Lock(), threading.Lock()
        self._merger: tuple | None = None  # (folder path, saved iteration, MergeModel, plans)

    def merger(self, folder_name: str | None):
        """The merge model (loaded once per saved checkpoint) and the dst frame plans."""
        from facelab.merge.pipeline import MergeModel, plan_frames

        ctx = self.ctx
        folder = ctx.model(folder_name) if folder_name else ctx.checked(find_model(ctx.ws.model_dir,
                                                                                   exclude=("XSeg",)))
        iteration = folder.read_json(STATE).get("iteration")
        with self._merge_lock:
            if self._merger is None or self._merger[:2] != (folder.path, iteration):
                model = MergeModel(folder)
                self._merger = (folder.path, iteration, model, plan_frames(self.ctx.ws, model.face_type))
            return folder, self._merger[2], self._merger[3]

    def session(self, folder: ModelFolder) -> MergeSession:
        if (folder.path / SESSION).exists():
            self.ctx.inside(folder.path / SESSION)
        return MergeSession.of(folder)

    async def merge_info(self, request: Request) -> JSONResponse:
        folder, model, plans = await run_in_threadpool(self.merger, request.query_params.get("model"))
        session = self.session(folder)
        return JSONResponse({"model": folder.path.name, "frames": [p.number for p in plans],
                             "settings": session.settings,
                             "options": [option_json(o) for o in merge_settings.OPTIONS],
                             "merged": self.ctx.merged_count()})  # fmt: skip

    def _settings(self, raw) -> dict:
        try:
            data = raw if isinstance(raw, dict) else parse_json(raw or "{}")
            if not isinstance(data, dict):
                raise ValueError("settings must be a JSON object of setting: value")
            return merge_settings.validate(data, strict=True)
        except (ValueError, TypeError) as exc:
            raise ApiError(str(exc)) from None

    async def merge_frame_settings(self, request: Request) -> JSONResponse:
        folder, _, _ = await run_in_threadpool(self.merger, request.query_params.get("model"))
        frame = self._query_frame(request, 0)
        return JSONResponse({"frame": frame, "settings": self.session(folder).for_frame(frame)})

    def _query_frame(self, request: Request, default: int) -> int:
        text = request.query_params.get("frame")
        try:
            return FIELDS["frame"].parse(text) if text is not None else default
        except ValueError as exc:
            raise ApiError(str(exc)) from None

    async def merge_render(self, request: Request) -> Response:
        from facelab.merge.pipeline import find_plan, render_frame

        q = request.query_params
        folder, model, plans = await run_in_threadpool(self.merger, q.get("model"))
        frame = self._query_frame(request, plans[0].number)
        try:
            plan = find_plan(plans, frame)
        except FacelabError as exc:
            raise ApiError(str(exc), 404) from None
        frame_path = self.ctx.inside(plan.path)  # rendered or sent whole: either way it is read
        if q.get("original") == "1":
            return FileResponse(frame_path, headers={"Cache-Control": "no-store"})
        if q.get("settings"):
            settings = self._settings(q.get("settings"))
        else:
            settings = self.session(folder).for_frame(frame)
        merged, _ = await run_in_threadpool(self._render, render_frame, model, plan, settings)
        return jpeg(merged)

    def _render(self, render_frame, *args):
        with self._render_lock:  # one frame at a time: key presses come faster than renders
            return render_frame(*args)

    async def merge_save(self, request: Request) -> JSONResponse:
        """Settings for one frame, or (scope "following") for it and every frame after it."""
        body = await Body.of(request)
        folder, _, plans = await run_in_threadpool(self.merger, body.get("model") or None)
        if "frame" not in body.data:
            raise ApiError("frame is missing: say which frame the settings are for")
        frame = body.get("frame")
        wanted = self._settings(body.raw("settings", dict, {}))
        session = self.session(folder)
        last = plans[-1].number if body.get("scope") == "following" else frame
        session.set_frames(frame, last, wanted)
        session.save()
        return JSONResponse({"frame": frame, "last": last, "settings": session.for_frame(frame)})

    async def merge_all(self, request: Request) -> JSONResponse:
        body = await Body.of(request)
        folder, _, _ = await run_in_threadpool(self.merger, body.get("model") or None)
        if self.ctx.jobs.running("merge"):
            raise ApiError("a merge is already running")
        merged = self.ctx.ws.merged_dir
        other = merged_by_other(merged, folder.path.name)
        if other and not body.get("overwrite"):
            raise ApiError(f"{merged} holds frames merged with {other}: confirm to replace them", 409)
        job = self.ctx.jobs.start("merge", ["--model", folder.name, "--overwrite"])
        return JSONResponse(job.describe())

    async def make_video(self, request: Request) -> JSONResponse:
        if self.ctx.jobs.running("make-video"):
            raise ApiError("a video is already being made")
        if not self.ctx.merged_count():
            raise ApiError(f"no merged frames in {self.ctx.ws.merged_dir}: merge first")
        result = self.ctx.ws.result_video
        if result.exists() and not (await Body.of(request)).get("overwrite"):
            raise ApiError(f"{result} exists already: confirm to replace it", 409)
        job = self.ctx.jobs.start("make-video", ["--overwrite"] if result.exists() else [])
        return JSONResponse(job.describe())

    async def evaluate(self, request: Request) -> JSONResponse:
        """`facelab eval` of result.mp4 as a job: the quality report in report/."""
        if self.ctx.jobs.running("eval"):
            raise ApiError("the quality report is already being made")
        if not self.ctx.ws.result_video.exists():
            raise ApiError(f"there is no {self.ctx.ws.result_video} yet: make the video first")
        return JSONResponse(self.ctx.jobs.start("eval", []).describe())

    async def report_file(self, request: Request) -> FileResponse:
        """A file of the workspace's quality report (the page, its pictures, its JSON)."""
        name, folder = request.path_params["name"], self.ctx.ws.report_dir
        path = self.ctx.inside(folder / name)
        wrong_kind = path.suffix not in (".html", ".png", ".json")
        if path.parent != folder.resolve() or wrong_kind or not path.is_file():
            raise ApiError(f"there is no report file {name!r} in {folder}: make the report first", 404)
        return FileResponse(path)


