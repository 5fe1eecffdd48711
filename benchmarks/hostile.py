"""Hostile inputs through the real command line: how many bad inputs and faults are handled, and which are not.

    python benchmarks/hostile.py [--out benchmarks/results] [--only SUBSTRING] [--list]

Builds a workspace (a tiny model, SynthHeads photos and drivers, a real H.264 video, an avatar, and damaged,
absurd or malicious files: empty, truncated, text under an image or video name, NaN / inf / 1e30 / all-zero
keypoints, pickles that would run code, a 30000×30000 PNG), then runs every case as its own ``bilayer …``
process. A case is **handled** when

* the exit status is the expected one (0 with its output written, or non-zero),
* a refused run prints exactly one ``error: …`` line on stderr, without a traceback, and writes nothing,
* no input file changed (bytes compared), no temporary file is left anywhere in the workspace, and no pickled
  code ran (a pickle that would create a file, checked afterwards).

Writes ``hostile.json``: every case with its command, status, stderr and verdict, and the counts. Nothing is
timed; it takes a few minutes (one process per case).
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import re
import shutil
import struct
import subprocess
import sys
import tempfile
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

TEMPORARY = re.compile(r"^\..*\.(partial|tmp|old)(\.[A-Za-z0-9]+)?$")


class _Payload:
    """Unpickling this creates ``path``: proof that pickled code ran."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


@dataclass
class Case:
    name: str
    args: list[str]
    expect: str = "error"  # "error" or "ok"
    outputs: list[str] = field(default_factory=list)  # paths that must exist after an ok run
    says: str | None = None  # what an ok run's output must say (a warning)
    env: dict[str, str] = field(default_factory=dict)


