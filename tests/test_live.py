"""bilayer live: sources played in real time, newest-wins hand-over, a session that never queues, its outputs,
the local page, and the command's refusals. Real video files, a real HTTP stream, real MediaPipe tracking."""

from __future__ import annotations

import json
import threading
import time
import urllib.request
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import av
import numpy as np
import pytest
import torch

from bilayer.live import Latest, LiveError, LiveSession, PushSource, open_live_source
from bilayer.live.outputs import FileOutput, FrameHub
from bilayer.live.session import RenderedFrame
from bilayer.live.web import LiveWeb

from .conftest import assert_user_error_text, material, run_main

ASSET = Path(__file__).resolve().parents[1] / "assets" / "synth-quick"


def _clip(path: Path, frames: int = 25, fps: int = 25, size: int = 64) -> Path:
    """A small H.264 clip (MP4, or MPEG-TS for a .ts name) whose frame i is filled with grey level 8 * i (to tell
    frames apart)."""
    with av.open(str(path), "w", format="mpegts" if path.suffix == ".ts" else None) as out:
        stream = out.add_stream("libx264", rate=fps)
        stream.width = stream.height = size
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": "10"}
        for i in range(frames):
            image = np.full((size, size, 3), min(255, 8 * i), np.uint8)
            out.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        out.mux(stream.encode())
    return path


# ------------------------------------------------------------------------------------------------ mailbox
def test_latest_keeps_the_newest_and_counts_what_it_replaced():
    box = Latest()
    assert box.get(timeout=0.01) is None
    for i in range(5):
        box.put(i)
    assert box.get() == 4 and box.dropped == 4
    assert box.get(timeout=0.01) is None  # nothing newer
    box.put(5)
    box.close()
    assert box.get() == 5 and box.get() is None  # what is left, then the end


def test_latest_wakes_a_waiting_reader():
    box = Latest()
    got = []
    reader = threading.Thread(target=lambda: got.append(box.get(timeout=5)))
    reader.start()
    time.sleep(0.05)
    box.put("frame")
    reader.join(5)
    assert got == ["frame"]


# ------------------------------------------------------------------------------------------------ sources
def test_a_file_plays_at_its_own_frame_rate(tmp_path):
    clip = _clip(tmp_path / "clip.mp4", frames=25, fps=25)
    with open_live_source(str(clip)) as source:
        assert source.kind == "file" and source.fps == 25 and source.size == (64, 64)
        start = time.perf_counter()
        frames = list(source.frames(threading.Event()))
        elapsed = time.perf_counter() - start
    assert [f.index for f in frames] == list(range(25))
    assert elapsed >= 0.9 * 24 / 25  # delivered at their times, not as fast as they decode
    arrivals = np.diff([f.time for f in frames])
    assert np.median(arrivals) > 0.02
    levels = [int(f.image.mean()) for f in frames]
    assert levels == sorted(levels) and frames[0].image.shape == (64, 64, 3)


def test_a_looped_file_goes_on_with_later_timestamps(tmp_path):
    clip = _clip(tmp_path / "clip.mp4", frames=5, fps=25)
    stop = threading.Event()
    with open_live_source(str(clip), loop=True) as source:
        frames = []
        for frame in source.frames(stop):
            frames.append(frame)
            if len(frames) == 12:
                stop.set()
    assert len(frames) == 12
    levels = [int(round(f.image.mean() / 8)) for f in frames]
    assert levels[:7] == [0, 1, 2, 3, 4, 0, 1]
    assert frames[11].time - frames[0].time >= 0.9 * 11 / 25  # the second pass is paced on from the first


def test_a_file_played_at_another_rate(tmp_path):
    clip = _clip(tmp_path / "clip.mp4", frames=10, fps=5)  # 2 s at its own rate
    with open_live_source(str(clip), rate=50) as source:
        assert source.fps == 50
        start = time.perf_counter()
        frames = list(source.frames(threading.Event()))
        elapsed = time.perf_counter() - start
    assert len(frames) == 10 and 0.9 * 9 / 50 <= elapsed < 1.5  # 0.18 s at 50 frames/s, not 1.8 s
    with pytest.raises(LiveError, match="only for a video file"):
        open_live_source("http://127.0.0.1:9/x.ts", rate=30)


