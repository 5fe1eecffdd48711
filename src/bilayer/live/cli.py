"""``bilayer live``: options → ``LiveOptions`` → one call (``live.app.live``)."""

from __future__ import annotations

import argparse

from ..runtime.cli import add_avatar_options, add_model_option, positive_int


def cmd_live(args: argparse.Namespace) -> int:
    from .app import LiveOptions, live

    report = live(LiveOptions(**LiveOptions.fields_from(args)))
    print(report.summary())
    return 0


def configure_live(p: argparse.ArgumentParser) -> None:
    from ..runtime.backends import BACKENDS
    from ..animate.pipeline import MOTION_MODES

    add_model_option(p)
    p.add_argument("--source", default=None, help="the photo to animate (or give --avatar)")
    p.add_argument("--avatar", default=None, help="an avatar file made by `bilayer avatar` (instead of --source)")
    p.add_argument("--driver", default="camera",
                   help="what drives the avatar: a camera (camera, camera:N or /dev/videoN; default camera), a "
                        "network stream (rtsp://, http://, udp://, …) or a video file played at its real speed")
    p.add_argument("--loop", action="store_true", help="play a driver file over and over")
    p.add_argument("--driver-fps", type=float, default=None, metavar="R",
                   help="play a driver file at R frames per second instead of its own rate (like a camera of that rate)")
    p.add_argument("--out", default=None, help="record the session to this .mp4 (real time: dropped frames hold the last one)")
    p.add_argument("--virtual-camera", action="store_true",
                   help="send the avatar to a virtual camera (pyvirtualcam; on Linux a v4l2loopback device)")
    p.add_argument("--web", default=None, metavar="[HOST:]PORT",
                   help="show the avatar on a local web page at this port (host 127.0.0.1 unless given)")
    p.add_argument("--send", default=None, metavar="URL",
                   help="send the avatar once, then only each frame's keypoints (284 bytes), to the bilayer serve app "
                        "at URL (http://HOST:PORT), whose page URL/receive?stream=NAME renders them")
    p.add_argument("--stream", default="live", metavar="NAME", help="the stream's name for --send (default live)")
    p.add_argument("--seconds", type=float, default=None, help="stop after this many seconds")
    p.add_argument("--max-frames", type=positive_int, default=None, metavar="N", help="stop after N rendered frames")
    p.add_argument("--motion", choices=MOTION_MODES, default="relative",
                   help="relative (default): the photo's face moved like the driver's since its first tracked "
                        "frame (the page's recentre button resets it); absolute: the driver's keypoints")
    p.add_argument("--side-by-side", action="store_true", help="the camera frame next to the avatar")
    p.add_argument("--background", choices=["black", "white"], default="black", help="behind the head (default black)")
    p.add_argument("--backend", choices=["auto", *(b for b in BACKENDS if b != "fp16")], default="auto",
                   help="per-frame engine (default auto: bf16 on CPUs with native bfloat16, else eager, which "
                        "starts at once; int8 is faster on other x86 CPUs after 20–40 s of set-up)")
    p.add_argument("--fps", type=float, default=None, help="frame rate of --out (default: the driver's, else 25)")
    p.add_argument("--camera-size", default=None, metavar="WxH", help="ask the camera for this frame size")
    p.add_argument("--camera-fps", type=float, default=None, help="ask the camera for this frame rate")
    p.add_argument("--no-smoothing", action="store_true", help="do not smooth the tracked keypoints")
    p.add_argument("--report", default=None, help="write the session's figures (frames/s, latency, drops) as JSON here")
    p.add_argument("--no-progress", action="store_true", help="print only the final report")
    add_avatar_options(p)
    p.set_defaults(func=cmd_live)
