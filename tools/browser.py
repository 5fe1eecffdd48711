"""Debian's Chromium, headless, driven by Selenium through chromium-driver: the one way the web app's tests, the
browser-receiver benchmark and the screenshot tool open the pages (``make test`` installs both packages).

    with headless_chromium(profile, camera=clip_y4m, window=(1100, 900)) as browser:
        browser.get(url)
"""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Iterator, Sequence
from pathlib import Path

import av
import numpy as np

MISSING = "Debian's chromium and chromium-driver are not installed (`make test` installs them)"

# quiet, reproducible start: no first-run page, no background traffic, no GPU (there is none in CI)
_QUIET = ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
          "--disable-background-networking", "--disable-component-update", "--disable-sync")


def chromium_paths() -> tuple[str | None, str | None]:
    """(chromium, chromedriver) on PATH, each None when missing."""
    return shutil.which("chromium"), shutil.which("chromedriver")


def have_chromium() -> bool:
    return all(chromium_paths())


@contextlib.contextmanager
def headless_chromium(profile: Path | str, camera: Path | None = None, window: tuple[int, int] | None = None,
                      extra: Sequence[str] = ()) -> Iterator:
    """A headless Chromium with its own profile folder; ``camera``: a .y4m clip the page gets as its webcam
    (permission granted without a prompt). Quits the browser on leaving."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    chromium, chromedriver = chromium_paths()
    if not (chromium and chromedriver):
        raise RuntimeError(MISSING)
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    args = [*_QUIET, f"--user-data-dir={profile}", *extra]
    if camera is not None:
        args += ["--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
                 f"--use-file-for-fake-video-capture={camera}"]
    if window is not None:
        args.append(f"--window-size={window[0]},{window[1]}")
    for arg in args:
        options.add_argument(arg)
    browser = webdriver.Chrome(service=Service(chromedriver), options=options)
    try:
        yield browser
    finally:
        browser.quit()


def write_y4m(video: Path, out: Path, frames: int = 60, size: tuple[int, int] = (320, 240)) -> Path:
    """A raw YUV4MPEG2 clip (what Chromium's fake camera plays) of the first ``frames`` frames of ``video``."""
    w, h = size
    with av.open(str(video)) as src, open(out, "wb") as f:
        f.write(f"YUV4MPEG2 W{w} H{h} F25:1 Ip A1:1 C420jpeg\n".encode())
        for i, frame in enumerate(src.decode(video=0)):
            if i == frames:
                break
            yuv = frame.reformat(width=w, height=h, format="yuv420p").to_ndarray()
            f.write(b"FRAME\n" + np.ascontiguousarray(yuv).tobytes())
    return out