def test_a_network_stream_over_http(tmp_path):
    clip = _clip(tmp_path / "clip.ts", frames=10, fps=25)  # MPEG-TS, the usual live container
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(SimpleHTTPRequestHandler, directory=str(tmp_path)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/{clip.name}"
        with open_live_source(url) as source:
            assert source.kind == "stream"
            frames = list(source.frames(threading.Event()))
        assert len(frames) == 10 and frames[-1].time - frames[0].time >= 0.9 * 9 / 25
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize("spec, needle", [
    ("/dev/video97", "no camera at /dev/video97"),
    ("camera:97", "no camera at /dev/video97"),
    ("ftp://example.org/x.mp4", "not a video stream protocol"),
    ("missing.mp4", "is not a camera, a stream URL or an existing video file"),
    ("", "the live source is empty"),
])
def test_bad_sources_are_one_sentence(spec, needle):
    with pytest.raises(LiveError) as info:
        open_live_source(spec)
    assert needle in str(info.value) and str(info.value).endswith(".") and "\n" not in str(info.value)


def test_a_file_that_is_not_a_video_is_one_sentence(tmp_path):
    bad = tmp_path / "notes.mp4"
    bad.write_text("not a video")
    with pytest.raises(LiveError, match=r"cannot open video .*notes\.mp4"):
        open_live_source(str(bad))


def test_pushed_frames_newest_first():
    source = PushSource()
    for level in (10, 20, 30):
        source.push(np.full((8, 8, 3), level, np.uint8))
    stop = threading.Event()
    frames = source.frames(stop)
    assert next(frames).image[0, 0, 0] == 30 and source.dropped == 2
    source.close()
    assert list(frames) == []
    with pytest.raises(LiveError, match="H×W×3 RGB uint8"):
        source.push(np.zeros((8, 8), np.uint8))


# ------------------------------------------------------------------------------------------------ session
class _StubAvatar:
    """What LiveSession reads of an avatar: its size and the photo's keypoints in the crop."""

    def __init__(self, size: int = 64) -> None:
        from bilayer.vision.crop import CropBox

        rng = np.random.default_rng(0)
        self.size = size
        self.source_keypoints = (rng.uniform(0.3, 0.7, (68, 2)) * size).astype(np.float32)
        self.box = CropBox(size / 2, size / 2, size / 2)


class _SlowRenderer:
    name = "slow"

    def __init__(self, seconds: float) -> None:
        self.seconds, self.calls = seconds, 0

    def __call__(self, keypoints: torch.Tensor):
        self.calls += 1
        time.sleep(self.seconds)
        b = keypoints.shape[0]
        return torch.zeros(b, 3, 64, 64), torch.ones(b, 1, 64, 64)


def _face_tracker(image, seconds):
    """A tracker that finds one fixed face (the session's logic, not MediaPipe's, is under test here)."""
    rng = np.random.default_rng(1)
    return (rng.uniform(0.3, 0.7, (68, 2)) * 64).astype(np.float32)


def test_a_slow_renderer_drops_frames_and_the_latency_does_not_grow(tmp_path):
    clip = _clip(tmp_path / "clip.mp4", frames=50, fps=25)  # 2 s
    renderer = _SlowRenderer(0.1)  # 10 frames/s for a 25 frames/s source
    with open_live_source(str(clip)) as source:
        session = LiveSession(_StubAvatar(), renderer, source, _face_tracker)
        report = session.run()
    assert report.captured == 50 and report.rendered == renderer.calls
    assert report.rendered < 40 and report.dropped_before_rendering >= 10
    assert report.captured == report.dropped_before_tracking + report.tracked
    # a queue would make the last frame about 3 s late; the newest-wins hand-over keeps it to a frame or two
    assert report.latency_ms[-1] < 1500 and max(report.latency_ms) < 1500
    d = report.to_dict()
    assert d["latency_ms"]["p95"] >= d["latency_ms"]["median"] >= 100  # each frame waits for its render
    assert "frames/s" in report.summary() and "dropped" in report.summary()


def test_no_face_renders_nothing_until_one_appears(tmp_path):
    clip = _clip(tmp_path / "clip.mp4", frames=20, fps=50)
    seen = []

    def tracker(image, seconds):
        seen.append(seconds)
        return None if len(seen) <= 5 else _face_tracker(image, seconds)

    with open_live_source(str(clip)) as source:
        report = LiveSession(_StubAvatar(), _SlowRenderer(0.0), source, tracker).run()
    assert report.no_face == 5 and report.rendered >= 1 and report.tracked == report.captured - 5 \
        - report.dropped_before_tracking


def test_the_session_stops_after_max_frames_and_outputs_get_every_frame(tmp_path):
    clip = _clip(tmp_path / "clip.mp4", frames=50, fps=50)
    got = []

    class Collect:
        def write(self, frame: RenderedFrame) -> None:
            got.append(frame)

    with open_live_source(str(clip)) as source:
        session = LiveSession(_StubAvatar(), _SlowRenderer(0.0), source, _face_tracker, side=True,
                              outputs=(Collect(),))
        report = session.run(max_frames=7)
    assert report.rendered == 7 and len(got) == 7
    assert got[0].image.shape == (64, 128, 3) and got[0].keypoints.shape == (136,)  # camera next to the avatar


def test_an_error_in_a_stage_reaches_the_caller(tmp_path):
    clip = _clip(tmp_path / "clip.mp4", frames=10, fps=50)

    def broken(image, seconds):
        raise RuntimeError("tracker failed")

    with open_live_source(str(clip)) as source, pytest.raises(RuntimeError, match="tracker failed"):
        LiveSession(_StubAvatar(), _SlowRenderer(0.0), source, broken).run()


# ------------------------------------------------------------------------------------------------ outputs
def test_file_output_plays_in_real_time_holding_the_last_frame_over_drops(tmp_path):
    out = FileOutput(tmp_path / "rec.mp4", fps=10)
    for i, t in enumerate((0.0, 0.1, 0.5, 0.6)):  # frames at 0.2-0.4 s were dropped
        image = np.full((32, 32, 3), 60 * i, np.uint8)
        out.write(RenderedFrame(i, 100.0 + t, image, np.zeros(136, np.float32), image))
    out.close()
    with av.open(str(tmp_path / "rec.mp4")) as c:
        levels = [int(round(f.to_ndarray(format="rgb24").mean())) for f in c.decode(video=0)]
    assert len(levels) == 7
    assert [round(v / 60) for v in levels] == [0, 1, 1, 1, 1, 2, 3]


def test_the_page_serves_frames_stats_and_recentre():
    hub = FrameHub()
    recentred = []
    web = LiveWeb(hub, lambda: {"rendered": 3, "fps": 24.0}, lambda: recentred.append(1), port=0)
    try:
        image = np.zeros((16, 16, 3), np.uint8)
        hub.write(RenderedFrame(0, 0.0, image, np.zeros(136, np.float32), image))
        page = urllib.request.urlopen(web.url, timeout=5).read().decode()
        assert 'src="/stream.mjpg"' in page and "http://" not in page and "https://" not in page  # nothing remote
        assert json.loads(urllib.request.urlopen(web.url + "stats", timeout=5).read()) == {"rendered": 3, "fps": 24.0}
        jpeg = urllib.request.urlopen(web.url + "frame.jpg", timeout=5).read()
        assert jpeg[:2] == b"\xff\xd8"
        with urllib.request.urlopen(web.url + "stream.mjpg", timeout=5) as stream:
            assert stream.headers["Content-Type"].startswith("multipart/x-mixed-replace")
            head = stream.read(64)
            assert head.startswith(b"--frame\r\nContent-Type: image/jpeg")
        urllib.request.urlopen(urllib.request.Request(web.url + "recenter", method="POST"), timeout=5).read()
        assert recentred == [1]
        assert web.url.startswith("http://127.0.0.1:")
    finally:
        hub.close()
        web.close()


# ------------------------------------------------------------------------------------------------ command
def test_live_command_records_a_real_talking_head(tmp_path, capsys):
    from bilayer.cli import main

    out, report = tmp_path / "live.mp4", tmp_path / "live.json"
    code, stdout, _ = run_main(main, capsys, "live", "--model", str(ASSET), "--source",
                               str(material("grace_hopper.jpg")), "--driver", str(material("franck.mp4")),
                               "--out", str(out), "--seconds", "3", "--report", str(report), "--no-progress")
    assert code == 0 and "frames rendered" in stdout
    data = json.loads(report.read_text())
    assert data["rendered"] >= 10 and data["no_face"] < data["captured"] and data["latency_ms"]["median"] > 0
    with av.open(str(out)) as c:
        stream = c.streams.video[0]
        frames = sum(1 for _ in c.decode(video=0))
        assert (stream.width, stream.height) == (128, 128)
    # real time: about as many frames as the seconds the session rendered, whatever it dropped
    assert frames >= data["rendered"] and frames <= 3.5 * float(stream.average_rate)


@pytest.mark.parametrize("extra, needle", [
    ([], "give at least one output"),
    (["--out", "DRIVER"], "is the live source itself"),
    (["--web", "host:port"], "is not [HOST:]PORT"),
    (["--out", "x.mp4", "--seconds", "0"], "--seconds is 0"),
    (["--virtual-camera"], "v4l2loopback"),
    (["--out", "x.avi"], "x.avi"),
])
def test_live_refusals_are_one_sentence_and_write_nothing(tmp_path, capsys, monkeypatch, extra, needle):
    from bilayer.cli import main

    monkeypatch.chdir(tmp_path)
    driver = _clip(tmp_path / "driver.mp4", frames=3)
    extra = [str(driver) if e == "DRIVER" else e for e in extra]
    before = sorted(p.name for p in tmp_path.iterdir())
    code, out, err = run_main(main, capsys, "live", "--model", str(ASSET), "--source",
                              str(material("grace_hopper.jpg")), "--driver", str(driver), *extra)
    assert_user_error_text(code, err, needle)
    assert out == "" and sorted(p.name for p in tmp_path.iterdir()) == before


def test_live_refuses_a_missing_camera(tmp_path, capsys):
    from bilayer.cli import main

    code, out, err = run_main(main, capsys, "live", "--model", str(ASSET), "--source",
                              str(material("grace_hopper.jpg")), "--driver", "/dev/video97", "--out",
                              str(tmp_path / "x.mp4"))
    assert_user_error_text(code, err, "no camera at /dev/video97")
    assert not (tmp_path / "x.mp4").exists()


def test_the_live_backend_on_this_cpu():
    from bilayer.hardware import native_bfloat16
    from bilayer.live.app import choose_backend, render_device

    backend, why = choose_backend("auto")
    if not torch.cuda.is_available():
        assert backend == ("bf16" if native_bfloat16() else "eager") and why
        assert render_device(backend) == "cpu"
    assert choose_backend("int8") == ("int8", None) and render_device("int8") == "cpu"
