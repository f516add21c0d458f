"""`facelab ui`: the faceset, training and merge pages for one workspace, served to a browser.

A Starlette app with a JSON API and one plain HTML/CSS/JS page (no build step). Long steps run
as jobs (subprocesses of the CLI, see jobs.py); the merger's frame preview runs in this process,
in a worker thread so the page's polling is not held up.

Security: the server binds 127.0.0.1 unless told otherwise; on any other address every request
must carry the token printed at start (as `?token=`, the `X-Facelab-Token` header or the cookie
the page sets). Every file a route reads goes through `UI.inside`, which resolves symlinks and
refuses anything outside the workspace (a downloaded workspace can carry links to /etc/passwd);
names from requests are checked before a path is built from them. Bodies over `MAX_BODY` are
refused before they are read, JSON bodies are checked by type against option specs, and no
endpoint runs a command that a request sends.
"""

from __future__ import annotations

import contextlib
import json
import secrets
import threading
import traceback
from pathlib import Path
from urllib.parse import urlsplit

import cv2
import numpy as np
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from facelab.errors import FacelabError
from facelab.faces import meta as face_meta
from facelab.faces.align import FACE_TYPE_NAMES, FACE_TYPES
from facelab.faces.detect import DEFAULT_DETECTOR, DETECTORS
from facelab.faces.extract import earlier_options
from facelab.faces.faceset import trash_files
from facelab.faces.sort import METHODS as SORT_METHODS
from facelab.media.images import DamagedImage, read_image
from facelab.merge import settings as merge_settings
from facelab.merge.session import merged_by_other
from facelab.options import Option
from facelab.train import keys, model_options
from facelab.train.catalog import check_name
from facelab.train.checkpoint import CONFIG, LIVE, PREVIEW, STATE, ModelFolder, model_folders
from facelab.train.recipes import RECIPES
from facelab.ui.jobs import Jobs
from facelab.workspace import IMAGE_EXTS, Workspace

STATIC = Path(__file__).with_name("static")
TOKEN_COOKIE = "facelab_token"
SIDES = ("src", "dst")
MAX_BODY = 10 * 1024 * 1024  # bytes; the largest real body (a merge session's settings) is ~2 KB

# The fields of the JSON bodies, checked by type and range as the CLI checks its flags.
FIELDS = {o.name: o for o in (
    Option("overwrite", bool, False, "replace what exists"),
    Option("face_type", str, "whole", "face type", choices=FACE_TYPE_NAMES),
    Option("size", int, 512, "aligned image size in pixels", range=(256, 2048)),
    Option("detector", str, DEFAULT_DETECTOR, "face detector", choices=tuple(DETECTORS)),
    Option("by", str, "blur", "sort method", choices=tuple(SORT_METHODS)),
    Option("model", str, "", "model kind or folder"),
    Option("name", str, "", "model name"),
    Option("folder", str, "", "model folder"),
    Option("key", str, "", "trainer key", choices=tuple(keys.COMMANDS)),
    Option("save_every", float, 25.0, "minutes between saves", range=(0.1, 10000.0)),
    Option("frame", int, 0, "frame number", range=(0, 10**9)),
    Option("scope", str, "frame", "which frames the settings apply to", choices=("frame", "following")),
)}  # fmt: skip


class ApiError(Exception):
    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


class Body:
    """A request's JSON object, each field read through its spec in `FIELDS`."""

    def __init__(self, data: object):
        if not isinstance(data, dict):
            raise ApiError(f"the request body must be a JSON object, not {type(data).__name__}")
        self.data = data

    @classmethod
    async def of(cls, request: Request) -> Body:
        raw = await request.body()
        try:
            return cls(json.loads(raw) if raw.strip() else {})
        except (ValueError, UnicodeDecodeError) as exc:
            raise ApiError(f"the request body is not valid JSON ({exc})") from None

    def get(self, name: str, default=None):
        if name not in self.data or self.data[name] is None:
            return FIELDS[name].default if default is None else default
        try:
            return FIELDS[name].from_json(self.data[name])
        except ValueError as exc:
            raise ApiError(str(exc)) from None

    def raw(self, name: str, kind: type, default):
        """A field that is a JSON container (a list of names, a dict of settings)."""
        value = self.data.get(name, default)
        if not isinstance(value, kind):
            raise ApiError(f"{name} must be a JSON {kind.__name__}, not {value!r}"[:200])
        return value


