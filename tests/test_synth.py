"""SynthHeads: determinism, the reference layout, keypoint semantics, masks, videos, preview and argument checks.

Everything renders at 64–128 px with a handful of frames so the file runs in seconds on CPU.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from bilayer.synth import dataset as synth
from bilayer.synth import (FrameParams, SynthRenderer, generate, identity_params, render_frame, sample_identity,
                                sample_trajectory, scene_params)

SIZE = 64
FRAMES = 3


def _files(root: Path, tree: str) -> list[Path]:
    return sorted(p.relative_to(root / tree) for p in (root / tree).rglob("*") if p.is_file())


@pytest.fixture(scope="module")
def datasets(tmp_path_factory):
    """The same small dataset written twice (1 and 2 workers) and once with another seed."""
    base = tmp_path_factory.mktemp("synth")
    kwargs = dict(identities=3, videos_per_identity=1, frames=FRAMES, size=SIZE, sequences_per_video=2, progress=False)
    a = base / "a"
    summary = generate(a, seed=3, videos=True, preview=True, workers=1, **kwargs)
    b = base / "b"
    generate(b, seed=3, workers=2, **kwargs)
    c = base / "c"
    generate(c, seed=4, **kwargs)
    return a, b, c, summary


def test_layout_matches_the_reference_tree(datasets):
    root, _, _, summary = datasets
    stems = {}
    for tree, ext in (("imgs", ".jpg"), ("keypoints", ".npy"), ("segs", ".png")):
        files = _files(root, tree)
        assert files and all(f.suffix == ext for f in files)
        # split/PERSON/VIDEO/SEQ/FRAME with zero-padded names
        assert all(len(f.parts) == 5 for f in files), files[:3]
        assert all(f.parts[1].startswith("id") and len(f.parts[1]) == 7 for f in files)
        assert all(f.parts[2] == "vid000" and f.parts[3] in ("seq000", "seq001") and len(f.stem) == 6 for f in files)
        stems[tree] = {f.with_suffix("") for f in files}
    assert stems["imgs"] == stems["keypoints"] == stems["segs"]
    assert len(stems["imgs"]) == 3 * 2 * FRAMES == summary["frames"]
    train = {f.parts[1] for f in stems["imgs"] if f.parts[0] == "train"}
    test = {f.parts[1] for f in stems["imgs"] if f.parts[0] == "test"}
    assert train and test and not train & test
    assert sorted(train) == summary["identities"]["train"] and sorted(test) == summary["identities"]["test"]
    meta = json.loads((root / "synth.json").read_text())
    assert meta == {"generator": "SynthHeads", "seed": 3, "size": SIZE, "frames_per_sequence": FRAMES,
                    "videos_per_identity": 1, "sequences_per_video": 2, "fps": 25.0,
                    "identities": summary["identities"]}
    # file formats: RGB JPEG, float32 (68, 2) keypoints in pixels, single-channel 8-bit masks
    rel = sorted(stems["imgs"])[0]
    img = cv2.imread(str(root / "imgs" / rel.with_suffix(".jpg")), cv2.IMREAD_UNCHANGED)
    assert img.shape == (SIZE, SIZE, 3) and img.dtype == np.uint8
    kp = np.load(root / "keypoints" / rel.with_suffix(".npy"))
    assert kp.shape == (68, 2) and kp.dtype == np.float32
    mask = cv2.imread(str(root / "segs" / rel.with_suffix(".png")), cv2.IMREAD_UNCHANGED)
    assert mask.shape == (SIZE, SIZE) and mask.dtype == np.uint8
    assert (mask > 127).mean() > 0.1 and (mask < 128).mean() > 0.05
    assert not list(root.rglob("*.tmp*")), "temporary files left behind"


def test_same_seed_is_identical_and_another_seed_differs(datasets):
    a, b, c, _ = datasets
    for tree in ("keypoints", "segs"):
        files = _files(a, tree)
        assert files == _files(b, tree)
        for f in files:
            assert (a / tree / f).read_bytes() == (b / tree / f).read_bytes(), f
    for f in _files(a, "imgs"):
        ia, ib = (cv2.imread(str(r / "imgs" / f)) for r in (a, b))
        assert np.array_equal(ia, ib), f
    rel = _files(a, "keypoints")[0]
    assert not np.allclose(np.load(a / "keypoints" / rel), np.load(c / "keypoints" / rel), atol=0.5)


def test_videos_decode_with_the_right_frame_count(datasets):
    av = pytest.importorskip("av")
    root = datasets[0]
    videos = sorted((root / "videos").rglob("*.mp4"))
    assert len(videos) == 3 * 2
    first = root / "videos/train/id00000/vid000/seq000.mp4"
    assert first in videos
    with av.open(str(first)) as container:
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    assert len(frames) == FRAMES and frames[0].shape == (SIZE, SIZE, 3)
    # the video shows the same frame as the JPEG (both lossy, so only roughly)
    jpg = cv2.cvtColor(cv2.imread(str(root / "imgs/train/id00000/vid000/seq000/000000.jpg")), cv2.COLOR_BGR2RGB)
    assert np.abs(frames[0].astype(int) - jpg).mean() < 12


def test_preview_sheet_is_written(datasets):
    root, _, _, summary = datasets
    sheet = cv2.imread(str(root / "preview.png"))
    assert summary["preview"] == str(root / "preview.png")
    # one row per identity (3), one column per frame (all 3 of the short sequences), SIZE px tiles
    assert sheet is not None and sheet.shape == (3 * SIZE, FRAMES * SIZE, 3)
    # the second tile of the first row is frame 1 of id00000's first sequence with keypoint dots drawn over it:
    # away from the dots and the label it is the saved frame, in the same channel order
    tile = sheet[:SIZE, SIZE:2 * SIZE].astype(int)
    frame = cv2.imread(str(root / "imgs/train/id00000/vid000/seq000/000001.jpg")).astype(int)
    kp = np.load(root / "keypoints/train/id00000/vid000/seq000/000001.npy")
    away = np.ones((SIZE, SIZE), bool)
    away[:20] = False  # the row's label
    for x, y in kp:
        away[max(0, int(y) - 2):int(y) + 3, max(0, int(x) - 2):int(x) + 3] = False
    assert away.mean() > 0.4
    assert np.abs(tile - frame)[away].mean() < 4  # JPEG loss only
    assert np.abs(tile - frame[..., ::-1])[away].mean() > 2 * np.abs(tile - frame)[away].mean()
    assert (np.abs(tile - frame).max(-1) > 60)[~away].mean() > 0.1  # the dots


# ------------------------------------------------------------------------------------------- keypoints
def _short_haired(start: int = 0):
    """An identity whose cheeks are not hidden by long hair (for the contour check)."""
    for person in range(start, start + 50):
        ident = identity_params(11, person)
        if ident.hair_style in ("short", "buzz", "bald"):
            return ident
    raise AssertionError("no short-haired identity in 50 draws")


def test_eye_and_mouth_keypoints_lie_on_the_person():
    ident = identity_params(5, 1)
    poses = (FrameParams(), FrameParams(yaw=25, pitch=-15, jaw=0.8), FrameParams(yaw=-25, roll=12, smile=1.0, blink=1.0))
    for frame in poses:
        img, kp, mask = render_frame(ident, frame, 128)
        assert img.shape == (128, 128, 3) and kp.shape == (68, 2) and kp.dtype == np.float32
        assert ((kp >= 0) & (kp < 128)).all()
        cols, rows = kp[36:68, 0].astype(int), kp[36:68, 1].astype(int)
        assert (mask[rows, cols] > 127).all(), "eye or mouth keypoints off the person mask"


def test_left_right_symmetry_at_zero_yaw_and_roll():
    for person in range(3):
        ident = identity_params(7, person)
        r = SynthRenderer(ident, scene_params(7, person, 0), 128)
        for frame in (FrameParams(), FrameParams(pitch=12, jaw=0.6, smile=0.5)):
            kp = r.keypoints(frame).astype(np.float64)
            width = kp[16, 0] - kp[0, 0]
            centre = kp[27:31, 0].mean()
            for a, b in ((36, 45), (39, 42), (48, 54), (0, 16), (31, 35), (17, 26), (4, 12)):
                assert abs((kp[a, 0] + kp[b, 0]) / 2 - centre) < 0.03 * width, (person, a, b)
                assert abs(kp[a, 1] - kp[b, 1]) < 0.03 * width, (person, a, b)
            assert kp[36, 0] < kp[39, 0] < kp[42, 0] < kp[45, 0]  # iBUG order: image left to right
            assert kp[48, 0] < kp[51, 0] < kp[54, 0] and kp[51, 1] < kp[57, 1]


def test_framing_follows_the_crop_protocol():
    """Landmark box about half the image, centred 1/12 below the image centre (reference §6.2), give or take the
    per-video framing jitter."""
    for person in range(3):
        r = SynthRenderer(identity_params(8, person), scene_params(8, person, 0), 128)
        kp = r.keypoints(FrameParams())
        extent = (kp.max(0) - kp.min(0)).max() / 128
        centre = (kp.max(0) + kp.min(0)) / 2 / 128
        assert 0.40 < extent < 0.52
        assert abs(centre[0] - 0.5) < 0.03 and abs(centre[1] - (0.5 + 1 / 12)) < 0.03


def test_pose_trajectory_moves_the_keypoints():
    ident = identity_params(2, 0)
    r = SynthRenderer(ident, scene_params(2, 0, 0), 128)
    frames = sample_trajectory(np.random.default_rng(0), 60)
    kps = np.stack([r.keypoints(f) for f in frames])
    assert kps[:, 30].std(0).max() > 2.0  # the nose tip travels
    steps = np.abs(np.diff(kps, axis=0)).max()
    assert steps < 12, "keypoints jump between consecutive frames"
    # turning right brings the nose tip to the right of the face centre, and vice versa
    right, left = r.keypoints(FrameParams(yaw=30)), r.keypoints(FrameParams(yaw=-30))
    assert right[30, 0] - right[[0, 16], 0].mean() > 3
    assert left[30, 0] - left[[0, 16], 0].mean() < -3
    closed, opened = r.keypoints(FrameParams()), r.keypoints(FrameParams(jaw=1.0))
    assert opened[66, 1] - opened[62, 1] > closed[66, 1] - closed[62, 1] + 3  # inner lips part
    assert opened[8, 1] > closed[8, 1] + 2  # the chin drops
    shut = r.keypoints(FrameParams(blink=1.0))
    assert abs(shut[41, 1] - shut[37, 1]) < 0.3 * abs(closed[41, 1] - closed[37, 1])


def test_jaw_points_follow_the_occluding_contour_when_turned():
    ident = _short_haired()
    scene = scene_params(11, 0, 0)
    img, kp, mask = render_frame(ident, FrameParams(yaw=38), 128, scene)
    # the face turns to the image right, so jaw points 11–14 sit on the far cheek's outline, i.e. on the
    # boundary between person and background
    person = (mask > 127).astype(np.uint8)
    edge = cv2.morphologyEx(person, cv2.MORPH_GRADIENT, np.ones((3, 3), np.uint8)) > 0
    dist = cv2.distanceTransform((~edge).astype(np.uint8), cv2.DIST_L2, 3)
    for j in (11, 12, 13, 14):
        x, y = kp[j].astype(int)
        assert dist[y, x] < 3.0, (j, dist[y, x])
    # and the far cheek's contour stays outside the features: right of the outer eye corner
    assert (kp[13:17, 0] > kp[45, 0]).all()


# ------------------------------------------------------------------------------------------ appearance
def test_identities_differ_and_masks_are_single_channel():
    images = []
    for person in range(3):
        img, kp, mask = render_frame(identity_params(9, person), FrameParams(), SIZE)
        assert mask.ndim == 2 and mask.dtype == np.uint8 and mask.max() == 255 and mask.min() == 0
        images.append(img.astype(np.float32))
    for i in range(3):
        for j in range(i + 1, 3):
            assert np.abs(images[i] - images[j]).mean() > 8
    assert identity_params(9, 0) != identity_params(9, 1)
    assert identity_params(9, 0) == identity_params(9, 0)


def test_trajectory_ranges_and_smoothness():
    frames = sample_trajectory(np.random.default_rng(1), 500)
    arr = {k: np.array([getattr(f, k) for f in frames]) for k in ("yaw", "pitch", "roll", "jaw", "blink", "smile")}
    assert np.abs(arr["yaw"]).max() <= 40 and np.abs(arr["pitch"]).max() <= 20 and np.abs(arr["roll"]).max() <= 15
    assert np.abs(arr["yaw"]).max() > 15  # the range is used, not just the middle
    for k in ("jaw", "blink", "smile"):
        assert arr[k].min() >= 0 and arr[k].max() <= 1
    assert arr["blink"].max() == 1.0 and arr["jaw"].max() > 0.2
    assert np.abs(np.diff(arr["yaw"])).max() < 6  # degrees per frame at 25 fps
    assert sample_identity(np.random.default_rng(0)) == sample_identity(np.random.default_rng(0))


def test_a_lower_frame_rate_spans_more_of_the_same_performance():
    """The motion is timed in seconds: 20 frames at 5 fps are every 5th frame of 100 frames at 25 fps for the
    smooth pose signals, a blink shrinks to one shut-eyed frame, and the video rate follows."""
    dense = sample_trajectory(np.random.default_rng(7), 100)
    sparse = sample_trajectory(np.random.default_rng(7), 20, fps=5)
    for key in ("yaw", "pitch", "roll", "tx", "scale", "smile"):
        np.testing.assert_allclose([getattr(f, key) for f in sparse], [getattr(f, key) for f in dense[::5]],
                                   atol=1e-9, err_msg=key)
    yaw_sparse = np.array([f.yaw for f in sparse])
    yaw_dense = np.array([f.yaw for f in dense[:20]])
    assert np.ptp(yaw_sparse) > 2 * np.ptp(yaw_dense)
    blinks = np.array([f.blink for f in sample_trajectory(np.random.default_rng(3), 400, fps=5)])
    assert set(np.unique(blinks)) <= {0.0, 1.0} and blinks.max() == 1.0  # one frame, eyes shut
    with pytest.raises(ValueError, match="positive frame rate"):
        sample_trajectory(np.random.default_rng(0), 10, fps=0)


def test_frame_rate_is_recorded_and_a_rerun_at_another_rate_renders_again(tmp_path):
    kwargs = dict(identities=3, test_identities=2, videos_per_identity=1, frames=4, size=SIZE, progress=False,
                  cross_pairs=1)
    root = tmp_path / "slow"
    first = generate(root, fps=5, videos=True, **kwargs)
    assert first["resumed"] == 0
    assert json.loads((root / "synth.json").read_text())["fps"] == 5.0
    assert json.loads((root / "cross" / "pairs.json").read_text())["fps"] == 5.0
    assert len(synth.cross_pairs(root)) == 1
    import av

    with av.open(str(root / "videos" / "train" / "id00000" / "vid000" / "seq000.mp4")) as container:
        assert container.streams.video[0].average_rate == 5
    assert generate(root, fps=5, videos=True, **kwargs)["resumed"] == 4  # 3 sequences + 1 pair
    # another rate is another dataset: rendered again, and at 25 fps the files are the default ones
    again = generate(root, fps=25, videos=True, **kwargs)
    assert again["resumed"] == 0
    default = generate(tmp_path / "default", **kwargs)
    files = _files(root, "keypoints")
    assert files == _files(tmp_path / "default", "keypoints")
    for f in files:
        np.testing.assert_array_equal(np.load(root / "keypoints" / f), np.load(tmp_path / "default" / "keypoints" / f))
    assert default["resumed"] == 0 and "fps" not in json.loads((tmp_path / "default" / "cross" / "pairs.json").read_text())


# ------------------------------------------------------------------------------------------ arguments
@pytest.mark.parametrize("kwargs, needle", [
    (dict(size=100), "multiple of 32"),
    (dict(size=0), "multiple of 32"),
    (dict(frames=1), "frames"),
    (dict(identities=1), "disjoint"),
    (dict(identities=3, test_identities=3), "training identity"),
    (dict(videos_per_identity=0), "videos_per_identity"),
    (dict(workers=0), "workers"),
    (dict(seed=-1), "seed must be 0 or more, got -1"),
    (dict(fps=0), "fps must be a number of frames per second above 0"),
    (dict(fps=float("nan")), "fps must be a number"),
    (dict(fps=500), "at most 120"),
])
def test_bad_values_raise_one_sentence(tmp_path, kwargs, needle):
    args = dict(identities=3, videos_per_identity=1, frames=2, size=64, progress=False)
    args.update(kwargs)
    with pytest.raises(ValueError) as info:
        generate(tmp_path / "bad", **args)
    message = str(info.value)
    assert needle in message and message.endswith(".") and "\n" not in message
    assert not (tmp_path / "bad").exists()


@pytest.mark.parametrize("flag, value, keyword, needle", [
    ("--videos-per-identity", "0", "videos_per_identity", "must be at least 1, got 0"),
    ("--size", "100", "size", "must be a positive multiple of 32, got 100"),
    ("--workers", "0", "workers", "must be at least 1, got 0"),
    ("--test-identities", "2", "test_identities", "must leave at least one training identity"),
    ("--seed", "-1", "seed", "must be 0 or more, got -1"),  # numpy's own message named neither flag nor value
    ("--fps", "0", "fps", "must be a number of frames per second above 0 and at most 120, got 0."),
])
def test_cli_errors_name_the_flag_and_python_names_the_keyword(tmp_path, capsys, flag, value, keyword, needle):
    from bilayer.cli import main

    from .conftest import assert_user_error_text, run_main

    good = {"--identities": "2", "--videos-per-identity": "1", "--frames": "2", "--size": "64"}
    argv = dict(good, **{flag: value})
    code, out, err = run_main(main, capsys, "synth", "--out", str(tmp_path / "cli"),
                              *(part for item in argv.items() for part in item))
    line = assert_user_error_text(code, err, f"{flag} {needle}")
    assert code == 2 and line.endswith(".") and f" {keyword} " not in line and out == ""
    assert not (tmp_path / "cli").exists()
    kwargs = {k.lstrip("-").replace("-", "_"): (float if k == "--fps" else int)(v) for k, v in argv.items()}
    with pytest.raises(ValueError) as info:
        generate(tmp_path / "api", progress=False, **kwargs)
    assert str(info.value).startswith(f"{keyword} {needle}") and "--" not in str(info.value)
    assert not (tmp_path / "api").exists()


def test_train_only_hint_names_the_flag_on_the_command_line(tmp_path, capsys):
    from bilayer.cli import main

    from .conftest import assert_user_error_text, run_main

    code, _, err = run_main(main, capsys, "synth", "--out", str(tmp_path / "one"), "--identities", "1",
                            "--frames", "2", "--size", "64")
    assert_user_error_text(code, err, "--identities must be at least 2", "set --test-identities to 0")
    with pytest.raises(ValueError, match=r"^identities must be at least 2 .*\(set test_identities to 0 "):
        generate(tmp_path / "one", identities=1, videos_per_identity=1, frames=2, size=64, progress=False)


def test_output_that_is_a_file_is_one_sentence(tmp_path, capsys):
    from bilayer.cli import main

    from .conftest import assert_user_error_text

    target = tmp_path / "taken"
    target.write_text("not a folder")
    with pytest.raises(ValueError, match="exists and is not a folder"):
        generate(target, identities=2, videos_per_identity=1, frames=2, size=64, progress=False)
    code = main(["synth", "--out", str(target), "--identities", "2", "--frames", "2", "--size", "64"])
    assert_user_error_text(code, capsys.readouterr().err, str(target), "folder")
    assert target.read_text() == "not a folder"


def test_interrupted_run_leaves_no_partial_video(tmp_path, monkeypatch):
    pytest.importorskip("av")
    original, rendered = SynthRenderer.render, []

    def render_then_interrupt(self, frame):
        if len(rendered) == 20:  # far enough for the encoder to have written packets
            raise KeyboardInterrupt
        rendered.append(frame)
        return original(self, frame)

    monkeypatch.setattr(SynthRenderer, "render", render_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        generate(tmp_path / "cut", identities=2, videos_per_identity=1, frames=25, size=64, videos=True,
                 progress=False)
    written = {p.relative_to(tmp_path / "cut").as_posix() for p in (tmp_path / "cut").rglob("*") if p.is_file()}
    # the unfinished sequence appears not at all: none of its 20 rendered frames, no video, no temporary file;
    # only the folder's ownership marker is there
    assert written == {".bilayer-folder.json"}


def test_cli_glue_parses_and_runs(tmp_path, capsys):
    parser = argparse.ArgumentParser(prog="bilayer synth")
    synth.configure_parser(parser)
    args = parser.parse_args(["--out", str(tmp_path / "cli"), "--identities", "2", "--videos-per-identity", "1",
                              "--frames", "2", "--size", "64", "--seed", "5"])
    assert args.test_identities is None and args.workers == 1 and not args.videos and not args.preview
    assert synth.command(args) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1 and "4 frames" in out[0] and "1 train / 1 test" in out[0]
    assert len(list((tmp_path / "cli" / "imgs").rglob("*.jpg"))) == 4
    with pytest.raises(SystemExit):
        parser.parse_args([])  # --out is required


# ------------------------------------------------------------------------------- shards and cross pairs
CROSS_SEED = 6
# 3 people (2 of them test) × 2 sequences = 6 sequences and 2 cross pairs; with 2 shards, shard 0 has sequences
# 0-2 and pair 0, shard 1 sequences 3-5 and pair 1
CROSS_KWARGS = dict(identities=3, test_identities=2, videos_per_identity=1, sequences_per_video=2, frames=FRAMES,
                    size=SIZE, seed=CROSS_SEED, cross_pairs=2, progress=False)


def _all_files(root: Path) -> dict[str, Path]:
    return {p.relative_to(root).as_posix(): p for p in root.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def sharded(tmp_path_factory):
    """One dataset with cross pairs written whole and as shards 0/2 (one worker) and 1/2 (two workers)."""
    base = tmp_path_factory.mktemp("shards")
    whole = generate(base / "whole", **CROSS_KWARGS)
    first = generate(base / "s0", shard=(0, 2), **CROSS_KWARGS)
    second = generate(base / "s1", shard="1/2", workers=2, **CROSS_KWARGS)
    return base, whole, first, second


def test_shards_copied_into_one_folder_are_the_unsharded_dataset(sharded, tmp_path):
    import shutil

    base, whole, first, second = sharded
    assert (whole["sequences"], whole["cross_pairs"], whole["shard"]) == (6, 2, None)
    assert (first["sequences"], first["cross_pairs"], first["shard"]) == (3, 1, "0/2")
    assert (second["sequences"], second["cross_pairs"], second["shard"]) == (3, 1, "1/2")
    assert first["frames"] == second["frames"] == 4 * FRAMES and whole["frames"] == 8 * FRAMES
    a, b = _all_files(base / "s0"), _all_files(base / "s1")
    shared = set(a) & set(b)
    # the shards write disjoint sequences and pairs; only the dataset-wide files are in both, byte for byte
    assert shared == {".bilayer-folder.json", "synth.json", "cross/pairs.json"}
    for name in shared:
        assert a[name].read_bytes() == b[name].read_bytes(), name
    merged = tmp_path / "merged"
    for shard in ("s0", "s1"):
        shutil.copytree(base / shard, merged, dirs_exist_ok=True)
    ours, theirs = _all_files(merged), _all_files(base / "whole")
    assert set(ours) == set(theirs)
    for name, path in theirs.items():
        if name.startswith(".synth/"):  # records: the same but for when they were written
            old, new = (json.loads(p.read_text()) for p in (path, ours[name]))
            assert {**old, "finished": None} == {**new, "finished": None}, name
        else:
            assert path.read_bytes() == ours[name].read_bytes(), name
    assert [p["name"] for p in synth.cross_pairs(merged)] == [p["name"] for p in synth.cross_pairs(base / "whole")]


def test_an_unmerged_shard_has_unready_cross_pairs(sharded):
    base = sharded[0]
    # pair 0's driver sequence, pair 1's folder and pair 1's source sequence are in the other shard
    with pytest.raises(ValueError, match=r"^3 parts of the cross-person pairs .* are not ready \(e\.g\. "
                                         r"id00001_as_id00002: its driver sequence test/id00002/vid000/seq000 is "):
        synth.cross_pairs(base / "s0")


def test_pairs_are_listed_deterministically(sharded):
    base = sharded[0]
    meta = json.loads((base / "whole/cross/pairs.json").read_text())
    assert meta["seed"] == CROSS_SEED and meta["frames"] == FRAMES and meta["size"] == SIZE
    assert meta["pairs"] == [
        {"name": "id00001_as_id00002", "source": "id00001", "driver": "id00002", "folder": "cross/id00001_as_id00002",
         "source_sequence": "test/id00001/vid000/seq000", "driver_sequence": "test/id00002/vid000/seq000"},
        {"name": "id00002_as_id00001", "source": "id00002", "driver": "id00001", "folder": "cross/id00002_as_id00001",
         "source_sequence": "test/id00002/vid000/seq000", "driver_sequence": "test/id00001/vid000/seq000"},
    ]
    assert json.loads((base / "whole/synth.json").read_text())["cross_pairs"] == 2
    # every ordered pair of distinct people once, the first T each driven by the next one
    pairs = synth.cross_pair_list([5, 6, 7], 6)
    assert pairs[:3] == [(5, 6), (6, 7), (7, 5)] and sorted(pairs) == sorted(
        (a, b) for a in (5, 6, 7) for b in (5, 6, 7) if a != b)


def test_cross_ground_truth_is_the_source_rendered_with_the_drivers_motion(sharded):
    from bilayer.io import encode_image

    base = sharded[0]
    pairs = synth.cross_pairs(base / "whole")
    assert len(pairs) == 2
    for pair in pairs:
        a, b = int(pair["source"][2:]), int(pair["driver"][2:])
        renderer = SynthRenderer(identity_params(CROSS_SEED, a), scene_params(CROSS_SEED, a, 0), SIZE)
        trajectory = synth.sequence_trajectory(CROSS_SEED, b, 0, 0, FRAMES)
        assert len(pair["truth_images"]) == len(pair["driver_images"]) == FRAMES
        for i, frame in enumerate(trajectory):
            rgb, kp, mask = renderer.render(frame)
            assert pair["truth_images"][i].read_bytes() == encode_image(rgb, ".jpg", synth.JPEG_QUALITY)
            assert np.array_equal(np.load(pair["truth_keypoints"][i]), kp.astype(np.float32))
            assert np.array_equal(cv2.imread(str(pair["truth_masks"][i]), cv2.IMREAD_UNCHANGED), mask)
            truth, driver = np.load(pair["truth_keypoints"][i]), np.load(pair["driver_keypoints"][i])
            assert np.abs(truth - driver).max() > 1  # another face, framed by another scene
            # the same head pose: eye line (roll) and the nose's place between the cheeks (yaw)
            roll = [np.degrees(np.arctan2(*(k[45] - k[36])[::-1])) for k in (truth, driver)]
            yaw = [(k[30, 0] - k[[0, 16], 0].mean()) / (k[16, 0] - k[0, 0]) for k in (truth, driver)]
            assert abs(roll[0] - roll[1]) < 1 and abs(yaw[0] - yaw[1]) < 0.02, (pair["name"], i, roll, yaw)
        # A's own scene: where neither the source photo nor the ground truth shows the person, they agree
        src = cv2.imread(str(pair["source_image"])).astype(int)
        gt = cv2.imread(str(pair["truth_images"][0])).astype(int)
        free = ((cv2.imread(str(pair["source_mask"]), 0) == 0) & (cv2.imread(str(pair["truth_masks"][0]), 0) == 0))
        assert free.mean() > 0.2 and np.abs(src - gt)[free].mean() < 4
    # over a longer performance the head moves as the driver's does: the keypoints' centroids follow each other
    a, b = 1, 2
    ra = SynthRenderer(identity_params(CROSS_SEED, a), scene_params(CROSS_SEED, a, 0), SIZE)
    rb = SynthRenderer(identity_params(CROSS_SEED, b), scene_params(CROSS_SEED, b, 0), SIZE)
    motion = synth.sequence_trajectory(CROSS_SEED, b, 0, 0, 60)
    ca = np.stack([ra.keypoints(f).mean(0) for f in motion])
    cb = np.stack([rb.keypoints(f).mean(0) for f in motion])
    for axis in (0, 1):
        assert np.corrcoef(ca[:, axis], cb[:, axis])[0, 1] > 0.9


def test_the_training_loader_ignores_the_cross_folder(sharded):
    from bilayer.data.dataset import VideoDataset

    root = sharded[0] / "whole"
    test = VideoDataset(root, split="test", image_size=SIZE)
    assert sorted(v.name for v in test.videos) == ["id00001/vid000", "id00002/vid000"] and not test.unfinished
    assert all(len(v.frames) == 2 * FRAMES for v in test.videos)
    train = VideoDataset(root, split="train", image_size=SIZE)
    assert [v.name for v in train.videos] == ["id00000/vid000"] and not train.unfinished
    sample = test[0]
    assert sample is not None


def test_cross_pairs_resume_and_an_interrupted_pair_leaves_nothing_half_written(sharded, tmp_path, monkeypatch):
    import shutil

    from bilayer.io import _HOST

    whole = sharded[0] / "whole"
    root = tmp_path / "again"
    shutil.copytree(whole, root)
    (root / ".synth/cross/id00002_as_id00001.json").unlink()  # as if killed between the move and the record
    with pytest.raises(ValueError, match="id00002_as_id00001: its folder .* is missing or unfinished"):
        synth.cross_pairs(root)
    original, rendered = SynthRenderer.render, []

    def render_then_interrupt(self, frame):
        if len(rendered) == 1:
            raise KeyboardInterrupt
        rendered.append(frame)
        return original(self, frame)

    monkeypatch.setattr(SynthRenderer, "render", render_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        generate(root, **CROSS_KWARGS)
    assert len(rendered) == 1  # only the unrecorded pair was redone, and it was cut after one frame
    assert not [p.name for p in (root / "cross").iterdir() if p.name.startswith(".")]
    monkeypatch.setattr(SynthRenderer, "render", original)
    # what a run killed with SIGKILL leaves: a temporary folder of a process that no longer runs
    stale = root / "cross" / f".id00002_as_id00001.{_HOST}-4194999-0123abcd.partial"
    (stale / "imgs").mkdir(parents=True)
    summary = generate(root, **CROSS_KWARGS)
    assert summary["resumed"] == 7 and not stale.exists()
    ours, theirs = _all_files(root), _all_files(whole)
    assert set(ours) == set(theirs)
    for name in theirs:
        if name.startswith("cross/"):
            assert ours[name].read_bytes() == theirs[name].read_bytes(), name
    assert len(synth.cross_pairs(root)) == 2


@pytest.mark.parametrize("value", ["2/2", "3/2", "-1/2", "0/0", "1", "a/b", "0/1001", "1/2/3"])
def test_bad_shard_is_one_sentence_naming_the_flag(tmp_path, capsys, value):
    from bilayer.cli import main

    from .conftest import assert_user_error_text, run_main

    code, out, err = run_main(main, capsys, "synth", "--out", str(tmp_path / "cli"), "--identities", "2",
                              "--frames", "2", "--size", "64", f"--shard={value}")
    line = assert_user_error_text(code, err, f"--shard is '{value}'; expected K/N with 0 ≤ K < N ≤ 1000, like 0/4.")
    assert out == "" and line.endswith(".") and not (tmp_path / "cli").exists()
    with pytest.raises(ValueError, match=r"^shard is \(2, 2\); expected K/N with 0 ≤ K < N ≤ 1000"):
        generate(tmp_path / "api", identities=2, videos_per_identity=1, frames=2, size=64, shard=(2, 2),
                 progress=False)
    assert not (tmp_path / "api").exists()


def test_bad_shard_through_the_module_entry_point(tmp_path):
    from .conftest import assert_user_error, run_module

    proc = run_module("bilayer", "synth", "--out", str(tmp_path / "m"), "--identities", "2", "--frames", "2",
                      "--size", "64", "--shard", "2/2")
    assert_user_error(proc, "--shard is '2/2'")
    assert not (tmp_path / "m").exists()


@pytest.mark.parametrize("argv, needle", [
    (("--cross-pairs", "-1"), "--cross-pairs must be 0 or more, got -1."),
    (("--cross-pairs", "1"), "--cross-pairs needs at least 2 test identities to pair, but there is 1 (raise "
                             "--test-identities)."),
    (("--test-identities", "2", "--cross-pairs", "3"), "--cross-pairs must be at most 2, the ordered pairs"),
])
def test_bad_cross_pairs_is_one_sentence_naming_the_flag(tmp_path, capsys, argv, needle):
    from bilayer.cli import main

    from .conftest import assert_user_error_text, run_main

    code, out, err = run_main(main, capsys, "synth", "--out", str(tmp_path / "cli"), "--identities", "3",
                              "--frames", "2", "--size", "64", *argv)
    assert_user_error_text(code, err, needle)
    assert out == "" and not (tmp_path / "cli").exists()
    with pytest.raises(ValueError, match="^cross_pairs "):
        generate(tmp_path / "api", identities=3, videos_per_identity=1, frames=2, size=64, progress=False,
                 test_identities=int(argv[1]) if argv[0] == "--test-identities" else None, cross_pairs=int(argv[-1]))


def test_cli_summary_names_the_shard_and_the_pairs(tmp_path, capsys):
    from bilayer.cli import main

    from .conftest import run_main

    root = tmp_path / "cli"
    # 3 sequences and 1 pair: shard 0/2 takes sequence 0 and the pair
    code, out, err = run_main(main, capsys, "synth", "--out", str(root), "--identities", "3", "--test-identities",
                              "2", "--videos-per-identity", "1", "--frames", "2", "--size", "64", "--cross-pairs",
                              "1", "--shard", "0/2")
    assert code == 0, err
    line = out.strip().splitlines()[-1]
    assert line.startswith("wrote 4 frames in 1 sequence and 1 cross-person pair (shard 0/2 of 1 train / 2 test")
    sequences = [p.relative_to(root / "imgs").as_posix() for p in root.glob("imgs/*/*/*/*")]
    assert sequences == ["train/id00000/vid000/seq000"]
    assert sorted(p.name for p in (root / "cross").iterdir()) == ["id00001_as_id00002", "pairs.json"]


def test_shards_split_the_sequences_into_consecutive_runs_and_deal_the_pairs():
    runs = [synth.shard_sequences(10, (k, 3)) for k in range(3)]
    assert [list(r) for r in runs] == [[0, 1, 2], [3, 4, 5], [6, 7, 8, 9]]
    assert [list(synth.shard_pairs(5, (k, 3))) for k in range(3)] == [[0, 3], [1, 4], [2]]
    assert list(synth.shard_sequences(2, (2, 4))) == [] and list(synth.shard_sequences(7, None)) == list(range(7))
    for n in (1, 2, 7, 1000):
        covered = [i for k in range(n) for i in synth.shard_sequences(123, (k, n))]
        assert covered == list(range(123))
    jobs = [{"kind": "sequence", "person": p, "video": v} for p in range(2) for v in range(5)]
    jobs += [{"kind": "pair", "source": 1, "driver": 0}, {"kind": "pair", "source": 0, "driver": 1}]
    groups = list(synth._groups(iter(jobs), 3))
    assert [len(g) for g in groups] == [3, 2, 3, 2, 1, 1]
    assert [job for g in groups for job in g] == jobs
