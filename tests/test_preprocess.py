"""Preprocessing: decoding, keypoint backends and the MediaPipe → iBUG-68 map, stabilised crops, the pipeline.

The end-to-end tests run on a real face: ``skimage.data.astronaut()`` moved, rotated and scaled smoothly through a
short H.264 video (with sensor noise and compression so that the detector is not noise free) plus a few uniform
grey frames. The true transform of every frame is known, so the crop jitter is measured against the true motion.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from bilayer.preprocess import (
    CropBox,
    MissingWeightsError,
    OneEuroFilter,
    PreprocessError,
    UnknownBackendError,
    crop_box,
    crop_image,
    decode_frames,
    detect_keypoints,
    discover,
    keypoints_from_crop,
    keypoints_to_crop,
    preprocess,
    resolve_box_mode,
    smooth_keypoints,
    stabilise_boxes,
)
from bilayer.vision.crop import BOX_MODES
from bilayer.vision.index_map import MEDIAPIPE_TO_IBUG68

from .conftest import assert_user_error, run_module

av = pytest.importorskip("av")
skdata = pytest.importorskip("skimage.data")
pytest.importorskip("mediapipe")

# A fixed point of the astronaut's face (her landmark-box centre, in pixels of the 512² image).
FACE_POINT = np.array([225.0, 124.0])
N_FRAMES, SIDE, FPS = 40, 320, 25
BLANK = (12, 13, 27)  # uniform grey frames: no face
CODEC = "libx264" if "libx264" in av.codecs_available else "mpeg4"

# Bounds asserted below, measured on this video (docs/preprocessing.md, "Jitter"): see the end-to-end test.
JITTER_RMS_BOUND = 0.8  # px of the 256² crop (measured 0.32; per-frame reference crops 1.66)
JITTER_MAX_BOUND = 2.0  # px (measured 0.87; per-frame 4.11)
FOLLOW_RMS_BOUND = 2.0  # px, crop-centre step minus true face step (measured 0.81)


def face_transforms(n: int = N_FRAMES, side: int = SIDE) -> list[np.ndarray]:
    """2×3 affine maps (astronaut pixels → frame pixels): half a period of a smooth sway, ±20/10 px, ±8°, ±10 %."""
    out = []
    for t in range(n):
        ph = np.pi * t / n
        shift = np.array([20.0 * np.sin(ph), 10.0 * np.sin(2 * ph)])
        m = cv2.getRotationMatrix2D(tuple(FACE_POINT), 8.0 * np.sin(ph), 1.0 + 0.10 * np.sin(ph + 1.0))
        m[:, 2] += side / 2 + shift - FACE_POINT
        out.append(m)
    return out


def write_video(path: Path, frames: list[np.ndarray], fps: int = FPS, crf: int = 26) -> None:
    h, w = frames[0].shape[:2]
    with av.open(str(path), "w") as container:
        stream = container.add_stream(CODEC, rate=fps)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        if CODEC == "libx264":
            stream.options = {"crf": str(crf), "preset": "ultrafast"}
        for f in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(f, format="rgb24")))
        container.mux(stream.encode())


def face_video(path: Path, n: int = N_FRAMES, blank=BLANK, seed: int = 0) -> list[np.ndarray]:
    img = skdata.astronaut()
    rng = np.random.default_rng(seed)
    maps = face_transforms(n)
    frames = []
    for t, m in enumerate(maps):
        if t in blank:
            frames.append(np.full((SIDE, SIDE, 3), 128, np.uint8))
            continue
        f = cv2.warpAffine(img, m, (SIDE, SIDE), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
        frames.append(np.clip(f + rng.normal(0, 10, f.shape), 0, 255).astype(np.uint8))
    write_video(path, frames)
    return maps


def files(root: Path, kind: str, key: str, ext: str, split: str = "train") -> list[Path]:
    return sorted((root / kind / split / key).glob(f"*.{ext}"))


def marker(root: Path, key: str, split: str = "train") -> dict:
    return json.loads((root / ".preprocess" / split / f"{key}.json").read_text())


# ------------------------------------------------------------------------------------------ index map
@pytest.fixture(scope="module")
def astronaut_keypoints() -> np.ndarray:
    kp = detect_keypoints(skdata.astronaut())
    assert kp is not None, "no face found on the astronaut"
    return kp


def test_index_map_table():
    assert len(MEDIAPIPE_TO_IBUG68) == 68
    assert all(1 <= len(v) <= 2 and all(0 <= i < 468 for i in v) for v in MEDIAPIPE_TO_IBUG68)


def test_index_map_gives_ibug_geometry_on_astronaut(astronaut_keypoints):
    kp = astronaut_keypoints
    assert kp.shape == (68, 2) and kp.dtype == np.float32
    x, y = kp[:, 0], kp[:, 1]
    # the face of astronaut() lies in about x 175..275, y 65..180
    assert (x > 165).all() and (x < 285).all() and (y > 55).all() and (y < 190).all()
    eye_l, eye_r = kp[36:42].mean(0), kp[42:48].mean(0)
    eyes_y = (eye_l[1] + eye_r[1]) / 2
    iod = np.linalg.norm(eye_r - eye_l)
    assert 25 < iod < 60
    # vertical order: brows < eyes < nose tip < mouth < chin
    assert kp[17:27, 1].mean() < eyes_y < y[30] < kp[48:68, 1].mean() < y[8]
    assert y[27] < y[28] < y[29] < y[30] < y[33]
    # image-left / image-right ordering of paired parts
    assert x[0] < x[4] < x[8] < x[12] < x[16]
    assert x[36] < x[39] < x[42] < x[45] and x[17] < x[21] < x[22] < x[26]
    assert x[31] < x[33] < x[35] and x[48] < x[51] < x[54] and x[60] < x[64]
    assert eye_l[0] < x[30] < eye_r[0]
    # eye lids: upper above lower; mouth: upper lip above lower lip
    assert y[37] < y[41] and y[38] < y[40] and y[43] < y[47] and y[44] < y[46]
    assert y[51] < y[62] <= y[66] < y[57]
    # jaw: the ends at eye height, the rest below the eyes, the chin lowest
    assert abs(y[0] - eyes_y) < 0.35 * iod and abs(y[16] - eyes_y) < 0.35 * iod
    assert (y[3:14] > eyes_y).all() and y[8] == y[0:17].max()
    # the jaw is wider than the eyes, the mouth narrower than the jaw
    assert x[0] < x[36] and x[16] > x[45] and x[2] < x[48] and x[14] > x[54]


def test_main_face_tracker_keeps_the_same_person():
    from bilayer.preprocess import Face, MainFaceTracker

    def face(cx, cy, size):
        square = np.array([[-0.5, -0.5], [0.5, 0.5]]) * size + [cx, cy]
        return Face(np.repeat(square, 34, axis=0).astype(np.float32))

    tracker = MainFaceTracker()
    assert tracker([]) is None
    first = tracker([face(50, 50, 20), face(200, 60, 40)])  # the largest face of the first frame
    assert first.centre[0] == 200
    # later the other person gets bigger, but the chosen face is the one nearest to the last pick
    assert tracker([face(60, 50, 80), face(210, 62, 38)]).centre[0] == 210
    assert tracker([]) is None  # a frame without faces keeps the memory of the last pick
    assert tracker([face(55, 50, 90), face(215, 65, 37)]).centre[0] == 215


# --------------------------------------------------------------------------------------- crop pieces
def test_crop_box_reference_protocol():
    kp = np.array([[100.0, 200.0], [180.0, 260.0], [140.0, 230.0]])
    box = crop_box(kp, exact=True)  # centre (140, 230), size 80, up by 80 // 6 = 13
    assert (box.cx, box.cy, box.half, box.side) == (140.0, 217.0, 80.0, 160.0)
    fbox = crop_box(kp)
    assert fbox.cx == 140.0 and fbox.cy == pytest.approx(230 - 80 / 6) and fbox.half == 80.0


def test_crop_image_matches_pil_and_is_black_outside():
    from PIL import Image

    img = skdata.astronaut()
    ref = np.asarray(Image.fromarray(img).crop((100, 10, 300, 210)).resize((128, 128), Image.BICUBIC))
    ours = crop_image(img, CropBox(200.0, 110.0, 100.0), 128)
    assert ours.shape == (128, 128, 3) and ours.dtype == np.uint8
    assert np.abs(ref.astype(int) - ours)[3:-3, 3:-3].max() == 0  # identical but for the outermost pixels
    corner = crop_image(img, CropBox(10.0, 10.0, 100.0), 64)  # mostly above/left of the image
    assert corner[:20, :20].max() == 0 and corner[-10:, -10:].mean() > 20
    mask = crop_image(np.ones((50, 50), np.float32), CropBox(25.0, 25.0, 50.0), 32)
    assert mask.shape == (32, 32) and mask.dtype == np.float32 and mask[0, 0] == 0 and mask[16, 16] == pytest.approx(1)
    kp = np.random.default_rng(0).uniform(100, 300, (68, 2))
    box = CropBox(180.5, 210.25, 77.3)
    assert np.allclose(keypoints_from_crop(keypoints_to_crop(kp, box, 256), box, 256), kp, atol=1e-3)


def test_one_euro_filter_and_stabilisation():
    rng = np.random.default_rng(0)
    f = OneEuroFilter(min_cutoff=1.0, beta=0.0)
    assert f(np.array([3.0]), 0.0)[0] == 3.0  # the first sample passes
    t = np.arange(100) / 25.0
    noisy = 5.0 + rng.normal(0, 1, 100)
    out = np.array([f(np.array([v]), ti)[0] for v, ti in zip(noisy, t)])
    assert out[20:].std() < 0.5 * noisy[20:].std()
    # zero-phase smoothing does not lag a ramp
    ramp = np.stack([np.linspace(100, 200, 50)[:, None] + rng.normal(0, 0.5, (50, 68)), np.full((50, 68), 50.0)], -1)
    sm = smooth_keypoints(ramp, np.arange(50) / 25.0)
    assert abs((sm[10:40, :, 0] - np.linspace(100, 200, 50)[10:40, None]).mean()) < 0.3
    assert np.array_equal(smooth_keypoints(ramp, np.arange(50) / 25.0, "none"), ramp.astype(np.float32))
    # boxes: a still head gets one box, a moving one a smooth track that follows it
    still = np.array([100.0, 100.0, 50.0]) + rng.normal(0, 0.5, (30, 3))
    fixed = stabilise_boxes(still)
    assert np.ptp(fixed, axis=0).max() == 0
    moving = np.stack([100 + np.linspace(0, 60, 50), np.full(50, 100.0), np.full(50, 50.0)], 1)
    moving += rng.normal(0, 1.5, (50, 3))
    smooth = stabilise_boxes(moving, np.arange(50) / 25.0)
    d2 = lambda b: np.abs(np.diff(b[:, :2], 2, axis=0)).mean()  # noqa: E731
    assert d2(smooth) < 0.3 * d2(moving)
    assert np.abs(smooth[5:-5, 0] - (100 + np.linspace(0, 60, 50))[5:-5]).max() < 4


def test_resolve_box_mode_is_the_auto_decision_of_stabilise_boxes():
    rng = np.random.default_rng(3)
    times = np.arange(40) / 25.0
    still = np.array([100.0, 100.0, 50.0]) + rng.normal(0, 0.5, (40, 3))  # within 5 % of the median box
    moving = np.stack([100 + np.linspace(0, 30, 40), np.full(40, 100.0), np.full(40, 50.0)], 1)  # drifts 15 px
    zooming = np.stack([np.full(40, 100.0), np.full(40, 100.0), np.linspace(45, 55, 40)], 1)  # size ±10 %
    assert resolve_box_mode(still) == "fixed"
    assert resolve_box_mode(moving) == "smooth" and resolve_box_mode(zooming) == "smooth"
    assert resolve_box_mode(zooming, tolerance=0.15) == "fixed"
    for mode in ("fixed", "smooth", "none"):  # explicit modes are kept whatever the motion
        assert resolve_box_mode(still, mode) == resolve_box_mode(moving, mode) == mode
    with pytest.raises(ValueError, match="unknown box mode 'wobbly'"):
        resolve_box_mode(still, "wobbly")
    # stabilise_boxes in "auto" applies exactly the resolved mode
    for boxes in (still, moving, zooming):
        auto = stabilise_boxes(boxes, times)
        assert np.array_equal(auto, stabilise_boxes(boxes, times, mode=resolve_box_mode(boxes)))
    assert not np.array_equal(stabilise_boxes(moving, times), stabilise_boxes(moving, times, mode="fixed"))
    # an empty sequence stays empty in every mode, and the mode is still checked
    empty = np.zeros((0, 3))
    for mode in BOX_MODES:
        assert stabilise_boxes(empty, mode=mode).shape == (0, 3)
    with pytest.raises(ValueError, match="unknown box mode 'wobbly'"):
        stabilise_boxes(empty, mode="wobbly")


# -------------------------------------------------------------------------------------- inputs, decoding
def test_discover_layouts(tmp_path):
    for rel in ("id1/vidA/00001.mp4", "id1/vidA/00002.mp4", "id2/vidB/00001.mp4"):
        (tmp_path / "vox" / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "vox" / rel).touch()
    keys = [j.key for j in discover(tmp_path / "vox")]
    assert keys == [("id1", "vidA", "00001"), ("id1", "vidA", "00002"), ("id2", "vidB", "00001")]
    assert len(discover(tmp_path / "vox", exclude=[tmp_path / "vox" / "id2"])) == 2  # e.g. an output root inside
    (tmp_path / "flat").mkdir()
    for name in ("b.mov", "a.mp4", "notes.txt"):
        (tmp_path / "flat" / name).touch()
    assert [j.key for j in discover(tmp_path / "flat")] == [("a", "a", "a"), ("b", "b", "b")]
    (tmp_path / "frames").mkdir()
    for i in (2, 10, 1):
        cv2.imwrite(str(tmp_path / "frames" / f"{i:03d}.png"), np.zeros((8, 8, 3), np.uint8))
    (job,) = discover(tmp_path / "frames")
    assert job.key == ("frames",) * 3 and job.source == tmp_path / "frames"
    assert len(list(decode_frames(tmp_path / "frames"))) == 3
    with pytest.raises(PreprocessError, match="does not exist"):
        discover(tmp_path / "missing")
    (tmp_path / "dup" / "x").mkdir(parents=True)
    (tmp_path / "dup" / "x" / "c.mp4").touch()
    (tmp_path / "dup" / "x" / "c.avi").touch()
    with pytest.raises(PreprocessError, match="both be written"):
        discover(tmp_path / "dup")


def test_decode_frames_fps_and_max_frames(tmp_path):
    frames = [np.full((32, 48, 3), 8 * i, np.uint8) for i in range(25)]  # 1 s at 25 fps
    write_video(tmp_path / "v.mp4", frames)
    got = list(decode_frames(tmp_path / "v.mp4"))
    assert len(got) == 25 and got[0].shape == (32, 48, 3) and got[0].dtype == np.uint8
    assert len(list(decode_frames(tmp_path / "v.mp4", fps=10))) == 10
    assert len(list(decode_frames(tmp_path / "v.mp4", max_frames=7))) == 7
    assert len(list(decode_frames(tmp_path / "v.mp4", fps=5, max_frames=3))) == 3


# ----------------------------------------------------------------------------------------- end to end
@pytest.fixture(scope="module")
def face_run(tmp_path_factory):
    """The synthetic face video preprocessed with the defaults (MediaPipe keypoints and masks, One-Euro)."""
    root = tmp_path_factory.mktemp("face")
    maps = face_video(root / "clip.mp4")
    summary = preprocess(root / "clip.mp4", root / "out", progress=False)
    return root, maps, summary


def test_end_to_end_detects_the_face_and_drops_blank_frames(face_run):
    root, maps, summary = face_run
    out, key = root / "out", "clip/clip/clip"
    face_frames = N_FRAMES - len(BLANK)
    assert summary.ok and summary.count("done") == 1
    assert summary.frames_kept >= 0.95 * face_frames
    assert summary.frames_dropped == {"no face": len(BLANK)}
    imgs, kps = files(out, "imgs", key, "jpg"), files(out, "keypoints", key, "npy")
    segs = files(out, "segs", key, "png")
    assert len(imgs) == len(kps) == len(segs) == summary.frames_kept
    stems = {p.stem for p in imgs}
    assert not stems & {f"{i:06d}" for i in BLANK}
    assert stems == {p.stem for p in kps} == {p.stem for p in segs}
    img = cv2.imread(str(imgs[0]), cv2.IMREAD_UNCHANGED)
    assert img.shape == (256, 256, 3)
    seg = cv2.imread(str(segs[0]), cv2.IMREAD_UNCHANGED)
    assert seg.shape == (256, 256) and seg.dtype == np.uint8
    kp = np.load(kps[0])
    assert kp.shape == (68, 2) and kp.dtype == np.float32
    # reference framing: the landmark box is about half the crop wide, its centre 1/12 of the crop below centre
    width = np.ptp(kp, axis=0).max()
    centre = (kp.min(0) + kp.max(0)) / 2
    assert 100 < width < 156 and abs(centre[0] - 128) < 12 and abs(centre[1] - (128 + 256 / 12)) < 12
    # the mask covers the face and not the top corners (background)
    inside = tuple(int(v) for v in kp[30])
    assert seg[inside[1], inside[0]] > 200 and seg[:10, :10].mean() < 60
    info = marker(out, key)
    assert info["status"] == "done" and info["frames_kept"] == summary.frames_kept and len(info["boxes"]) == len(imgs)
    # "auto" is recorded as the mode it resolved to: the head moves, so the boxes are smoothed, not one box
    assert info["box_mode"] == "smooth" and len({tuple(b) for b in info["boxes"].values()}) > 1


def _in_crop_face_position(info: dict, maps: list[np.ndarray], size: int = 256):
    stems = sorted(info["boxes"])
    idx = np.array([int(s) for s in stems])
    boxes = np.array([info["boxes"][s] for s in stems])
    true = np.array([maps[i][:, :2] @ FACE_POINT + maps[i][:, 2] for i in idx])
    scale = size / (2 * boxes[:, 2])
    pos = (true - (boxes[:, :2] - boxes[:, 2:3])) * scale[:, None]
    return idx, boxes, true, scale, pos


def jitter(idx: np.ndarray, pos: np.ndarray) -> np.ndarray:
    """|second difference| of the face's position in the crop over runs of consecutive frames (crop pixels)."""
    ok = (idx[2:] - idx[:-2]) == 2
    return np.linalg.norm(pos[2:] - 2 * pos[1:-1] + pos[:-2], axis=1)[ok]


