"""`facelab ui`: the faceset, training and merge pages for one workspace, served to a browser.

A Starlette app with a JSON API and one plain HTML/CSS/JS page (no build step). Long steps run
as jobs (subprocesses of the CLI, see jobs.py); the merger's frame preview runs in this process,
in a worker thread so the page's polling is not held up.

Security: the server binds 127.0.0.1 unless told otherwise; on any other address every request
must carry the token printed at start (as `?token=`, the `X-Facelab-Token` header or the cookie
the page sets). Only files inside the workspace are served, and no endpoint runs a command that
a request sends.
"""

from __future__ import annotations

import contextlib
import json
import secrets
import threading
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
from facelab.merge import settings as merge_settings
from facelab.train import keys, model_options
from facelab.train.checkpoint import STATE, ModelFolder, model_folders
from facelab.train.recipes import RECIPES
from facelab.ui.jobs import Jobs
from facelab.workspace import IMAGE_EXTS, Workspace

STATIC = Path(__file__).with_name("static")
TOKEN_COOKIE = "facelab_token"
SIDES = ("src", "dst")


class ApiError(Exception):
    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


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
        """`path` resolved, refused unless it lies inside the workspace."""
        resolved = path.resolve()
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
        for f in model_folders(self.ws.model_dir):
            if f.path.name == name:
                return f
        raise ApiError(f"there is no model {name!r} in {self.ws.model_dir}", 404)

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
        for f in model_folders(self.ws.model_dir):
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
        img = cv2.imdecode(np.fromfile(path, np.uint8), cv2.IMREAD_COLOR)
        if img is None:
            raise ApiError(f"{path} cannot be decoded: the image is damaged", 422)
        try:  # the debug overlay: the landmarks the face was aligned with
            m = face_meta.read(path)
            for x, y in m.landmarks:
                cv2.circle(img, (int(round(x)), int(round(y))), max(1, img.shape[0] // 128), (0, 255, 0), -1)
        except face_meta.MetadataError:
            cv2.putText(img, "no metadata", (8, 24), cv2.FONT_HERSHEY_SIMPLEX, 0.7, (0, 0, 255), 2)
        return _jpeg(img)

    async def delete_faces(self, request: Request) -> JSONResponse:
        side = self.side(request.path_params["side"])
        names = (await request.json()).get("names") or []
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
        by = (await request.json()).get("by", "blur")
        if by not in SORT_METHODS:
            raise ApiError(f"unknown sort method {by!r}: use one of {', '.join(SORT_METHODS)}")
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
        body = await request.json()
        self._faceset_idle()
        if not _images(self.ws.frames_dir(side)):
            raise ApiError(f"{self.ws.frames_dir(side)} has no frames: run `facelab extract-frames {side}`")
        args = [side, "--debug-images" if side == "dst" else "--no-debug-images", "--yes"]
        if body.get("overwrite") or not self._extraction(side):  # else: the CLI takes the earlier settings
            face_type, detector = body.get("face_type", "whole"), body.get("detector", DEFAULT_DETECTOR)
            size = int(body.get("size", 512))
            if face_type not in FACE_TYPE_NAMES:
                raise ApiError(f"unknown face type {face_type!r}: use {', '.join(FACE_TYPE_NAMES)}")
            if detector not in DETECTORS:
                raise ApiError(f"unknown detector {detector!r}: use one of {', '.join(DETECTORS)}")
            if not 256 <= size <= 2048:
                raise ApiError(f"face size {size} is out of range: use 256 to 2048 pixels")
            args += ["--face-type", face_type, "--size", str(size), "--detector", detector]
        if body.get("overwrite"):  # only when asked: aligned/ may hold faces from elsewhere
            args.append("--overwrite")
        return JSONResponse(self.jobs.start("extract-faces", args).describe())

    # ------------------------------------------------------------------ training
    async def train_options(self, request: Request) -> JSONResponse:
        kind = request.query_params.get("model", "saehd").lower()
        if kind not in RECIPES:
            raise ApiError(f"unknown model kind {kind!r}: use one of {', '.join(sorted(RECIPES))}")
        name = request.query_params.get("name", "")
        folder = ModelFolder.of(self.ws.model_dir, name, RECIPES[kind].class_name) if name else None
        saved = folder.read_json("config.json").get("options", {}) if folder and folder.exists() else None
        specs = model_options.specs(kind).values()
        return JSONResponse({"model": kind, "exists": saved is not None,
                             "folder": folder.path.name if folder else None, "options": [
            _option_json(o, (saved or {}).get(o.name), locked=saved is not None and not o.changeable)
            for o in specs]})  # fmt: skip

    async def train_start(self, request: Request) -> JSONResponse:
        body = await request.json()
        kind = str(body.get("model", "")).lower()
        if kind not in RECIPES:
            raise ApiError(f"unknown model kind {kind!r}: use one of {', '.join(sorted(RECIPES))}")
        name = str(body.get("name", "")).strip()
        from facelab.train.catalog import check_name

        try:
            check_name(name)
        except (ValueError, FacelabError) as exc:
            raise ApiError(f"model name: {exc}") from None
        folder = ModelFolder.of(self.ws.model_dir, name, RECIPES[kind].class_name)
        if folder.is_locked():
            raise ApiError(f"{folder} is being trained already: stop that trainer, or train another model")
        # The CLI's own checks, so the page gets their messages before a job starts.
        pairs = [f"{k}={v}" for k, v in (body.get("options") or {}).items()]
        given = model_options.parse_pairs(kind, pairs)
        if folder.exists():
            saved = folder.read_json("config.json").get("options", {})
            model_options.refuse_fixed(kind, model_options.saved_options(kind, saved), given)
        args = ["--model", kind, "--name", name, "--save-every", str(float(body.get("save_every", 25)))]
        job = self.jobs.start("train", args + [a for p in pairs for a in ("--opt", p)])
        return JSONResponse(job.describe())

    async def train_command(self, request: Request) -> JSONResponse:
        body = await request.json()
        folder = self.model(str(body.get("folder", "")))
        key = str(body.get("key", ""))
        if key not in keys.COMMANDS:
            raise ApiError(f"unknown trainer key {key!r} (one of {', '.join(keys.COMMANDS)})")
        if not folder.is_locked():
            raise ApiError(f"{folder.path.name} is not training now")
        keys.send_command(folder.path, key)
        return JSONResponse({"sent": key})

    async def train_live(self, request: Request) -> JSONResponse:
        folder = self.model(request.path_params["folder"])
        live, state = {}, {}
        with contextlib.suppress(OSError, ValueError):
            live = json.loads((folder.path / "live.json").read_text())
        with contextlib.suppress(FacelabError):
            state = folder.read_json(STATE)
        if not live:
            points = state.get("history", {}).get("buckets", [])
            live = {"iteration": state.get("iteration", 0), "points": points}
        preview = folder.path / "preview.jpg"
        live |= {"saved_iteration": state.get("iteration"), "training": folder.is_locked(),
                 "preview_mtime": preview.stat().st_mtime if preview.exists() else None}  # fmt: skip
        return JSONResponse(live)

    async def train_preview(self, request: Request) -> Response:
        folder = self.model(request.path_params["folder"])
        path = folder.path / "preview.jpg"
        if not path.exists():
            raise ApiError("no preview yet: it appears at the first save", 404)
        return FileResponse(path, headers={"Cache-Control": "no-store"})

    # ------------------------------------------------------------------ merge
    def merger(self, folder_name: str | None):
        """The merge model (loaded once per saved checkpoint) and the dst frame plans."""
        from facelab.merge.pipeline import MergeModel, find_model, plan_frames

        folder = self.model(folder_name) if folder_name else find_model(self.ws, None)
        iteration = folder.read_json(STATE).get("iteration")
        with self._merge_lock:
            if self._merger is None or self._merger[:2] != (folder.path, iteration):
                model = MergeModel(folder)
                self._merger = (folder.path, iteration, model, plan_frames(self.ws, model.face_type))
            return folder, self._merger[2], self._merger[3]

    def session(self, folder: ModelFolder):
        from facelab.merge.pipeline import SESSION
        from facelab.merge.session import Session

        return Session.load(folder.path / SESSION)

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
            return merge_settings.validate(raw if isinstance(raw, dict) else json.loads(raw or "{}"))
        except (ValueError, TypeError) as exc:
            raise ApiError(str(exc)) from None

    async def merge_frame_settings(self, request: Request) -> JSONResponse:
        folder, _, _ = await run_in_threadpool(self.merger, request.query_params.get("model"))
        frame = int(request.query_params.get("frame", 0))
        return JSONResponse({"frame": frame, "settings": self.session(folder).for_frame(frame)})

    async def merge_render(self, request: Request) -> Response:
        from facelab.merge.pipeline import find_plan, render_frame

        q = request.query_params
        folder, model, plans = await run_in_threadpool(self.merger, q.get("model"))
        frame = int(q.get("frame", plans[0].number))
        try:
            plan = find_plan(plans, frame)
        except FacelabError as exc:
            raise ApiError(str(exc), 404) from None
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
        body = await request.json()
        folder, _, plans = await run_in_threadpool(self.merger, body.get("model"))
        frame = int(body["frame"])
        wanted = self._settings(body.get("settings") or {})
        session = self.session(folder)
        last = plans[-1].number if body.get("scope") == "following" else frame
        session.set_frames(frame, last, wanted)
        session.save()
        return JSONResponse({"frame": frame, "last": last, "settings": session.for_frame(frame)})

    async def merge_all(self, request: Request) -> JSONResponse:
        body = await request.json()
        folder, _, _ = await run_in_threadpool(self.merger, body.get("model"))
        if self.jobs.running("merge"):
            raise ApiError("a merge is already running")
        job = self.jobs.start("merge", ["--model", folder.name])
        return JSONResponse(job.describe())

    async def make_video(self, request: Request) -> JSONResponse:
        if self.jobs.running("make-video"):
            raise ApiError("a video is already being made")
        if not self._merged_count():
            raise ApiError(f"no merged frames in {self.ws.merged_dir}: merge first")
        result = self.ws.root / "result.mp4"
        if result.exists() and not (await request.json()).get("overwrite"):
            raise ApiError(f"{result} exists already: confirm to replace it", 409)
        job = self.jobs.start("make-video", ["--overwrite"] if result.exists() else [])
        return JSONResponse(job.describe())

    async def file(self, request: Request) -> Response:
        """Any image or video inside the workspace (debug images, merged frames, result.mp4)."""
        rel = request.query_params.get("path", "")
        path = self.inside(self.ws.root / rel)
        if not path.is_file():
            raise ApiError(f"there is no file {rel!r} in the workspace", 404)
        if path.suffix.lower() not in IMAGE_EXTS | {".mp4", ".mov", ".avi", ".mkv"}:
            raise ApiError("only images and videos are served", 403)
        return FileResponse(path)


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
        Route("/api/file", guard(ui.file)),
        Mount("/static", app=_guarded_static(ui)),
    ]
    return Starlette(routes=routes, middleware=[] if token else [Middleware(LocalHostOnly)])


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
