"""The training page: option forms from the model's specs, start/resume as a job, live state and preview."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response

from facelab.errors import FacelabError
from facelab.models.folder import CONFIG, PREVIEW, ModelFolder
from facelab.train import keys, model_options, report
from facelab.train.catalog import check_name
from facelab.train.recipes import RECIPES
from facelab.ui.common import ApiError, Body, Context, option_json


class TrainingPage:
    """Training jobs and the state of the models they train."""

    def __init__(self, ctx: Context):
        self.ctx = ctx

    async def train_options(self, request: Request) -> JSONResponse:
        kind = request.query_params.get("model", "saehd").lower()
        if kind not in RECIPES:
            raise ApiError(f"unknown model kind {kind!r}: use one of {', '.join(sorted(RECIPES))}")
        name = request.query_params.get("name", "")
        folder = self._named_folder(name, kind) if name else None
        saved = self._saved_options(folder) if folder and folder.exists() else None
        specs = model_options.specs(kind).values()
        return JSONResponse({"model": kind, "exists": saved is not None,
                             "folder": folder.path.name if folder else None, "options": [
            option_json(o, (saved or {}).get(o.name), locked=saved is not None and not o.changeable)
            for o in specs]})  # fmt: skip

    def _named_folder(self, name: str, kind: str) -> ModelFolder:
        """The folder a model name from a request would have, the name checked before the path is built."""
        try:
            check_name(name)
        except FacelabError as exc:
            raise ApiError(f"model name: {exc}") from None
        return self.ctx.checked(ModelFolder.of(self.ctx.ws.model_dir, name, RECIPES[kind].class_name))

    def _saved_options(self, folder: ModelFolder) -> dict:
        options = folder.read_json(CONFIG).get("options", {})
        if not isinstance(options, dict):
            raise ApiError(f"{folder.file(CONFIG)} is damaged (its options are not a mapping)")
        return options

    async def train_start(self, request: Request) -> JSONResponse:
        body = await Body.of(request)
        kind = body.get("model").lower()
        if kind not in RECIPES:
            raise ApiError(f"unknown model kind {kind!r}: use one of {', '.join(sorted(RECIPES))}")
        name = body.get("name")
        folder = self._named_folder(name, kind)
        if folder.is_locked():
            raise ApiError(f"{folder} is being trained already: stop that trainer, or train another model")
        # The CLI's own checks, so the page gets their messages before a job starts.
        specs = model_options.specs(kind)
        given = {}
        for key, value in body.raw("options", dict, {}).items():
            if key not in specs:
                raise ApiError(f"{key}: {kind} has no option {key!r}")
            try:
                given[key] = specs[key].from_json(value)
            except ValueError as exc:
                raise ApiError(str(exc)) from None
        if folder.exists():
            saved = self._saved_options(folder)
            model_options.refuse_fixed(kind, model_options.saved_options(kind, saved), given)
        pairs = [f"{k}={v}" for k, v in given.items()]
        args = ["--model", kind, "--name", name, "--save-every", str(body.get("save_every_min"))]
        job = self.ctx.jobs.start("train", args + [a for p in pairs for a in ("--opt", p)])
        return JSONResponse(job.describe())

    async def train_command(self, request: Request) -> JSONResponse:
        body = await Body.of(request)
        folder = self.ctx.model(body.get("folder"))
        key = body.get("key")
        if not folder.is_locked():
            raise ApiError(f"{folder.path.name} is not training now")
        keys.send_command(folder.path, key)
        return JSONResponse({"sent": key})

    async def train_live(self, request: Request) -> JSONResponse:
        return JSONResponse(report.read_live(self.ctx.model(request.path_params["folder"])))

    async def train_preview(self, request: Request) -> Response:
        folder = self.ctx.model(request.path_params["folder"])
        path = folder.file(PREVIEW)
        if not path.exists():
            raise ApiError("no preview yet: it appears at the first save", 404)
        return FileResponse(path, headers={"Cache-Control": "no-store"})

