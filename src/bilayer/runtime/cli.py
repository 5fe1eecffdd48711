"""``bilayer avatar`` and ``bilayer export``: options → one call each; the model and avatar options that
``bilayer animate`` (``animate.cli``) shares.

Every input is checked before work starts (model, photo, driver, output path), so a mistake costs one sentence
and no half-written file.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from .avatar_options import AvatarOptions

#: Landmark backends for a photo and a driving video (``--landmarks``).
LANDMARKS = ("mediapipe", "face-alignment", "dlib")
#: The suffix ``bilayer avatar --out`` requires.
AVATAR_SUFFIX = ".avatar"


def runtime_errors() -> tuple[type[BaseException], ...]:
    from ..outputs import OutputError
    from .avatar import AvatarError
    from .backends import BackendError
    from ..animate.driver import DriverError
    from .export import ExportError

    return (AvatarError, BackendError, DriverError, ExportError, OutputError)


def _plan(args: argparse.Namespace):
    """The command's inputs and model folder, as ``outputs.Outputs`` (outputs are added by the caller)."""
    from ..outputs import Outputs

    plan = Outputs().model("--model", args.model)
    for flag, value in AvatarOptions(**AvatarOptions.fields_from(args)).avatar_inputs():
        plan.input(flag, value)
    return plan


def _load_model(path: str):
    from ..models.bilayer import BilayerModel

    return BilayerModel.from_pretrained(path).eval()


def _landmarks(args: argparse.Namespace):
    from .avatar import landmark_context

    return landmark_context(args.landmarks, args.landmark_weights)


def _avatar_for(args: argparse.Namespace, model, landmarks):
    """The avatar from --avatar (a saved file) or made now from --source (``landmarks``: from ``_landmarks``)."""
    return AvatarOptions(**AvatarOptions.fields_from(args)).make_avatar(model, landmarks)


def positive_int(text: str) -> int:
    """argparse type: a whole number ≥ 1."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number ≥ 1")
    return value


def add_model_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="model folder (save_pretrained format, e.g. runs/NAME/model)")


def add_avatar_options(p: argparse.ArgumentParser) -> None:
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
    add_model_option(p)
    p.add_argument("--source", required=True, help="the photo (JPEG/PNG) with one face")
    p.add_argument("--out", required=True, help="avatar file to write (.avatar, safetensors)")
    add_avatar_options(p)
    p.set_defaults(func=cmd_avatar)


# --------------------------------------------------------------------------------------------- animate
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
    add_model_option(p)
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
    configure_export(sub.add_parser("export", help="export an avatar's per-frame network to ONNX"))


__all__ = ["LANDMARKS", "add_avatar_options", "add_model_option", "register", "runtime_errors"]
