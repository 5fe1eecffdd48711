"""Hostile inputs through the real command line: keypoint drivers of no size, absurd or infinite coordinates and
absurd frame rates; source keypoints of no size or off the photo; damaged avatar files; garbage and pickled
weight files. Each is one ``error:`` line naming the file or value, exit status 2, nothing written and the inputs
left byte for byte as they were.

A tiny model (64 px) and one SynthHeads frame (128 px) with its true keypoints stand in for a real photo: the
photo's keypoints are given (``--source-keypoints``) and its crop is not segmented (``--segmentation none``), so
MediaPipe never runs.
"""

from __future__ import annotations

import hashlib
import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from bilayer import BilayerModel, preset
from bilayer.cli import main
from bilayer.runtime.avatar import Avatar, AvatarError

from .conftest import assert_user_error_text, run_main
from .test_driver import render_person


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict:
    import cv2

    root = tmp_path_factory.mktemp("hostile")
    torch.manual_seed(0)
    model = BilayerModel(preset("tiny")).eval()
    model.save_pretrained(root / "model")
    images, kps = render_person(4, person=1)
    photo = root / "photo.png"
    cv2.imwrite(str(photo), cv2.cvtColor(images[0], cv2.COLOR_RGB2BGR))
    np.save(root / "kp.npy", kps[0])
    np.save(root / "drv.npy", kps)
    avatar = Avatar.create(model, images[0], keypoints=kps[0], segmentation="none", enhance=False)
    avatar.save(root / "me.avatar")
    return {"root": root, "model": root / "model", "photo": photo, "kp": root / "kp.npy", "kps": kps,
            "drv": root / "drv.npy", "avatar": root / "me.avatar", "image": images[0], "loaded": model}


def fingerprint(*paths: Path) -> dict[str, str]:
    """SHA-256 of every file under ``paths``."""
    out = {}
    for path in paths:
        for f in sorted([path] if path.is_file() else path.rglob("*")):
            if f.is_file():
                out[str(f)] = hashlib.sha256(f.read_bytes()).hexdigest()
    return out


def refused(capsys, needles, inputs, outputs, *args) -> str:
    """``bilayer ARGS`` fails with one ``error:`` line holding every needle, writes none of ``outputs`` and leaves
    ``inputs`` unchanged; returns the line."""
    before = fingerprint(*inputs)
    code, out, err = run_main(main, capsys, *(str(a) for a in args))
    line = assert_user_error_text(code, err, *needles)
    assert code == 2 and out == ""
    assert not line.endswith(".."), line
    for output in outputs:
        assert not Path(output).exists(), f"{output} was written"
    assert fingerprint(*inputs) == before, "an input file changed"
    return line


def animate_args(files, driver, out, *extra) -> list:
    return ["animate", "--model", files["model"], "--avatar", files["avatar"], "--driver", driver, "--out", out,
            "--no-progress", *extra]


# -------------------------------------------------------------------------------------------- drivers
def _keypoint_drivers(kps: np.ndarray) -> dict[str, tuple[object, tuple[str, ...]]]:
    """name → (content, words the error must hold)."""
    infinite = kps.copy()
    infinite[2] = np.inf
    partly = kps.copy()
    partly[1, 7] = np.nan
    no_face = ("no face found in driver", "any of its 3 frames", "68 points lie on one spot (such as zeros)")
    return {
        "zero.npy": (np.zeros((3, 68, 2), np.float32), no_face),
        "absurd.npy": (np.full((3, 68, 2), 1e30, np.float32), ("frame 0", "1e+30", "beyond ±100,000 px")),
        "scaled.npy": (kps * 1e30, ("frame 0", "beyond ±100,000 px")),
        "inf.npy": (infinite, ("frame 2", "holds inf")),
        "partly.npy": (partly, ("frame 1", "is partly NaN")),
        "zero.json": ({"fps": 25, "keypoints": [None, *np.full((2, 68, 2), 3.0).tolist()]}, no_face),
        "inf.json": ([kps[0].tolist(), None, [[1e999, 0]] * 68], ("frame 2", "holds inf", "or null for a frame")),
        "absurd.json": ([kps[0].tolist(), (kps[1] * 1e30).tolist()], ("frame 1", "beyond ±100,000 px")),
    }


