"""``bilayer avatar``, ``bilayer animate`` and ``bilayer export``: options → one call each.

Every input is checked before work starts (model, photo, driver, output path), so a mistake costs one sentence
and no half-written file.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from pathlib import Path

#: Landmark backends for a photo and a driving video (``--landmarks``).
LANDMARKS = ("mediapipe", "face-alignment", "dlib")
#: The suffix ``bilayer avatar --out`` requires.
AVATAR_SUFFIX = ".avatar"


def runtime_errors() -> tuple[type[BaseException], ...]:
    from ..outputs import OutputError
    from .avatar import AvatarError
    from .backends import BackendError
    from .driver import DriverError
    from .export import ExportError

    return (AvatarError, BackendError, DriverError, ExportError, OutputError)


def _plan(args: argparse.Namespace):
    """The command's inputs and model folder, as ``outputs.Outputs`` (outputs are added by the caller)."""
    from ..outputs import Outputs

    plan = Outputs().model("--model", args.model)
    for option in ("source", "avatar", "driver", "driver_keypoints", "source_keypoints", "source_mask",
                   "landmark_weights"):
        plan.input("--" + option.replace("_", "-"), getattr(args, option, None))
    return plan


def _load_model(path: str):
    from ..models.bilayer import BilayerModel

    return BilayerModel.from_pretrained(path).eval()


def _landmarks(args: argparse.Namespace):
    """A context giving ``--landmarks``: the backend name, or with ``--landmark-weights`` a face-alignment or dlib
    backend reading its weights there (closed when the context ends)."""
    if args.landmark_weights is None or args.landmarks == "mediapipe":
        return contextlib.nullcontext(args.landmarks)
    from ..preprocess.landmarks import create_landmark_backend

    return create_landmark_backend(args.landmarks, weights_dir=args.landmark_weights)


def _avatar_for(args: argparse.Namespace, model, landmarks):
    """The avatar from --avatar (a saved file) or made now from --source (``landmarks``: from ``_landmarks``)."""
    from .avatar import Avatar, AvatarError, read_photo

    if getattr(args, "avatar", None):
        if getattr(args, "source", None):
            raise AvatarError("give either --source PHOTO or --avatar FILE, not both.")
        return Avatar.load(args.avatar, model), None
    if not getattr(args, "source", None):
        raise AvatarError("give --source PHOTO (or --avatar FILE made by `bilayer avatar`).")
    photo = read_photo(args.source)
    kp = args.source_keypoints  # read and checked by Avatar.create, which names the file in its errors
    crop = not args.source_is_crop
    mask = None
    if args.source_mask:
        from ..preprocess.errors import VideoReadError
        from ..preprocess.video import read_image

        try:
            mask = read_image(args.source_mask)[..., 0].astype("float32") / 255.0
        except VideoReadError as exc:
            raise AvatarError(f"{str(exc).rstrip('. ')}; expected the crop's mask as a grey-scale PNG.") from None
    avatar = Avatar.create(model, photo, keypoints=kp, mask=mask, landmarks=landmarks, segmentation=args.segmentation,
                           enhance=not args.no_enhance, crop=crop, name=str(args.source))
    return avatar, photo


def _add_model_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="model folder (save_pretrained format, e.g. runs/NAME/model)")


def _add_avatar_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--source-keypoints", default=None, help="the photo's 68 landmarks (.npy, (68, 2) pixels) instead of detecting them")
    p.add_argument("--source-mask", default=None, help="the crop's foreground mask (PNG) instead of segmenting it")
    p.add_argument("--source-is-crop", action="store_true",
                   help="the photo already is the model's crop (e.g. a preprocessed frame): no cropping")
    p.add_argument("--landmarks", default="mediapipe", choices=LANDMARKS, help="landmark backend of the photo (and of a driving video; default mediapipe)")
    p.add_argument("--landmark-weights", default=None, metavar="DIR",
                   help="folder holding the face-alignment weight files (FAN and S3FD) or dlib's "
                        "shape_predictor_68_face_landmarks.dat (default: the one make install puts in place); "
                        "nothing is downloaded")
    p.add_argument("--segmentation", default="mediapipe", choices=["mediapipe", "none"],
                   help="foreground mask of the photo's crop; none: the whole crop (default mediapipe)")
    p.add_argument("--no-enhance", action="store_true", help="skip the texture enhancer")


