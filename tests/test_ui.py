"""`facelab ui` end to end in a real headless Chromium (Debian's, driven by Playwright), plus its
security and bad-input behaviour over plain HTTP."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import ARTIFACTS

SHOTS = ARTIFACTS / "ui"


def _has_ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """`facelab ui` (or `command`, another command that serves the UI) on a free port."""

    def __init__(self, ws: Path, *args: str, command: str = "ui"):
        self.port = _free_port()
        cmd = [sys.executable, "-m", "facelab", command, "-w", str(ws), "--port", str(self.port),
               *map(str, args)]  # fmt: skip
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.lines = []
        deadline = time.time() + 60
        while time.time() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                break
            self.lines.append(line)
            if "open http" in line:
                self.url = line.split("open ", 1)[1].split()[0]
                break
        else:
            raise AssertionError("".join(self.lines))
        assert self.proc.poll() is None, "".join(self.lines)
        self.base = "{0.scheme}://{0.netloc}".format(urllib.parse.urlsplit(self.url))
        for _ in range(50):  # until uvicorn answers
            try:
                urllib.request.urlopen(self.base + "/static/app.css", timeout=1)
                break
            except urllib.error.HTTPError:
                break
            except OSError:
                time.sleep(0.1)

    def get(
        self, path: str, headers: dict | None = None, data: bytes | None = None
    ) -> tuple[int, dict | bytes]:
        """GET, or POST `data`."""
        req = urllib.request.Request(self.base + path, headers=headers or {}, data=data)
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                body, code, kind = r.read(), r.status, r.headers.get("content-type", "")
        except urllib.error.HTTPError as e:
            body, code, kind = e.read(), e.code, e.headers.get("content-type", "")
        return code, json.loads(body) if "json" in kind else body

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=30)


@pytest.fixture
def ui_ws(faces_ws: Path, tmp_path: Path) -> Path:
    """A workspace with real src/dst frames and aligned faces (no model yet)."""
    ws = tmp_path / "ws"
    shutil.copytree(faces_ws, ws, ignore=shutil.ignore_patterns("model", "merged*", "*.mp4"))
    return ws


@pytest.fixture
def server(ui_ws: Path) -> Iterator[Server]:
    s = Server(ui_ws)
    yield s
    s.stop()


def _wait(condition, timeout: float, what: str) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if condition():
            return
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}")


def _shot(page, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


@pytest.mark.slow
def test_walk_through_faceset_training_merge_and_video(server: Server, ui_ws: Path, page):
    page.goto(server.url)

    # 1. Faceset: delete two faces; they land in aligned_trash/, and Undo could bring them back.
    page.wait_for_function("document.querySelectorAll('#fs-grid figure').length === 86")
    names = [page.locator("#fs-grid figure").nth(i).get_attribute("data-name") for i in (3, 7)]
    page.locator("#fs-grid figure").nth(3).click()
    page.locator("#fs-grid figure").nth(7).click()
    page.click("#fs-delete")
    page.wait_for_function("document.querySelectorAll('#fs-grid figure').length === 84")
    trash = ui_ws / "data_src" / "aligned_trash"
    assert sorted(p.name for p in trash.iterdir()) == sorted(names)
    page.click("#fs-undo")
    page.wait_for_function("document.querySelectorAll('#fs-grid figure').length === 86")
    assert not list(trash.iterdir())
    page.locator("#fs-grid figure").nth(3).click()
    page.locator("#fs-grid figure").nth(7).click()
    page.click("#fs-delete")
    page.wait_for_function("document.querySelectorAll('#fs-grid figure').length === 84")
    assert sorted(p.name for p in trash.iterdir()) == sorted(names)
    page.check("#fs-debug")  # the landmark overlay
    shown = "[...document.querySelectorAll('#fs-grid img')].slice(0, 36)"
    page.wait_for_function(f"{shown}.every(i => i.src.includes('debug=1') && i.naturalWidth)")
    _shot(page, "1-faceset")

    # Extraction started from the page continues the earlier one with its settings: a lost face returns.
    lost = sorted((ui_ws / "data_dst" / "aligned").glob("*.jpg"))[5]
    lost.unlink()
    page.select_option("#fs-side", "dst")
    page.wait_for_function("document.querySelector('#fs-extraction').textContent.includes('continues')")
    assert page.input_value("#fs-size") == "256" and page.is_disabled("#fs-size")
    page.click("#fs-extract")
    done = "#jobs-list .job[data-command=extract-faces][data-running='0']"
    page.wait_for_selector(done, timeout=180_000)
    assert "done" in page.text_content(done) and lost.exists()
    page.select_option("#fs-side", "src")

    # 2. Training: a bad value is refused with its range; a tiny SAEHD starts, its preview and loss
    # chart update, `s` saves, a second start on the running model is refused, Enter stops it.
    page.click("button[data-page=training]")
    page.select_option("#tr-kind", "saehd")
    page.fill("#tr-name", "ui")
    page.click("#tr-load")
    page.wait_for_selector("#tr-form [name=resolution]")
    page.fill("#tr-form [name=resolution]", "50")
    page.click("#tr-start")
    page.wait_for_function("document.querySelector('#error').textContent.includes('from 64 to 640')")
    for name, value in (("resolution", "64"), ("ae_dims", "32"), ("e_dims", "16"), ("d_dims", "16"),
                        ("d_mask_dims", "16"), ("batch_size", "2")):  # fmt: skip
        page.fill(f"#tr-form [name={name}]", value)
    page.click("#tr-start")
    page.wait_for_selector("#tr-preview[data-mtime]", timeout=180_000)
    page.wait_for_function("Number(document.querySelector('#tr-chart').dataset.points) >= 3", timeout=180_000)
    page.wait_for_function("Number(document.querySelector('#tr-iter').dataset.value) >= 10", timeout=180_000)
    _shot(page, "2-training")
    shown = int(page.get_attribute("#tr-iter", "data-value"))
    page.click("h3")  # keys go to the page, not a form field
    page.keyboard.press("s")
    state = ui_ws / "model" / "ui_SAEHD" / "state.json"
    _wait(lambda: json.loads(state.read_text())["iteration"] >= shown, 60, "the save after pressing s")
    page.click("#tr-start")
    page.wait_for_function("document.querySelector('#error').textContent.includes('being trained already')")
    page.click("h3")
    page.keyboard.press("Enter")
    page.wait_for_function("document.querySelector('#tr-state').textContent === 'not training'")

    # 3. Merge: `w` erodes and the shown frame changes; Shift+/ applies to all following frames;
    # `>` merges every frame.
    page.click("button[data-page=merge]")
    page.wait_for_selector("#mg-image[data-version]", timeout=60_000)
    before = page.locator("#mg-image").screenshot()
    version = int(page.get_attribute("#mg-image", "data-version"))
    page.click("h3")
    for _ in range(4):
        page.keyboard.press("w")
    page.wait_for_function(f"Number(document.querySelector('#mg-image').dataset.version) >= {version + 4}")
    assert page.locator("#mg-form [name=erode]").input_value() == "20"
    assert page.locator("#mg-image").screenshot() != before
    page.keyboard.press("Shift+/")
    page.wait_for_function("document.querySelector('#mg-note').textContent.includes('every following')")
    session = json.loads((ui_ws / "model" / "ui_SAEHD" / "merge_session.json").read_text())
    frames = sorted(p for p in (ui_ws / "data_dst").iterdir() if p.suffix == ".png")
    last = int(frames[-1].stem)
    assert any(o["settings"].get("erode") == 20 and o["last"] == last for o in session["overrides"])
    page.keyboard.press("Shift+.")
    merged = ui_ws / "data_dst" / "merged"
    _wait(lambda: len(list(merged.glob("*.png"))) == len(frames), 300, "all merged frames")
    page.wait_for_function("document.querySelector('.job[data-command=merge]').dataset.running === '0'")
    _shot(page, "3-merge")

    # 4. The video.
    page.click("#mg-video")
    _wait(lambda: (ui_ws / "result.mp4").exists(), 120, "result.mp4")
    page.wait_for_function("document.querySelector('#mg-merged').dataset.result === '1'")
    _shot(page, "4-video")
    # Making it again asks first: declined, nothing runs; accepted, a new video replaces it.
    videos = "document.querySelectorAll('.job[data-command=make-video]')"
    page.wait_for_function(f"[...{videos}].every(j => j.dataset.running === '0')")
    made = (ui_ws / "result.mp4").stat().st_mtime_ns
    page.once("dialog", lambda d: d.dismiss())
    page.click("#mg-video")
    page.wait_for_timeout(1500)
    assert page.evaluate(f"{videos}.length") == 1
    code, body = server.get("/api/video", {"Content-Type": "application/json"}, b"{}")
    assert code == 409 and "confirm" in body["error"]
    page.once("dialog", lambda d: d.accept())
    page.click("#mg-video")
    page.wait_for_function(f"{videos}.length === 2 && [...{videos}].every(j => j.dataset.running === '0')")
    assert (ui_ws / "result.mp4").stat().st_mtime_ns != made

    # 5. The quality report, made as a job and shown from the workspace.
    page.click("#mg-eval")
    page.wait_for_function("!document.querySelector('#mg-report').hidden", timeout=300_000)
    assert (ui_ws / "report" / "report.json").exists()
    page.goto(f"{server.base}/report/index.html")
    assert page.locator("h1").inner_text() == "facelab eval"
    for img in page.locator("img").all():
        assert img.evaluate("i => i.complete && i.naturalWidth > 0"), img.get_attribute("src")
    _shot(page, "5-report")


def test_security_and_bad_input(ui_ws: Path, tmp_path: Path):
    local = Server(ui_ws)
    try:
        code, _ = local.get("/api/faces/src/..%2F..%2F..%2Fetc%2Fpasswd")
        assert code == 404
        report = ui_ws / "report"
        report.mkdir(exist_ok=True)
        (report / "curves.png").symlink_to("/etc/passwd")
        assert local.get("/report/curves.png")[0] == 403  # a symlink out of the workspace
        assert local.get("/report/..%2F..%2F..%2Fetc%2Fpasswd")[0] in (403, 404)
        assert local.get("/report/index.html")[0] == 404  # no report yet
        (report / "curves.png").unlink()
        code, body = local.get("/api/merge/info")  # no model yet
        assert code == 400 and "facelab train" in body["error"]
        code, body = local.get("/api/faces/src")
        assert code == 200 and len(body["faces"]) == 86
        assert local.get("/api/faces/src", {"Host": "evil.example"})[0] == 400  # DNS rebinding
        post = {"Content-Type": "application/json"}
        for wrong, words in (
            ({"face_type": "side"}, "face_type must be one of half, mid-full, full, whole, head, not 'side'"),
            ({"size": 99}, "256 to 2048"),
        ):
            code, refused = local.get(
                "/api/faces/src/extract", post, json.dumps(wrong | {"overwrite": True}).encode()
            )
            assert code == 400 and words in refused["error"]
        # Another site's page can POST text or forms to 127.0.0.1, and names itself in Origin: refused.
        names = json.dumps({"names": body["faces"][:1]}).encode()
        for headers in ({"Content-Type": "text/plain"},
                        {"Content-Type": "application/json", "Origin": "http://evil.example"}):  # fmt: skip
            code, refused = local.get("/api/faces/src/delete", headers, names)
            assert code == 403 and "this UI's own page" in refused["error"]
        assert len(local.get("/api/faces/src")[1]["faces"]) == 86
        same_site = {"Content-Type": "application/json", "Origin": local.base}
        code, body = local.get("/api/faces/src/undo", same_site, b"{}")
        assert code == 400 and body["error"] == "nothing to undo"
    finally:
        local.stop()

    # IPv6 loopback is local too: no token, and its bracketed Host header is accepted.
    if _has_ipv6_loopback():
        v6 = Server(ui_ws, "--host", "::1")
        try:
            assert v6.base == f"http://[::1]:{v6.port}"
            assert v6.get("/api/status")[0] == 200
            assert v6.get("/api/status", {"Host": "evil.example"})[0] == 400
        finally:
            v6.stop()

    # Any other address: the token printed at start is needed on every request.
    remote = Server(ui_ws, "--host", "0.0.0.0")
    try:
        token = remote.url.split("token=")[1]
        assert any(f"access token: {token}" in ln for ln in remote.lines)
        assert remote.get("/api/status")[0] == 401
        assert remote.get("/")[0] == 401 and remote.get("/static/app.js")[0] == 401
        assert remote.get("/api/status", {"X-Facelab-Token": "wrong" * 5})[0] == 401
        assert remote.get(f"/api/status?token={token}")[0] == 200
        assert remote.get("/api/status", {"X-Facelab-Token": token})[0] == 200
    finally:
        remote.stop()

    # The workspace deleted while the UI runs: a clear message, and the server stays up.
    gone = tmp_path / "gone"
    shutil.copytree(ui_ws / "data_src", gone / "data_src")
    s = Server(gone)
    try:
        shutil.rmtree(gone)
        code, body = s.get("/api/status")
        assert code == 410 and "no longer exists" in body["error"]
        assert s.proc.poll() is None
    finally:
        s.stop()


def test_no_route_reads_outside_the_workspace_and_bodies_are_checked(ui_ws: Path, tmp_path: Path):
    """A downloaded workspace can carry symlinks, and a request can carry `../` names: every route
    that reads a file must keep to the workspace; odd, huge or mistyped bodies get a 4xx, not a 500."""
    import http.client

    import torch

    from facelab.models.folder import ModelFolder

    def save(folder: ModelFolder, options: dict) -> None:
        folder.save({"options": options}, {"w": torch.zeros(2)}, {}, {"iteration": 3}, "")

    models = ui_ws / "model"
    linked = ModelFolder.of(models, "y", "Quick96")  # its preview is a link to a system file
    save(linked, {})
    (linked.path / "preview.jpg").symlink_to("/etc/passwd")
    outside = tmp_path / "outside"  # a model folder that is itself a link out of the workspace
    save(ModelFolder.of(outside, "z", "Quick96"), {})
    (outside / "z_Quick96" / "preview.jpg").write_bytes(b"secret preview")
    (outside / "z_Quick96" / "live.json").write_text('{"iteration": 12345}')
    (models / "z_Quick96").symlink_to(outside / "z_Quick96")
    save(ModelFolder.of(tmp_path / "secret", "outside", "SAEHD"), {"resolution": 999})
    (ui_ws / "data_src" / "aligned" / "empty.jpg").write_bytes(b"")
    (ui_ws / "data_dst" / "merged").mkdir(parents=True, exist_ok=True)
    (ui_ws / "data_dst" / "merged" / "00001.png").write_bytes(b"frame")
    (ui_ws / "result.mp4").write_bytes(b"hours of work")

    s = Server(ui_ws)
    post = {"Content-Type": "application/json"}
    try:
        code, body = s.get("/api/train/y_Quick96/preview")
        assert code == 403 and b"root:" not in json.dumps(body).encode()
        for route in ("/api/train/z_Quick96/preview", "/api/train/z_Quick96/live"):
            code, body = s.get(route)
            assert code in (403, 404) and "12345" not in json.dumps(body) and "secret" not in str(body)
        assert "z_Quick96" not in [m["folder"] for m in s.get("/api/status")[1]["models"]]
        for name in ("../../secret/outside", "..", "a/../../secret/outside", "x\n"):
            code, body = s.get("/api/train/options?model=saehd&name=" + urllib.parse.quote(name))
            assert code == 400 and "model name" in body["error"] and "999" not in json.dumps(body)
        assert s.get("/api/train/..%2F..%2Fsecret%2Foutside_SAEHD/live")[0] == 404
        assert s.get("/api/file?path=result.mp4")[0] == 404  # the route is gone: the page never used it

        code, body = s.get("/api/faces/src/empty.jpg?debug=1")
        assert code == 422 and "empty.jpg is empty" in body["error"]
        for wrong in (b"[]", b'"names"', b"{not json", b'{"names": "00001_0.jpg"}', b'{"names": [[1]]}'):
            code, body = s.get("/api/faces/src/delete", post, wrong)
            assert 400 <= code < 500 and body["error"], (wrong, code, body)
        code, body = s.get("/api/train/start", post, b'{"model": 5}')
        assert code == 400 and "model must be" in body["error"]
        start = b'{"model": "quick96", "name": "a", "save_every_min": "9"}'
        code, body = s.get("/api/train/start", post, start)
        assert code == 400 and "save_every_min must be" in body["error"]
        code, body = s.get("/api/video", post, b'{"overwrite": "false"}')  # a string is not a yes
        assert code == 400 and "overwrite must be yes or no" in body["error"]
        assert (ui_ws / "result.mp4").read_bytes() == b"hours of work"

        # Over 10 MB: refused from its Content-Length before it is read, or as it streams in.
        start = time.time()
        code, body = s.get("/api/faces/src/delete", post | {"Content-Length": str(1 << 30)}, b"{}")
        assert code == 413 and "limit" in body["error"] and time.time() - start < 5
        conn = http.client.HTTPConnection("127.0.0.1", s.port, timeout=30)
        chunks = (b" " * (1 << 20) for _ in range(40))
        conn.request("POST", "/api/faces/src/delete", body=chunks, headers=post, encode_chunked=True)
        assert conn.getresponse().status == 413
        conn.close()
        assert s.get("/api/status")[0] == 200 and s.proc.poll() is None
        assert len(s.get("/api/faces/src")[1]["faces"]) == 87  # 86 faces and the empty file, none moved
    finally:
        s.stop()


def test_a_restarted_server_still_shows_the_jobs_that_run(ui_ws: Path):
    """Jobs outlive the server; the next server lists them as running, and as ended once they stop."""
    post = {"Content-Type": "application/json"}
    first = Server(ui_ws)
    try:
        code, job = first.get(
            "/api/train/start", post, json.dumps({"model": "quick96", "name": "bg"}).encode()
        )
        assert code == 200 and job["running"], job
    finally:
        first.stop()
    second = Server(ui_ws)
    try:
        code, body = second.get("/api/jobs")
        assert [(j["command"], j["running"]) for j in body["jobs"]] == [("train", True)]
        record = json.loads(next((ui_ws / ".facelab-ui" / "jobs").glob("*-train.json")).read_text())
        saved = ui_ws / "model" / "bg_Quick96" / "state.json"  # its first save: the loop (and its SIGTERM
        _wait(saved.exists, 180, "the first save")  # handler) runs; before that SIGTERM just kills it
        os.kill(record["pid"], signal.SIGTERM)  # the trainer saves and exits
        _wait(lambda: not second.get("/api/jobs")[1]["jobs"][0]["running"], 120, "the trainer to stop")
        ended = second.get("/api/jobs")[1]["jobs"][0]
        assert ended["exit_code"] == 0  # not this server's child, but its events file says how it ended
        time.sleep(1.5)
        assert second.get("/api/jobs")[1]["jobs"][0]["seconds"] == ended["seconds"]  # its run time, fixed
    finally:
        second.stop()


def test_xseg_editor_labels_a_face_and_trains_from_the_page(server: Server, ui_ws: Path, page):
    """Draw an include and an exclude polygon by clicks, undo one point, save, reload: the polygons are
    in the face's metadata. Then train XSeg as a job from the page and see its preview appear."""
    import numpy as np

    from facelab.faces import meta

    page.goto(server.url + "#xseg")
    page.wait_for_function("document.querySelector('#xs-name').textContent.includes('(1 /')")
    first = sorted((ui_ws / "data_dst" / "aligned").glob("*.jpg"))[0]
    size = meta.read(first).size
    canvas = page.locator("#xs-canvas")
    box = canvas.bounding_box()
    k = box["width"] / size  # screen pixels per face pixel

    def click(x: float, y: float) -> None:
        canvas.click(position={"x": x * k, "y": y * k})

    for x, y in ((40, 40), (216, 40), (216, 216), (40, 216)):
        click(x, y)
    page.keyboard.press("Enter")
    page.keyboard.press("w")  # exclude mode
    for x, y in ((100, 100), (160, 100), (160, 160), (60, 200)):
        click(x, y)
    page.keyboard.press("Control+z")  # the last point goes
    page.keyboard.press("Enter")
    page.wait_for_function("document.querySelector('#xs-polys').textContent === '2 polygons'")
    _shot(page, "xseg-editor")
    page.keyboard.press("s")
    page.wait_for_function("document.querySelector('#xs-saved').textContent.startsWith('saved')")
    stored = meta.read(first).polygons
    assert [p.include for p in stored] == [True, False]
    assert [len(p.points) for p in stored] == [4, 3]
    assert np.abs(stored[0].points[2] - [216, 216]).max() < 1
    assert np.abs(stored[1].points[1] - [160, 100]).max() < 1
    page.reload()
    page.wait_for_function("document.querySelector('#xs-polys').textContent === '2 polygons'")
    assert page.locator("#xs-strip img.labelled").count() == 1

    page.fill("#xs-train-res", "64")
    page.fill("#xs-train-iter", "2")
    page.click("#xs-train")
    page.wait_for_function("document.querySelector('#xs-preview').naturalWidth > 0", timeout=240_000)
    assert (ui_ws / "model" / "xseg_XSeg" / "preview.jpg").exists()
    _shot(page, "xseg-trained")
    page.wait_for_function("document.querySelector('#xs-model').value === 'xseg_XSeg'")
    page.click("#xs-propose")  # the least certain unlabelled faces, by the new model's predictions
    page.wait_for_function("document.querySelectorAll('#xs-proposals button').length === 8", timeout=120_000)
    texts = page.locator("#xs-proposals button").all_inner_texts()
    doubts = [float(t.rsplit("(", 1)[1].rstrip(")")) for t in texts]
    assert doubts == sorted(doubts, reverse=True) and doubts[0] > 0
    proposed = texts[0].split(" ")[0]
    page.locator("#xs-proposals button").first.click()
    page.wait_for_function(f"document.querySelector('#xs-name').textContent.startsWith('{proposed}')")