def _write(path: Path, content) -> Path:
    if path.suffix == ".npy":
        np.save(path, content)
    else:
        path.write_text(json.dumps(content))
    return path


def test_driver_keypoints_of_no_size_absurd_or_infinite_are_refused(files, tmp_path, capsys):
    for name, (content, needles) in _keypoint_drivers(files["kps"]).items():
        driver = _write(tmp_path / name, content)
        out = tmp_path / "out.mp4"
        line = refused(capsys, (str(driver), *needles), [driver, files["avatar"]], [out],
                       *animate_args(files, driver, out))
        assert ("inf" in line) == name.startswith("inf."), line
        if name.startswith("inf."):  # inf is never called NaN
            assert "NaN" not in line.split(";")[0], line
    # a folder of per-frame keypoint files passes the same checks
    folder = tmp_path / "frames_kp"
    folder.mkdir()
    np.save(folder / "000000.npy", files["kps"][0])
    np.save(folder / "000001.npy", np.full((68, 2), -np.inf, np.float32))
    refused(capsys, ("frame 0 of keypoint file", "000001.npy holds inf"), [folder], [tmp_path / "o.mp4"],
            *animate_args(files, folder, tmp_path / "o.mp4"))


def test_driver_rows_on_one_spot_are_frames_without_a_face(files, tmp_path, capsys):
    """A row of zeros (what some landmark tools write for a missed face) is a lost frame, like a row of NaN: the
    frame before it is reused."""
    kps = files["kps"].copy()
    kps[2] = 0.0
    driver = _write(tmp_path / "gap.npy", kps)
    out, report = tmp_path / "out.mp4", tmp_path / "report.json"
    code, _, err = run_main(main, capsys, *map(str, animate_args(files, driver, out, "--report", report)))
    assert code == 0, err
    assert out.is_file() and json.loads(report.read_text())["lost"] == 1


def test_driver_keypoints_next_to_frames_are_checked_against_the_frame(files, tmp_path, capsys):
    """--driver-keypoints with a driver that has frames: the same checks, and the faces must lie within ten times
    the frame's size of it."""
    out = tmp_path / "out.mp4"
    far = _write(tmp_path / "far.npy", files["kps"][:1] + 3000)
    refused(capsys, (str(far), "(3", "more than 10 times the 128×128 frame", "photo.png"), [far, files["photo"]],
            [out], *animate_args(files, files["photo"], out, "--driver-keypoints", far))
    zero = _write(tmp_path / "zero.npy", np.zeros((1, 68, 2), np.float32))
    refused(capsys, (f"no face found in driver {files['photo']} by keypoint file {zero} (its only frame)",
                     "lie on one spot"), [zero], [out],
            *animate_args(files, files["photo"], out, "--driver-keypoints", zero))
    partly = files["kps"][:1].copy()
    partly[0, :3] = np.nan
    partly = _write(tmp_path / "partly.npy", partly)
    refused(capsys, (f"frame 0 of keypoint file {partly} is partly NaN (3 of 68 points)",), [partly], [out],
            *animate_args(files, files["photo"], out, "--driver-keypoints", partly))


@pytest.mark.parametrize("fps, shown", [(1e9, "1e+09"), (0.5, "0.5"), ("fast", "'fast'"), (True, "True")])
def test_driver_frame_rate_is_bounded(files, tmp_path, capsys, fps, shown):
    driver = tmp_path / "fps.json"
    driver.write_text(json.dumps({"fps": fps, "keypoints": files["kps"].tolist()}))
    out = tmp_path / "out.mp4"
    refused(capsys, (f"the fps of keypoint file {driver} is {shown}", "1 to 1000 frames per second"), [driver], [out],
            *animate_args(files, driver, out))


def test_driver_frame_rate_nan_is_called_nan(files, tmp_path, capsys):
    driver = tmp_path / "nan.json"
    driver.write_text('{"fps": NaN, "keypoints": ' + json.dumps(files["kps"].tolist()) + "}")
    refused(capsys, ("is NaN", "1 to 1000 frames per second"), [driver], [tmp_path / "o.mp4"],
            *animate_args(files, driver, tmp_path / "o.mp4"))