def _option_json(o, value=None, locked: bool = False) -> dict:
    return {"name": o.name, "type": o.type.__name__, "default": o.default, "value": o.default if value is None
            else value, "range": o.range, "choices": o.choices, "help": o.help, "changeable": o.changeable,
            "allowed": o.allowed(), "locked": locked}  # fmt: skip


def _images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTS) if folder.is_dir() else []


def _jpeg(img: np.ndarray, quality: int = 90) -> Response:
    ok, data = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, quality])
    return Response(data.tobytes(), media_type="image/jpeg", headers={"Cache-Control": "no-store"})


class UI:
    """The state behind the pages: the workspace, its jobs, the undo stack and the merger's model."""

    def __init__(self, workspace: Path, token: str | None):
        self.ws = Workspace(workspace)
        self.token = token
        self.jobs = Jobs(self.ws.root)
        self.undo: dict[str, list[list[tuple[Path, Path]]]] = {s: [] for s in SIDES}
        self._merge_lock, self._render_lock = threading.Lock(), threading.Lock()
        self._merger: tuple | None = None  # (folder path, saved iteration, MergeModel, plans)

    # ------------------------------------------------------------------ checks
    def side(self, side: str) -> str:
        if side not in SIDES:
            raise ApiError(f"side must be src or dst, not {side!r}", 404)
        return side

    def inside(self, path: Path) -> Path:
        """`path` with every symlink resolved, refused unless it lies inside the workspace. Every
        route that reads a file passes it through here."""
        resolved = Path(path).resolve()
        if not resolved.is_relative_to(self.ws.root.resolve()):
            raise ApiError("only files inside the workspace can be read", 403)
        return resolved

    def face_path(self, side: str, name: str) -> Path:
        folder = self.ws.aligned_dir(self.side(side))
        path = self.inside(folder / name)
        if path.parent != folder.resolve() or path.suffix.lower() not in IMAGE_EXTS or not path.is_file():
            raise ApiError(f"there is no face {name!r} in {folder}", 404)
        return path

    def model(self, name: str) -> ModelFolder:
        """The model folder `name` (`<name>_<Class>`), checked to be a real model folder inside the
        workspace, with every file of it that a route reads inside too."""
        model_name, _, class_name = name.rpartition("_")
        try:
            check_name(model_name)
        except FacelabError:
            raise ApiError(f"there is no model {name!r} in {self.ws.model_dir}", 404) from None
        for f in model_folders(self.ws.model_dir):
            if f.path.name == name and class_name:
                return self.checked(f)
        raise ApiError(f"there is no model {name!r} in {self.ws.model_dir}", 404)

    def checked(self, folder: ModelFolder) -> ModelFolder:
        self.inside(folder.path)
        for name in (CONFIG, STATE, PREVIEW, LIVE):
            if folder.file(name).exists():
                self.inside(folder.file(name))
        return folder

    def local_models(self) -> list[ModelFolder]:
        """The workspace's models, less those whose folder links outside it."""
        out = []
        for f in model_folders(self.ws.model_dir):
            with contextlib.suppress(ApiError):
                out.append(self.checked(f))
        return out

    # ------------------------------------------------------------------ overview
    async def status(self, request: Request) -> JSONResponse:
        counts = {}
        for s in SIDES:
            counts[s] = len(_images(self.ws.aligned_dir(s)))
        return JSONResponse({"workspace": str(self.ws.root), "faces": counts, "models": self._models(),
                             "jobs": self.jobs.describe(), "sort_methods": list(SORT_METHODS),
                             "face_types": list(FACE_TYPE_NAMES), "detectors": list(DETECTORS),
                             "default_detector": DEFAULT_DETECTOR,
                             "model_kinds": sorted(RECIPES), "merged": self._merged_count(),
                             "result": (self.ws.root / "result.mp4").exists()})  # fmt: skip

    def _models(self) -> list[dict]:
        out = []
        for f in self.local_models():
            kind = next((k for k, r in RECIPES.items() if r.class_name == f.class_name), None)
            try:
                state = f.read_json(STATE)
            except FacelabError:
                state = {}
            out.append({"folder": f.path.name, "name": f.name, "class": f.class_name, "kind": kind,
                        "iteration": state.get("iteration"), "locked": f.is_locked()})  # fmt: skip
        return out

    async def jobs_list(self, request: Request) -> JSONResponse:
        return JSONResponse({"jobs": self.jobs.describe()})

    # ------------------------------------------------------------------ faceset
    async def faces(self, request: Request) -> JSONResponse:
        side = self.side(request.path_params["side"])
        folder = self.ws.aligned_dir(side)
        names = [p.name for p in _images(folder)]
        trash = folder.with_name(folder.name + "_trash")
        return JSONResponse({"side": side, "faces": names, "undo": len(self.undo[side]),
                             "extraction": self._extraction(side),
                             "trash": len(list(trash.iterdir())) if trash.is_dir() else 0})  # fmt: skip

    async def face_image(self, request: Request) -> Response:
        path = self.face_path(request.path_params["side"], request.path_params["name"])
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
        return _jpeg(img)

    async def delete_faces(self, request: Request) -> JSONResponse:
        side = self.side(request.path_params["side"])
        names = (await Body.of(request)).raw("names", list, [])
        paths = list(dict.fromkeys(self.face_path(side, str(n)) for n in names))
        if not paths:
            raise ApiError("select faces first")
        moved = trash_files(self.ws.aligned_dir(side), paths)
        self.undo[side].append(moved)
        return JSONResponse({"moved": len(moved), "trash": str(moved[0][1].parent)})

    async def undo_delete(self, request: Request) -> JSONResponse:
        side = self.side(request.path_params["side"])
        if not self.undo[side]:
            raise ApiError("nothing to undo")
        restored = 0
        for original, trashed in self.undo[side].pop():
            if trashed.exists() and not original.exists():
                trashed.replace(original)
                restored += 1
        return JSONResponse({"restored": restored})

    async def sort_faces(self, request: Request) -> JSONResponse:
        side = self.side(request.path_params["side"])
        by = (await Body.of(request)).get("by")
        self._faceset_idle()
        job = self.jobs.start("sort", [side, "--by", by, "--yes"])
        return JSONResponse(job.describe())

    def _faceset_idle(self) -> None:
        """A sort renames the faces an extraction writes: one of them at a time."""
        if job := self.jobs.running("sort") or self.jobs.running("extract-faces"):
            raise ApiError(f"{job.command} {' '.join(job.args[:1])} is still running: wait for it (see Jobs)")

    def _extraction(self, side: str) -> dict | None:
        """The settings of the extraction already in aligned/, which a rerun continues with."""
        was = earlier_options(self.ws.aligned_dir(side))
        if was is None:
            return None
        return {"face_type": FACE_TYPE_NAMES[FACE_TYPES.index(was.face_type)], "size": was.size,
                "detector": was.detector}  # fmt: skip

    async def extract_faces(self, request: Request) -> JSONResponse:
        """Steps 3 and 4 from the page: `facelab extract-faces <side>`, which continues an earlier
        extraction with that one's settings, or (`overwrite`) starts again with the chosen ones."""
        side = self.side(request.path_params["side"])
        body = await Body.of(request)
        overwrite = body.get("overwrite")
        self._faceset_idle()
        if not _images(self.ws.frames_dir(side)):
            raise ApiError(f"{self.ws.frames_dir(side)} has no frames: run `facelab extract-frames {side}`")
        args = [side, "--debug-images" if side == "dst" else "--no-debug-images", "--yes"]
        if overwrite or not self._extraction(side):  # else: the CLI takes the earlier settings
            face_type, size, detector = body.get("face_type"), body.get("size"), body.get("detector")
            args += ["--face-type", face_type, "--size", str(size), "--detector", detector]
        if overwrite:  # only when asked: aligned/ may hold faces from elsewhere
            args.append("--overwrite")
        return JSONResponse(self.jobs.start("extract-faces", args).describe())

    # ------------------------------------------------------------------ training
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
            _option_json(o, (saved or {}).get(o.name), locked=saved is not None and not o.changeable)
            for o in specs]})  # fmt: skip

    def _named_folder(self, name: str, kind: str) -> ModelFolder:
        """The folder a model name from a request would have, the name checked before the path is built."""
        try:
            check_name(name)
        except FacelabError as exc:
            raise ApiError(f"model name: {exc}") from None
        return self.checked(ModelFolder.of(self.ws.model_dir, name, RECIPES[kind].class_name))

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
        args = ["--model", kind, "--name", name, "--save-every", str(body.get("save_every"))]
        job = self.jobs.start("train", args + [a for p in pairs for a in ("--opt", p)])
        return JSONResponse(job.describe())

    async def train_command(self, request: Request) -> JSONResponse:
        body = await Body.of(request)
        folder = self.model(body.get("folder"))
        key = body.get("key")
        if not folder.is_locked():
            raise ApiError(f"{folder.path.name} is not training now")
        keys.send_command(folder.path, key)
        return JSONResponse({"sent": key})

    async def train_live(self, request: Request) -> JSONResponse:
        folder = self.model(request.path_params["folder"])
        live, state = {}, {}
        with contextlib.suppress(FacelabError):
            live = folder.read_json(LIVE)
        with contextlib.suppress(FacelabError):
            state = folder.read_json(STATE)
        if not isinstance(live, dict) or not live:
            history = state.get("history")
            points = history.get("buckets", []) if isinstance(history, dict) else []
            live = {"iteration": state.get("iteration", 0), "points": points}
        preview = folder.file(PREVIEW)
        live |= {"saved_iteration": state.get("iteration"), "training": folder.is_locked(),
                 "preview_mtime": preview.stat().st_mtime if preview.exists() else None}  # fmt: skip
        return JSONResponse(live)

    async def train_preview(self, request: Request) -> Response:
        folder = self.model(request.path_params["folder"])
        path = folder.file(PREVIEW)
        if not path.exists():
            raise ApiError("no preview yet: it appears at the first save", 404)
        return FileResponse(path, headers={"Cache-Control": "no-store"})

    # ------------------------------------------------------------------ merge
    def merger(self, folder_name: str | None):
        """The merge model (loaded once per saved checkpoint) and the dst frame plans."""
        from facelab.merge.pipeline import MergeModel, find_model, plan_frames

        folder = self.model(folder_name) if folder_name else self.checked(find_model(self.ws, None))
        iteration = folder.read_json(STATE).get("iteration")
        with self._merge_lock:
            if self._merger is None or self._merger[:2] != (folder.path, iteration):
                model = MergeModel(folder)
                self._merger = (folder.path, iteration, model, plan_frames(self.ws, model.face_type))
            return folder, self._merger[2], self._merger[3]

    def session(self, folder: ModelFolder):
        from facelab.merge.pipeline import SESSION
        from facelab.merge.session import Session

        path = folder.path / SESSION
        return Session.load(self.inside(path) if path.exists() else path)

    async def merge_info(self, request: Request) -> JSONResponse:
        folder, model, plans = await run_in_threadpool(self.merger, request.query_params.get("model"))
        session = self.session(folder)
        return JSONResponse({"model": folder.path.name, "frames": [p.number for p in plans],
                             "settings": session.settings,
                             "options": [_option_json(o) for o in merge_settings.OPTIONS],
                             "merged": self._merged_count()})  # fmt: skip

    def _merged_count(self) -> int:
        return len(_images(self.ws.merged_dir))

    def _settings(self, raw) -> dict:
        try:
            data = raw if isinstance(raw, dict) else json.loads(raw or "{}")
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
        self.inside(plan.path)
        if q.get("original") == "1":
            return FileResponse(self.inside(plan.path), headers={"Cache-Control": "no-store"})
        if q.get("settings"):
            settings = self._settings(q.get("settings"))
        else:
            settings = self.session(folder).for_frame(frame)
        merged, _ = await run_in_threadpool(self._render, render_frame, model, plan, settings)
        return _jpeg(merged)

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
        if self.jobs.running("merge"):
            raise ApiError("a merge is already running")
        other = merged_by_other(self.ws.merged_dir, folder.path.name)
        if other and not body.get("overwrite"):
            raise ApiError(f"{self.ws.merged_dir} holds frames merged with {other}: confirm to replace them",
                           409)  # fmt: skip
        job = self.jobs.start("merge", ["--model", folder.name, "--overwrite"])
        return JSONResponse(job.describe())

    async def make_video(self, request: Request) -> JSONResponse:
        if self.jobs.running("make-video"):
            raise ApiError("a video is already being made")
        if not self._merged_count():
            raise ApiError(f"no merged frames in {self.ws.merged_dir}: merge first")
        result = self.ws.root / "result.mp4"
        if result.exists() and not (await Body.of(request)).get("overwrite"):
            raise ApiError(f"{result} exists already: confirm to replace it", 409)
        job = self.jobs.start("make-video", ["--overwrite"] if result.exists() else [])
        return JSONResponse(job.describe())


