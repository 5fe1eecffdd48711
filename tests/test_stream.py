"""Keypoint streaming: the wire format, the relay in bilayer serve, a Python receiver and the browser receiver
(ONNX Runtime Web in headless Chromium) checked against the Python renderer."""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from bilayer.live.wire import (MESSAGE_BYTES, KeypointReceiver, KeypointSender, avatar_graph, decode_keypoints,
                               encode_keypoints, quantize)

from .conftest import material

ASSET = Path(__file__).resolve().parents[1] / "assets" / "synth-quick"


def test_a_frame_is_284_bytes_and_round_trips_to_a_hundredth_of_a_pixel():
    rng = np.random.default_rng(0)
    kp = rng.uniform(-1.3, 1.3, 136).astype(np.float32)
    message = encode_keypoints(kp, 7, 1234)
    assert len(message) == MESSAGE_BYTES == 284
    index, millis, back, no_face = decode_keypoints(message)
    assert (index, millis, no_face) == (7, 1234, False)
    assert np.abs(back - kp).max() <= 2.0 / 65535 + 1e-7  # half a step over [-2, 2]
    assert np.abs(back - kp).max() * 128 < 0.01  # in pixels of a 256-px crop (half-width 128)
    assert decode_keypoints(encode_keypoints(kp, 1, 2, no_face=True))[3] is True
    assert np.array_equal(quantize(np.full(136, 5.0)), np.full(136, 2.0, np.float32))  # clipped to the range


@pytest.mark.parametrize("message, needle", [(b"", "284 bytes"), (b"XX" + bytes(282), "not a version-1")])
def test_what_is_not_a_frame_is_refused(message, needle):
    with pytest.raises(ValueError, match=needle):
        decode_keypoints(message)


def test_bad_keypoints_are_refused():
    with pytest.raises(ValueError, match="136 finite values"):
        encode_keypoints(np.full(136, np.nan), 0, 0)


@pytest.fixture(scope="module")
def avatar_and_model():
    from bilayer import BilayerModel
    from bilayer.runtime.avatar import Avatar

    model = BilayerModel.from_pretrained(ASSET).eval()
    return Avatar.create(model, str(material("grace_hopper.jpg"))), model


@pytest.fixture(scope="module")
def server(serve_url):
    return serve_url


def _reference(avatar, model, kp: np.ndarray) -> np.ndarray:
    """What the receiver should show: the Python renderer's image on black by its mask, as uint8."""
    with torch.inference_mode():
        image, mask = avatar.bake(model)(torch.from_numpy(kp)[None])
    out = (image[0].clamp(-1, 1) + 1) * 127.5 * mask[0].clamp(0, 1)
    return out.round().byte().permute(1, 2, 0).numpy()


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else 10 * np.log10(255**2 / mse)


def test_the_relay_carries_the_avatar_once_and_keypoints_to_a_python_receiver(server, avatar_and_model):
    avatar, model = avatar_and_model
    graph = avatar_graph(avatar, model)
    sender = KeypointSender(server, "python", graph, avatar.size)
    receiver = KeypointReceiver(server, "python")
    assert receiver.info["size"] == 128
    from bilayer.live.session import RenderedFrame

    kp = avatar.source_keypoints_normalized.reshape(-1).astype(np.float32)
    received = []
    for i in range(3):
        sender.write(RenderedFrame(i, time.perf_counter(), None, kp + 0.01 * i, None))
        received.extend(receiver.frames(1))
    assert [r[0] for r in received] == [0, 1, 2]
    index, got_kp, image, mask = received[-1]
    assert np.abs(got_kp - (kp + 0.02)).max() < 1e-4
    shown = ((np.clip(image, -1, 1) + 1) * 127.5 * np.clip(mask, 0, 1)).round().astype(np.uint8).transpose(1, 2, 0)
    assert _psnr(shown, _reference(avatar, model, quantize(kp + 0.02))) > 45
    assert sender.bytes_sent == 3 * 284 and sender.avatar_bytes == len(graph)
    sender.close()
    receiver.close()


