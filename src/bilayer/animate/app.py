"""``animate(options)``: a photo (or saved avatar) animated by a driving video, from options to the written video.

Every input is checked before any work (the model, photo, driver and keypoint files, the output path), so a mistake
costs one sentence and no half-written file. Then: the model is loaded, the driver opened (tracking and smoothing
its keypoints), the avatar made or loaded, the backend chosen (``auto``: ``runtime.backends.auto_backend``) and
calibrated where it needs it (int8: on the driver's own poses next to the photo's), and the streamed pipeline
(``animate.pipeline.stream``) writes the video.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..runtime.avatar_options import DrivenOptions

from .pipeline import AnimationReport


@dataclass(frozen=True, kw_only=True)
class AnimateOptions(DrivenOptions):
    """What ``bilayer animate`` takes, one field per option (``bilayer animate --help`` describes each); the
    avatar's options and those every driven command shares are ``DrivenOptions``."""

    driver: str
    out: str
    driver_keypoints: str | None = None
    paste_back: bool = False
    alpha: bool = False
    workers: int | None = None
    driver_faces: int = 1


def check(options: AnimateOptions) -> None:
    """Refuse, in one sentence, any input that is missing or unreadable and any output that would overwrite an
    input or cannot be written; nothing is written."""
    from ..outputs import OutputError, Outputs
    from ..runtime.avatar import AvatarError
    from .videoio import check_output_path, output_kind

    o = options
    plan = Outputs().model("--model", o.model)
    for flag, value in (*o.avatar_inputs(), ("--driver", o.driver), ("--driver-keypoints", o.driver_keypoints)):
        plan.input(flag, value)
    plan = plan.other("--out", o.out, folder=output_kind(o.out, o.alpha) == "frames")
    plan.file("--report", o.report, (".json",), "a JSON file").check()
    check_output_path(o.out, alpha=o.alpha)
    if o.alpha and (o.paste_back or o.side_by_side):
        raise OutputError("--alpha writes the crop with its mask; it cannot be combined with --paste-back or --side-by-side.")
    if o.paste_back and o.avatar and not o.source:
        raise AvatarError("--paste-back needs --source PHOTO (a saved avatar does not keep the whole photo).")


def animate(options: AnimateOptions, *, on_frame=None) -> AnimationReport:
    """Animate ``options.source`` (or the saved ``options.avatar``) with ``options.driver`` into ``options.out``;
    returns the report (also written as JSON to ``options.report`` when given). ``on_frame(done, total)`` is
    called after every rendered frame (``pipeline.stream``)."""
    from ..models.bilayer import BilayerModel
    from ..runtime.avatar import landmark_context
    from .driver import open_driver
    from .pipeline import calibration_poses, render_workers, stream

    o = options
    check(o)
    model = BilayerModel.from_pretrained(o.model).eval()
    with landmark_context(o.landmarks, o.landmark_weights) as landmarks, open_driver(
            o.driver, landmarks=landmarks, keypoints=o.driver_keypoints, smoothing=o.smoothing,
            max_frames=o.max_frames, faces=o.driver_faces) as driver:
        avatar, photo = o.make_avatar(model, landmarks)
        backend = o.backend
        if backend == "auto":
            from ..runtime.backends import auto_backend

            backend, why = auto_backend(driver.frames_estimate, estimated=driver.num_frames is None)
            o.say(f"backend (auto) {why}")
        extra = {}
        if backend == "int8":  # calibrated on the driver's own poses next to the photo's jittered ones
            poses = calibration_poses(avatar, driver, o.motion)
            extra["calibration"] = avatar.calibration(poses)
        with render_workers(o.workers) as workers:
            if backend == "int8":
                o.say(f"quantizing (calibrated on {len(poses)} driver poses and the photo's own) and compiling the "
                        "int8 renderer (20–40 s on a first run, less from inductor's cache)…")
            elif backend == "compile":
                o.say("compiling the compile renderer (15–25 s on a first run, less from inductor's cache)…")
            renderer = avatar.renderer(model, backend, **extra)
            renderer.warmup(1)
            report = stream(avatar, renderer, driver, o.out, motion=o.motion, photo=photo, paste=o.paste_back,
                            alpha=o.alpha, side=o.side_by_side, background=o.background, progress=o.progress,
                            workers=workers, on_frame=on_frame)
    if o.report:
        from ..io import write_json_atomic

        write_json_atomic(Path(o.report), report.to_dict())
    return report