def test_video_and_api_frame_rates_are_bounded_too(files, tmp_path, capsys):
    from bilayer.animate.driver import Driver, DriverError

    from .test_videoio import make_video

    video = make_video(tmp_path / "fast.mp4", [np.full((32, 32, 3), 20 * i, np.uint8) for i in range(4)], fps=2000)
    refused(capsys, (f"the frame rate of driver {video} is 2000", "1 to 1000 frames per second"), [video],
            [tmp_path / "o.mp4"], *animate_args(files, video, tmp_path / "o.mp4"))
    with pytest.raises(DriverError, match=r"^the driver's frame rate is 0; expected a frame rate of 1 to 1000"):
        Driver(files["drv"], fps=0)


def test_driver_options_speak_the_command_line(files, tmp_path, capsys):
    line = refused(capsys, ("the maximum number of frames is 0",), [files["drv"]], [tmp_path / "o.mp4"],
                   *animate_args(files, files["drv"], tmp_path / "o.mp4", "--max-frames", "0"))
    assert "max_frames" not in line
    line = refused(capsys, ("is already a keypoint sequence",), [files["drv"]], [tmp_path / "o.mp4"],
                   *animate_args(files, files["drv"], tmp_path / "o.mp4", "--driver-keypoints", files["drv"]))
    assert "keypoints=" not in line


# ----------------------------------------------------------------------------------- source keypoints
def test_source_keypoints_of_no_size_or_off_the_photo_are_refused(files, tmp_path, capsys):
    kp = files["kps"][0]
    zero = _write(tmp_path / "zero.npy", np.zeros((68, 2), np.float32))
    far = _write(tmp_path / "far.npy", kp + 5000)
    nan = _write(tmp_path / "nan.npy", np.where(np.arange(68)[:, None] == 3, np.nan, kp))
    out = tmp_path / "a.avatar"
    common = ["--model", files["model"], "--source", files["photo"], "--segmentation", "none", "--no-enhance"]
    refused(capsys, (str(zero), "describes a face of no size"), [zero, files["photo"]], [out],
            "avatar", *common, "--source-keypoints", zero, "--out", out)
    refused(capsys, ("partly NaN", str(nan)), [nan], [out], "avatar", *common, "--source-keypoints", nan, "--out", out)
    line = refused(capsys, (str(far), "lie outside the 128×128 photo", "(5"), [far, files["photo"]], [out],
                   "avatar", *common, "--source-keypoints", far, "--out", out)
    assert "keypoints=" not in line
    video = tmp_path / "o.mp4"
    refused(capsys, ("lie outside the 128×128 photo",), [far], [video], "animate", *common, "--source-keypoints", far,
            "--driver", files["drv"], "--out", video, "--no-progress")
    # a photo given as the crop itself must be the model's size; the message does not speak Python
    line = refused(capsys, ("photo.png is 128×128", "must be the model's 64×64 crop"), [files["photo"]], [out],
                   "avatar", *common, "--source-keypoints", files["kp"], "--source-is-crop", "--out", out)
    assert "crop=False" not in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["far.npy", "nan.npy", "zero.npy"]


def test_avatar_create_names_the_keypoint_file(files, tmp_path):
    model, image, kp = files["loaded"], files["image"], files["kps"][0]
    far = _write(tmp_path / "far.npy", kp - 4000)
    with pytest.raises(AvatarError, match=r"^the keypoints in .*far\.npy lie outside the 128×128 photo"):
        Avatar.create(model, image, keypoints=far, segmentation="none", enhance=False)
    with pytest.raises(AvatarError, match=r"^the keypoints given for the photo describe a face of no size"):
        Avatar.create(model, image, keypoints=np.full((68, 2), 7.0), segmentation="none", enhance=False)
    inf = kp.copy()
    inf[0, 0] = np.inf
    with pytest.raises(AvatarError, match=r"^the keypoints given for the photo hold inf;"):
        Avatar.create(model, image, keypoints=inf, segmentation="none", enhance=False)
    two = _write(tmp_path / "two.npy", files["kps"][:2])
    with pytest.raises(AvatarError, match=r"two\.npy holds 2 frames; expected the photo's 68 points"):
        Avatar.create(model, image, keypoints=two, segmentation="none", enhance=False)
    made = Avatar.create(model, image, keypoints=files["kp"], segmentation="none", enhance=False)
    assert torch.equal(made.texture, Avatar.load(files["avatar"], model).texture)