# ---------------------------------------------------------------------------------------------- avatar
def cmd_avatar(args: argparse.Namespace) -> int:
    _plan(args).file("--out", args.out, (AVATAR_SUFFIX,), "an avatar file").check()
    out = Path(args.out)
    model = _load_model(args.model)
    with _landmarks(args) as landmarks:
        avatar, _ = _avatar_for(args, model, landmarks)
    avatar.save(out)
    print(f"wrote {out} ({'enhanced' if avatar.enhanced else 'not enhanced'} texture, crop box "
          f"{tuple(round(v, 1) for v in avatar.box.to_array())})")
    return 0


def configure_avatar(p: argparse.ArgumentParser) -> None:
    _add_model_option(p)
    p.add_argument("--source", required=True, help="the photo (JPEG/PNG) with one face")
    p.add_argument("--out", required=True, help="avatar file to write (.avatar, safetensors)")
    _add_avatar_options(p)
    p.set_defaults(func=cmd_avatar)


# --------------------------------------------------------------------------------------------- animate
def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number ≥ 1")
    return value


def cmd_animate(args: argparse.Namespace) -> int:
    from .animate import animate, render_workers
    from .avatar import AvatarError
    from .driver import open_driver
    from ..outputs import OutputError
    from .videoio import check_output_path, output_kind

    plan = _plan(args).other("--out", args.out, folder=output_kind(args.out, args.alpha) == "frames")
    plan.file("--report", args.report, (".json",), "a JSON file").check()
    check_output_path(args.out, alpha=args.alpha)
    if args.alpha and (args.paste_back or args.side_by_side):
        raise OutputError("--alpha writes the crop with its mask; it cannot be combined with --paste-back or --side-by-side.")
    if args.paste_back and args.avatar and not args.source:
        raise AvatarError("--paste-back needs --source PHOTO (a saved avatar does not keep the whole photo).")
    model = _load_model(args.model)
    with _landmarks(args) as landmarks, open_driver(
            args.driver, landmarks=landmarks, keypoints=args.driver_keypoints, smoothing=not args.no_smoothing,
            max_frames=args.max_frames, faces=args.driver_faces) as driver:
        avatar, photo = _avatar_for(args, model, landmarks)
        backend = args.backend
        if backend == "auto":
            from .backends import auto_backend

            backend, why = auto_backend(driver.frames_estimate, estimated=driver.num_frames is None)
            if not args.no_progress:
                print(f"backend (auto) {why}", file=sys.stderr, flush=True)
        options = {}
        if backend == "int8":  # calibrated on the driver's own poses next to the photo's jittered ones
            from .animate import calibration_poses

            poses = calibration_poses(avatar, driver, args.motion)
            options["calibration"] = avatar.calibration(poses)
        with render_workers(args.workers) as workers:
            if backend in ("compile", "int8") and not args.no_progress:
                if backend == "int8":
                    what = (f"quantizing (calibrated on {len(poses)} driver poses and the photo's own) and compiling "
                            "the int8 renderer (20–40 s")
                else:
                    what = "compiling the compile renderer (15–25 s"
                print(f"{what} on a first run, less from inductor's cache)…", file=sys.stderr, flush=True)
            renderer = avatar.renderer(model, backend, **options)
            renderer.warmup(1)
            report = animate(avatar, renderer, driver, args.out, motion=args.motion, photo=photo,
                             paste=args.paste_back, alpha=args.alpha, side=args.side_by_side,
                             background=args.background, progress=not args.no_progress, workers=workers)
    print(report.summary())
    if args.report:
        from ..io import write_json_atomic

        write_json_atomic(Path(args.report), report.to_dict())
    return 0


