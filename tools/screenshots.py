"""Screenshots of the web app for the README: ``make screenshots`` → docs/images/serve_*.png.

Only pictures that may be published: the avatar is made from grace_hopper.jpg (public domain) and every driver is
a SynthHeads person rendered here (the browser's fake webcam plays one as a YUV4MPEG2 clip). Needs Debian's
chromium and chromium-driver and onnxruntime-web (``make test`` installs both).
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import time
from pathlib import Path


ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tools.browser import headless_chromium, write_y4m  # noqa: E402

OUT = ROOT / "docs" / "images"


def synth_clip(folder: Path) -> Path:
    from bilayer.synth import generate

    generate(folder / "synth", identities=2, test_identities=1, videos_per_identity=1, frames=75, size=256,
             seed=5, videos=True, progress=False)
    return next((folder / "synth" / "videos" / "test").rglob("*.mp4"))


def wait(condition, seconds=120.0):
    deadline = time.time() + seconds
    while time.time() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.2)
    raise SystemExit("error: timed out waiting for the page")


def main() -> None:
    from selenium.webdriver.common.by import By

    from benchmarks.receiver import start_server

    folder = Path(tempfile.mkdtemp(prefix="bilayer-shots-"))
    clip = synth_clip(folder)
    camera = write_y4m(clip, folder / "camera.y4m", frames=75, size=(320, 240))
    proc, url = start_server()
    OUT.mkdir(parents=True, exist_ok=True)
    try:
        with headless_chromium(folder / "profile", camera=camera, window=(1000, 760),
                               extra=["--hide-scrollbars"]) as b:
            b.get(url)
            b.find_element(By.ID, "photo").send_keys(str(ROOT / ".cache" / "material" / "grace_hopper.jpg"))
            b.find_element(By.ID, "make-avatar").click()
            wait(lambda: b.execute_script("return document.getElementById('crop').naturalWidth"))
            b.save_screenshot(str(OUT / "serve_avatar.png"))
            b.find_element(By.ID, "tab-animate").click()
            b.find_element(By.ID, "driver").send_keys(str(clip))
            b.find_element(By.ID, "side-by-side").click()
            b.find_element(By.ID, "start-animation").click()
            wait(lambda: b.find_element(By.TAG_NAME, "body").get_attribute("data-result"))
            b.execute_script("const v = document.getElementById('result-video'); v.pause(); v.currentTime = 1.5;")
            time.sleep(1.0)
            b.save_screenshot(str(OUT / "serve_animate.png"))
            b.find_element(By.ID, "tab-live").click()
            b.find_element(By.ID, "live-start").click()
            wait(lambda: int(b.find_element(By.TAG_NAME, "body").get_attribute("data-live-frames") or 0) >= 40)
            wait(lambda: "frames/s" in b.find_element(By.ID, "live-status").text)
            b.save_screenshot(str(OUT / "serve_live.png"))
            b.find_element(By.ID, "live-stop").click()
    finally:
        proc.terminate()
        proc.wait(10)
        shutil.rmtree(folder, ignore_errors=True)
    for name in ("serve_avatar.png", "serve_animate.png", "serve_live.png"):
        print(f"wrote {OUT / name}")


if __name__ == "__main__":
    main()
