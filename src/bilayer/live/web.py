"""The page ``bilayer live --web`` serves: the live avatar as an MJPEG stream, its figures and a recentre button.

Plain ``http.server`` (no framework, no assets from the internet), bound to 127.0.0.1 unless told otherwise:

* ``GET /`` — the page (the stream, frames/s, latency and drops updated every second, "recentre");
* ``GET /stream.mjpg`` — ``multipart/x-mixed-replace`` JPEG frames, each the newest rendered one;
* ``GET /frame.jpg`` — the newest frame once;
* ``GET /stats`` — the session's figures so far as JSON;
* ``POST /recenter`` — relative motion takes the next frame as its reference.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from .outputs import FrameHub

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>bilayer live</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body { font-family: system-ui, sans-serif; background: #111; color: #eee; margin: 2rem; }
img { image-rendering: auto; height: 60vh; background: #000; border-radius: 6px; }
#stats { font-variant-numeric: tabular-nums; margin: 1rem 0; }
button { font-size: 1rem; padding: .4rem 1rem; }
</style></head>
<body>
<h1>bilayer live</h1>
<img id="view" src="/stream.mjpg" alt="the live avatar">
<div id="stats">starting…</div>
<button id="recenter">recentre (take the current pose as the avatar's own)</button>
<script>
async function tick() {
  try {
    const s = await (await fetch('/stats')).json();
    const l = s.latency_ms || {};
    document.getElementById('stats').textContent = s.rendered
      ? `${s.fps.toFixed(1)} frames/s · latency ${l.median.toFixed(0)} ms median, ${l.p95.toFixed(0)} ms 95th ` +
        `percentile · dropped ${s.dropped_before_tracking} before tracking, ${s.dropped_before_rendering} before ` +
        `rendering · ${s.backend || ''}`
      : 'waiting for a face…';
  } catch (e) { document.getElementById('stats').textContent = 'the session has ended'; return; }
  setTimeout(tick, 1000);
}
document.getElementById('recenter').onclick = () => fetch('/recenter', {method: 'POST'});
tick();
</script></body></html>
"""


class LiveWeb:
    """Serves ``hub``'s frames and ``stats()`` (a callable giving a JSON-able dict) on ``host``:``port`` (0 picks
    a free port; ``url`` says which) from a background thread until ``close()``."""

    def __init__(self, hub: FrameHub, stats, recenter, host: str = "127.0.0.1", port: int = 8765) -> None:
        outer = self
        self.hub, self.stats, self.recenter = hub, stats, recenter

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:  # quiet: the session prints its own report
                pass

            def _send(self, code: int, body: bytes, kind: str) -> None:
                self.send_response(code)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Cache-Control", "no-store")
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                path = self.path.split("?", 1)[0]
                if path == "/":
                    self._send(200, PAGE.encode(), "text/html; charset=utf-8")
                elif path == "/stats":
                    self._send(200, json.dumps(outer.stats()).encode(), "application/json")
                elif path == "/frame.jpg":
                    _, jpeg = outer.hub.wait(0, timeout=5.0)
                    if jpeg is None:
                        self._send(503, b"no frame yet", "text/plain")
                    else:
                        self._send(200, jpeg, "image/jpeg")
                elif path == "/stream.mjpg":
                    self._stream()
                else:
                    self._send(404, b"not found", "text/plain")

            def do_POST(self) -> None:  # noqa: N802
                if self.path == "/recenter":
                    outer.recenter()
                    self._send(200, b"{}", "application/json")
                else:
                    self._send(404, b"not found", "text/plain")

            def _stream(self) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
                self.send_header("Cache-Control", "no-store")
                self.send_header("Connection", "close")
                self.end_headers()
                seen = 0
                try:
                    while not outer.hub.closed and not outer._closed.is_set():
                        seen, jpeg = outer.hub.wait(seen, timeout=1.0)
                        if jpeg is None:
                            continue
                        self.wfile.write(b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: "
                                         + str(len(jpeg)).encode() + b"\r\n\r\n" + jpeg + b"\r\n")
                        self.wfile.flush()
                except (BrokenPipeError, ConnectionResetError):
                    pass
                self.close_connection = True

        self._closed = threading.Event()
        self.server = ThreadingHTTPServer((host, port), Handler)
        self.server.daemon_threads = True
        self.url = f"http://{host}:{self.server.server_address[1]}/"
        self._thread = threading.Thread(target=self.server.serve_forever, name="bilayer-live-web", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._closed.set()
        self.server.shutdown()
        self.server.server_close()