def create_app(workspace: Path, token: str | None = None) -> Starlette:
    ui = UI(Path(workspace), token)

    def guard(handler):
        async def run(request: Request):
            if ui.token and not _token_ok(request, ui.token):
                return JSONResponse({"error": "this server needs its token: open the address it printed"},
                                    401)  # fmt: skip
            if _cross_site(request):
                return JSONResponse({"error": "refused: a change must come from this UI's own page"}, 403)
            if request.url.path.startswith("/api/") and not ui.ws.root.is_dir():
                gone = f"the workspace folder {ui.ws.root} no longer exists: restore it or restart the UI"
                return JSONResponse({"error": gone}, 410)
            try:
                response = await handler(request)
            except ApiError as exc:
                return JSONResponse({"error": str(exc)}, exc.status)
            except FacelabError as exc:
                return JSONResponse({"error": str(exc)}, 400)
            except (KeyError, ValueError, TypeError, json.JSONDecodeError) as exc:
                return JSONResponse({"error": f"bad request: {exc}"}, 400)
            except FileNotFoundError as exc:
                return JSONResponse({"error": f"{exc.filename} is gone (was the workspace changed?)"}, 410)
            except BodyTooLarge:
                raise
            except Exception as exc:  # noqa: BLE001 - a bug: answer in the API's shape, keep serving
                traceback.print_exc()
                return JSONResponse({"error": f"internal error: {type(exc).__name__}: {exc}"}, 500)
            if ui.token and request.query_params.get("token") == ui.token:
                response.set_cookie(TOKEN_COOKIE, ui.token, httponly=True, samesite="strict")
            return response

        return run

    async def index(request: Request) -> Response:
        return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-store"})

    routes = [
        Route("/", guard(index)),
        Route("/api/status", guard(ui.status)),
        Route("/api/jobs", guard(ui.jobs_list)),
        Route("/api/faces/{side}", guard(ui.faces)),
        Route("/api/faces/{side}/delete", guard(ui.delete_faces), methods=["POST"]),
        Route("/api/faces/{side}/undo", guard(ui.undo_delete), methods=["POST"]),
        Route("/api/faces/{side}/sort", guard(ui.sort_faces), methods=["POST"]),
        Route("/api/faces/{side}/extract", guard(ui.extract_faces), methods=["POST"]),
        Route("/api/faces/{side}/{name}", guard(ui.face_image)),
        Route("/api/train/options", guard(ui.train_options)),
        Route("/api/train/start", guard(ui.train_start), methods=["POST"]),
        Route("/api/train/command", guard(ui.train_command), methods=["POST"]),
        Route("/api/train/{folder}/live", guard(ui.train_live)),
        Route("/api/train/{folder}/preview", guard(ui.train_preview)),
        Route("/api/merge/info", guard(ui.merge_info)),
        Route("/api/merge/settings", guard(ui.merge_frame_settings)),
        Route("/api/merge/settings", guard(ui.merge_save), methods=["POST"]),
        Route("/api/merge/render", guard(ui.merge_render)),
        Route("/api/merge/all", guard(ui.merge_all), methods=["POST"]),
        Route("/api/video", guard(ui.make_video), methods=["POST"]),
        Mount("/static", app=_guarded_static(ui)),
    ]
    middleware = [Middleware(BodyLimit)] + ([] if token else [Middleware(LocalHostOnly)])
    return Starlette(routes=routes, middleware=middleware)


