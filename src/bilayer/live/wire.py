"""Keypoint streaming: the avatar is sent once, then each frame is only its pose — 284 bytes.

The paper's case for a per-frame network this small is telepresence: the receiving device holds the avatar and
renders it, so the sender transmits the tracked keypoints instead of video. ``bilayer live --send URL`` does this
through a ``bilayer serve`` app at URL, which relays the stream to any number of receivers (the browser page
``/receive``, which renders with ONNX Runtime Web, or ``KeypointReceiver`` in Python).

The avatar travels as its per-frame ONNX graph (``runtime.export.export_baked``: keypoints (1, 136) → image,
mask; the texture and adaptive parameters are baked in). A frame travels as one binary message::

    offset  size  field
    0       2     b"BK"
    2       1     version (1)
    3       1     flags (bit 0: no face in this frame; the receiver keeps showing the last pose)
    4       4     frame index, little-endian uint32
    8       4     milliseconds since the stream began, little-endian uint32
    12      272   136 keypoint values (the model's input, x then y for each of the 68 points, normalised to
                  the crop's [-1, 1]) as little-endian uint16 over [-2, 2]: value = -2 + 4 q / 65535

The quantisation step is 6.1e-5 of the crop's half-width (0.008 px at 256 px), far below what changes a rendered
pixel (``benchmarks/keypoint_stream.py`` measures the rendered frames against unquantised keypoints).
"""

from __future__ import annotations

import contextlib
import json
import struct
import threading
import time
import urllib.error
import urllib.parse
import urllib.request

import numpy as np

from .capture import LiveError

MAGIC, VERSION = b"BK", 1
HEADER = struct.Struct("<2sBBII")
LOW, HIGH, LEVELS = -2.0, 2.0, 65535
NUM_VALUES = 136
MESSAGE_BYTES = HEADER.size + 2 * NUM_VALUES  # 284
NO_FACE = 1


def encode_keypoints(keypoints: np.ndarray, index: int, millis: int, *, no_face: bool = False) -> bytes:
    """One frame's message (see the module docstring) for the model's (136,) keypoints."""
    kp = np.asarray(keypoints, np.float64).reshape(-1)
    if kp.shape != (NUM_VALUES,) or not np.isfinite(kp).all():
        raise ValueError(f"keypoints must be {NUM_VALUES} finite values, got shape {np.shape(keypoints)}.")
    q = np.clip(np.round((kp - LOW) / (HIGH - LOW) * LEVELS), 0, LEVELS).astype("<u2")
    return HEADER.pack(MAGIC, VERSION, NO_FACE if no_face else 0, index & 0xFFFFFFFF, millis & 0xFFFFFFFF) \
        + q.tobytes()


def decode_keypoints(message: bytes) -> tuple[int, int, np.ndarray, bool]:
    """(frame index, milliseconds, (136,) float32 keypoints, no face) from one message; ``ValueError`` for
    anything that is not one."""
    if len(message) != MESSAGE_BYTES:
        raise ValueError(f"a keypoint message is {MESSAGE_BYTES} bytes, got {len(message)}.")
    magic, version, flags, index, millis = HEADER.unpack_from(message)
    if magic != MAGIC or version != VERSION:
        raise ValueError(f"not a version-{VERSION} bilayer keypoint message.")
    q = np.frombuffer(message, "<u2", NUM_VALUES, HEADER.size).astype(np.float64)
    return index, millis, (LOW + (HIGH - LOW) * q / LEVELS).astype(np.float32), bool(flags & NO_FACE)


def quantize(keypoints: np.ndarray) -> np.ndarray:
    """The keypoints a receiver gets: encoded and decoded."""
    return decode_keypoints(encode_keypoints(keypoints, 0, 0))[2]


def avatar_graph(avatar, model, opset: int = 17) -> bytes:
    """The avatar's per-frame ONNX graph as bytes (what a receiver needs, once)."""
    import tempfile
    from pathlib import Path

    from ..runtime.export import export_baked

    with tempfile.TemporaryDirectory(prefix="bilayer-wire-") as folder:
        path = export_baked(avatar.bake(model), Path(folder) / "avatar.onnx", opset=opset)
        return path.read_bytes()


def check_stream_name(name: str, label: str = "stream name") -> str:
    """A stream name: 1 to 64 letters, digits, '-', '_' or '.' (it goes into URLs unescaped); ``label`` names it
    in the message."""
    if not (1 <= len(name) <= 64) or not all(c.isalnum() or c in "-_." for c in name):
        raise LiveError(f"{label} {name!r} must be 1 to 64 letters, digits, '-', '_' or '.'.")
    return name


