"""`bilayer avatar` / `animate` / `export` end to end on real files: a tiny model saved with save_pretrained, the
astronaut photo (MediaPipe keypoints and segmentation), a SynthHeads driving video with an AAC track (MediaPipe
tracking, a lost-face stretch), H.264 output read back with PyAV."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from skimage import data as skdata

from bilayer import preset
from bilayer.animate.pipeline import render_workers, stream
from bilayer.runtime.avatar import Avatar
from bilayer.animate.driver import open_driver

from .conftest import assert_user_error, assert_user_error_text, build_model, run_cli, run_main
from .test_driver import BLANK, blank_out, render_person
from .test_videoio import make_video

av = pytest.importorskip("av")


def run_module(*args) -> str:
    """``bilayer ARGS`` must succeed; returns its stdout."""
    proc = run_cli(*(str(a) for a in args), timeout=300)
    assert proc.returncode == 0, f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    return proc.stdout


def user_error(args, needle: str) -> str:
    return assert_user_error(run_cli(*(str(a) for a in args), timeout=300), needle)


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("animate")
    model = build_model(preset("tiny"), seed=5)
    model.save_pretrained(root / "model")
    import cv2

    photo = root / "photo.png"
    cv2.imwrite(str(photo), cv2.cvtColor(skdata.astronaut(), cv2.COLOR_RGB2BGR))
    images, kps = render_person(20, person=1)
    images, kps = blank_out(images, kps, BLANK)
    driver = make_video(root / "driver.mp4", images, audio="aac")
    return {"root": root, "model": root / "model", "photo": photo, "driver": driver, "kps": kps}


def read_video(path: Path) -> tuple[list[np.ndarray], bool, float]:
    with av.open(str(path)) as c:
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    with av.open(str(path)) as c:
        has_audio = bool(c.streams.audio)
        fps = float(c.streams.video[0].average_rate)
    return frames, has_audio, fps


def test_animate_api_side_by_side_with_audio(files, tmp_path):
    from bilayer import BilayerModel

    model = BilayerModel.from_pretrained(files["model"]).eval()
    avatar = Avatar.create(model, skdata.astronaut())
    with open_driver(files["driver"]) as driver:
        report = stream(avatar, avatar.renderer(model), driver, tmp_path / "out.mp4", side=True, progress=False)
        assert driver.lost == len(BLANK)
    assert report.frames == 20 and report.lost == len(BLANK) and report.audio
    frames, has_audio, fps = read_video(tmp_path / "out.mp4")
    assert len(frames) == 20 and has_audio and abs(fps - 25) < 1e-6
    assert frames[0].shape == (64, 128, 3)  # driver (resized to 64 px high) | 64-px result
    # left: the driver's frames; right, first frame: the avatar in its own pose (relative motion) on black
    import cv2

    with av.open(str(files["driver"])) as c:
        driver0 = next(c.decode(video=0)).to_ndarray(format="rgb24")
    left = cv2.resize(driver0, (64, 64), interpolation=cv2.INTER_AREA)
    assert np.abs(frames[0][:, :64].astype(float) - left).mean() < 6
    from bilayer.animate.compose import to_mask, to_uint8

    image, mask = avatar.renderer(model)(torch.from_numpy(avatar.source_keypoints_normalized)[None])
    m = to_mask(mask[0])[..., None]
    expected = to_uint8(image[0]).astype(float) * m
    assert np.abs(frames[0][:, 64:].astype(float) - expected).mean() < 6
    assert np.abs(frames[0][:, 64:].astype(float) - frames[0][:, :64]).mean() > 10  # not the driver copied
    assert set(report.seconds) == {"read", "render", "compose", "encode"} and report.fps > 0
    assert [p.name for p in tmp_path.iterdir()] == ["out.mp4"]


def test_relative_motion_of_the_driver_reference_is_the_source_pose(files, tmp_path):
    """With relative motion, the driver's first frame maps exactly onto the photo's own keypoints."""
    from bilayer import BilayerModel

    model = BilayerModel.from_pretrained(files["model"]).eval()
    avatar = Avatar.create(model, skdata.astronaut())
    seen = []

    def spy(kp):
        seen.append(kp.clone())
        return avatar.renderer(model)(kp)

    kps = np.nan_to_num(files["kps"][:3])
    np.save(tmp_path / "kps.npy", kps)
    with open_driver(tmp_path / "kps.npy", smoothing=False) as driver:
        stream(avatar, spy, driver, tmp_path / "rel.mp4", progress=False)
    torch.testing.assert_close(seen[0][0], torch.from_numpy(avatar.source_keypoints_normalized), atol=1e-5, rtol=0)
    assert not torch.allclose(seen[1], seen[0])


def _png_frames(folder: Path) -> list[np.ndarray]:
    import cv2

    return [cv2.imread(str(p), cv2.IMREAD_UNCHANGED) for p in sorted(folder.glob("*.png"))]


def test_parallel_workers_render_concurrently_in_driver_order(files, tmp_path):
    """workers=3 renders up to three frames at once and writes exactly the frames of workers=1, in driver order
    (lossless PNG output); a frame whose render fails stops the run with that error and no output."""
    import threading
    import time

    from bilayer import BilayerModel

    model = BilayerModel.from_pretrained(files["model"]).eval()
    avatar = Avatar.create(model, skdata.astronaut())
    renderer = avatar.renderer(model)
    np.save(tmp_path / "kps.npy", np.nan_to_num(files["kps"][:9]))
    lock, busy, most, threads = threading.Lock(), [0], [0], set()

    def slow(kp):  # long enough for renders to overlap when they can
        with lock:
            busy[0] += 1
            most[0] = max(most[0], busy[0])
            threads.add(threading.get_ident())
        time.sleep(0.03)
        try:
            return renderer(kp)
        finally:
            with lock:
                busy[0] -= 1

    outputs = {}
    for workers in (1, 3):
        with open_driver(tmp_path / "kps.npy") as driver:
            report = stream(avatar, slow, driver, tmp_path / f"w{workers}", alpha=True, progress=False,
                             workers=workers)
        assert report.frames == 9 and report.workers == workers and report.to_dict()["workers"] == workers
        outputs[workers] = _png_frames(tmp_path / f"w{workers}")
        if workers == 1:
            assert most[0] == 1
    assert most[0] >= 2 and len(threads) >= 2  # frames really rendered at once
    assert len(outputs[3]) == 9 and all(np.array_equal(a, b) for a, b in zip(outputs[1], outputs[3]))
    assert not all(np.array_equal(outputs[1][0], f) for f in outputs[1][1:])  # the frames differ: order is tested

    calls = [0]

    def failing(kp):
        with lock:
            calls[0] += 1
            if calls[0] == 5:
                raise RuntimeError("render failed on purpose")
        return renderer(kp)

    with open_driver(tmp_path / "kps.npy") as driver, pytest.raises(RuntimeError, match="on purpose"):
        stream(avatar, failing, driver, tmp_path / "failed.mp4", progress=False, workers=2)
    assert not (tmp_path / "failed.mp4").exists()
    with open_driver(tmp_path / "kps.npy") as driver, pytest.raises(ValueError, match="workers is 0"):
        stream(avatar, renderer, driver, tmp_path / "zero.mp4", progress=False, workers=0)


def test_a_failing_driver_stops_the_run_instead_of_hanging(files, tmp_path):
    """A reader error (here a driver whose decoding fails at its first frame, before the render loop has seen any)
    reaches the caller; the render loop does not wait for frames that will never come."""
    from bilayer import BilayerModel
    from bilayer.animate.driver import Driver

    class Failing(Driver):
        def __iter__(self):
            for frame in super().__iter__():
                if frame.index == 0:
                    raise OSError("decoding failed on purpose")
                yield frame

    model = BilayerModel.from_pretrained(files["model"]).eval()
    avatar = Avatar.create(model, skdata.astronaut())
    np.save(tmp_path / "kps.npy", np.nan_to_num(files["kps"][:9]))
    driver = open_driver(tmp_path / "kps.npy")
    driver.__class__ = Failing
    with driver, pytest.raises(OSError, match="on purpose"):
        stream(avatar, avatar.renderer(model), driver, tmp_path / "o.mp4", progress=False, workers=2)
    assert not (tmp_path / "o.mp4").exists()


def test_cli_avatar_animate_paste_back_and_export(files, tmp_path):
    avatar = tmp_path / "me.avatar"
    out = run_module("avatar", "--model", files["model"], "--source", files["photo"], "--out", avatar)
    assert "wrote" in out and avatar.is_file()
    report = tmp_path / "report.json"
    run_module("animate", "--model", files["model"], "--source", files["photo"], "--driver", files["driver"],
               "--out", tmp_path / "pasted.mp4", "--paste-back", "--max-frames", "8", "--no-progress",
               "--report", report)
    frames, has_audio, _ = read_video(tmp_path / "pasted.mp4")
    assert len(frames) == 8 and frames[0].shape == (512, 512, 3) and has_audio
    r = json.loads(report.read_text())
    assert r["frames"] == 8 and r["fps"] > 0
    # the pasted frames keep the photo outside the head
    photo = skdata.astronaut()
    assert np.abs(frames[0][:40, :40].astype(int) - photo[:40, :40]).mean() < 8
    # RGBA from a saved avatar, keypoints given as a file (no detection)
    np.save(tmp_path / "kps.npy", np.nan_to_num(files["kps"][:5]))
    run_module("animate", "--model", files["model"], "--avatar", avatar, "--driver", tmp_path / "kps.npy",
               "--out", tmp_path / "alpha.mov", "--alpha", "--no-progress")
    with av.open(str(tmp_path / "alpha.mov")) as c:
        rgba = [f.to_ndarray(format="rgba") for f in c.decode(video=0)]
    assert len(rgba) == 5 and rgba[0].shape == (64, 64, 4)
    # ONNX export of the avatar, checked in ONNX Runtime by the command itself
    out = run_module("export", "--model", files["model"], "--avatar", avatar, "--out", tmp_path / "me.onnx")
    diff = float(out.split("max abs difference ")[1].split()[0])
    assert (tmp_path / "me.onnx").is_file() and diff <= 1e-4
    out = run_module("export", "--model", files["model"], "--avatar", avatar, "--out", tmp_path / "folded.onnx",
                     "--fold-upsampling")
    assert float(out.split("max abs difference ")[1].split()[0]) <= 1e-4
    import onnx

    ops = [node.op_type for node in onnx.load(str(tmp_path / "folded.onnx")).graph.node]
    plain = [node.op_type for node in onnx.load(str(tmp_path / "me.onnx")).graph.node]
    assert ops.count("ConvTranspose") > 0 and "ConvTranspose" not in plain


def test_cli_errors_are_one_sentence_before_work(files, tmp_path):
    blank = tmp_path / "blank.png"
    import cv2

    cv2.imwrite(str(blank), np.full((100, 100, 3), 120, np.uint8))
    common = ["--model", files["model"], "--driver", files["driver"], "--no-progress"]
    user_error(["animate", "--source", blank, "--out", tmp_path / "o.mp4", *common], "no face found in")
    user_error(["animate", "--source", files["photo"], "--out", tmp_path / "missing" / "o.mp4", *common],
                      "does not exist")
    user_error(["animate", "--model", files["model"], "--source", files["photo"], "--driver",
                       tmp_path / "nothing.mp4", "--out", tmp_path / "o.mp4"], "nothing.mp4")
    user_error(["animate", "--source", files["photo"], "--out", tmp_path / "o.mov", "--alpha",
                       "--paste-back", *common], "--alpha")
    user_error(["animate", "--source", files["photo"], "--avatar", tmp_path / "x.avatar", "--out",
                tmp_path / "o.mp4", *common], "not both")
    other = tmp_path / "other"
    build_model(preset("tiny"), seed=9).save_pretrained(other)
    avatar = tmp_path / "a.avatar"
    run_module("avatar", "--model", files["model"], "--source", files["photo"], "--out", avatar)
    user_error(["export", "--model", other, "--avatar", avatar, "--out", tmp_path / "x.onnx"],
                      "other model weights")
    user_error(["export", "--model", files["model"], "--generic", "--fold-upsampling", "--out", tmp_path / "x.onnx"],
               "--fold-upsampling applies to the baked graph")
    assert not any(p.suffix in (".mp4", ".mov", ".onnx") for p in tmp_path.iterdir())


@pytest.mark.slow
def test_make_demo_with_the_committed_checkpoint(tmp_path):
    """`bilayer demo` (what `make demo` runs): the committed synth-quick model animates a held-out person."""
    out = run_module("demo", "--out", tmp_path / "demo", "--frames", "12", "--no-progress")
    assert "12 frames" in out
    frames, _, fps = read_video(tmp_path / "demo" / "animation.mp4")
    assert len(frames) == 12 and frames[0].shape == (128, 256, 3) and abs(fps - 25) < 1e-6
    import cv2

    overview = cv2.imread(str(tmp_path / "demo" / "overview.png"))
    assert overview.shape == (4 * 128, 8 * 128, 3)
    # the result column is a head on black, not noise: its mean sits between black and the source's
    assert 5 < overview[:, 7 * 128 :].mean() < 200


# ------------------------------------------------------------------------------------- in-process CLI checks
def cli(capsys, *args) -> tuple[int, str, str]:
    from bilayer.cli import main

    return run_main(main, capsys, *(str(a) for a in args))


def test_cli_avatar_from_given_keypoints(files, tmp_path, capsys):
    """--source-keypoints takes the photo's (68, 2) landmarks and --segmentation none the whole crop: the same
    avatar as the API makes from them, with no detection."""
    from bilayer import BilayerModel

    images, kps = render_person(1, person=1)
    import cv2

    photo = tmp_path / "frame.png"
    cv2.imwrite(str(photo), cv2.cvtColor(images[0], cv2.COLOR_RGB2BGR))
    np.save(tmp_path / "kp.npy", kps[0])
    code, out, err = cli(capsys, "avatar", "--model", files["model"], "--source", photo, "--source-keypoints",
                         tmp_path / "kp.npy", "--segmentation", "none", "--out", tmp_path / "a.avatar")
    assert code == 0, err
    model = BilayerModel.from_pretrained(files["model"]).eval()
    made = Avatar.load(tmp_path / "a.avatar", model)
    expected = Avatar.create(model, images[0], keypoints=kps[0], segmentation="none")
    assert made.box == expected.box and torch.equal(made.texture, expected.texture)
    assert torch.equal(made.source_mask, torch.ones_like(made.source_mask))
    np.save(tmp_path / "two.npy", kps[[0, 0]])
    code, _, err = cli(capsys, "avatar", "--model", files["model"], "--source", photo, "--source-keypoints",
                       tmp_path / "two.npy", "--out", tmp_path / "b.avatar")
    assert_user_error_text(code, err, "two.npy holds 2 frames; expected", "68 points")
    assert not (tmp_path / "b.avatar").exists()
    # a keypoint driver has no frames to show side by side, and a saved avatar no photo to paste into
    common = ["--model", files["model"], "--avatar", tmp_path / "a.avatar", "--driver", tmp_path / "two.npy",
              "--no-progress"]
    code, _, err = cli(capsys, "animate", *common, "--out", tmp_path / "o.mp4", "--side-by-side")
    assert_user_error_text(code, err, "side by side needs a driver with frames", "two.npy holds keypoints only")
    code, _, err = cli(capsys, "animate", *common, "--out", tmp_path / "o.mp4", "--paste-back")
    assert_user_error_text(code, err, "--paste-back needs --source PHOTO")
    assert not (tmp_path / "o.mp4").exists()


def test_cli_checks_outputs_and_options_before_work(files, tmp_path, capsys):
    # a model folder that does not exist: these errors come before the model is read
    code, _, err = cli(capsys, "avatar", "--model", tmp_path / "no-model", "--source", files["photo"], "--out", tmp_path)
    assert_user_error_text(code, err, "is a folder", "expected an avatar file path")
    code, _, err = cli(capsys, "animate", "--model", tmp_path / "no-model", "--source", files["photo"], "--driver",
                       files["driver"], "--out", tmp_path / "o.mp4", "--report", tmp_path)
    assert_user_error_text(code, err, "--report", "is a folder")
    code, _, err = cli(capsys, "export", "--model", tmp_path / "no-model", "--generic", "--fold-upsampling", "--out",
                       tmp_path / "g.onnx")
    assert_user_error_text(code, err, "--fold-upsampling applies to the baked graph")
    with pytest.raises(SystemExit) as exc:  # the command renders on the CPU: fp16 (CUDA only) is not offered
        cli(capsys, "animate", "--model", files["model"], "--source", files["photo"], "--driver", files["driver"],
            "--out", tmp_path / "o.mp4", "--backend", "fp16")
    assert_user_error_text(exc.value.code, capsys.readouterr().err, "invalid choice: 'fp16'")
    # face-alignment reads its weights from --landmark-weights, which these commands take
    code, _, err = cli(capsys, "avatar", "--model", files["model"], "--source", files["photo"], "--out",
                       tmp_path / "a.avatar", "--landmarks", "face-alignment")
    assert_user_error_text(code, err, "pass --landmark-weights DIR")
    (tmp_path / "weights").mkdir()
    code, _, err = cli(capsys, "avatar", "--model", files["model"], "--source", files["photo"], "--out",
                       tmp_path / "a.avatar", "--landmarks", "face-alignment", "--landmark-weights", tmp_path / "weights")
    assert_user_error_text(code, err, "not found in", "weights")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["weights"]
    for option in ("--workers", "--driver-faces"):
        for bad in ("0", "two"):
            with pytest.raises(SystemExit) as exc:
                cli(capsys, "animate", "--model", files["model"], "--source", files["photo"], "--driver",
                    files["driver"], "--out", tmp_path / "o.mp4", option, bad)
            err = capsys.readouterr().err
            assert_user_error_text(exc.value.code, err, option, f"{bad!r} is not a whole number ≥ 1")


def test_cli_workers_share_the_threads_and_restore_them(files, tmp_path, capsys):
    """--workers 2 renders with half the intra-op threads each and the command restores the caller's count."""
    np.save(tmp_path / "kps.npy", np.nan_to_num(files["kps"][:4]))
    before = torch.get_num_threads()
    code, out, err = cli(capsys, "animate", "--model", files["model"], "--source", files["photo"], "--driver",
                         tmp_path / "kps.npy", "--out", tmp_path / "o.mp4", "--workers", "2", "--no-progress",
                         "--report", tmp_path / "r.json")
    assert code == 0, err
    assert json.loads((tmp_path / "r.json").read_text())["workers"] == 2 and "4 frames" in out
    assert "ms (2 frames at a time), compose" in out
    assert torch.get_num_threads() == before
    with render_workers(None) as workers:
        assert workers == (2 if before >= 2 else 1) and torch.get_num_threads() == max(1, before // workers)
    assert torch.get_num_threads() == before


def test_calibration_poses_are_what_animate_renders(files, tmp_path):
    """int8's driver poses are the model inputs animate gives the renderer: spread over a keypoint sequence (its
    first and last faces included, frames without a face skipped), and over a video whose faces are tracked while
    it plays (frames sought across it)."""
    from bilayer import BilayerModel
    from bilayer.animate.pipeline import calibration_poses

    model = BilayerModel.from_pretrained(files["model"]).eval()
    avatar = Avatar.create(model, skdata.astronaut())
    eager = avatar.renderer(model)
    seen = []

    def recording(keypoints):
        seen.append(keypoints.numpy().copy())
        return eager(keypoints)

    np.save(tmp_path / "kps.npy", files["kps"])  # 20 frames, NaN where the face is lost (BLANK)
    with open_driver(tmp_path / "kps.npy", smoothing=False) as driver:
        poses = calibration_poses(avatar, driver, count=8)
        stream(avatar, recording, driver, tmp_path / "a", alpha=True, progress=False)
    rendered = np.concatenate(seen)
    faces = [i for i in range(20) if i not in BLANK]
    picked = [faces[round(j * (len(faces) - 1) / 7)] for j in range(8)]
    assert picked[0] == 0 and picked[-1] == faces[-1]
    np.testing.assert_allclose(poses, rendered[picked], atol=1e-6)
    assert calibration_poses(avatar, open_driver(tmp_path / "kps.npy"), count=100).shape == (len(faces), 136)
    with pytest.raises(ValueError, match=r"^count is 0; expected a whole number ≥ 1\.$"):
        calibration_poses(avatar, open_driver(tmp_path / "kps.npy"), count=0)
    # what int8 is calibrated on: the photo's jittered poses (Avatar.renderer's default), then the driver's
    calibration = avatar.calibration(poses)
    torch.testing.assert_close(calibration[: -len(poses)], avatar.calibration())
    torch.testing.assert_close(calibration[-len(poses) :], torch.from_numpy(poses))

    # a video whose faces are found while it plays: frames sought across it, each face detected on its own. With
    # the file backend (the keypoints stored next to the video) detection is exact, so the poses must be those
    # animate renders for the same frames
    video = tmp_path / "video.mp4"
    video.write_bytes(files["driver"].read_bytes())
    np.save(tmp_path / "video.npy", files["kps"])
    seen.clear()
    with open_driver(video, landmarks="file", smoothing=False) as driver:
        assert driver.known_keypoints() is None
        poses = calibration_poses(avatar, driver, count=8)
        stream(avatar, recording, driver, tmp_path / "b", alpha=True, progress=False)
    spread = [round(j * 19 / 7) for j in range(8)]  # 0, 3, 5, 8, 11, 14, 16, 19
    picked = [i for i in spread if i not in BLANK]  # 0, 3, 5, 8, 11, 14, 16: grey frames have no face
    assert picked[-1] == 16 and len(picked) == 7
    np.testing.assert_allclose(poses, np.concatenate(seen)[picked], atol=1e-6)
    # MediaPipe: detection on each sought frame alone, near what tracking gives those frames (its region of
    # interest comes from the previous frame's landmarks, so points differ by a few pixels)
    seen.clear()
    with open_driver(files["driver"]) as driver:
        assert driver.known_keypoints() is None
        poses = calibration_poses(avatar, driver, count=8)
        stream(avatar, recording, driver, tmp_path / "c", alpha=True, progress=False)
    assert len(poses) == len(picked)
    difference = np.abs(poses - np.concatenate(seen)[picked]).mean(1)  # per frame, in the model's [-1, 1] units
    assert difference[0] < 1e-6 and difference.max() < 0.08 and difference.mean() < 0.03, difference


def test_cli_backend_auto_is_the_default_and_says_what_it_chose(files, tmp_path, capsys, monkeypatch):
    """Without --backend, on a CPU without native bfloat16, a short driver renders with eager (no set-up to repay);
    the length that counts is what --max-frames leaves of a long one; with native bfloat16, bf16. The choice and
    its reason go to stderr, the backend used into the summary and the report."""
    from bilayer.runtime import backends
    from bilayer.runtime.backends import AUTO_INT8_FRAMES

    kps = np.nan_to_num(files["kps"])
    np.save(tmp_path / "kps.npy", np.resize(kps, (AUTO_INT8_FRAMES, *kps.shape[1:])))  # long enough for int8
    for native_bf16, backend, why in (
            (True, "bf16", "bf16: this CPU computes bfloat16 natively (AVX512-BF16 / AMX)"),
            (False, "eager", "eager: 3 driver frames; int8 repays its 20–40 s of set-up from about ")):
        monkeypatch.setattr(backends, "native_bfloat16", lambda native_bf16=native_bf16: native_bf16)
        code, out, err = cli(capsys, "animate", "--model", files["model"], "--source", files["photo"], "--driver",
                             tmp_path / "kps.npy", "--max-frames", "3", "--out", tmp_path / f"{backend}.mp4",
                             "--report", tmp_path / f"{backend}.json")
        assert code == 0, err
        assert f"backend (auto) {why}" in err and f"frames/s with {backend} (per frame" in out
        assert json.loads((tmp_path / f"{backend}.json").read_text())["backend"] == backend
    # a Matroska driver states no frame count: its video track's duration measures it (0.32 s: 8 frames; its
    # audio track, 1 s long, does not count), the reason says so, and the progress bar ends where the driver did
    images, _ = render_person(8, person=1)
    mkv = make_video(tmp_path / "driver.mkv", images, audio="aac", audio_seconds=1.0)
    np.save(tmp_path / "kps8.npy", kps[:8])
    code, out, err = cli(capsys, "animate", "--model", files["model"], "--source", files["photo"], "--driver", mkv,
                         "--driver-keypoints", tmp_path / "kps8.npy", "--out", tmp_path / "m.mp4")
    assert code == 0, err
    estimate = re.search(r"backend \(auto\) eager: about (\d+) driver frames \(from its duration\); int8 repays", err)
    assert estimate and int(estimate[1]) == 8
    assert "8 frames" in out and err.split("\r")[-1].startswith("animate: 100%") and "| 8/8 [" in err.split("\r")[-1]


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # torch-internal, raised while inductor loads
@pytest.mark.slow  # int8: export, calibration and an inductor compile (~20 s)
def test_cli_animate_int8_matches_eager(files, tmp_path, capsys):
    """--backend int8 (calibrated on the driver's poses and the photo's own, two workers) writes the frames eager
    writes, up to quantization noise."""
    np.save(tmp_path / "kps.npy", np.nan_to_num(files["kps"][:6]))
    frames = {}
    for backend in ("eager", "int8"):
        code, out, err = cli(capsys, "animate", "--model", files["model"], "--source", files["photo"], "--driver",
                             tmp_path / "kps.npy", "--out", tmp_path / backend, "--alpha", "--backend", backend,
                             "--workers", "2", *(["--no-progress"] if backend == "eager" else []))
        assert code == 0, err
        assert "6 frames" in out
        # the seconds of quantizing and compiling are announced, not silent, with the driver poses calibrated on
        assert ("quantizing (calibrated on 6 driver poses and the photo's own) and compiling the int8 renderer"
                in err) == (backend == "int8")
        frames[backend] = _png_frames(tmp_path / backend)
    ours, ref = (np.stack(frames[b]).astype(np.float64) for b in ("int8", "eager"))
    assert ours.shape == ref.shape and ours.shape[0] == 6
    mse = ((ours - ref) ** 2).mean()
    assert mse > 0 and 10 * np.log10(255.0**2 / mse) >= 35  # quantized (not the eager frames), and close


def test_random_weight_demo_and_demo_errors(tmp_path, capsys):
    import cv2

    code, out, err = cli(capsys, "demo", "--random-weights", "--out", tmp_path / "rw")
    assert code == 0, err
    path = tmp_path / "rw" / "overview_random_weights.png"
    assert out.strip() == f"wrote {path}"
    grid = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)
    assert grid.shape == (3 * 128, 7 * 128, 3)  # 3 poses × (photo, keypoints, texture, LF, HF, mask, result), 2×
    assert tuple(grid[0, 0]) == (60, 90, 140)  # the photo's background
    mask = grid[:, 5 * 128 : 6 * 128].astype(int)
    assert (mask[..., 0] == mask[..., 1]).all() and (mask[..., 1] == mask[..., 2]).all()  # grey
    assert grid[:, 2 * 128 : 3 * 128].std() > 1  # a texture, not a constant
    code, _, err = cli(capsys, "demo", "--model", tmp_path / "none", "--out", tmp_path / "d")
    assert_user_error_text(code, err, "no trained model in", "--random-weights")
    code, _, err = cli(capsys, "demo", "--frames", "1", "--out", tmp_path / "d")
    assert_user_error_text(code, err, "--frames is 1")
    assert not (tmp_path / "d").exists()


