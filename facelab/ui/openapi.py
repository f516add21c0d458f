"""The UI's JSON API as an OpenAPI 3.0 document, served at /api/openapi.json: the paths and methods
come from the app's own routes, the request bodies' fields from the same option specs that check
them (common.FIELDS), so the description cannot drift from what the server accepts. Tests fuzz the
server from it (schemathesis)."""

from __future__ import annotations

import re

from starlette.routing import Route

from facelab import __version__
from facelab.options import Option
from facelab.ui.common import FIELDS

_TYPES = {bool: "boolean", int: "integer", float: "number", str: "string"}

# Query parameters the routes read (besides `token`, which every route takes on a non-local bind).
QUERY = {
    "/api/faces/{side}/{name}": ["debug"],
    "/api/train/options": ["model", "name"],
    "/api/merge/info": ["model"],
    "/api/merge/settings": ["model", "frame"],
    "/api/merge/render": ["model", "frame", "settings"],
    "/api/xseg/{side}/propose": ["model"],
}
# This document itself, and live's never-ending MJPEG stream (not JSON).
UNDESCRIBED = ("/api/openapi.json", "/api/live/stream")
# JSON containers some bodies carry beside the plain fields.
CONTAINERS = {"names": {"type": "array", "items": {"type": "string"}},
              "polygons": {"type": "array", "items": {"type": "object"}},
              "settings": {"type": "object"}, "options": {"type": "object"}}  # fmt: skip


def option_schema(o: Option) -> dict:
    schema = {"type": _TYPES[o.type], "description": o.help, "default": o.default}
    if o.choices:
        schema["enum"] = list(o.choices)
    if o.range:
        schema["minimum"], schema["maximum"] = o.range
    return schema


def document(routes: list) -> dict:
    body = {"type": "object", "properties": {n: option_schema(o) for n, o in FIELDS.items()} | CONTAINERS}
    answer = {"description": "JSON: the result, or {error} with a 4xx status",
              "content": {"application/json": {"schema": {"type": "object"}}}}  # fmt: skip
    paths: dict[str, dict] = {}
    for route in routes:
        if not isinstance(route, Route) or not route.path.startswith("/api/") or route.path in UNDESCRIBED:
            continue
        names = re.findall(r"{(\w+)}", route.path)
        params = [{"name": n, "in": "path", "required": True,
                   "schema": {"type": "string", **({"enum": ["src", "dst"]} if n == "side" else {})}}
                  for n in names]  # fmt: skip
        params += [{"name": q, "in": "query", "required": False, "schema": {"type": "string"}}
                   for q in QUERY.get(route.path, [])]  # fmt: skip
        for method in sorted(route.methods - {"HEAD"}):
            op = {"operationId": f"{method.lower()} {route.path}", "parameters": params,
                  "responses": {"default": answer}}  # fmt: skip
            if method == "POST":
                op["requestBody"] = {"required": False, "content": {"application/json": {"schema": body}}}
            paths.setdefault(route.path, {})[method.lower()] = op
    return {"openapi": "3.0.3", "info": {"title": "facelab ui", "version": __version__}, "paths": paths}