def _stream_urls(server: str, name: str) -> tuple[str, str, str]:
    parsed = urllib.parse.urlparse(server if "://" in server else f"http://{server}")
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise LiveError(f"--send {server} is not the http:// address of a bilayer serve app.")
    base = f"{parsed.scheme}://{parsed.netloc}{parsed.path.rstrip('/')}"
    ws = ("wss" if parsed.scheme == "https" else "ws") + base[len(parsed.scheme):]
    quoted = urllib.parse.quote(name, safe="")
    return base, f"{base}/api/streams/{quoted}/avatar", f"{ws}/api/streams/{quoted}/send"


class KeypointSender:
    """A live session output that publishes the avatar to a ``bilayer serve`` app at ``server`` under ``name``,
    then sends every frame's keypoints (``write``); ``bytes_sent`` and ``frames_sent`` count what went out. The
    page ``SERVER/receive?stream=NAME`` shows it."""

    def __init__(self, server: str, name: str, graph: bytes, size: int, timeout: float = 10.0) -> None:
        base, avatar_url, self.ws_url = _stream_urls(server, name)
        self.receive_url = f"{base}/receive?stream={urllib.parse.quote(name)}"
        request = urllib.request.Request(avatar_url, data=graph, method="POST",
                                         headers={"Content-Type": "application/octet-stream",
                                                  "X-Bilayer-Size": str(int(size))})
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                response.read()
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode(errors="replace")
            try:
                detail = json.loads(detail).get("error", detail)
            except ValueError:
                pass
            raise LiveError(f"{server} refused the avatar: {detail.rstrip('.')}.") from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise LiveError(f"cannot reach a bilayer serve app at {server}: {reason}.") from None
        from websockets.sync.client import connect

        self._stack = contextlib.ExitStack()
        try:
            self._socket = self._stack.enter_context(connect(self.ws_url, open_timeout=timeout, max_size=2**20))
        except Exception as exc:  # noqa: BLE001 - websockets' handshake errors are not OSErrors
            raise LiveError(f"cannot open the keypoint stream at {self.ws_url}: {exc}.") from None
        self.avatar_bytes = len(graph)
        self.bytes_sent = 0
        self.frames_sent = 0
        self._start = time.perf_counter()
        self._lock = threading.Lock()

    def write(self, frame) -> None:
        millis = int(1000 * (frame.capture_time - self._start)) if frame.capture_time >= self._start else 0
        message = encode_keypoints(frame.keypoints, frame.index, millis)
        with self._lock:
            self._socket.send(message)
        self.bytes_sent += len(message)
        self.frames_sent += 1

    def close(self) -> None:
        try:
            self._stack.close()
        except Exception:  # noqa: BLE001 - closing a stream whose server went away
            pass


class KeypointReceiver:
    """Watches a stream of a ``bilayer serve`` app and renders it with ONNX Runtime on this machine:
    ``frames(count)`` yields (index, keypoints, image (3, S, S) in [-1, 1], mask (1, S, S))."""

    def __init__(self, server: str, name: str, timeout: float = 10.0) -> None:
        base, avatar_url, send_url = _stream_urls(server, name)
        self.watch_url = send_url[: -len("/send")] + "/watch"
        with urllib.request.urlopen(avatar_url + ".onnx", timeout=timeout) as response:
            graph = response.read()
        import onnxruntime as ort

        self.session = ort.InferenceSession(graph, providers=["CPUExecutionProvider"])
        from websockets.sync.client import connect

        self._stack = contextlib.ExitStack()
        self._socket = self._stack.enter_context(connect(self.watch_url, open_timeout=timeout, max_size=2**20))
        self.info = json.loads(self._socket.recv(timeout=timeout))

    def frames(self, count: int, timeout: float = 10.0):
        done = 0
        while done < count:
            message = self._socket.recv(timeout=timeout)
            if isinstance(message, str):  # the avatar changed: a new graph to load
                info = json.loads(message)
                if "avatar" in info:
                    base = self.watch_url.replace("ws", "http", 1).split("/api/streams/")[0]
                    with urllib.request.urlopen(base + info["avatar"], timeout=timeout) as response:
                        import onnxruntime as ort

                        self.session = ort.InferenceSession(response.read(), providers=["CPUExecutionProvider"])
                continue
            done += 1
            index, _millis, kp, _no_face = decode_keypoints(message)
            image, mask = self.session.run(None, {"keypoints": kp[None]})
            yield index, kp, image[0], mask[0]

    def close(self) -> None:
        self._stack.close()