def test_animate_options_api_is_the_command(files, tmp_path, capsys):
    """``animate(AnimateOptions(...))`` is what `bilayer animate` runs: the same frames from the same options, the
    report written where asked, and the same one-sentence refusals before any work."""
    from bilayer.animate import AnimateOptions, AnimationReport, animate
    from bilayer.outputs import OutputError

    np.save(tmp_path / "drive.npy", files["kps"][:6])
    options = AnimateOptions(model=str(files["model"]), source=str(files["photo"]), driver=str(tmp_path / "drive.npy"),
                             out=str(tmp_path / "api.mp4"), backend="eager", segmentation="none", progress=False,
                             report=str(tmp_path / "api.json"), workers=1, enhance=False)
    report = animate(options)
    assert isinstance(report, AnimationReport) and report.frames == 6
    assert json.loads((tmp_path / "api.json").read_text())["frames"] == 6
    code, _, err = cli(capsys, "animate", "--model", files["model"], "--source", files["photo"], "--driver",
                       tmp_path / "drive.npy", "--out", tmp_path / "cli.mp4", "--backend", "eager", "--segmentation",
                       "none", "--workers", "1", "--no-enhance", "--no-progress")
    assert code == 0, err
    api, cli_frames = read_video(tmp_path / "api.mp4")[0], read_video(tmp_path / "cli.mp4")[0]
    assert len(api) == len(cli_frames) == 6 and all(np.array_equal(a, b) for a, b in zip(api, cli_frames))
    refused = dataclasses.replace(options, alpha=True, paste_back=True, out=str(tmp_path / "never.mov"), report=None)
    with pytest.raises(OutputError, match=r"^--alpha writes the crop with its mask; it cannot be combined with"):
        animate(refused)
    before = files["driver"].read_bytes()
    with pytest.raises(OutputError, match="--out"):  # the output onto an input
        animate(dataclasses.replace(options, driver=str(files["driver"]), out=str(files["driver"]), report=None))
    assert not (tmp_path / "never.mov").exists() and files["driver"].read_bytes() == before