def test_end_to_end_crop_jitter_is_small(face_run):
    root, maps, _ = face_run
    out, key = root / "out", "clip/clip/clip"
    info = marker(out, key)
    idx, boxes, true, scale, pos = _in_crop_face_position(info, maps)
    j = jitter(idx, pos)
    # crop-centre step minus the face's true step, in crop pixels
    ok = np.diff(idx) == 1
    follow = np.linalg.norm((np.diff(boxes[:, :2], axis=0) - np.diff(true, axis=0)) * scale[1:, None], axis=1)[ok]
    # the reference per-frame crop of the same (saved) keypoints, for comparison
    per_frame = []
    for s, b in zip(sorted(info["boxes"]), boxes):
        kp = keypoints_from_crop(np.load(out / "keypoints" / "train" / key / f"{s}.npy"), CropBox.from_array(b), 256)
        per_frame.append(crop_box(kp).to_array())
    pf_scale = 256 / (2 * np.array(per_frame)[:, 2])
    pf_pos = (true - (np.array(per_frame)[:, :2] - np.array(per_frame)[:, 2:3])) * pf_scale[:, None]
    j_ref = jitter(idx, pf_pos)
    rms = lambda v: float(np.sqrt(np.mean(v**2)))  # noqa: E731
    print(f"jitter rms {rms(j):.2f} max {j.max():.2f} px (per-frame crop: rms {rms(j_ref):.2f} max {j_ref.max():.2f}); "
          f"follow rms {rms(follow):.2f} max {follow.max():.2f}")
    assert rms(j) < JITTER_RMS_BOUND and j.max() < JITTER_MAX_BOUND
    assert rms(j) < 0.6 * rms(j_ref)
    assert rms(follow) < FOLLOW_RMS_BOUND
    # the face stays near its reference place in the crop (the box follows the head)
    assert np.ptp(pos, axis=0).max() < 20