def configure_animate(p: argparse.ArgumentParser) -> None:
    from .animate import BACKGROUNDS, MOTION_MODES
    from .backends import AUTO_INT8_FRAMES, BACKENDS

    _add_model_option(p)
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
    p.add_argument("--workers", type=_positive_int, default=None, metavar="N",
                   help="frames rendered at once, each with 1/N of the CPU threads (default 2 with ≥ 2 threads: "
                        "faster than one frame on all threads while decoding and encoding share the cores)")
    p.add_argument("--max-frames", type=int, default=None, help="stop after this many driver frames")
    p.add_argument("--driver-faces", type=_positive_int, default=1, metavar="N",
                   help="faces MediaPipe follows in the driver (default 1, the fastest: its face detector is skipped "
                        "while the face holds, and the face it keeps is its most confident one); give the number of "
                        "people for a driver with several, so that the largest face is the one followed")
    p.add_argument("--no-smoothing", action="store_true", help="do not smooth the driver's keypoints")
    p.add_argument("--report", default=None, help="write timings and counts as JSON here")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    _add_avatar_options(p)
    p.set_defaults(func=cmd_animate)


# ---------------------------------------------------------------------------------------------- export
def cmd_export(args: argparse.Namespace) -> int:
    import torch

    from .avatar import Avatar
    from .export import ExportError, check_export, export_baked, export_generic, generic_inputs

    if args.generic and args.fold_upsampling:
        raise ExportError("--fold-upsampling applies to the baked graph (--avatar without --generic); "
                          "the generic graph keeps the network as trained.")
    _plan(args).file("--out", args.out, (".onnx",), "an ONNX file").check()
    out = Path(args.out)
    model = _load_model(args.model)
    if args.generic:
        path = export_generic(model, out, opset=args.opset, fp16=args.fp16)
        print(f"wrote {path} (generic graph: keypoints, texture and adaptive parameters as inputs)")
        if args.avatar:
            avatar = Avatar.load(args.avatar, model)
            kp = torch.from_numpy(avatar.source_keypoints_normalized)[None]
            diff = check_export(path, lambda k: avatar.render(model, k), kp, feeds=generic_inputs(avatar.state()))
            print(f"ONNX Runtime vs PyTorch on the avatar's source pose: max abs difference {diff:.2e}")
        return 0
    if not args.avatar:
        raise ExportError("give --avatar FILE (made by `bilayer avatar`), or --generic for a graph not tied to one avatar.")
    avatar = Avatar.load(args.avatar, model)
    baked = avatar.bake(model)
    path = export_baked(baked, out, opset=args.opset, fp16=args.fp16, fold_upsampling=args.fold_upsampling)
    kp = torch.from_numpy(avatar.source_keypoints_normalized)[None]
    diff = check_export(path, baked, kp)
    print(f"wrote {path} ({out.stat().st_size / 1e6:.1f} MB, opset {args.opset}{', fp16' if args.fp16 else ''}); "
          f"ONNX Runtime vs PyTorch: max abs difference {diff:.2e}")
    return 0


def configure_export(p: argparse.ArgumentParser) -> None:
    _add_model_option(p)
    p.add_argument("--avatar", default=None,
                   help="avatar file: bake it into the graph (texture as an initializer); with --generic, the avatar "
                        "the generic graph is checked on")
    p.add_argument("--out", required=True, help="output .onnx file")
    p.add_argument("--generic", action="store_true", help="a graph taking the texture and adaptive parameters as inputs")
    p.add_argument("--fp16", action="store_true", help="float16 weights and compute (GPUs, phones); inputs/outputs stay float32")
    p.add_argument("--opset", type=int, default=17, help="ONNX opset (≥ 16: grid_sample)")
    p.add_argument("--fold-upsampling", action="store_true",
                   help="write each upsampling + 3×3 convolution as one ConvTranspose (2.25× fewer multiply-adds; "
                        "faster on GPUs, slower in ONNX Runtime on CPU)")
    p.set_defaults(func=cmd_export)


def register(sub) -> None:
    configure_avatar(sub.add_parser("avatar", help="make an avatar from one photo and save it (.avatar file)"))
    configure_animate(sub.add_parser("animate", help="animate a photo (or avatar) with a driving video"))
    configure_export(sub.add_parser("export", help="export an avatar's per-frame network to ONNX"))


__all__ = ["register", "runtime_errors"]