# ---------------------------------------------------------------------------------------- avatar files
def _damage(files, tmp_path: Path, name: str, change) -> Path:
    from safetensors import safe_open

    from bilayer.weights import read_safetensors, write_safetensors

    with safe_open(str(files["avatar"]), "pt") as f:
        meta = f.metadata()
    tensors = read_safetensors(files["avatar"])
    key = name if name in tensors else next(k for k in tensors if k.startswith(name))
    tensors[key] = change(tensors[key]).contiguous()
    path = tmp_path / f"{name.replace('.', '_')}.avatar"
    write_safetensors(tensors, path, meta)
    return path


def _with(value):
    def change(t: torch.Tensor) -> torch.Tensor:
        t = t.clone()
        t.view(-1)[:5] = value
        return t
    return change


@pytest.mark.parametrize("name, change, needles", [
    ("texture", lambda t: t[:, :, :32], ("tensor 'texture' has shape (1, 3, 32, 64)", "(1, 3, 64, 64)")),
    ("source_image", lambda t: t[None], ("tensor 'source_image' has shape (1, 3, 64, 64)", "(3, 64, 64)")),
    ("source_keypoints", lambda t: t[:10], ("tensor 'source_keypoints' has shape (10, 2)", "(68, 2)")),
    ("source_mask", lambda t: t.to(torch.int32), ("tensor 'source_mask' holds int32 values",)),
    ("texture", _with(float("inf")), ("tensor 'texture' holds inf, 5 of 12288 values",)),
    ("source_image", _with(float("nan")), ("tensor 'source_image' holds NaN, 5 of 12288 values",)),
    ("params.", _with(float("-inf")), ("holds inf",)),
    ("source_keypoints", lambda t: torch.zeros_like(t), ("'source_keypoints' does not describe a face inside",)),
])
def test_damaged_avatar_tensors_are_refused(files, tmp_path, capsys, name, change, needles):
    damaged = _damage(files, tmp_path, name, change)
    out = tmp_path / "out.mp4"
    line = refused(capsys, (f"{damaged} is damaged", *needles, "make the avatar again"), [damaged], [out],
                   *animate_args({**files, "avatar": damaged}, files["drv"], out))
    assert ("NaN" in line) == any("NaN" in n for n in needles), line  # inf is never called NaN


def test_damaged_avatar_metadata_is_refused(files, tmp_path, capsys):
    from safetensors import safe_open

    from bilayer.weights import read_safetensors, write_safetensors

    with safe_open(str(files["avatar"]), "pt") as f:
        meta = f.metadata()
    tensors = read_safetensors(files["avatar"])
    for key, value, needle in (("box", "[1, 2, Infinity]", "crop box"), ("box", "[1, 2, 0]", "crop box"),
                               ("photo_size", "[1e999, 3]", "damaged metadata"), ("enhanced", '"yes"', "enhanced"),
                               ("box", "[1, 2]", "damaged metadata")):
        path = tmp_path / "meta.avatar"
        write_safetensors(tensors, path, {**meta, key: value})
        refused(capsys, (f"{path} has damaged metadata", needle), [path], [tmp_path / "o.mp4"],
                *animate_args({**files, "avatar": path}, files["drv"], tmp_path / "o.mp4"))
    path = tmp_path / "nobox.avatar"
    write_safetensors(tensors, path, {k: v for k, v in meta.items() if k != "box"})
    refused(capsys, ("no 'box' entry",), [path], [tmp_path / "o.mp4"],
            *animate_args({**files, "avatar": path}, files["drv"], tmp_path / "o.mp4"))


