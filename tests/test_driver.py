"""Runtime driving sources: videos with MediaPipe face tracking, frame folders and keypoint sequences; lost faces,
causal smoothing and the checks made before work starts.

The driving videos are SynthHeads renders (MediaPipe finds their faces; their true keypoints are known) written as
H.264 with PyAV, with uniform grey frames where the face must be lost.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from bilayer.synth import identity_params, render_frame, scene_params, sequence_trajectory
from bilayer.vision.smoothing import OneEuroParams
from bilayer.animate.driver import Driver, DriverError, DriverFrame, load_keypoint_sequence, open_driver

from .test_videoio import make_video

av = pytest.importorskip("av")

SIZE, FPS = 128, 25
BLANK = (6, 7, 17, 18, 19)  # face.mp4: grey frames (the face is lost)
LATE = (0, 1, 2)  # late.mp4: the face appears at frame 3


def render_person(frames: int, person: int = 0) -> tuple[list[np.ndarray], np.ndarray]:
    ident, scene = identity_params(0, person), scene_params(0, person, 0)
    images, kps = [], []
    for fp in sequence_trajectory(0, person, 0, 0, frames):
        image, kp, _ = render_frame(ident, fp, SIZE, scene)
        images.append(image)
        kps.append(kp)
    return images, np.stack(kps)


def blank_out(images: list[np.ndarray], kps: np.ndarray, blank) -> tuple[list[np.ndarray], np.ndarray]:
    images, kps = list(images), kps.copy()
    for i in blank:
        images[i] = np.full_like(images[i], 128)
        kps[i] = np.nan
    return images, kps


@pytest.fixture(scope="module")
def media(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("driver")
    images, kps = render_person(20)
    face_images, face_kps = blank_out(images, kps, BLANK)
    late_images, late_kps = blank_out(images[:8], kps[:8], LATE)
    return {
        "root": root,
        "face": make_video(root / "face.mp4", face_images, audio="aac"),
        "face_kps": face_kps,
        "face_images": face_images,
        "late": make_video(root / "late.mp4", late_images),
        "late_kps": late_kps,
        "blank": make_video(root / "blank.mp4", [np.full((SIZE, SIZE, 3), 128, np.uint8)] * 6),
    }


def face_error(found: np.ndarray, truth: np.ndarray) -> float:
    """Mean point error in units of the true face size."""
    return float(np.abs(found - truth).mean() / (truth.max(0) - truth.min(0)).max())


# ---------------------------------------------------------------------------------------- face tracking
def test_video_driver_tracks_and_reuses_lost_faces(media):
    with open_driver(media["face"]) as driver:
        assert driver.kind == "video" and driver.fps == pytest.approx(FPS) and driver.size == (SIZE, SIZE)
        assert driver.num_frames == 20 and driver.audio and driver.first_face == 0
        frames = list(driver)
        assert driver.lost == len(BLANK) and driver.frames_read == 20
    truth = media["face_kps"]
    assert [f.index for f in frames] == list(range(20))
    assert [f.time for f in frames] == pytest.approx([i / FPS for i in range(20)], abs=1e-3)
    assert [not f.found for f in frames] == [i in BLANK for i in range(20)]
    for f in frames:
        assert isinstance(f, DriverFrame) and f.image.shape == (SIZE, SIZE, 3) and f.image.dtype == np.uint8
        assert f.keypoints.shape == (68, 2) and f.keypoints.dtype == np.float32
        if f.found:
            assert face_error(f.keypoints, truth[f.index]) < 0.06
        else:  # the last keypoints, unchanged
            np.testing.assert_array_equal(f.keypoints, frames[f.index - 1].keypoints)


def test_frames_before_the_first_face_reuse_it(media):
    driver = open_driver(media["late"], smoothing=False)
    assert driver.first_face == 3
    frames = list(driver)
    driver.close()
    assert [f.found for f in frames] == [False] * 3 + [True] * 5 and driver.lost == 3
    for f in frames[:3]:
        np.testing.assert_array_equal(f.keypoints, frames[3].keypoints)  # unsmoothed: the first detection
    assert face_error(frames[3].keypoints, media["late_kps"][3]) < 0.06


def test_no_face_is_reported_before_work_starts(media):
    with pytest.raises(DriverError, match=r"no face found in driver .*blank\.mp4 \(any of its 6 frames\)"):
        open_driver(media["blank"])
    with pytest.raises(DriverError, match=r"no face found in driver .*late\.mp4 \(its first 2 frames\)"):
        open_driver(media["late"], face_search=2)


# --------------------------------------------------------------------------------------- keypoint files
def test_keypoint_file_driver(tmp_path, media):
    truth = media["face_kps"]
    path = tmp_path / "kps.npy"
    np.save(path, truth)
    driver = open_driver(path, smoothing=False, landmarks="no-such-backend")  # no detection runs
    assert driver.kind == "keypoints" and driver.size is None and not driver.audio
    assert driver.num_frames == 20 and driver.fps == FPS and driver.first_face == 0
    frames = list(driver)
    assert [f.found for f in frames] == [i not in BLANK for i in range(20)] and driver.lost == len(BLANK)
    for f in frames:
        assert f.image is None
        np.testing.assert_array_equal(f.keypoints, truth[f.index] if f.found else frames[f.index - 1].keypoints)
    again = list(driver)  # iterating again restarts from the first frame
    assert len(again) == 20 and driver.lost == len(BLANK)
    assert len(list(open_driver(path, max_frames=4))) == 4


def test_json_and_folder_keypoint_files(tmp_path, media):
    truth = media["face_kps"][:10]
    rows = [None if not np.isfinite(k).all() else k.tolist() for k in truth]
    plain, wrapped = tmp_path / "plain.json", tmp_path / "wrapped.json"
    plain.write_text(json.dumps(rows))
    wrapped.write_text(json.dumps({"fps": 30, "keypoints": rows}))
    kp, fps = load_keypoint_sequence(plain)
    assert fps is None and kp.shape == (10, 68, 2)
    np.testing.assert_allclose(kp, truth, rtol=1e-6)
    driver = open_driver(wrapped, smoothing=False)
    assert driver.fps == 30 and [f.found for f in driver] == [i not in BLANK for i in range(10)]
    folder = tmp_path / "seq"
    folder.mkdir()
    for i, k in enumerate(truth):
        np.save(folder / f"{i:06d}.npy", k)
    kp, _ = load_keypoint_sequence(folder)
    np.testing.assert_allclose(kp, truth)
    assert open_driver(folder, fps=12.5).fps == 12.5


def test_frame_folder_with_keypoints(tmp_path, media):
    folder = tmp_path / "frames"
    folder.mkdir()
    for i, image in enumerate(media["face_images"][:8]):
        cv2.imwrite(str(folder / f"{i:04d}.png"), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    kp_file = tmp_path / "kps.npy"
    np.save(kp_file, media["face_kps"][:8])
    driver = open_driver(folder, keypoints=kp_file, smoothing=False, landmarks="no-such-backend")
    assert driver.kind == "images" and driver.size == (SIZE, SIZE) and driver.num_frames == 8
    frames = list(driver)
    assert [f.time for f in frames] == pytest.approx([i / 25 for i in range(8)])
    np.testing.assert_array_equal(frames[0].image, media["face_images"][0])
    np.testing.assert_array_equal(frames[5].keypoints, media["face_kps"][5])
    assert [f.found for f in frames] == [i not in BLANK for i in range(8)]


def test_video_with_keypoint_file(tmp_path, media):
    kp_file = tmp_path / "kps.npy"
    np.save(kp_file, media["face_kps"])
    driver = open_driver(media["face"], keypoints=kp_file, smoothing=False, landmarks="no-such-backend")
    frames = list(driver)
    assert len(frames) == 20 and frames[4].image.shape == (SIZE, SIZE, 3)
    np.testing.assert_array_equal(frames[4].keypoints, media["face_kps"][4])
    short = tmp_path / "short.npy"
    np.save(short, media["face_kps"][:12])
    with pytest.raises(DriverError, match=r"keypoint file .*short\.npy has 12 frames but driver face\.mp4 has 20"):
        open_driver(media["face"], keypoints=short)
    limited = open_driver(media["face"], keypoints=short, max_frames=12, landmarks="no-such-backend")
    assert limited.num_frames == 12 and len(list(limited)) == 12


def test_driver_without_a_frame_count_is_measured_by_its_duration(tmp_path, media):
    """Matroska states a duration but no frame count: num_frames stays unknown (the keypoint file's length is not
    checked against it), frames_estimate is duration × rate, at most max_frames; an MP4's is its frame count."""
    mkv = make_video(tmp_path / "face.mkv", media["face_images"])
    kp_file = tmp_path / "kps.npy"
    np.save(kp_file, media["face_kps"])
    driver = open_driver(mkv, keypoints=kp_file, smoothing=False, landmarks="no-such-backend")
    assert driver.num_frames is None and driver.duration is None and driver.frames_estimate == 20
    assert len(list(driver)) == 20
    limited = open_driver(mkv, keypoints=kp_file, max_frames=12, landmarks="no-such-backend")
    assert limited.num_frames is None and limited.frames_estimate == 12 and len(list(limited)) == 12
    np.testing.assert_array_equal(limited.known_keypoints(), media["face_kps"][:12])  # known before playing
    # an audio track that outlasts the video does not lengthen the estimate (the video track's DURATION tag
    # is read, not the container's duration)
    longer_audio = make_video(tmp_path / "audio.mkv", media["face_images"], audio="aac", audio_seconds=2.0)
    assert open_driver(longer_audio, keypoints=kp_file, landmarks="no-such-backend").frames_estimate == 20
    mp4 = open_driver(media["face"], keypoints=kp_file, max_frames=15, landmarks="no-such-backend")
    assert mp4.num_frames == mp4.frames_estimate == 15
    assert open_driver(kp_file).frames_estimate == 20  # a keypoint sequence: its rows


