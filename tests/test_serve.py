"""bilayer serve: the web app's API (avatars, animation jobs, the live WebSocket, upload limits and refusals) and the
page itself in a real browser (Debian's chromium, headless, its webcam faked from a real talking-head clip)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import av
import cv2
import numpy as np
import pytest

pytest.importorskip("fastapi")

from fastapi.testclient import TestClient  # noqa: E402

from bilayer.serve.app import create_app  # noqa: E402

from tools.browser import MISSING, have_chromium, headless_chromium, write_y4m  # noqa: E402

from .conftest import material  # noqa: E402

ASSET = Path(__file__).resolve().parents[1] / "assets" / "synth-quick"


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    app = create_app(ASSET, max_upload_bytes=2 * 2**20, work_dir=tmp_path_factory.mktemp("serve"))
    with TestClient(app) as c:
        yield c


@pytest.fixture(scope="module")
def avatar_id(client):
    with open(material("grace_hopper.jpg"), "rb") as f:
        r = client.post("/api/avatars", files={"photo": ("grace_hopper.jpg", f, "image/jpeg")})
    assert r.status_code == 200, r.text
    return r.json()["id"]


def _wait_job(client, job_id: str, seconds: float = 120) -> dict:
    deadline = time.time() + seconds
    while time.time() < deadline:
        s = client.get(f"/api/animations/{job_id}").json()
        if s["state"] != "running":
            return s
        time.sleep(0.2)
    raise AssertionError(f"animation {job_id} still running after {seconds} s")


def _short_driver(path: Path, frames: int = 20) -> Path:
    """The first frames of the franck clip (a real talking head) as an mp4."""
    with av.open(str(material("franck.mp4"))) as src, av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = 360, 288, "yuv420p"
        for i, frame in enumerate(src.decode(video=0)):
            if i == frames:
                break
            out.mux(stream.encode(av.VideoFrame.from_ndarray(frame.to_ndarray(format="rgb24"), format="rgb24")))
        out.mux(stream.encode())
    return path


# ------------------------------------------------------------------------------------------------ API
def test_an_avatar_from_a_photo_with_its_crop_and_mask(client, avatar_id):
    crop = client.get(f"/api/avatars/{avatar_id}/crop.png")
    mask = client.get(f"/api/avatars/{avatar_id}/mask.png")
    assert crop.headers["content-type"] == mask.headers["content-type"] == "image/png"
    image = cv2.imdecode(np.frombuffer(crop.content, np.uint8), cv2.IMREAD_COLOR)
    m = cv2.imdecode(np.frombuffer(mask.content, np.uint8), cv2.IMREAD_GRAYSCALE)
    assert image.shape == (128, 128, 3) and m.shape == (128, 128)
    assert 0.1 < (m > 127).mean() < 0.95  # a person, not the whole crop
    assert client.get(f"/api/avatars/{avatar_id}/other.png").status_code == 404


@pytest.mark.parametrize("name, data, status, needle", [
    ("notes.txt", b"hello", 400, "notes.txt is not a photo"),
    ("broken.jpg", b"hello", 400, "broken.jpg"),
    ("empty.png", b"", 400, "empty.png is empty"),
    ("huge.png", b"0" * (3 * 2**20), 413, "larger than the 2 MiB upload limit"),
])
def test_bad_photos_are_one_sentence(client, name, data, status, needle):
    r = client.post("/api/avatars", files={"photo": (name, data, "application/octet-stream")})
    assert r.status_code == status
    message = r.json()["error"]
    assert needle in message and message.endswith(".") and "\n" not in message and "Traceback" not in message


def test_a_photo_without_a_face_is_one_sentence(client, tmp_path):
    ok, png = cv2.imencode(".png", np.full((200, 200, 3), 128, np.uint8))
    r = client.post("/api/avatars", files={"photo": ("grey.png", png.tobytes(), "image/png")})
    assert r.status_code == 400 and "no face found in grey.png" in r.json()["error"]


def test_refused_uploads_leave_no_folder_behind(tmp_path):
    """A refused photo or video (refused by its name, by its content, or by its options) is answered with its
    sentence and its upload folder is removed."""
    work = tmp_path / "work"
    app = create_app(ASSET, max_upload_bytes=2 * 2**20, work_dir=work)
    ok, grey = cv2.imencode(".png", np.full((200, 200, 3), 128, np.uint8))
    with TestClient(app) as c:
        for name, data in (("notes.txt", b"hello"), ("broken.jpg", b"hello"), ("grey.png", grey.tobytes())):
            assert c.post("/api/avatars", files={"photo": (name, data, "image/png")}).status_code == 400
        with open(material("grace_hopper.jpg"), "rb") as f:
            made = c.post("/api/avatars", files={"photo": ("grace_hopper.jpg", f, "image/jpeg")}).json()["id"]
        for form, name in (({}, "d.txt"), ({"alpha": "true", "paste_back": "true"}, "d.mp4")):
            r = c.post("/api/animations", data={"avatar": made, **form}, files={"driver": (name, b"xx", "video/mp4")})
            assert r.status_code == 400 and r.json()["error"].endswith(".")
        assert [f.name for f in (work / "avatars").iterdir()] == [made]
        assert not list((work / "animations").iterdir())


def test_an_animation_job_reports_progress_and_serves_the_video(client, avatar_id, tmp_path):
    driver = _short_driver(tmp_path / "driver.mp4")
    with open(driver, "rb") as f:
        r = client.post("/api/animations", data={"avatar": avatar_id, "side_by_side": "true"},
                        files={"driver": ("driver.mp4", f, "video/mp4")})
    assert r.status_code == 200, r.text
    s = _wait_job(client, r.json()["id"])
    assert s["state"] == "done" and s["frames"] == s["total"] == 20 and s["error"] is None
    video = client.get(s["result"])
    assert video.status_code == 200 and video.headers["content-type"] == "video/mp4"
    out = tmp_path / "result.mp4"
    out.write_bytes(video.content)
    with av.open(str(out)) as c:
        stream = c.streams.video[0]
        assert sum(1 for _ in c.decode(video=0)) == 20
        assert stream.width > stream.height  # the driver beside the avatar


def test_animation_refusals(client, avatar_id):
    r = client.post("/api/animations", data={"avatar": "nobody"}, files={"driver": ("d.mp4", b"x", "video/mp4")})
    assert r.status_code == 404 and "there is no avatar 'nobody'" in r.json()["error"]
    r = client.post("/api/animations", data={"avatar": avatar_id}, files={"driver": ("d.txt", b"x", "text/plain")})
    assert r.status_code == 400 and "d.txt is not a video" in r.json()["error"]
    r = client.post("/api/animations", data={"avatar": avatar_id, "alpha": "true", "paste_back": "true"},
                    files={"driver": ("d.mp4", b"xx", "video/mp4")})
    assert r.status_code == 400 and "--alpha" in r.json()["error"]
    r = client.post("/api/animations", data={"avatar": avatar_id}, files={"driver": ("d.mp4", b"xx", "video/mp4")})
    job = _wait_job(client, r.json()["id"])
    assert job["state"] == "failed" and "d.mp4" in job["error"] and job["error"].endswith(".")
    assert client.get("/api/animations/unknown").status_code == 404


def test_the_live_socket_answers_webcam_frames_with_avatar_frames(client, avatar_id):
    capture = cv2.VideoCapture(str(material("franck.mp4")))
    frames, texts = 0, []
    with client.websocket_connect(f"/api/live/{avatar_id}") as ws:
        ws.send_text(json.dumps({"recenter": True}))
        for _ in range(30):
            ok, image = capture.read()
            assert ok
            ws.send_bytes(cv2.imencode(".jpg", image)[1].tobytes())
            time.sleep(0.03)
        deadline = time.time() + 20
        while (frames < 5 or not any(t.get("rendered", 0) >= 1 for t in texts)) and time.time() < deadline:
            message = ws.receive()
            if message.get("bytes"):
                assert message["bytes"][:2] == b"\xff\xd8"
                frames += 1
            elif message.get("text"):
                texts.append(json.loads(message["text"]))
    assert frames >= 5
    assert any(t.get("rendered", 0) >= 1 and t["source"] == "browser webcam" for t in texts)  # the session's figures


def test_the_live_socket_names_an_unknown_avatar(client):
    with client.websocket_connect("/api/live/nobody") as ws:
        assert "there is no avatar 'nobody'" in json.loads(ws.receive_text())["error"]


def test_the_page_needs_nothing_from_the_internet(client):
    page = client.get("/").text
    for asset in ("/static/app.js", "/static/style.css"):
        assert asset in page and client.get(asset).status_code == 200
    combined = page + client.get("/static/app.js").text + client.get("/static/style.css").text
    assert "https://" not in combined and "http://" not in combined and "//cdn" not in combined


def test_serve_refusals(capsys, tmp_path):
    from bilayer.cli import main

    from .conftest import assert_user_error_text, run_main

    code, _, err = run_main(main, capsys, "serve", "--model", str(tmp_path / "none"))
    assert_user_error_text(code, err, "model folder", "does not exist")
    code, _, err = run_main(main, capsys, "serve", "--model", str(ASSET), "--port", "70000")
    assert_user_error_text(code, err, "--port is 70000")


# ------------------------------------------------------------------------------------------------ browser
@pytest.fixture(scope="module")
def server(serve_url):
    return serve_url


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    if not have_chromium():
        pytest.skip(MISSING)
    folder = tmp_path_factory.mktemp("browser")
    camera = write_y4m(material("franck.mp4"), folder / "camera.y4m")
    with headless_chromium(folder / "profile", camera=camera, window=(1100, 900)) as driver:
        yield driver


def _wait(condition, seconds: float = 60, step: float = 0.2):
    deadline = time.time() + seconds
    while time.time() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(step)
    raise AssertionError("timed out waiting for the page")


@pytest.mark.slow
def test_in_a_browser_photo_then_video_then_webcam(server, browser, tmp_path):
    from selenium.webdriver.common.by import By

    b = browser
    b.get(server)
    assert b.title.startswith("bilayer")
    b.find_element(By.ID, "photo").send_keys(str(material("grace_hopper.jpg")))
    b.find_element(By.ID, "make-avatar").click()
    _wait(lambda: b.find_element(By.TAG_NAME, "body").get_attribute("data-avatar"))
    _wait(lambda: b.execute_script("return document.getElementById('crop').naturalWidth") == 128)
    assert "avatar ready" in b.find_element(By.ID, "avatar-status").text

    b.find_element(By.ID, "tab-animate").click()
    driver = _short_driver(tmp_path / "driver.mp4", frames=25)
    b.find_element(By.ID, "driver").send_keys(str(driver))
    b.find_element(By.ID, "start-animation").click()
    result = _wait(lambda: b.find_element(By.TAG_NAME, "body").get_attribute("data-result"), seconds=120)
    assert result.endswith("result.mp4")
    _wait(lambda: b.execute_script("return document.getElementById('result-video').readyState") >= 1)
    assert "done: 25 frames" in b.find_element(By.ID, "animate-status").text

    b.find_element(By.ID, "tab-live").click()
    b.find_element(By.ID, "live-start").click()
    _wait(lambda: int(b.find_element(By.TAG_NAME, "body").get_attribute("data-live-frames") or 0) >= 10, seconds=90)
    _wait(lambda: "frames/s" in b.find_element(By.ID, "live-status").text, seconds=30)
    assert b.execute_script("return document.getElementById('live-view').naturalWidth") == 128
    b.find_element(By.ID, "live-stop").click()
    shot = tmp_path / "live.png"
    b.save_screenshot(str(shot))
    assert shot.stat().st_size > 10_000


@pytest.mark.slow
def test_in_a_browser_a_bad_photo_shows_one_sentence(server, browser, tmp_path):
    from selenium.webdriver.common.by import By

    bad = tmp_path / "holiday.jpg"
    bad.write_bytes(b"not a picture")
    browser.get(server)
    browser.find_element(By.ID, "photo").send_keys(str(bad))
    browser.find_element(By.ID, "make-avatar").click()
    status = _wait(lambda: browser.find_element(By.ID, "avatar-status").text if "holiday.jpg" in
                   browser.find_element(By.ID, "avatar-status").text else None, seconds=30)
    assert status.endswith(".") and "error" in browser.find_element(By.ID, "avatar-status").get_attribute("class")


def test_stream_sockets_name_an_unknown_stream(client):
    for role in ("send", "watch"):
        with client.websocket_connect(f"/api/streams/nobody/{role}") as ws:
            assert "there is no stream 'nobody'" in json.loads(ws.receive_text())["error"]
    r = client.post("/api/streams/a%20b/avatar", content=b"x", headers={"X-Bilayer-Size": "128"})
    assert r.status_code == 400 and "stream name 'a b' must be 1 to 64 letters" in r.json()["error"]
