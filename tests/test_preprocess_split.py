"""``bilayer preprocess --shard K/N`` (N roots that copy together into the dataset of one run) and ``--test-tail F``
(a held-out split in time: the end of each video to ``test``, the start to ``train``, with a gap between).

The runs use the astronaut face video of ``test_preprocess`` (a real H.264 file, 25 fps) with precomputed keypoints
(the ``file`` backend: a face outline moved by the video's known transforms) and no masks, so each run takes a
fraction of a second and its files are byte-for-byte reproducible.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from bilayer.preprocess import PreprocessError, preprocess
from bilayer.shard import ShardError, check_shard, parse_shard, shard_items

from .conftest import assert_user_error, assert_user_error_text, run_main, run_module
from .test_preprocess import FACE_POINT, FPS, face_video

N = 100  # frames of the video: 4 s at 25 fps
FAST = dict(landmarks="file", segmentation="none", size=64, progress=False)
TIMING = ("seconds", "finished")  # record fields that differ between any two runs


def face_track(maps: list[np.ndarray]) -> np.ndarray:
    """(T, 68, 2) keypoints of the video: a face outline around FACE_POINT moved by each frame's transform."""
    angle = np.linspace(0, 2 * np.pi, 68, endpoint=False)
    outline = FACE_POINT + np.stack([60 * np.cos(angle), 70 * np.sin(angle)], 1)
    return np.stack([outline @ m[:, :2].T + m[:, 2] for m in maps]).astype(np.float32)


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    """``clip.mp4`` (N frames with a face in every one) and its keypoints ``clip.npy``."""
    folder = tmp_path_factory.mktemp("clip")
    maps = face_video(folder / "clip.mp4", n=N, blank=())
    np.save(folder / "clip.npy", face_track(maps))
    return folder / "clip.mp4"


def stems(root: Path, split: str, key: str = "clip/clip/clip") -> list[int]:
    return sorted(int(p.stem) for p in (root / "imgs" / split / key).glob("*.jpg"))


def record(root: Path, split: str, key: str = "clip/clip/clip") -> dict:
    return json.loads((root / ".preprocess" / split / f"{key}.json").read_text())


def tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


# --------------------------------------------------------------------------------------------------- shard
def test_parse_shard():
    assert parse_shard("0/4") == (0, 4) and parse_shard("3/4") == (3, 4) and check_shard((1, 2)) == (1, 2)
    assert check_shard(None) is None and check_shard("1/2") == (1, 2)
    for bad in ("3/2", "2/2", "0/0", "1", "a/b", "-1/2", "1/2/3", ""):
        with pytest.raises(ShardError, match=r"^--shard is .*; expected K/N with 0 ≤ K < N, like 0/4\.$"):
            parse_shard(bad)
    for bad in ((2, 2), (-1, 2), (True, 2), (0.0, 2), 3, (1, 2, 3)):
        with pytest.raises(ShardError, match="expected K/N"):
            check_shard(bad)
    items = list(range(7))
    parts = [shard_items(items, (k, 3)) for k in range(3)]
    assert parts == [[0, 3, 6], [1, 4], [2, 5]] and sorted(sum(parts, [])) == items