def test_relay_refusals(server):
    import urllib.error
    import urllib.request

    from bilayer.live import LiveError

    request = urllib.request.Request(server + "api/streams/bad/avatar", data=b"not onnx", method="POST",
                                     headers={"X-Bilayer-Size": "128"})
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(request, timeout=10)
    assert info.value.code == 400 and "not a per-frame bilayer ONNX graph" in json.loads(info.value.read())["error"]
    with pytest.raises(LiveError, match="refused the avatar: the avatar is not a per-frame bilayer ONNX graph"):
        KeypointSender(server, "bad", b"not onnx", 128)
    with pytest.raises(LiveError, match="cannot reach a bilayer serve app at http://127.0.0.1:9"):
        KeypointSender("http://127.0.0.1:9", "x", b"", 128, timeout=2)
    with pytest.raises(LiveError, match="is not the http:// address"):
        KeypointSender("ftp://host", "x", b"", 128)


@pytest.mark.slow
def test_the_browser_renders_the_stream_like_the_python_renderer(server, avatar_and_model, tmp_path):
    from tools.browser import MISSING, have_chromium, headless_chromium

    if not have_chromium():
        pytest.skip(MISSING)
    from bilayer.serve.app import ort_web_dir

    if not (ort_web_dir() / "ort.min.js").is_file():
        pytest.skip(f"onnxruntime-web is not in {ort_web_dir()} (`make test` fetches it from npm)")
    from bilayer.live.session import RenderedFrame

    avatar, model = avatar_and_model
    sender = KeypointSender(server, "browser", avatar_graph(avatar, model), avatar.size)
    with headless_chromium(tmp_path / "profile") as browser:
        try:
            browser.get(server + "receive?stream=browser")
            deadline = time.time() + 60
            while time.time() < deadline and not browser.execute_script("return window.bilayerStats.ready"):
                assert not browser.execute_script("return window.bilayerStats.error"), \
                    browser.execute_script("return window.bilayerStats.error")
                time.sleep(0.2)
            base = avatar.source_keypoints_normalized.reshape(-1).astype(np.float32)
            for i in range(20):
                sender.write(RenderedFrame(i, time.perf_counter(), None, base + 0.002 * i, None))
                time.sleep(0.05)
            last = base + 0.002 * 19
            deadline = time.time() + 30
            while time.time() < deadline and browser.execute_script("return window.bilayerStats.frames") < 5:
                time.sleep(0.2)
            time.sleep(1.0)  # the newest frame is the last one sent
            stats = browser.execute_script("return window.bilayerStats")
            assert stats["frames"] >= 5 and stats["bytes"] == 20 * 284 and stats["error"] is None
            data = browser.execute_script("return document.getElementById('view').toDataURL('image/png')")
            shown = cv2.cvtColor(cv2.imdecode(np.frombuffer(base64.b64decode(data.split(",", 1)[1]), np.uint8),
                                              cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
            assert shown.shape == (128, 128, 3)
            assert _psnr(shown, _reference(avatar, model, quantize(last))) > 40
        finally:
            sender.close()


def test_live_send_tracks_and_sends_without_rendering(server, capsys):
    import urllib.request

    from bilayer.cli import main

    from .conftest import run_main

    code, out, err = run_main(main, capsys, "live", "--model", str(ASSET), "--source", str(material("grace_hopper.jpg")),
                              "--driver", str(material("franck.mp4")), "--send", server, "--stream", "cli",
                              "--seconds", "2")
    assert code == 0 and "frames tracked and sent" in out, err
    assert "284 bytes a frame" in err and "receive?stream=cli" in err and "backend" not in err  # nothing rendered
    streams = {s["name"]: s for s in json.loads(urllib.request.urlopen(server + "api/streams", timeout=5).read())["streams"]}
    assert streams["cli"]["frames"] >= 10 and streams["cli"]["size"] == 128


def test_live_send_refuses_a_bad_stream_name(capsys):
    from bilayer.cli import main

    from .conftest import assert_user_error_text, run_main

    code, out, err = run_main(main, capsys, "live", "--model", str(ASSET), "--source", str(material("grace_hopper.jpg")),
                              "--driver", str(material("franck.mp4")), "--send", "http://127.0.0.1:9",
                              "--stream", "a b")
    assert_user_error_text(code, err, "--stream 'a b' must be 1 to 64 letters")