def test_sample_keypoints_spreads_over_a_tracked_driver(tmp_path, media):
    """Driver.sample_keypoints: faces of frames spread over a video (sought) or a folder of frames (read
    directly), detected one by one, frames without a face skipped; within max_frames; None where the keypoints are
    known anyway. The file backend makes detection exact; MediaPipe finds the true faces."""
    folder = tmp_path / "frames"
    folder.mkdir()
    for i, image in enumerate(media["face_images"]):
        cv2.imwrite(str(folder / f"{i:03d}.png"), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    np.save(tmp_path / "frames.npy", media["face_kps"])  # the file backend's keypoints for the folder
    video = tmp_path / "face.mp4"
    video.write_bytes(media["face"].read_bytes())
    np.save(tmp_path / "face.npy", media["face_kps"])
    for source in (folder, video):
        with open_driver(source, landmarks="file") as driver:
            sampled = driver.sample_keypoints(6)  # frames 0, 4, 8, 11, 15, 19; 19 has no face (BLANK)
        assert [round(t * FPS) for t, _ in sampled] == [0, 4, 8, 11, 15]
        np.testing.assert_array_equal(np.stack([kp for _, kp in sampled]), media["face_kps"][[0, 4, 8, 11, 15]])
        with open_driver(source, landmarks="file", max_frames=5) as driver:
            assert [round(t * FPS) for t, _ in driver.sample_keypoints(3)] == [0, 2, 4]
    with open_driver(media["face"]) as driver:  # MediaPipe, static-image mode
        sampled = driver.sample_keypoints(6)
    assert [round(t * FPS) for t, _ in sampled] == [0, 4, 8, 11, 15]
    for (t, kp) in sampled:
        assert face_error(kp, media["face_kps"][round(t * FPS)]) < 0.05
    with open_driver(video, keypoints=tmp_path / "face.npy") as driver:
        assert driver.sample_keypoints(6) is None  # known_keypoints serves instead
    assert open_driver(tmp_path / "face.npy").sample_keypoints(6) is None
    with pytest.raises(DriverError, match=r"^count is 0; expected a whole number of frames ≥ 1\.$"):
        open_driver(video, landmarks="file").sample_keypoints(0)


def test_driver_with_two_people_follows_the_largest_face_given_faces(tmp_path):
    """MediaPipe follows one face by default (its detector skipped while the face holds); faces=2 lets the main-face
    tracker see both people (the backend returns both faces, by default only one) and follow the larger one
    through the video."""
    big, big_kps = render_person(8, person=0)
    small, _ = render_person(8, person=3)
    frames = []
    for a, b in zip(big, small):
        half = cv2.resize(b, (SIZE // 2, SIZE // 2), interpolation=cv2.INTER_AREA)
        right = np.full_like(a, 40)
        right[SIZE // 4 : SIZE // 4 + SIZE // 2, SIZE // 4 : SIZE // 4 + SIZE // 2] = half
        frames.append(np.concatenate([right, a], axis=1))  # the smaller face first, left of the larger one
    video = make_video(tmp_path / "two.mp4", frames)
    truth = big_kps + np.array([SIZE, 0], np.float32)
    with open_driver(video, faces=2, smoothing=False) as driver:
        found = np.stack([f.keypoints for f in driver])
        assert driver.lost == 0 and max(len(driver._backend.detect(f)) for f in frames) == 2
    assert max(face_error(f, t) for f, t in zip(found, truth)) < 0.06
    with open_driver(video, smoothing=False) as driver:
        assert len(list(driver)) == 8 and [len(driver._backend.detect(f)) for f in frames] == [1] * 8
    with pytest.raises(DriverError, match=r"^faces must be a positive number of faces to follow, got 0\.$"):
        open_driver(video, faces=0)


# ------------------------------------------------------------------------------------------- smoothing
def still_face(media, n: int = 40, noise: float = 1.0, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    base = media["face_kps"][0]
    return (base + rng.normal(0, noise, (n, 68, 2))).astype(np.float32)


def smoothed(path: Path, **kwargs) -> np.ndarray:
    return np.stack([f.keypoints for f in open_driver(path, **kwargs)])


def test_smoothing_is_causal_scale_free_and_reduces_jitter(tmp_path, media):
    kps = still_face(media)
    np.save(tmp_path / "a.npy", kps)
    out = smoothed(tmp_path / "a.npy")
    np.testing.assert_allclose(out[0], kps[0], atol=1e-4)  # the first frame passes unchanged
    jitter = lambda k: float(np.abs(np.diff(k, axis=0)).mean())  # noqa: E731
    assert jitter(out) < 0.8 * jitter(kps)  # KEYPOINT_SMOOTHING is mild: about -30 % on a still face
    other = kps.copy()
    other[20:] += 15.0  # a different future ...
    np.save(tmp_path / "b.npy", other)
    np.testing.assert_array_equal(smoothed(tmp_path / "b.npy")[:20], out[:20])  # ... leaves the past alone
    np.save(tmp_path / "big.npy", kps * 3)  # face-size units: the same video at 3× the resolution
    np.testing.assert_allclose(smoothed(tmp_path / "big.npy"), out * 3, rtol=1e-4, atol=1e-3)
    strong = smoothed(tmp_path / "a.npy", smoothing=OneEuroParams(min_cutoff=0.1, beta=0.0, d_cutoff=1.0))
    assert jitter(strong) < jitter(out)


def test_smoothing_restarts_after_a_long_gap(tmp_path, media):
    kps = still_face(media, n=30, noise=0.0)
    kps[5:20] = np.nan  # 0.6 s without a face
    kps[20:] += 25.0  # the face comes back elsewhere
    np.save(tmp_path / "gap.npy", kps)
    out = smoothed(tmp_path / "gap.npy")
    np.testing.assert_array_equal(out[5:20], np.broadcast_to(out[4], (15, 68, 2)))
    np.testing.assert_allclose(out[20], kps[20], atol=1e-4)  # no slide from the old place


# ----------------------------------------------------------------------------------------------- errors
def test_unusable_drivers_fail_with_one_sentence(tmp_path):
    with pytest.raises(DriverError, match=r"driver .*nothing\.mp4 does not exist"):
        open_driver(tmp_path / "nothing.mp4")
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(b"\x00not a video\x00" * 50)
    with pytest.raises(DriverError, match=r"cannot read driver .*garbage\.mp4 .*expected a video file"):
        open_driver(garbage)
    notes = tmp_path / "notes.txt"
    notes.write_text("hello")
    with pytest.raises(DriverError, match=r"cannot read driver .*notes\.txt"):
        open_driver(notes)
    audio_only = tmp_path / "voice.m4a"
    with av.open(str(audio_only), "w", format="mp4") as c:
        s = c.add_stream("aac", rate=16000)
        s.layout = "mono"
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="flt", layout="mono")
        frame.sample_rate, frame.pts = 16000, 0
        c.mux(s.encode(frame))
        c.mux(s.encode())
    with pytest.raises(DriverError, match=r"driver .*voice\.m4a has no video stream"):
        open_driver(audio_only)
    wrong = tmp_path / "wrong.npy"
    np.save(wrong, np.zeros((5, 10, 2), np.float32))
    with pytest.raises(DriverError, match=r"keypoint file .*wrong\.npy has shape \(5, 10, 2\); expected \(T, 68, 2\)"):
        open_driver(wrong)
    bad_json = tmp_path / "bad.json"
    bad_json.write_text(json.dumps([[[1, 2]] * 5]))
    with pytest.raises(DriverError, match=r"frame 0 of keypoint file .*bad\.json has shape \(5, 2\)"):
        open_driver(bad_json)
    nan = tmp_path / "nan.npy"
    np.save(nan, np.full((4, 68, 2), np.nan, np.float32))
    with pytest.raises(DriverError, match=r"no face found in driver .*nan\.npy"):
        open_driver(nan)
    folder = tmp_path / "kp_folder"  # a folder of per-frame keypoint files with a bad one
    folder.mkdir()
    np.save(folder / "000000.npy", np.full((68, 2), np.nan, np.float32))  # a frame without a face
    np.save(folder / "000001.npy", np.full((3, 68, 2), np.nan, np.float32))
    with pytest.raises(DriverError, match=r"000001\.npy holds 3 frames; expected one \(68, 2\) frame per file"):
        open_driver(folder)
    np.save(folder / "000001.npy", np.full((68, 2), "x"))
    with pytest.raises(DriverError, match=r"keypoint file .*000001\.npy holds <U1 values"):
        open_driver(folder)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DriverError, match="holds no image or .npy keypoint file"):
        open_driver(empty)
    with pytest.raises(DriverError, match=r"^the maximum number of frames is 0; expected a whole number ≥ 1\.$"):
        Driver(nan, max_frames=0)