def test_end_to_end_keypoints_follow_the_true_motion(face_run):
    root, maps, _ = face_run
    out, key = root / "out", "clip/clip/clip"
    ref = detect_keypoints(skdata.astronaut())
    info = marker(out, key)
    errors = []
    for s, b in info["boxes"].items():
        box = CropBox.from_array(b)
        kp = np.load(out / "keypoints" / "train" / key / f"{s}.npy")
        m = maps[int(s)]
        truth = keypoints_to_crop(ref @ m[:, :2].T + m[:, 2], box, 256)
        errors.append(np.linalg.norm(kp - truth, axis=1).mean())
    assert np.mean(errors) < 3.0 and np.max(errors) < 6.0  # crop pixels (measured mean 1.25)


def test_resume_skips_finished_sequences(face_run, tmp_path):
    root, _, _ = face_run
    out = root / "out"
    before = {p: p.stat().st_mtime_ns for p in (out / "imgs").rglob("*.jpg")}
    again = preprocess(root / "clip.mp4", out, progress=False)
    assert again.count("already done") == 1 and again.count("done") == 0 and again.ok
    assert {p: p.stat().st_mtime_ns for p in (out / "imgs").rglob("*.jpg")} == before


def test_truncated_video_is_reported_and_skipped(face_run, tmp_path):
    import argparse

    from bilayer.preprocess import command, configure_parser

    root, _, _ = face_run
    videos = tmp_path / "videos"
    videos.mkdir()
    shutil.copy(root / "clip.mp4", videos / "good.mp4")
    data = (root / "clip.mp4").read_bytes()
    (videos / "broken.mp4").write_bytes(data[: len(data) // 2])
    parser = configure_parser(argparse.ArgumentParser())
    args = parser.parse_args([str(videos), "--out", str(tmp_path / "out"), "--max-frames", "12", "--min-frames", "5",
                              "--segmentation", "none", "--no-progress"])
    assert command(args) == 0
    summary = json.loads((tmp_path / "out" / ".preprocess" / "train" / "last_run.json").read_text())
    assert summary["sequences"]["done"] == 1 and summary["sequences"]["failed"] == 1
    assert summary["reasons"] == {"unreadable video": 1}
    (failed,) = [r for r in summary["results"] if r["status"] == "failed"]
    assert failed["name"] == "broken/broken/broken"
    assert len(files(tmp_path / "out", "imgs", "good/good/good", "jpg")) == 12
    assert not (tmp_path / "out" / "segs").exists()  # --segmentation none writes no masks
    # nothing processable at all → non-zero
    only_bad = tmp_path / "only_bad"
    only_bad.mkdir()
    shutil.copy(videos / "broken.mp4", only_bad / "broken.mp4")
    args = parser.parse_args([str(only_bad), "--out", str(tmp_path / "out2"), "--no-progress"])
    assert command(args) != 0


# ----------------------------------------------------------------------------------------- file backend
def test_file_backend_round_trip_and_short_sequences(tmp_path):
    rng = np.random.default_rng(1)
    frames = [rng.integers(0, 255, (120, 160, 3), dtype=np.uint8) for _ in range(10)]
    clips = tmp_path / "clips"
    (clips / "p1" / "v1").mkdir(parents=True)
    write_video(clips / "p1" / "v1" / "c1.mp4", frames)
    base = np.stack([np.linspace(40, 110, 68), 60 + 25 * np.sin(np.linspace(0, 6, 68))], 1)
    track = np.stack([base + [2.0 * t, 1.0 * t] for t in range(10)]).astype(np.float32)
    track[4] = np.nan  # no face in frame 4
    np.save(clips / "p1" / "v1" / "c1.npy", np.concatenate([track, np.ones((10, 68, 1), np.float32)], -1))  # (T, 68, 3)
    write_video(clips / "p1" / "v1" / "c2.mp4", frames[:3])  # too short for --min-frames 5
    np.save(clips / "p1" / "v1" / "c2.npy", track[:3])
    write_video(clips / "p1" / "v1" / "c3.mp4", frames[:3])  # no keypoint file
    # a stale file of an interrupted earlier run is removed when the sequence is redone
    stale = tmp_path / "out" / "imgs" / "test" / "p1" / "v1" / "c1" / "999999.jpg"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"x")

    summary = preprocess(clips, tmp_path / "out", landmarks="file", segmentation="none", smoothing="none",
                         box_mode="none", min_frames=5, split="test", size=64, progress=False)
    assert summary.count("done") == 1 and summary.count("skipped") == 1 and summary.count("failed") == 1
    assert summary.reasons == {"too few valid frames": 1, "missing keypoint file": 1}
    assert summary.frames_dropped == {"no face": 1, "too few valid frames": 3}
    assert not stale.exists()
    out = tmp_path / "out"
    info = marker(out, "p1/v1/c1", split="test")
    assert info["box_mode"] == "none" and sorted(info["boxes"]) == [f"{i:06d}" for i in range(10) if i != 4]
    for i in range(10):
        path = out / "keypoints" / "test" / "p1" / "v1" / "c1" / f"{i:06d}.npy"
        if i == 4:
            assert not path.exists()
            continue
        kp = np.load(path)
        box = crop_box(track[i])  # no smoothing, no stabilisation: the reference box of the given keypoints
        assert kp.dtype == np.float32 and kp.shape == (68, 2)
        assert np.allclose(kp, keypoints_to_crop(track[i], box, 64), atol=1e-3)
        saved_box = CropBox.from_array(info["boxes"][f"{i:06d}"])
        assert np.allclose(keypoints_from_crop(kp, saved_box, 64), track[i], atol=1e-2)
        img = cv2.imread(str(out / "imgs" / "test" / "p1" / "v1" / "c1" / f"{i:06d}.jpg"))
        assert img.shape == (64, 64, 3)

    # a second run skips both the finished and the too-short sequence, and retries the failed one
    again = preprocess(clips, tmp_path / "out", landmarks="file", segmentation="none", smoothing="none",
                       box_mode="none", min_frames=5, split="test", size=64, progress=False)
    assert [r.status for r in again.sequences] == ["already done", "skipped", "failed"]


def test_image_folder_sequence(tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    img = skdata.astronaut()
    for i, shift in enumerate((0, 4, 8)):
        cv2.imwrite(str(folder / f"{i:04d}.jpg"), cv2.cvtColor(np.roll(img, shift, axis=1), cv2.COLOR_RGB2BGR))
    summary = preprocess(folder, tmp_path / "out", min_frames=1, size=128, progress=False)
    assert summary.frames_kept == 3
    assert [p.name for p in files(tmp_path / "out", "imgs", "photos/photos/photos", "jpg")] == [
        "000000.jpg", "000001.jpg", "000002.jpg"]


# ------------------------------------------------------------------------------------------ user errors
def test_max_faces_one_gives_the_same_keypoints_on_a_one_person_video(face_run):
    """--max-faces 1 (MediaPipe skips its face detector while the face holds): the same sequence, frames and
    keypoints as the default on a one-person video."""
    root, _maps, _summary = face_run
    summary = preprocess(root / "clip.mp4", root / "one", max_faces=1, segmentation="none", progress=False)
    assert summary.ok and summary.frames_kept == _summary.frames_kept
    key = "clip/clip/clip"
    default, one = files(root / "out", "keypoints", key, "npy"), files(root / "one", "keypoints", key, "npy")
    assert [p.name for p in default] == [p.name for p in one]
    for a, b in zip(default, one):
        np.testing.assert_array_equal(np.load(b), np.load(a))
    with pytest.raises(PreprocessError, match=r"^--max-faces must be a whole number of faces ≥ 1, got 0\.$"):
        preprocess(root / "clip.mp4", root / "none", max_faces=0)
    proc = run_module("bilayer.preprocess", str(root / "clip.mp4"), "--out", str(root / "none"), "--max-faces", "0")
    assert_user_error(proc, "--max-faces", "got 0")
    assert not (root / "none").exists()


def test_user_errors_are_one_sentence_value_errors(tmp_path):
    with pytest.raises(UnknownBackendError, match="valid names: dlib, face-alignment, file, mediapipe"):
        preprocess(tmp_path, tmp_path / "out", landmarks="openface")
    with pytest.raises(UnknownBackendError, match="valid names: mediapipe, none"):
        preprocess(tmp_path, tmp_path / "out", segmentation="graphonomy")
    with pytest.raises(PreprocessError, match="does not exist"):
        preprocess(tmp_path / "nothing.mp4", tmp_path / "out")
    assert issubclass(PreprocessError, ValueError)


def test_missing_face_alignment_weights_name_the_file(tmp_path):
    (tmp_path / "v.mp4").touch()
    with pytest.raises(MissingWeightsError) as err:
        preprocess(tmp_path / "v.mp4", tmp_path / "out", landmarks="face-alignment", landmark_weights=tmp_path / "w")
    msg = str(err.value)
    assert "\n" not in msg and msg.endswith(".")
    assert "2DFAN4" in msg and str(tmp_path / "w") in msg and "not found" in msg
    with pytest.raises(MissingWeightsError, match="--landmark-weights"):
        preprocess(tmp_path / "v.mp4", tmp_path / "out", landmarks="face-alignment")
    # through the command line: one "error: ..." line, no traceback
    proc = run_module("bilayer.preprocess", str(tmp_path / "v.mp4"), "--out", str(tmp_path / "out"),
                      "--landmarks", "face-alignment", "--landmark-weights", str(tmp_path / "w"))
    assert_user_error(proc, "2DFAN4", "not found")


def test_bad_keypoint_files_are_one_sentence(tmp_path):
    from bilayer.vision.landmarks import load_keypoint_file

    np.savez(tmp_path / "several.npz", a=np.zeros((3, 68, 2)))
    (tmp_path / "several.npz").rename(tmp_path / "several.npy")
    np.save(tmp_path / "text.npy", np.full((3, 68, 2), "x"))
    np.save(tmp_path / "flat.npy", np.zeros((3, 136), np.float32))
    (tmp_path / "junk.npy").write_bytes(b"junk")
    for name, what, expected in (("several", "holds several arrays", "(T, 68, 2)"),
                                 ("text", "holds <U1 values", "(T, 68, 2)"),
                                 ("flat", "has shape (3, 136)", "(T, 68, 2)"),
                                 ("junk", "is not a NumPy .npy file", "saved with numpy.save")):
        with pytest.raises(PreprocessError) as err:
            load_keypoint_file(tmp_path / f"{name}.npy")
        msg = str(err.value)
        assert what in msg and expected in msg and str(tmp_path / f"{name}.npy") in msg, msg
        assert "\n" not in msg and msg.endswith(".")
    # a file given for the one sequence of a run is read before any work: the same sentence, nothing written
    write_video(tmp_path / "clip.mp4", [np.zeros((32, 32, 3), np.uint8)] * 2)
    with pytest.raises(PreprocessError, match="several arrays"):
        preprocess(tmp_path / "clip.mp4", tmp_path / "out", landmarks="file", keypoints=tmp_path / "several.npy",
                   segmentation="none", progress=False)
    assert not (tmp_path / "out").exists()
    # in a folder of keypoint files, a bad one fails its own sequence with that sentence
    (tmp_path / "kps").mkdir()
    (tmp_path / "several.npy").rename(tmp_path / "kps" / "clip.npy")
    summary = preprocess(tmp_path / "clip.mp4", tmp_path / "out", landmarks="file", keypoints=tmp_path / "kps",
                         segmentation="none", progress=False)
    (result,) = summary.sequences
    assert (result.status, result.reason) == ("failed", "bad keypoint file") and "several arrays" in result.detail


def test_backend_registry_checks_names_and_filters_options():
    from bilayer.preprocess import LANDMARK_BACKENDS, LandmarkBackend, create_landmark_backend, \
        create_segmentation_backend, register_landmark_backend

    @register_landmark_backend
    class Probe(LandmarkBackend):
        name = "probe"

        def __init__(self, path=None, scale: float = 1.0):
            self.path, self.scale = path, scale

    try:
        probe = create_landmark_backend("probe", scale=2.0, path=None, weights_dir="ignored")
        assert isinstance(probe, Probe) and probe.scale == 2.0 and probe.path is None
        with pytest.raises(UnknownBackendError, match=r"unknown keypoint backend 'prob'; valid names: .*probe"):
            create_landmark_backend("prob")
    finally:
        del LANDMARK_BACKENDS["probe"]
    assert create_segmentation_backend("none", model=1).segment(np.zeros((8, 8, 3), np.uint8)) is None


def test_module_entry_point_reports_os_errors_in_one_line(tmp_path):
    (tmp_path / "taken").write_text("a file")
    cv2.imwrite(str(tmp_path / "face.png"), np.zeros((8, 8, 3), np.uint8))
    proc = run_module("bilayer.preprocess", str(tmp_path / "face.png"), "--out", str(tmp_path / "taken" / "out"),
                      "--no-progress")
    assert_user_error(proc, str(tmp_path / "taken"))


@pytest.mark.slow
def test_parallel_workers(tmp_path):
    rng = np.random.default_rng(2)
    clips = tmp_path / "clips"
    clips.mkdir()
    kp = np.stack([np.linspace(40, 110, 68), np.linspace(40, 100, 68)], 1).astype(np.float32)
    for name in ("a", "b", "c"):
        write_video(clips / f"{name}.mp4", [rng.integers(0, 255, (96, 128, 3), dtype=np.uint8) for _ in range(6)])
        np.save(clips / f"{name}.npy", np.repeat(kp[None], 6, 0))
    summary = preprocess(clips, tmp_path / "out", landmarks="file", segmentation="none", min_frames=2,
                         workers=2, size=32, progress=False)
    assert summary.count("done") == 3 and summary.frames_kept == 18
    assert os.path.isdir(tmp_path / "out" / "imgs" / "train" / "c" / "c" / "c")