class BodyTooLarge(Exception):
    pass


class BodyLimit:
    """Refuse a request body over `MAX_BODY` before reading it (by its Content-Length), or as soon as
    a body without one passes the limit, so a 1 GB POST cannot make the server read 1 GB."""

    def __init__(self, app, limit: int = MAX_BODY):
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        refuse = JSONResponse({"error": f"the request body is over the {self.limit // 2**20} MB limit"}, 413)
        length = Headers(scope=scope).get("content-length")
        if length is not None and (not length.isdigit() or int(length) > self.limit):
            await refuse(scope, receive, send)
            return
        seen, started = 0, False

        async def limited_receive():
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.limit:
                raise BodyTooLarge
            return message

        async def tracking_send(message):
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except BodyTooLarge:
            if not started:
                await refuse(scope, receive, send)


class LocalHostOnly:
    """Without a token, answer only requests addressed to this machine by name, so that a web page
    cannot reach the UI through a DNS name of its own pointed at 127.0.0.1 (DNS rebinding)."""

    NAMES = ("127.0.0.1", "localhost", "::1")

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http":
            try:
                name = urlsplit("//" + Headers(scope=scope).get("host", "")).hostname
            except ValueError:  # e.g. "[::1" without its bracket
                name = None
            if name not in self.NAMES:
                await JSONResponse({"error": "this UI answers only to 127.0.0.1 or localhost"}, 400)(
                    scope, receive, send
                )
                return
        await self.app(scope, receive, send)


def _token_ok(request: Request, token: str) -> bool:
    given = (request.query_params.get("token") or request.headers.get("x-facelab-token")
             or request.cookies.get(TOKEN_COOKIE) or "")  # fmt: skip
    return secrets.compare_digest(given, token)


def _cross_site(request: Request) -> bool:
    """A change asked by another site's page (CSRF). Such a page can send a plain form or text POST to
    127.0.0.1, but JSON only after a CORS preflight, which this server never grants; browsers also name
    the page's origin on every POST."""
    if request.method in ("GET", "HEAD"):
        return False
    if request.headers.get("content-type", "").split(";")[0].strip().lower() != "application/json":
        return True
    origin = request.headers.get("origin")
    return origin is not None and urlsplit(origin).netloc != request.headers.get("host")


def _guarded_static(ui: UI):
    static = StaticFiles(directory=STATIC)

    async def app(scope, receive, send):
        if ui.token and not _token_ok(Request(scope), ui.token):
            await JSONResponse({"error": "this server needs its token"}, 401)(scope, receive, send)
            return
        await static(scope, receive, send)

    return app