@pytest.mark.parametrize("test_tail", [None, 0.25])
def test_shards_copied_together_are_the_dataset_of_one_run(clip, tmp_path, test_tail):
    videos = tmp_path / "videos"
    for rel in ("p1/v1/c1", "p1/v1/c2", "p2/v1/c1"):  # three inputs: shard 0/2 gets two, shard 1/2 one
        (videos / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(clip, videos / f"{rel}.mp4")
        shutil.copy(clip.with_suffix(".npy"), videos / f"{rel}.npy")
    opts = dict(FAST, max_frames=12, test_tail=test_tail)
    splits = ["train", "test"] if test_tail else ["train"]
    single = preprocess(videos, tmp_path / "single", **opts)
    assert single.count("done") == 3 * len(splits)
    shards = [preprocess(videos, tmp_path / f"shard{k}", shard=(k, 2), **opts) for k in range(2)]
    assert [s.sources for s in shards] == [2, 1] and all(s.all_sources == 3 for s in shards)
    assert "shard 0/2: 2 of 3 input(s)" in shards[0].report() and shards[1].to_dict()["shard"] == "1/2"
    names = [{(r.split, r.name) for r in s.sequences if r.status == "done"} for s in shards]
    assert not names[0] & names[1]
    assert names[0] | names[1] == {(r.split, r.name) for r in single.sequences}

    merged = tmp_path / "merged"  # cp -r shard0/. merged/; cp -r shard1/. merged/
    for k in range(2):
        shutil.copytree(tmp_path / f"shard{k}", merged, dirs_exist_ok=True)
    one, many = tree(tmp_path / "single"), tree(merged)
    summaries = {f".preprocess/{s}/last_run.json" for s in splits}
    assert set(one) - set(many) == summaries
    assert set(many) - set(one) == {f".preprocess/{s}/last_run.shard-{k}-of-2.json" for s in splits for k in range(2)}
    assert many[".bilayer-folder.json"] == one[".bilayer-folder.json"]
    compared = 0
    for path in set(one) - summaries:
        if path.startswith(".preprocess/"):  # sequence records: equal but for when they were written
            a, b = json.loads(one[path]), json.loads(many[path])
            assert {k: v for k, v in a.items() if k not in TIMING} == {k: v for k, v in b.items() if k not in TIMING}
        else:
            assert one[path] == many[path], path
            compared += 1
    assert compared == 1 + 3 * len(splits) * 12 * 2  # the folder marker, jpg + npy of 12 frames per sequence

    # more shards than inputs: an empty shard does nothing and is not an error
    empty = preprocess(videos, tmp_path / "empty", shard=(3, 4), **opts)
    assert empty.ok and empty.sequences == [] and "shard 3/4: 0 of 3 input(s)" in empty.report()
    assert not (tmp_path / "empty" / "imgs").exists()


# ----------------------------------------------------------------------------------------------- test tail
def test_test_tail_puts_the_end_of_the_video_into_test(clip, tmp_path):
    out = tmp_path / "out"
    summary = preprocess(clip, out, test_tail=0.25, **FAST)
    # 4 s: test from 3.0 s (frames 75..99), nothing in the 1 s before it (50..74), train before (0..49)
    assert [(r.split, r.status) for r in summary.sequences] == [("train", "done"), ("test", "done")]
    train, test = stems(out, "train"), stems(out, "test")
    assert train == list(range(50)) and test == list(range(75, N))
    assert min(test) / FPS - max(train) / FPS > 1.0  # no test frame within 1 s of a training frame
    rtrain, rtest = record(out, "train"), record(out, "test")
    assert rtrain["dropped"] == {"gap before the test part": 25} and rtest["dropped"] == {}
    assert rtrain["frames_read"] + rtrain["dropped"]["gap before the test part"] + rtest["frames_read"] == N
    assert rtrain["frames_kept"] + rtest["frames_kept"] + 25 == N
    assert rtest["time_window"] == {"video_start": 0.0, "video_end": 4.0, "split_at": 3.0, "gap": 1.0,
                                    "part": [3.0, 4.0]}
    assert rtrain["time_window"]["part"] == [0.0, 2.0]
    assert rtrain["settings"]["test_tail"] == 0.25 and rtrain["settings"]["test_gap"] == 1.0
    assert summary.frames_kept == 75 and summary.frames_dropped == {"gap before the test part": 25}
    assert "test: the last 25 % of each video" in summary.report()
    for split in ("train", "test"):  # the summary of the run is kept with each split it wrote
        assert json.loads((out / ".preprocess" / split / "last_run.json").read_text())["test_tail"] == 0.25

    # a rerun with the same settings skips both parts; another fraction redoes both
    again = preprocess(clip, out, test_tail=0.25, **FAST)
    assert [r.status for r in again.sequences] == ["already done", "already done"]
    half = preprocess(clip, out, test_tail=0.5, test_gap=0.5, **FAST)
    assert [r.status for r in half.sequences] == ["done", "done"]
    assert stems(out, "train") == list(range(38)) and stems(out, "test") == list(range(50, N))  # t < 1.5, t ≥ 2

    # a rerun without --test-tail writes the whole video to train and removes the test part it would overlap
    whole = preprocess(clip, out, **FAST)
    assert [(r.split, r.status, r.removed) for r in whole.sequences] == [("train", "done", "test")]
    assert "removed  test clip/clip/clip" in whole.report()
    assert stems(out, "train") == list(range(N)) and stems(out, "test") == []
    assert not (out / ".preprocess" / "test" / "clip").exists() and not (out / "imgs" / "test" / "clip").exists()
    assert "test_tail" not in record(out, "train")["settings"]  # records of runs without it are as before


def test_test_tail_with_fps_and_max_frames(clip, tmp_path):
    # --fps subsamples the whole video (every other frame), then the video is split
    sub = preprocess(clip, tmp_path / "fps", test_tail=0.25, fps=12.5, **FAST)
    assert stems(tmp_path / "fps", "train") == list(range(0, 50, 2))
    assert stems(tmp_path / "fps", "test") == list(range(76, N, 2))
    assert sub.frames_dropped == {"gap before the test part": 13}  # frames 50, 52, …, 74
    # --max-frames keeps the first frames of each part
    preprocess(clip, tmp_path / "max", test_tail=0.25, max_frames=10, **FAST)
    assert stems(tmp_path / "max", "train") == list(range(10))
    assert stems(tmp_path / "max", "test") == list(range(75, 85))


def test_test_tail_on_a_folder_of_frames(tmp_path):
    frames = tmp_path / "frames"
    frames.mkdir()
    rng = np.random.default_rng(0)
    for i in range(20):  # 0.8 s at the assumed 25 fps
        cv2.imwrite(str(frames / f"{i:04d}.png"), rng.integers(0, 255, (64, 64, 3), dtype=np.uint8))
    kp = np.stack([np.linspace(16, 48, 68), 32 + 8 * np.sin(np.linspace(0, 6, 68))], 1).astype(np.float32)
    np.save(tmp_path / "frames.npy", np.repeat(kp[None], 20, 0))
    summary = preprocess(frames, tmp_path / "out", test_tail=0.25, test_gap=0.2, min_frames=1, **FAST)
    assert summary.count("done") == 2
    key = "frames/frames/frames"
    assert stems(tmp_path / "out", "train", key) == list(range(10))  # before 0.6 − 0.2 s
    assert stems(tmp_path / "out", "test", key) == list(range(15, 20))  # from 0.6 s


# --------------------------------------------------------------------------------------------- user errors
def test_bad_values_are_one_sentence_before_any_work(clip, tmp_path, capsys):
    from bilayer.cli import main

    out = tmp_path / "out"
    image = tmp_path / "face.png"
    cv2.imwrite(str(image), np.zeros((8, 8, 3), np.uint8))
    cases = [
        (("--shard", "3/2"), ("--shard is '3/2'", "expected K/N with 0 ≤ K < N, like 0/4")),
        (("--shard", "one"), ("--shard is 'one'", "expected K/N")),
        (("--test-tail", "1.5"), ("--test-tail is 1.5", "between 0 and 1")),
        (("--test-tail", "0"), ("--test-tail is 0.0", "between 0 and 1")),
        (("--test-tail", "0.2", "--test-gap", "-1"), ("--test-gap is -1.0", "seconds ≥ 0")),
        (("--test-gap", "2"), ("--test-gap", "give --test-tail too"),),
        (("--test-tail", "0.2", "--split", "test"), ("--test-tail writes both splits", "leave out --split test")),
    ]
    for extra, needles in cases:
        code, _, err = run_main(main, capsys, "preprocess", str(clip), "--out", str(out), "--landmarks", "file",
                                "--no-progress", *extra)
        assert_user_error_text(code, err, *needles)
    code, _, err = run_main(main, capsys, "preprocess", str(image), "--out", str(out), "--test-tail", "0.2")
    assert_user_error_text(code, err, "--test-tail", "is a single image")
    with pytest.raises(PreprocessError, match="--shard is"):
        preprocess(clip, out, shard=(2, 2), **FAST)
    assert not out.exists()
    # through `python -m bilayer preprocess`: exit status non-zero, one line on stderr, no traceback
    proc = run_module("bilayer", "preprocess", str(clip), "--out", str(out), "--shard", "3/2")
    assert_user_error(proc, "--shard is '3/2'; expected K/N with 0 ≤ K < N, like 0/4.")
    assert not out.exists()