@pytest.mark.parametrize("command", ["animate", "live", "avatar"])
def test_every_avatar_option_of_the_command_line_reaches_the_avatar(command):
    """``AvatarOptions.fields_from`` maps each avatar option a command parses to its field, with the values given
    (no field left at its default while its option was set)."""
    import argparse

    from bilayer.animate.cli import configure_animate
    from bilayer.live.cli import configure_live
    from bilayer.runtime.avatar_options import AvatarOptions
    from bilayer.runtime.cli import configure_avatar

    parser = argparse.ArgumentParser()
    {"animate": configure_animate, "live": configure_live, "avatar": configure_avatar}[command](parser)
    args = ["--model", "m", "--source", "p.jpg", "--source-keypoints", "k.npy", "--source-mask", "m.png",
            "--source-is-crop", "--landmarks", "dlib", "--landmark-weights", "w", "--segmentation", "none",
            "--no-enhance"]
    args += {"animate": ["--driver", "d.mp4", "--out", "o.mp4"], "live": ["--out", "o.mp4"],
             "avatar": ["--out", "o.avatar"]}[command]
    options = AvatarOptions(**AvatarOptions.fields_from(parser.parse_args(args)))
    expected = AvatarOptions(source="p.jpg", source_keypoints="k.npy", source_mask="m.png", source_is_crop=True,
                             landmarks="dlib", landmark_weights="w", segmentation="none", enhance=False)
    assert options == expected
    assert dict(options.avatar_inputs())["--source-mask"] == "m.png"


