"""``bilayer animate``: options → ``AnimateOptions`` → one call (``animate.app.animate``)."""

from __future__ import annotations

import argparse

from ..runtime.cli import add_avatar_options, add_model_option, positive_int


def cmd_animate(args: argparse.Namespace) -> int:
    from .app import AnimateOptions, animate

    report = animate(AnimateOptions(**AnimateOptions.fields_from(args)))
    print(report.summary())
    return 0


def configure_animate(p: argparse.ArgumentParser) -> None:
    from ..runtime.backends import AUTO_INT8_FRAMES, BACKENDS
    from .pipeline import BACKGROUNDS, MOTION_MODES

    add_model_option(p)
    p.add_argument("--source", default=None, help="the photo to animate (or give --avatar)")
    p.add_argument("--avatar", default=None, help="an avatar file made by `bilayer avatar` (instead of --source)")
    p.add_argument("--driver", required=True, help="driving video, folder of frames, or keypoint file (.npy/.json)")
    p.add_argument("--driver-keypoints", default=None, help="the driver's keypoints (.npy/.json) instead of detecting them")
    p.add_argument("--out", required=True, help="output .mp4 (H.264; .mov or a folder with --alpha)")
    p.add_argument("--motion", choices=MOTION_MODES, default="relative",
                   help="relative (default): the photo's face moved like the driver's; absolute: the driver's keypoints (leaks its face shape)")
    p.add_argument("--paste-back", action="store_true", help="paste the result back into the photo")
    p.add_argument("--alpha", action="store_true", help="RGBA output from the predicted mask (.mov or a PNG folder)")
    p.add_argument("--side-by-side", action="store_true", help="the driver frame next to the result")
    p.add_argument("--background", choices=BACKGROUNDS, default="black", help="behind the head in crop output (default black)")
    # the command renders on the CPU; fp16 needs CUDA (the Python API: make_renderer(..., device="cuda"))
    p.add_argument("--backend", choices=["auto", *(b for b in BACKENDS if b != "fp16")], default="auto",
                   help="per-frame engine on the CPU (default auto: bf16 on CPUs with native bfloat16, i.e. "
                        f"AVX512-BF16 or AMX; elsewhere int8 for drivers of {AUTO_INT8_FRAMES} frames or more "
                        "where it runs, else eager; eager: float32, starts at once; bf16: ~59 dB against float32, "
                        "starts at once, about twice eager's speed where native, slower elsewhere; int8, x86 "
                        "only, ~45 dB against float32, is the fastest after 20–40 s of quantizing and compiling "
                        "on CPUs without native bfloat16; compile is float32 after a 15–25 s compilation)")
    p.add_argument("--workers", type=positive_int, default=None, metavar="N",
                   help="frames rendered at once, each with 1/N of the CPU threads (default 2 with ≥ 2 threads: "
                        "faster than one frame on all threads while decoding and encoding share the cores)")
    p.add_argument("--max-frames", type=int, default=None, help="stop after this many driver frames")
    p.add_argument("--driver-faces", type=positive_int, default=1, metavar="N",
                   help="faces MediaPipe follows in the driver (default 1, the fastest: its face detector is skipped "
                        "while the face holds, and the face it keeps is its most confident one); give the number of "
                        "people for a driver with several, so that the largest face is the one followed")
    p.add_argument("--no-smoothing", action="store_true", help="do not smooth the driver's keypoints")
    p.add_argument("--report", default=None, help="write timings and counts as JSON here")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_avatar_options(p)
    p.set_defaults(func=cmd_animate)
