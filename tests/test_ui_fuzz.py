"""The UI's JSON API under abuse: schemathesis sends what its OpenAPI description allows and
more (wrong types, out-of-range numbers, odd names), about 4 requests an operation and origin: no answer may
be a 500, and no file may appear outside the workspace. The same requests from another origin, or
without the token on a non-local bind, start nothing."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest

schemathesis = pytest.importorskip("schemathesis", reason="the UI fuzz test needs schemathesis (dev extra)")
from hypothesis import HealthCheck, Phase, settings  # noqa: E402

from facelab.ui import openapi  # noqa: E402
from facelab.ui.app import create_app  # noqa: E402
from tests.kill_steps import DFL, FIXTURE_MODEL  # noqa: E402
from tests.test_ui import Server  # noqa: E402

with tempfile.TemporaryDirectory() as _tmp:
    SCHEMA = schemathesis.openapi.from_dict(openapi.document(create_app(Path(_tmp)).routes))
EXAMPLES = settings(max_examples=4, deadline=None, phases=[Phase.explicit, Phase.generate], derandomize=True,
                    suppress_health_check=list(HealthCheck))  # fmt: skip


def _tree(root: Path, skip: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if skip not in p.parents and p != skip}


@pytest.fixture(scope="module")
def fuzzed(tmp_path_factory):
    """A small workspace (DeepFaceLab's four src faces, a tiny Quick96) served locally, and the
    files around it, to see that nothing is written outside it."""
    if not DFL.is_dir():
        pytest.skip(f"DeepFaceLab's files not found at {DFL} (the shared/ folder is absent)")
    root = tmp_path_factory.mktemp("uifuzz")
    ws = root / "ws"
    aligned = ws / "data_src" / "aligned"
    aligned.mkdir(parents=True)
    for p in sorted((DFL / "aligned").glob("*.jpg")):
        shutil.copy(p, aligned / p.name)
    shutil.copytree(FIXTURE_MODEL, ws / "model" / "m_Quick96")
    (root / "outside").mkdir()
    (root / "outside" / "secret.txt").write_text("not for the UI")
    before = _tree(root, ws)
    server = Server(ws)
    yield server, root, ws, before
    server.stop()
    assert _tree(root, ws) == before, "a request wrote outside the workspace"


@SCHEMA.parametrize()
@EXAMPLES
def test_no_request_gets_a_server_error(case, fuzzed):
    server, *_ = fuzzed
    response = case.call(base_url=server.base, timeout=60)
    assert response.status_code < 500, (case.method, case.formatted_path, case.query, case.body,
                                        response.text[:500])  # fmt: skip


@SCHEMA.parametrize()
@EXAMPLES
def test_requests_from_another_origin_change_nothing(case, fuzzed):
    server, _, ws, _ = fuzzed
    elsewhere = {"Origin": "http://elsewhere.example", "Sec-Fetch-Site": "cross-site"}
    response = case.call(base_url=server.base, timeout=60, headers=elsewhere)
    if case.method == "POST":  # refused by the guard (405: the route takes no POST at all)
        assert response.status_code in (403, 405), (case.formatted_path, response.text[:300])


def test_without_the_token_nothing_is_served(tmp_path: Path):
    """A non-local bind needs the token: every described operation answers 401 without it."""
    ws = tmp_path / "ws"
    ws.mkdir()
    server = Server(ws, "--host", "0.0.0.0")
    try:
        for path, ops in SCHEMA.raw_schema["paths"].items():
            concrete = path.replace("{side}", "src").replace("{name}", "x.jpg")
            concrete = concrete.replace("{folder}", "m_Quick96")
            for method in ops:
                code, _ = server.get(concrete, data=b"{}" if method == "post" else None)
                assert code == 401, (method, path, code)
    finally:
        server.stop()