@pytest.mark.parametrize("command", ["animate", "live"])
def test_every_option_of_a_driven_command_reaches_its_field(command):
    """``fields_from`` fills every field of AnimateOptions / LiveOptions from the command's own options — the
    avatar's, those the two commands share (``DrivenOptions``) and the command's own — each given a value other
    than its default, so an option that stops reaching its field (or a field without an option) fails."""
    import argparse

    from bilayer.animate.app import AnimateOptions
    from bilayer.animate.cli import configure_animate
    from bilayer.live.app import LiveOptions
    from bilayer.live.cli import configure_live

    shared = {"--model": "m", "--avatar": "a.avatar", "--source": "p.jpg", "--source-keypoints": "k.npy",
              "--source-mask": "m.png", "--landmarks": "dlib", "--landmark-weights": "w", "--segmentation": "none",
              "--motion": "absolute", "--background": "white", "--backend": "eager", "--max-frames": "7",
              "--report": "r.json", "--out": "o.mp4"}
    flags = ["--source-is-crop", "--no-enhance", "--no-smoothing", "--side-by-side", "--no-progress"]
    own = {"animate": ({"--driver": "d.mp4", "--driver-keypoints": "dk.npy", "--workers": "3", "--driver-faces": "2"},
                       ["--paste-back", "--alpha"]),
           "live": ({"--driver": "camera:1", "--web": "8080", "--send": "http://h:1", "--stream": "s",
                     "--driver-fps": "10", "--seconds": "5", "--fps": "20", "--camera-size": "640x480",
                     "--camera-fps": "30"}, ["--virtual-camera", "--loop"])}[command]
    cls, configure = {"animate": (AnimateOptions, configure_animate), "live": (LiveOptions, configure_live)}[command]
    parser = argparse.ArgumentParser()
    configure(parser)
    values = {**shared, **own[0]}
    args = [x for flag, value in values.items() for x in (flag, value)] + flags + own[1]
    options = cls(**cls.fields_from(parser.parse_args(args)))
    left = [f.name for f in dataclasses.fields(cls) if f.default is not dataclasses.MISSING
            and getattr(options, f.name) == f.default]
    assert not left, f"fields left at their defaults although their options were given: {left}"
    for flag, value in values.items():  # each value reaches the field of its option's name (numbers parsed)
        got = getattr(options, flag[2:].replace("-", "_"))
        assert got == type(got)(value), flag
    assert (options.enhance, options.smoothing, options.progress, options.source_is_crop) == (False, False, False, True)