# ------------------------------------------------------------------------------------------------ workspace
def _png_of_zeros(path: Path, width: int, height: int) -> None:
    """A valid grey PNG of ``width`` × ``height`` zeros written row by row (a few MB for 30000², never decoded)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    comp = zlib.compressobj(9)
    row = b"\x00" * (width + 1)
    parts = [comp.compress(row) for _ in range(height)]
    idat = b"".join(parts) + comp.flush()
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b""))


def build_workspace(root: Path) -> dict[str, Path]:
    import cv2
    import torch

    from bilayer import BilayerModel, preset
    from bilayer.synth import SynthRenderer, identity_params, scene_params, sequence_trajectory
    from bilayer.animate.videoio import VideoWriter

    w: dict[str, Path] = {}
    inp = root / "in"
    inp.mkdir(parents=True)
    torch.manual_seed(0)
    model = BilayerModel(preset("tiny")).eval()
    model.save_pretrained(inp / "model")
    w["model"] = inp / "model"
    renderer = SynthRenderer(identity_params(0, 1), scene_params(0, 1, 0), 128)
    frames = [renderer.render(f) for f in sequence_trajectory(0, 1, 0, 0, 30)]
    cv2.imwrite(str(inp / "photo.png"), cv2.cvtColor(frames[0][0], cv2.COLOR_RGB2BGR))
    w["photo"] = inp / "photo.png"
    np.save(inp / "photo_kp.npy", frames[0][1].astype(np.float32))
    w["photo_kp"] = inp / "photo_kp.npy"
    kps = np.stack([f[1] for f in frames]).astype(np.float32)
    np.save(inp / "driver.npy", kps)
    w["driver_npy"] = inp / "driver.npy"
    with VideoWriter(inp / "driver.mp4", 25.0, (128, 128)) as writer:
        for f in frames:
            writer.write(f[0])
    w["driver_mp4"] = inp / "driver.mp4"
    np.save(inp / "driver.mp4.npy", kps)
    (inp / "driver.json").write_text(json.dumps({"fps": 25, "keypoints": kps.tolist()}))
    w["driver_json"] = inp / "driver.json"

    bad = inp / "bad"
    bad.mkdir()
    (bad / "empty.png").write_bytes(b"")
    (bad / "text.png").write_text("not an image")
    (bad / "text.mp4").write_text("not a video")
    (bad / "empty.npy").write_bytes(b"")
    (bad / "text.npy").write_text("not an array")
    (bad / "text.json").write_text("{ not json")
    (bad / "text.avatar").write_text("not an avatar")
    data = (inp / "photo.png").read_bytes()
    (bad / "truncated.png").write_bytes(data[: len(data) // 2])
    video = (inp / "driver.mp4").read_bytes()
    (bad / "truncated.mp4").write_bytes(video[: len(video) // 3])
    _png_of_zeros(bad / "huge.png", 30000, 30000)
    grey = cv2.cvtColor(frames[0][0], cv2.COLOR_RGB2GRAY)
    cv2.imwrite(str(bad / "grey.png"), grey)
    cv2.imwrite(str(bad / "deep.png"), (grey.astype(np.uint16) * 257))
    cv2.imwrite(str(bad / "rgba.png"), cv2.cvtColor(frames[0][0], cv2.COLOR_RGB2BGRA))
    cv2.imwrite(str(bad / "noise.png"), np.random.default_rng(0).integers(0, 255, (256, 256, 3), np.uint8))
    for name, value in (("zeros", np.zeros_like(kps)), ("huge", np.full_like(kps, 1e30)),
                        ("nan", np.full_like(kps, np.nan)), ("inf", np.full_like(kps, np.inf)),
                        ("shape", kps[:, :40]), ("flat", kps.reshape(len(kps), -1))):
        np.save(bad / f"kp_{name}.npy", value)
        np.save(bad / f"kp1_{name}.npy", value[0] if value.ndim == 3 else value)
    np.save(bad / "kp_object.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    np.savez(bad / "kp_archive.npz", a=kps)
    for name, fps in (("fps_huge", 1e9), ("fps_zero", 0), ("fps_negative", -25), ("fps_text", "fast")):
        (bad / f"{name}.json").write_text(json.dumps({"fps": fps, "keypoints": kps.tolist()}))
    (bad / "kp_nested.json").write_text(json.dumps({"fps": 25, "keypoints": [[["a", "b"]] * 68] * 3}))
    pwned = root / "PWNED"
    w["pwned"] = pwned
    (bad / "pickle.pth").write_bytes(pickle.dumps(_Payload(str(pwned))))
    torch.save({"x": _Payload(str(pwned))}, bad / "torch_pickle.pth")
    (bad / "garbage.pth").write_bytes(os.urandom(4096))
    w["bad"] = bad

    # models: damaged in various ways
    nan_model = BilayerModel(preset("tiny")).eval()
    with torch.no_grad():
        next(iter(nan_model.parameters())).view(-1)[0] = float("nan")
    nan_model.save_pretrained(bad / "nan_model")
    shutil.copytree(inp / "model", bad / "no_weights")
    (bad / "no_weights" / "model.safetensors").unlink()
    shutil.copytree(inp / "model", bad / "garbage_config")
    (bad / "garbage_config" / "config.json").write_text("{ nope")
    shutil.copytree(inp / "model", bad / "garbage_weights")
    (bad / "garbage_weights" / "model.safetensors").write_bytes(os.urandom(1000))
    (bad / "empty_folder").mkdir()
    other = BilayerModel(preset("tiny")).eval()
    other.save_pretrained(bad / "other_model")

    # an avatar and damaged copies
    subprocess.run(_bilayer("avatar", "--model", inp / "model", "--source", inp / "photo.png", "--source-keypoints",
                            inp / "photo_kp.npy", "--segmentation", "none", "--out", inp / "me.avatar"), check=True,
                   capture_output=True)
    w["avatar"] = inp / "me.avatar"
    from safetensors.torch import load_file, save_file
    from safetensors import safe_open

    tensors = load_file(str(inp / "me.avatar"))
    with safe_open(str(inp / "me.avatar"), "pt") as f:
        meta = f.metadata()
    for name, change in (("texture_shape", ("texture", lambda t: t[..., :10])),
                         ("texture_nan", ("texture", lambda t: t * float("nan"))),
                         ("texture_inf", ("texture", lambda t: t + float("inf"))),
                         ("image_shape", ("source_image", lambda t: t[:, :10])),
                         ("kp_shape", ("source_keypoints", lambda t: t[:10])),
                         ("kp_nan", ("source_keypoints", lambda t: t * float("nan")))):
        key, fn = change
        damaged = dict(tensors)
        damaged[key] = fn(damaged[key]).contiguous()
        save_file(damaged, str(bad / f"{name}.avatar"), metadata=meta)

    # a release folder and a SynthHeads dataset
    from bilayer.compat.official import export_released_states
    from bilayer.models import Discriminator

    cfg = preset("tiny")
    d = cfg.discriminator
    states = export_released_states(BilayerModel(cfg), Discriminator(cfg.image_size, d.num_channels,
                                                                     d.max_channels, d.num_blocks, d.output_size))
    release = inp / "release" / "runs" / "main" / "checkpoints"
    release.mkdir(parents=True)
    for net, state in states.items():
        torch.save(state, release / f"100_{net}.pth")
    w["release"] = inp / "release"
    subprocess.run(_bilayer("synth", "--out", inp / "data", "--identities", "3", "--frames", "6", "--size", "64"),
                   check=True, capture_output=True)
    w["data"] = inp / "data"

    # a folder the user owns
    mine = inp / "mine"
    mine.mkdir()
    (mine / "thesis.tex").write_text("years of work")
    w["mine"] = mine
    (inp / "readonly").mkdir()
    w["out"] = root / "out"
    w["out"].mkdir()
    return w


def _bilayer(*args) -> list[str]:
    script = Path(sys.executable).with_name("bilayer")
    return [str(script), *(str(a) for a in args)]


# ----------------------------------------------------------------------------------------------------- cases
def cases(w: dict[str, Path]) -> list[Case]:
    b, o, m = w["bad"], w["out"], w["model"]
    src = ["--source", w["photo"], "--source-keypoints", w["photo_kp"], "--segmentation", "none"]
    anim = ["animate", "--model", m, "--avatar", w["avatar"], "--no-progress", "--backend", "eager"]
    out: list[Case] = []

    def case(name, *args, expect="error", outputs=(), says=None):
        out.append(Case(name, [str(a) for a in args], expect, [str(p) for p in outputs], says))

    # avatar: photos
    case("avatar ok", "avatar", "--model", m, *src, "--out", o / "ok.avatar", expect="ok", outputs=[o / "ok.avatar"])
    for name in ("empty.png", "text.png", "truncated.png", "huge.png", "missing.png"):
        case(f"avatar --source {name}", "avatar", "--model", m, "--source", b / name, "--source-keypoints",
             w["photo_kp"], "--segmentation", "none", "--out", o / "a.avatar")
    for name in ("grey.png", "deep.png", "rgba.png"):
        case(f"avatar --source {name}", "avatar", "--model", m, "--source", b / name, "--source-keypoints",
             w["photo_kp"], "--segmentation", "none", "--out", o / f"{name}.avatar", expect="ok",
             outputs=[o / f"{name}.avatar"])
    case("avatar: no face found (MediaPipe)", "avatar", "--model", m, "--source", b / "noise.png", "--segmentation",
         "none", "--out", o / "a.avatar")
    for name in ("zeros", "huge", "nan", "inf", "shape", "object"):
        case(f"avatar --source-keypoints {name}", "avatar", "--model", m, "--source", w["photo"],
             "--source-keypoints", b / f"kp1_{name}.npy" if name != "object" else b / "kp_object.npy",
             "--segmentation", "none", "--out", o / "a.avatar")
    for name in ("empty.npy", "text.npy", "kp_archive.npz", "kp_zeros.npy"):
        case(f"avatar --source-keypoints {name}", "avatar", "--model", m, "--source", w["photo"],
             "--source-keypoints", b / name, "--segmentation", "none", "--out", o / "a.avatar")
    case("avatar --source-mask text.png", "avatar", "--model", m, *src, "--source-mask", b / "text.png",
         "--out", o / "a.avatar")
    # avatar: models
    for name in ("nan_model", "no_weights", "garbage_config", "garbage_weights", "empty_folder", "missing"):
        case(f"avatar --model {name}", "avatar", "--model", b / name, *src, "--out", o / "a.avatar")
    case("avatar --model a file", "avatar", "--model", w["photo"], *src, "--out", o / "a.avatar")
    # avatar: outputs
    for name, path in (("the photo", w["photo"]), ("the keypoints", w["photo_kp"]),
                       ("the weights", m / "model.safetensors"), ("inside the model", m / "x.avatar"),
                       ("a .png", o / "x.png"), ("a folder", o), ("a missing folder", o / "no" / "x.avatar"),
                       ("/proc", Path("/proc/x.avatar"))):
        case(f"avatar --out {name}", "avatar", "--model", m, *src, "--out", path)

    # animate: drivers
    case("animate ok (keypoint file)", *anim, "--driver", w["driver_npy"], "--out", o / "ok.mp4",
         "--report", o / "ok.json", expect="ok", outputs=[o / "ok.mp4", o / "ok.json"])
    case("animate ok (json)", *anim, "--driver", w["driver_json"], "--out", o / "okj.mp4", expect="ok",
         outputs=[o / "okj.mp4"])
    case("animate ok (video + keypoints)", *anim, "--driver", w["driver_mp4"], "--driver-keypoints",
         w["driver_npy"], "--out", o / "okv.mp4", expect="ok", outputs=[o / "okv.mp4"])
    for name in ("empty.npy", "text.npy", "kp_zeros.npy", "kp_huge.npy", "kp_nan.npy", "kp_inf.npy",
                 "kp_shape.npy", "kp_flat.npy", "kp_object.npy", "kp_archive.npz", "text.json", "fps_huge.json",
                 "fps_zero.json", "fps_negative.json", "fps_text.json", "kp_nested.json", "text.mp4",
                 "missing.mp4", "empty_folder"):
        case(f"animate --driver {name}", *anim, "--driver", b / name, "--out", o / "a.mp4")
    case("animate --driver truncated.mp4 (what decodes, with a warning)", *anim, "--driver", b / "truncated.mp4",
         "--out", o / "t.mp4", expect="ok", outputs=[o / "t.mp4"], says="could be decoded")
    for name in ("kp_zeros.npy", "kp_huge.npy", "text.npy"):
        case(f"animate --driver-keypoints {name}", *anim, "--driver", w["driver_mp4"], "--driver-keypoints",
             b / name, "--out", o / "a.mp4")
    # animate: avatars and options
    for name in ("text.avatar", "texture_shape.avatar", "texture_nan.avatar", "texture_inf.avatar",
                 "image_shape.avatar", "kp_shape.avatar", "kp_nan.avatar", "missing.avatar"):
        case(f"animate --avatar {name}", "animate", "--model", m, "--avatar", b / name, "--driver",
             w["driver_npy"], "--out", o / "a.mp4", "--no-progress")
    case("animate --avatar for another model", "animate", "--model", b / "other_model", "--avatar", w["avatar"],
         "--driver", w["driver_npy"], "--out", o / "a.mp4", "--no-progress")
    for opt, value in (("--max-frames", "0"), ("--max-frames", "-1"), ("--workers", "0"), ("--driver-faces", "0"),
                       ("--backend", "gpu"), ("--motion", "sideways")):
        case(f"animate {opt} {value}", *anim, "--driver", w["driver_npy"], "--out", o / "a.mp4", opt, value)
    case("animate --alpha .mp4", *anim, "--driver", w["driver_npy"], "--out", o / "a.mp4", "--alpha")
    # animate: outputs
    for name, extra in (("--out = --driver", ["--out", w["driver_mp4"]]),
                        ("--out = --avatar", ["--out", w["avatar"]]),
                        ("--out inside the model", ["--out", m / "a.mp4"]),
                        ("--out .txt", ["--out", o / "a.txt"]),
                        ("--report = --out", ["--out", o / "a.mp4", "--report", o / "a.mp4"]),
                        ("--report = --avatar", ["--out", o / "a.mp4", "--report", w["avatar"]]),
                        ("--report .txt", ["--out", o / "a.mp4", "--report", o / "a.txt"]),
                        ("--report in /proc", ["--out", o / "a.mp4", "--report", "/proc/r.json"]),
                        ("--out a user folder", ["--out", w["mine"]])):
        case(f"animate {name}", *anim, "--driver", w["driver_mp4"], "--driver-keypoints", w["driver_npy"], *extra)

    # export
    case("export ok", "export", "--model", m, "--avatar", w["avatar"], "--out", o / "ok.onnx", expect="ok",
         outputs=[o / "ok.onnx"])
    for name, extra in (("--out = --avatar", ["--out", w["avatar"]]),
                        ("--out = the weights", ["--out", m / "model.safetensors"]),
                        ("--out .avatar", ["--out", o / "x.avatar"]),
                        ("--avatar garbage", ["--out", o / "x.onnx", "--avatar", b / "text.avatar"]),
                        ("--opset 5", ["--out", o / "x.onnx", "--opset", "5"]),
                        ("--opset 99", ["--out", o / "x.onnx", "--opset", "99"])):
        args = ["export", "--model", m, *extra]
        if "--avatar" not in extra:
            args += ["--avatar", w["avatar"]]
        case(f"export {name}", *args)

    # convert-official
    case("convert-official ok", "convert-official", w["release"], "--out", o / "converted", expect="ok",
         outputs=[o / "converted" / "model.safetensors"])
    for name, extra in (("--out = the release", [w["release"], "--out", w["release"]]),
                        ("--out = its parent", [w["release"], "--out", w["release"].parent]),
                        ("--out a user folder", [w["release"], "--out", w["mine"]]),
                        ("--out a file", [w["release"], "--out", w["photo"]]),
                        ("a missing release", [b / "nothing", "--out", o / "c"]),
                        ("an empty folder", [b / "empty_folder", "--out", o / "c"])):
        case(f"convert-official {name}", "convert-official", *extra)
    for name in ("pickle.pth", "torch_pickle.pth", "garbage.pth"):  # one network of a release replaced
        rel = w["bad"] / f"release_{name}"
        if not rel.exists():
            shutil.copytree(w["release"], rel)
        shutil.copy(b / name, rel / "runs" / "main" / "checkpoints" / "100_identity_embedder.pth")
        case(f"convert-official {name}", "convert-official", rel, "--out", o / "c")

    # synth
    case("synth ok", "synth", "--out", o / "synth", "--identities", "2", "--frames", "2", "--size", "64",
         expect="ok", outputs=[o / "synth" / "synth.json"])
    for opt, value in (("--size", "0"), ("--size", "33"), ("--size", "8192"), ("--size", "1000000"),
                       ("--identities", "0"), ("--identities", "1000000000000"), ("--frames", "1"),
                       ("--frames", "1000000000"), ("--workers", "0"), ("--seed", "-1"),
                       ("--test-identities", "5")):
        case(f"synth {opt} {value}", "synth", "--out", o / "s", "--identities", "2", "--frames", "2",
             "--size", "64", opt, value)
    case("synth --out a user folder", "synth", "--out", w["mine"], "--identities", "2", "--frames", "2")
    case("synth --out a file", "synth", "--out", w["photo"], "--identities", "2", "--frames", "2")

    # preprocess
    pp = ["--landmarks", "file", "--segmentation", "none", "--no-progress"]
    case("preprocess ok", "preprocess", w["driver_mp4"], "--out", o / "pre", *pp, "--size", "64", expect="ok",
         outputs=[o / "pre" / "imgs"])
    for name, extra in (("a missing input", [b / "none.mp4", "--out", o / "p"]),
                        ("an empty folder", [b / "empty_folder", "--out", o / "p"]),
                        ("--out a user folder", [w["driver_mp4"], "--out", w["mine"]]),
                        ("--out = its input folder", [w["driver_mp4"].parent, "--out", w["driver_mp4"].parent]),
                        ("--size 0", [w["driver_mp4"], "--out", o / "p", "--size", "0"]),
                        ("--size 100000", [w["driver_mp4"], "--out", o / "p", "--size", "100000"]),
                        ("--fps -1", [w["driver_mp4"], "--out", o / "p", "--fps", "-1"]),
                        ("--workers 0", [w["driver_mp4"], "--out", o / "p", "--workers", "0"]),
                        ("--jpeg-quality 200", [w["driver_mp4"], "--out", o / "p", "--jpeg-quality", "200"]),
                        ("--keypoints garbage", [w["driver_mp4"], "--out", o / "p", "--keypoints", b / "text.npy"])):
        case(f"preprocess {name}", "preprocess", *extra, *pp)

    # train
    tr = ["train", "base", "--config", "tiny", "--no-progress", "--perceptual-init", "random"]
    for name, extra in (("--data missing", ["--data", b / "none", "--run", o / "r"]),
                        ("--data an empty folder", ["--data", b / "empty_folder", "--run", o / "r"]),
                        ("--run a user folder", ["--data", w["data"], "--run", w["mine"]]),
                        ("--run = --data", ["--data", w["data"], "--run", w["data"]]),
                        ("--device tpu", ["--data", w["data"], "--run", o / "r", "--device", "tpu"]),
                        ("--device cuda", ["--data", w["data"], "--run", o / "r", "--device", "cuda"]),
                        ("--steps -1", ["--data", w["data"], "--run", o / "r", "--steps", "-1"]),
                        ("--batch-size 0", ["--data", w["data"], "--run", o / "r", "--batch-size", "0"]),
                        ("--lr -1", ["--data", w["data"], "--run", o / "r", "--lr", "-1"]),
                        ("--lr nan", ["--data", w["data"], "--run", o / "r", "--lr", "nan"]),
                        ("--config missing.json", ["--data", w["data"], "--run", o / "r", "--config",
                                                   b / "missing.json"]),
                        ("--config garbage.json", ["--data", w["data"], "--run", o / "r", "--config",
                                                   b / "text.json"]),
                        ("--init garbage", ["--data", w["data"], "--run", o / "r", "--init", b / "garbage_weights"])):
        case(f"train {name}", *tr, *extra)
    for name in ("garbage.pth", "pickle.pth", "torch_pickle.pth", "text.json"):
        case(f"train --perceptual-weights {name}", "train", "base", "--config", "tiny", "--no-progress",
             "--data", w["data"], "--run", o / "r", "--perceptual-weights", b / name, b / name)

    # evaluate, info, demo
    ev = ["evaluate", "--model", m, "--data", w["data"], "--no-timing", "--no-progress", "--metrics", "psnr"]
    for name, extra in (("--out a user folder", ["--out", w["mine"]]),
                        ("--out = --model", ["--out", m]),
                        ("--metrics bogus", ["--out", o / "e", "--metrics", "bogus"]),
                        ("--batch-size 0", ["--out", o / "e", "--batch-size", "0"]),
                        ("--fps -1", ["--out", o / "e", "--fps", "-1"])):
        case(f"evaluate {name}", *ev, *extra)
    case("evaluate --data missing", "evaluate", "--model", m, "--data", b / "none", "--out", o / "e")
    for value in ("bogus",):
        case(f"info --preset {value}", "info", "--preset", value)
    for value in ("0", "-64", "33", "100000"):
        case(f"info --image-size {value}", "info", "--image-size", value)
    # more option values, command by command
    for opt, value in (("--landmarks", "bogus"), ("--landmarks", "face-alignment"), ("--segmentation", "bogus")):
        case(f"avatar {opt} {value}", "avatar", "--model", m, "--source", w["photo"], "--out", o / "a.avatar", opt,
             value)
    case("avatar --source-is-crop of another size", "avatar", "--model", m, *src, "--source-is-crop", "--out",
         o / "a.avatar")
    case("animate --source and --avatar", "animate", "--model", m, "--avatar", w["avatar"], "--source", w["photo"],
         "--driver", w["driver_npy"], "--out", o / "a.mp4")
    case("animate neither --source nor --avatar", "animate", "--model", m, "--driver", w["driver_npy"], "--out",
         o / "a.mp4")
    case("animate --paste-back without the photo", *anim, "--driver", w["driver_npy"], "--out", o / "a.mp4",
         "--paste-back")
    case("animate --alpha with --paste-back", *anim, "--driver", w["driver_npy"], "--out", o / "a.mov", "--alpha",
         "--paste-back")
    case("animate --side-by-side with keypoints only", *anim, "--driver", w["driver_npy"], "--out", o / "a.mp4",
         "--side-by-side")
    short = b / "kp_short.npy"
    np.save(short, np.load(w["driver_npy"])[:5])
    case("animate --driver-keypoints shorter than the video", *anim, "--driver", w["driver_mp4"],
         "--driver-keypoints", short, "--out", o / "a.mp4")
    case("animate --max-frames text", *anim, "--driver", w["driver_npy"], "--out", o / "a.mp4", "--max-frames", "x")
    case("export --generic --fold-upsampling", "export", "--model", m, "--generic", "--fold-upsampling", "--out",
         o / "g.onnx")
    case("export without --avatar", "export", "--model", m, "--out", o / "g.onnx")
    case("export --avatar of another model", "export", "--model", b / "other_model", "--avatar", w["avatar"],
         "--out", o / "x.onnx")
    case("convert-official --epoch 999", "convert-official", w["release"], "--out", o / "c", "--epoch", "999")
    for opt, value in (("--max-frames", "0"), ("--min-frames", "0"), ("--fps", "0"), ("--landmarks", "bogus"),
                       ("--segmentation", "bogus"), ("--split", "bogus"), ("--crop-box", "bogus"),
                       ("--max-faces", "0"), ("--landmarks", "face-alignment"), ("--smoothing", "bogus")):
        args = ["preprocess", w["driver_mp4"], "--out", o / "p", "--no-progress", opt, value]
        if opt != "--landmarks":
            args += ["--landmarks", "file"]
        if opt != "--segmentation":
            args += ["--segmentation", "none"]
        case(f"preprocess {opt} {value}", *args)
    for opt, value in (("--videos-per-identity", "0"), ("--sequences-per-video", "0"), ("--test-identities", "-1"),
                       ("--videos-per-identity", "5000"), ("--size", "abc")):
        case(f"synth {opt} {value}", "synth", "--out", o / "s", "--identities", "2", "--frames", "2", "--size",
             "64", opt, value)
    for name, extra in (("--micro-batch -1", ["--micro-batch", "-1"]), ("--micro-batch 3", ["--micro-batch", "3"]),
                        ("--workers -1", ["--workers", "-1"]), ("--precision fp16", ["--precision", "fp16"]),
                        ("--config bogus", ["--config", "bogus"]),
                        ("--perceptual-weights and --perceptual-init random",
                         ["--perceptual-weights", b / "garbage.pth", b / "garbage.pth"])):
        case(f"train {name}", *tr, "--data", w["data"], "--run", o / "r", *extra)
    case("train enhancer without --init", "train", "enhancer", "--config", "tiny", "--data", w["data"], "--run",
         o / "r", "--perceptual-init", "random", "--no-progress")
    case("train with the registries' ImageNet VGG16 (ok)", "train", "base", "--config", "tiny", "--data", w["data"],
         "--run", o / "r", "--no-progress", expect="ok", outputs=[o / "r" / "model" / "model.safetensors"])
    case("train --perceptual-weights with three files", *tr, "--data", w["data"], "--run", o / "r",
         "--perceptual-init", "pretrained", "--perceptual-weights", b / "garbage.pth", b / "garbage.pth",
         b / "garbage.pth")
    for name, extra in (("--mode bogus", ["--mode", "bogus"]), ("--masking bogus", ["--masking", "bogus"]),
                        ("--max-videos 0", ["--max-videos", "0"]), ("--init-runs 0 0", ["--init-runs", "0", "0"]),
                        ("--frame-runs 1 0", ["--frame-runs", "1", "0"]), ("--landmarks bogus", ["--landmarks", "x"]),
                        ("--split bogus", ["--split", "bogus"]), ("--weights-dir a file", ["--weights-dir", w["photo"]]),
                        ("--device tpu", ["--device", "tpu"])):
        case(f"evaluate {name}", *ev, "--out", o / "e", *extra)
    case("evaluate --model a user folder", "evaluate", "--model", w["mine"], "--data", w["data"], "--out", o / "e")
    case("info --preset medium --image-size 128 (ok)", "info", "--preset", "medium", "--image-size", "128",
         expect="ok")
    case("demo --random-weights (ok)", "demo", "--out", o / "demo", "--random-weights", expect="ok",
         outputs=[o / "demo" / "overview_random_weights.png"])
    case("demo --frames 0", "demo", "--out", o / "d", "--frames", "0")
    case("demo --out a user folder", "demo", "--out", w["mine"], "--random-weights")
    case("demo --frames 1", "demo", "--out", o / "d", "--frames", "1")
    case("demo --model missing", "demo", "--out", o / "d", "--model", b / "none")
    return out


# -------------------------------------------------------------------------------------------------- running
def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def temporaries(folder: Path) -> list[str]:
    return sorted(str(p) for p in folder.rglob(".*") if TEMPORARY.match(p.name))


def run_case(c: Case, w: dict[str, Path], timeout: float) -> dict:
    out_before = set(str(p) for p in w["out"].rglob("*"))
    inputs_before = snapshot(w["model"].parent)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore", **c.env}
    start = time.perf_counter()
    try:
        proc = subprocess.run(_bilayer(*c.args), capture_output=True, text=True, timeout=timeout, env=env)
        code, stdout, stderr = proc.returncode, proc.stdout, proc.stderr
    except subprocess.TimeoutExpired as exc:
        code, stdout = None, ""
        stderr = exc.stderr.decode(errors="replace") if isinstance(exc.stderr, bytes) else (exc.stderr or "")
    seconds = time.perf_counter() - start
    problems = []
    lines = [ln for ln in stderr.splitlines() if ln.strip()]
    if code is None:
        problems.append(f"no answer within {timeout:.0f} s")
    elif code < 0:
        problems.append(f"killed by signal {-code}")
    elif "Traceback" in stderr:
        problems.append("traceback")
    elif c.expect == "error":
        if code == 0:
            problems.append("exit 0 for a bad input")
        errors = [ln for ln in lines if ln.startswith("error: ")]
        if len(errors) != 1 or len(lines) != 1:
            problems.append(f"{len(lines)} stderr lines, {len(errors)} of them 'error:'")
        made = set(str(p) for p in w["out"].rglob("*")) - out_before
        if made:
            problems.append(f"wrote {sorted(made)[:2]}")
    else:
        if code != 0:
            problems.append(f"exit {code} for a good input")
        missing = [p for p in c.outputs if not Path(p).exists()]
        if missing:
            problems.append(f"missing output {missing[0]}")
        if c.says is not None and c.says not in stdout + stderr:
            problems.append(f"does not say {c.says!r}")
    if snapshot(w["model"].parent) != inputs_before:
        problems.append("an input changed")
    left = temporaries(w["model"].parent.parent)
    if left:
        problems.append(f"temporary left: {left[0]}")
        for p in left:
            shutil.rmtree(p, ignore_errors=True) if Path(p).is_dir() else Path(p).unlink(missing_ok=True)
    if w["pwned"].exists():
        problems.append("pickled code ran")
        w["pwned"].unlink()
    for entry in w["out"].iterdir():  # every case starts from the same empty output folder
        if str(entry) not in out_before:
            shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
    return {"name": c.name, "command": "bilayer " + " ".join(c.args), "expect": c.expect, "exit": code,
            "stderr": stderr[-2000:], "seconds": round(seconds, 2), "handled": not problems, "problems": problems}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="benchmarks/results")
    parser.add_argument("--only", default=None, help="run the cases whose name contains this")
    parser.add_argument("--list", action="store_true", help="list the cases and exit")
    parser.add_argument("--timeout", type=float, default=300)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bilayer-hostile-") as tmp:
        w = build_workspace(Path(tmp))
        todo = [c for c in cases(w) if args.only is None or args.only in c.name]
        if args.list:
            for c in todo:
                print(c.name)
            return
        results = []
        for i, c in enumerate(todo, 1):
            r = run_case(c, w, args.timeout)
            results.append(r)
            mark = "ok  " if r["handled"] else "FAIL"
            last = r["stderr"].strip().splitlines()[-1:] or [""]
            print(f"[{i:3d}/{len(todo)}] {mark} {c.name:<48} exit {r['exit']}  {last[0][:150]}", flush=True)
            if not r["handled"]:
                print(f"           problems: {'; '.join(r['problems'])}", flush=True)
    handled = sum(r["handled"] for r in results)
    report = {"cases": len(results), "handled": handled, "not_handled": len(results) - handled,
              "results": results}
    print(f"{handled} of {len(results)} cases handled")
    if args.only is None:
        from bilayer.io import write_json_atomic

        write_json_atomic(Path(args.out) / "hostile.json", report)
        print(f"wrote {Path(args.out) / 'hostile.json'}")


if __name__ == "__main__":
    main()
