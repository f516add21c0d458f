"""`facelab ui`: the faceset, training and merge pages for one workspace, served to a browser.

A Starlette app with a JSON API and one plain HTML/CSS/JS page (no build step). Long steps run
as jobs (subprocesses of the CLI, see jobs.py); the merger's frame preview runs in this process,
in a worker thread so the page's polling is not held up.

Security: the server binds 127.0.0.1 unless told otherwise; on any other address every request
must carry the token printed at start (as `?token=`, the `X-Facelab-Token` header or the cookie
the page sets). Every file a route reads goes through `Context.inside` (common.py), which resolves
symlinks and refuses anything outside the workspace (a downloaded workspace can carry links to
/etc/passwd);
names from requests are checked before a path is built from them. Bodies over `MAX_BODY` are
refused before they are read, JSON bodies are checked by type against option specs, and no
endpoint runs a command that a request sends.
"""

from __future__ import annotations

import json
import secrets
import traceback
from pathlib import Path
from urllib.parse import urlsplit

from starlette.applications import Starlette
from starlette.datastructures import Headers
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from facelab.errors import FacelabError
from facelab.faces.sort import METHODS as SORT_METHODS
from facelab.models.folder import STATE
from facelab.train.recipes import RECIPES
from facelab.ui import openapi
from facelab.ui.common import EXTRACT_FORM, EXTRACT_OPTIONS, ApiError, Context, option_json
from facelab.ui.faceset import FacesetPage
from facelab.ui.live import LivePage
from facelab.ui.merging import MergePage
from facelab.ui.training import TrainingPage
from facelab.ui.xseg import XSegPage
from facelab.workspace import SIDES, image_files

STATIC = Path(__file__).with_name("static")
TOKEN_COOKIE = "facelab_token"
MAX_BODY = 10 * 1024 * 1024  # bytes; the largest real body (a merge session's settings) is ~2 KB


class Overview:
    """The status every page polls: faces, models, jobs, what has been made."""

    def __init__(self, ctx: Context):
        self.ctx = ctx

    async def status(self, request: Request) -> JSONResponse:
        counts = {}
        for s in SIDES:
            counts[s] = len(image_files(self.ctx.ws.aligned_dir(s)))
        return JSONResponse({"workspace": str(self.ctx.ws.root), "faces": counts, "models": self._models(),
                             "jobs": self.ctx.jobs.describe(), "sort_methods": list(SORT_METHODS),
                             "extract_options": [option_json(EXTRACT_OPTIONS[n]) for n in EXTRACT_FORM],
                             "model_kinds": sorted(RECIPES), "merged": self.ctx.merged_count(),
                             "result": self.ctx.ws.result_video.exists(),
                             "report": (self.ctx.ws.report_dir / "index.html").exists()})  # fmt: skip

    def _models(self) -> list[dict]:
        out = []
        for f in self.ctx.local_models():
            kind = next((k for k, r in RECIPES.items() if r.class_name == f.class_name), None)
            try:
                state = f.read_json(STATE)
            except FacelabError:
                state = {}
            out.append({"folder": f.path.name, "name": f.name, "class": f.class_name, "kind": kind,
                        "iteration": state.get("iteration"), "locked": f.is_locked()})  # fmt: skip
        return out

    async def jobs_list(self, request: Request) -> JSONResponse:
        return JSONResponse({"jobs": self.ctx.jobs.describe()})


def create_app(workspace: Path, token: str | None = None, live=None) -> Starlette:
    """The app for `workspace`; `live` (a running `facelab live --output browser`) feeds the live page."""
    ui = Context(Path(workspace), token)
    overview, faceset, training, merging = Overview(ui), FacesetPage(ui), TrainingPage(ui), MergePage(ui)
    xseg, live_page = XSegPage(ui), LivePage(live)

    def guard(handler):
        async def run(request: Request):
            if ui.token and not _token_ok(request, ui.token):
                return JSONResponse({"error": "this server needs its token: open the address it printed"},
                                    401)  # fmt: skip
            if _cross_site(request):
                return JSONResponse({"error": "refused: a change must come from this UI's own page"}, 403)
            path = request.url.path
            live_only = path.startswith("/api/live/") or (live is not None and path == "/api/status")
            if path.startswith("/api/") and not live_only and not ui.ws.root.is_dir():
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

    async def api_description(request: Request) -> JSONResponse:
        return JSONResponse(openapi.document(routes))

    routes = [
        Route("/", guard(index)),
        Route("/api/openapi.json", guard(api_description)),
        Route("/api/status", guard(overview.status)),
        Route("/api/jobs", guard(overview.jobs_list)),
        Route("/api/faces/{side}", guard(faceset.faces)),
        Route("/api/faces/{side}/delete", guard(faceset.delete_faces), methods=["POST"]),
        Route("/api/faces/{side}/undo", guard(faceset.undo_delete), methods=["POST"]),
        Route("/api/faces/{side}/sort", guard(faceset.sort_faces), methods=["POST"]),
        Route("/api/faces/{side}/extract", guard(faceset.extract_faces), methods=["POST"]),
        Route("/api/faces/{side}/{name}", guard(faceset.face_image)),
        Route("/api/xseg/{side}", guard(xseg.faces)),
        Route("/api/xseg/{side}/propose", guard(xseg.propose)),
        Route("/api/xseg/{side}/{name}", guard(xseg.face)),
        Route("/api/xseg/{side}/{name}", guard(xseg.save), methods=["POST"]),
        Route("/api/xseg/{side}/{name}/mask", guard(xseg.mask)),
        Route("/api/train/options", guard(training.train_options)),
        Route("/api/train/start", guard(training.train_start), methods=["POST"]),
        Route("/api/train/command", guard(training.train_command), methods=["POST"]),
        Route("/api/train/{folder}/live", guard(training.train_live)),
        Route("/api/train/{folder}/preview", guard(training.train_preview)),
        Route("/api/merge/info", guard(merging.merge_info)),
        Route("/api/merge/settings", guard(merging.merge_frame_settings)),
        Route("/api/merge/settings", guard(merging.merge_save), methods=["POST"]),
        Route("/api/merge/render", guard(merging.merge_render)),
        Route("/api/merge/all", guard(merging.merge_all), methods=["POST"]),
        Route("/api/video", guard(merging.make_video), methods=["POST"]),
        Route("/api/eval", guard(merging.evaluate), methods=["POST"]),
        Route("/report/{name}", guard(merging.report_file)),
        Route("/api/live/status", guard(live_page.status)),
        Route("/api/live/settings", guard(live_page.settings), methods=["POST"]),
        Route("/api/live/stream", guard(live_page.stream)),
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


def _guarded_static(ui: Context):
    static = StaticFiles(directory=STATIC)

    async def app(scope, receive, send):
        if ui.token and not _token_ok(Request(scope), ui.token):
            await JSONResponse({"error": "this server needs its token"}, 401)(scope, receive, send)
            return
        await static(scope, receive, send)

    return app
