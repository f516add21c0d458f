"""What every page of `facelab ui` shares: request errors, typed JSON bodies, and `Context`, the
workspace with the checks every route that reads a file goes through."""

from __future__ import annotations

import contextlib
from pathlib import Path

import cv2
import numpy as np
from starlette.requests import Request
from starlette.responses import Response

from facelab.errors import FacelabError
from facelab.faces.extract import BY_NAME as EXTRACT_OPTIONS
from facelab.faces.sort import METHODS as SORT_METHODS
from facelab.fsutil import parse_json
from facelab.models.folder import CONFIG, LIVE, PREVIEW, STATE, ModelFolder, model_folders
from facelab.options import Option
from facelab.train import keys
from facelab.train.catalog import check_name
from facelab.train.trainer import OPTIONS as TRAIN_FLAGS
from facelab.ui.jobs import Jobs
from facelab.workspace import IMAGE_EXTS, SIDES, Workspace, image_files

TRAIN_OPTIONS = {o.name: o for o in TRAIN_FLAGS}
EXTRACT_FORM = ("face_type", "size", "detector")  # the extraction settings the faceset page offers
# The fields of the JSON bodies, checked by type and range as the CLI checks its flags.
FIELDS = {o.name: o for o in (
    Option("overwrite", bool, False, "replace what exists"),
    *(EXTRACT_OPTIONS[name] for name in EXTRACT_FORM),
    Option("by", str, "blur", "sort method", choices=tuple(SORT_METHODS)),
    Option("model", str, "", "model kind or folder"),
    Option("name", str, "", "model name"),
    Option("folder", str, "", "model folder"),
    Option("key", str, "", "trainer key", choices=tuple(keys.COMMANDS)),
    TRAIN_OPTIONS["save_every_min"],
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
            return cls(parse_json(raw) if raw.strip() else {})
        except (ValueError, UnicodeDecodeError) as exc:
            raise ApiError(f"the request body is not valid JSON ({exc})") from None

    def get(self, name: str):
        """The field checked by its spec; the spec's default when it is absent or null."""
        if self.data.get(name) is None:
            return FIELDS[name].default
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


def option_json(o, value=None, locked: bool = False) -> dict:
    return {"name": o.name, "type": o.type.__name__, "default": o.default, "value": o.default if value is None
            else value, "range": o.range, "choices": o.choices, "help": o.help, "changeable": o.changeable,
            "allowed": o.allowed(), "locked": locked}  # fmt: skip


def jpeg(img: np.ndarray, quality: int = 90) -> Response:
    ok, data = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, quality])
    return Response(data.tobytes(), media_type="image/jpeg", headers={"Cache-Control": "no-store"})


class Context:
    """One workspace served to the browser, and its jobs."""

    def __init__(self, workspace: Path, token: str | None):
        self.ws = Workspace(workspace)
        self.token = token
        self.jobs = Jobs(self.ws.root)

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


    def merged_count(self) -> int:
        return len(image_files(self.ws.merged_dir))
