"""The browser receiver's speed: frames/s of an avatar's per-frame ONNX graph in headless Chromium (ONNX Runtime
Web, WebAssembly), as the /receive page of ``bilayer serve`` runs it.

    python benchmarks/receiver.py [--presets small medium] [--image-size 256] [--frames 100]
                                  [--out benchmarks/results/receiver.json]

For each preset, an avatar (random weights with trained-like statistics, made from grace_hopper.jpg) is published
to a ``bilayer serve`` process as ``bilayer live --send`` does, and the page ``/receive?stream=NAME&bench=N``
renders it N times back to back after 5 warm-up frames (each frame: one graph run and painting the canvas). The
same graph in ONNX Runtime for Python on the same CPU, with the same threads, is timed next to it. Needs Debian's
chromium and chromium-driver and onnxruntime-web (``make test`` installs both).
"""

from __future__ import annotations

import argparse
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parents[1]))

from live import cpu_name  # noqa: E402
from render import calibrated_model  # noqa: E402

from bilayer.io import write_json_atomic  # noqa: E402
from bilayer.live.wire import KeypointSender, avatar_graph  # noqa: E402
from bilayer.runtime.avatar import Avatar  # noqa: E402
from tools.browser import chromium_paths, headless_chromium  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def start_server() -> tuple[subprocess.Popen, str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "bilayer", "serve", "--model", str(ROOT / "assets" / "synth-quick"),
                             "--port", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    for _ in range(300):
        try:
            urllib.request.urlopen(url + "api/info", timeout=1).read()
            return proc, url
        except OSError:
            time.sleep(0.2)
    proc.kill()
    sys.exit("error: bilayer serve did not start")


def python_fps(graph: bytes, frames: int) -> float:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    session = ort.InferenceSession(graph, options, providers=["CPUExecutionProvider"])
    kp = (np.sin(np.arange(136)) * 0.5).astype(np.float32)[None]
    for _ in range(5):
        session.run(None, {"keypoints": kp})
    t0 = time.perf_counter()
    for i in range(frames):
        kp[0, i % 136] += 0.001
        session.run(None, {"keypoints": kp})
    return frames / (time.perf_counter() - t0)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--presets", nargs="+", default=["small", "medium"])
    p.add_argument("--image-size", type=int, default=256)
    p.add_argument("--frames", type=int, default=100)
    p.add_argument("--photo", type=Path, default=ROOT / ".cache" / "material" / "grace_hopper.jpg")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "receiver.json")
    args = p.parse_args()
    chromium, chromedriver = chromium_paths()
    from bilayer.serve.app import ort_web_dir

    if not (chromium and chromedriver):
        sys.exit("error: Debian's chromium and chromium-driver are needed (`make test` installs them).")
    if not (ort_web_dir() / "ort.min.js").is_file():
        sys.exit(f"error: onnxruntime-web is not in {ort_web_dir()} (`make install` fetches it).")
    proc, url = start_server()
    results = {}
    profile = tempfile.mkdtemp(prefix="bilayer-receiver-")
    try:
        with headless_chromium(profile) as browser:
            for preset in args.presets:
                model = calibrated_model(preset, args.image_size)
                avatar = Avatar.create(model, str(args.photo))
                graph = avatar_graph(avatar, model)
                KeypointSender(url, preset, graph, avatar.size).close()
                browser.get(f"{url}receive?stream={preset}&bench={args.frames}")
                deadline = time.time() + 600
                while time.time() < deadline:
                    stats = browser.execute_script("return window.bilayerStats")
                    if stats.get("benchDone") or stats.get("error"):
                        break
                    time.sleep(0.5)
                if stats.get("error") or not stats.get("benchDone"):
                    raise SystemExit(f"error: the receiver page failed: {stats.get('error') or 'timed out'}")
                ms = sorted(stats["renderMs"])
                results[preset] = {"image_size": avatar.size, "graph_mib": len(graph) / 2**20,
                                   "browser_fps": stats["fps"], "browser_backend": stats["backend"],
                                   "browser_frame_ms_median": ms[len(ms) // 2],
                                   "python_onnxruntime_fps": python_fps(graph, args.frames)}
                r = results[preset]
                print(f"{preset:<7} {avatar.size} px: browser {r['browser_fps']:.1f} frames/s ({r['browser_backend']}, "
                      f"{r['browser_frame_ms_median']:.1f} ms a frame with painting), ONNX Runtime in Python "
                      f"{r['python_onnxruntime_fps']:.1f} frames/s; graph {r['graph_mib']:.1f} MiB", flush=True)
    finally:
        proc.terminate()
        proc.wait(10)
        shutil.rmtree(profile, ignore_errors=True)
    result = {"cpu": cpu_name(), "frames": args.frames, "chromium": subprocess.run(
        [chromium, "--version"], capture_output=True, text=True).stdout.strip(), "results": results}
    print(f"wrote {write_json_atomic(args.out, result)}")


if __name__ == "__main__":
    main()