# --------------------------------------------------------------------------------------- weight files
class _Payload:
    """Unpickling this runs code: it creates the file ``marker``."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _weight_files(folder: Path) -> dict[str, tuple[Path, tuple[str, ...]]]:
    """name → (file, words the error must hold). Loading ``pickled*`` would create ``folder/ran``."""
    folder.mkdir(exist_ok=True)
    out = {}
    garbage = folder / "garbage.pth"
    garbage.write_bytes(b"these are not weights\n" * 20)
    out["garbage"] = (garbage, ("is not a PyTorch checkpoint",))
    empty = folder / "empty.pth"
    empty.write_bytes(b"")
    out["empty"] = (empty, ("it is empty",))
    for protocol in (2, 4):
        pickled = folder / f"pickled{protocol}.pth"
        with open(pickled, "wb") as f:
            pickle.dump({"features.0.weight": _Payload(folder / "ran")}, f, protocol=protocol)
        out[f"pickled{protocol}"] = (pickled, ("is not a plain tensor checkpoint", "pickled code is never run"))
    zipped = folder / "code.pth"
    torch.save({"features.0.weight": _Payload(folder / "ran")}, zipped)
    out["zipped"] = (zipped, ("is not a plain tensor checkpoint", "pickled code is never run"))
    truncated = folder / "truncated.pth"
    torch.save({"features.0.weight": torch.zeros(4)}, folder / "whole.pth")
    truncated.write_bytes((folder / "whole.pth").read_bytes()[:200])
    (folder / "whole.pth").unlink()
    out["truncated"] = (truncated, ("cannot read", "failed reading zip archive"))
    return out


def _one_line_without_advice(line: str) -> None:
    assert "weights_only=False" not in line and "Weights only load failed" not in line, line


def test_perceptual_weights_that_are_not_tensor_checkpoints(files, tmp_path, capsys):
    data = tmp_path / "data"
    data.mkdir()
    weights = _weight_files(tmp_path / "weights")
    for name, (path, needles) in weights.items():
        run = tmp_path / f"run_{name}"
        line = refused(capsys, (str(path), *needles, "expected a PyTorch state dict of tensors"),
                       [path, weights["garbage"][0]], [run],
                       "train", "base", "--config", "tiny", "--data", data, "--run", run, "--perceptual-weights",
                       path, weights["garbage"][0], "--steps", "1", "--no-progress")
        _one_line_without_advice(line)
    assert not (tmp_path / "weights" / "ran").exists(), "pickled code ran"


def test_perceptual_weights_with_wrong_tensors(files, tmp_path, capsys):
    """A state dict of the wrong network, or one holding NaN: one sentence naming the file and the tensor."""
    from bilayer.losses.vgg import VGGFeatures
    from bilayer.train.config import TRAIN_PRESETS

    data = tmp_path / "data"
    data.mkdir()
    config = tmp_path / "one_layer.json"
    config.write_text(TRAIN_PRESETS["tiny"].replace(perceptual_layers=1).to_json())
    state = VGGFeatures("vgg19", (1,)).state_dict()
    other = tmp_path / "other.pth"
    torch.save({"classifier.0.weight": torch.zeros(2, 2)}, other)
    nan = tmp_path / "nan.pth"
    torch.save({**state, "features.0.bias": torch.full((64,), float("nan"))}, nan)
    inf = tmp_path / "inf.pth"
    torch.save({**state, "features.0.weight": state["features.0.weight"].fill_(float("inf"))}, inf)
    for path, needles in ((other, ("is not a torchvision vgg19 state dict", "features.0.weight")),
                          (nan, ("features.0.bias holds NaN values",)),
                          (inf, ("features.0.weight holds inf values",))):
        run = tmp_path / "run"
        refused(capsys, (str(path), *needles), [path], [run], "train", "base", "--config", config, "--data", data,
                "--run", run, "--perceptual-weights", path, path, "--steps", "1", "--no-progress")


def test_convert_official_refuses_pickles_and_garbage_in_one_line(tmp_path, capsys):
    from bilayer.compat.official import REQUIRED

    weights = _weight_files(tmp_path / "weights")
    for name, (source, needles) in weights.items():
        runs = tmp_path / f"runs_{name}"
        (runs / "checkpoints").mkdir(parents=True)
        for net in REQUIRED:  # every file alike, whichever is read first
            (runs / "checkpoints" / f"2225_{net}.pth").write_bytes(source.read_bytes())
        out = tmp_path / f"out_{name}"
        line = refused(capsys, ("2225_", *needles, "expected a flat PyTorch state dict of tensors"), [runs], [out],
                       "convert-official", runs, "--out", out)
        _one_line_without_advice(line)
    assert not (tmp_path / "weights" / "ran").exists(), "pickled code ran"
    runs = tmp_path / "runs_nan"
    (runs / "checkpoints").mkdir(parents=True)
    for net in REQUIRED:
        torch.save({"net.w": torch.tensor([0.0, float("nan"), float("inf")])}, runs / "checkpoints" / f"2225_{net}.pth")
    line = refused(capsys, ("tensor net.w holds NaN and inf values",), [runs], [tmp_path / "out_nan"],
                   "convert-official", runs, "--out", tmp_path / "out_nan")
    _one_line_without_advice(line)
