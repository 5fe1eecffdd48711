"""The dataset over the authors' layout (reference §1, docs/data-format.md), on small trees written by the tests."""

from __future__ import annotations

import logging
import math
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from bilayer.data.dataset import (
    DatasetError,
    VideoDataset,
    flip_images,
)
from bilayer.data.face import canonical_keypoints
from bilayer.data.sampling import WEYL_STEP, evaluation_targets, weyl_indices
from bilayer.data.stickman import draw_stickmen
from bilayer.structures import Sample, SampleBatch, collate
from bilayer.train.data import BatchStream
from bilayer.keypoints import IBUG68_FLIP, denormalize_keypoints, flip_keypoints, normalize_keypoints

SIZE = 80  # pixels of the files on disk
S = 64  # image_size the dataset resizes to
SEQS = ("00001", "00002")  # each video: 3 frames in each of 2 sequences


def frame_keypoints(rng: np.random.Generator, size: int = SIZE) -> np.ndarray:
    """(68, 2) pixel keypoints: the canonical face with a little jitter."""
    pts = (canonical_keypoints() + 1) / 2 * size
    return (pts + rng.normal(0, 0.8, pts.shape)).astype(np.float32)


def write_frame(root: Path, split: str, rel: str, rng: np.random.Generator, size: int = SIZE, with_z: bool = False,
                masks: bool = True) -> np.ndarray:
    """Writes imgs/…/rel.jpg, keypoints/…/rel.npy and segs/…/rel.png; returns the pixel keypoints."""
    for kind in ("imgs", "keypoints", "segs"):
        (root / kind / split / rel).parent.mkdir(parents=True, exist_ok=True)
    image = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
    cv2.imwrite(str(root / "imgs" / split / f"{rel}.jpg"), image)
    kp = frame_keypoints(rng, size)
    stored = np.concatenate([kp, rng.normal(0, 5, (68, 1)).astype(np.float32)], 1) if with_z else kp
    np.save(root / "keypoints" / split / f"{rel}.npy", stored)
    if masks:
        mask = np.zeros((size, size), np.uint8)
        cv2.ellipse(mask, (size // 2, size // 2), (size // 3, size // 2 - 4), 0, 0, 360, 255, -1)
        cv2.imwrite(str(root / "segs" / split / f"{rel}.png"), mask)
    return kp


def make_tree(root: Path, persons: int = 3, videos: int = 2, split: str = "train", seed: int = 0,
              seqs: tuple[str, ...] = SEQS, per_seq: int = 3) -> Path:
    rng = np.random.default_rng(seed)
    for p in range(persons):
        for v in range(videos):
            for s in seqs:
                for f in range(per_seq):
                    write_frame(root, split, f"id{p:02d}/vid{v}/{s}/{f:05d}", rng, with_z=(f % 2 == 1))
    return root


def rel_frame(dataset: VideoDataset, video: int, frame: int) -> str:
    return f"{dataset.videos[video].name}/{dataset.videos[video].frames[frame]}"


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Path:
    root = make_tree(tmp_path_factory.mktemp("vox"))
    make_tree(root, persons=2, videos=1, split="test", seed=1)
    # a video with only 2 frames: skipped at indexing time
    rng = np.random.default_rng(5)
    for f in range(2):
        write_frame(root, "train", f"id99/short/00001/{f:05d}", rng)
    # a frame without a mask: not a candidate when masks are used
    write_frame(root, "train", "id00/vid0/00003/00000", rng, masks=False)
    return root


def dataset(root: Path, **kwargs) -> VideoDataset:
    kwargs = {"image_size": S, "num_sources": 2, "num_targets": 2, **kwargs}
    return VideoDataset(root, **kwargs)


# ------------------------------------------------------------------------------------------------ layout
def test_index_sorted_videos_and_frames_and_skips(tree, caplog):
    with caplog.at_level(logging.INFO, logger="bilayer.data.dataset"):
        ds = dataset(tree)
    assert [v.name for v in ds.videos] == [f"id{p:02d}/vid{v}" for p in range(3) for v in range(2)]
    assert len(ds) == 6
    assert ds.videos[0].frames == tuple(f"{s}/{f:05d}" for s in SEQS for f in range(3))  # no mask → not a frame
    assert [name for name, _ in ds.skipped] == ["id99/short"]
    assert "fewer than the 4 needed" in ds.skipped[0][1]
    assert "id99/short" in caplog.text
    # without masks, the frame without a mask is a candidate and the masks are None
    no_masks = dataset(tree, use_masks=False)
    assert no_masks.videos[0].frames[-1] == "00003/00000"
    sample = no_masks[0]
    assert sample.source_masks is None and sample.target_masks is None
    batch = collate([sample, no_masks[1]])
    assert batch.source_masks is None and batch.source_images.shape == (2, 2, 3, S, S)


def test_sort_is_by_path_parts(tmp_path):
    """'a' < 'a-b' as path parts although 'a/…' > 'a-b/…' as strings (reference §1.1: sorted as path objects)."""
    rng = np.random.default_rng(0)
    for rel in ("p/v/a-b/00000", "p/v/a/00001", "p/v/a/00000"):
        write_frame(tmp_path, "train", rel, rng)
    ds = VideoDataset(tmp_path, image_size=S)
    assert ds.videos[0].frames == ("a/00000", "a/00001", "a-b/00000")


def test_sample_shapes_ranges_and_reading_follow_spec(tree):
    ds = dataset(tree)
    sample = ds[3]
    assert isinstance(sample, Sample) and sample.index == 3 and sample.video == "id01/vid1"
    assert sample.source_images.shape == (2, 3, S, S) and sample.target_images.shape == (2, 3, S, S)
    assert sample.source_keypoints.shape == (2, 136) and sample.target_keypoints.shape == (2, 136)
    assert sample.source_masks.shape == (2, 1, S, S) and sample.target_masks.shape == (2, 1, S, S)
    assert sample.source_stickmen.shape == (2, 3, S, S) and sample.target_stickmen.shape == (2, 3, S, S)
    for t in (sample.source_images, sample.target_images, sample.source_stickmen, sample.source_keypoints):
        assert t.dtype == torch.float32 and t.min() >= -1 and t.max() <= 1
    assert sample.source_masks.min() >= 0 and sample.source_masks.max() <= 1
    assert sample.source_masks.max() == 1 and sample.source_masks.min() == 0
    corner = sample.source_stickmen[:, :, 0, 0]
    torch.testing.assert_close(corner, torch.full_like(corner, 2 / 255 - 1))  # canvas filled with 1 (reference §1.5)
    # the four frames are distinct
    assert len(set(sample.source_frames + sample.target_frames)) == 4

    # reading one frame exactly as reference §1.2: PIL bicubic, [-1, 1]; keypoints / width; mask bicubic [0, 1]
    rel = f"{sample.video}/{sample.source_frames[0]}"
    with Image.open(tree / "imgs" / "train" / f"{rel}.jpg") as im:
        expected = np.asarray(im.convert("RGB").resize((S, S), Image.BICUBIC), np.float32) / 255
    torch.testing.assert_close(sample.source_images[0], torch.from_numpy((expected - 0.5) * 2).permute(2, 0, 1))
    kp = np.load(tree / "keypoints" / "train" / f"{rel}.npy")
    expected_kp = ((kp[:68, :2] / SIZE - 0.5) * 2).reshape(136)
    torch.testing.assert_close(sample.source_keypoints[0], torch.from_numpy(expected_kp))
    with Image.open(tree / "segs" / "train" / f"{rel}.png") as im:
        expected_mask = np.asarray(im.resize((S, S), Image.BICUBIC), np.float32) / 255
    torch.testing.assert_close(sample.source_masks[0, 0], torch.from_numpy(expected_mask))
    torch.testing.assert_close(sample.target_stickmen, draw_stickmen(sample.target_keypoints, S))


def test_normalize_keypoints_round_trip():
    rng = np.random.default_rng(0)
    kp = rng.uniform(0, 300, (70, 3)).astype(np.float64)  # extra rows and a z column are dropped
    flat = normalize_keypoints(kp, 300)
    assert flat.shape == (136,)
    np.testing.assert_allclose(flat[:4], [(kp[0, 0] / 300 - 0.5) * 2, (kp[0, 1] / 300 - 0.5) * 2,
                                          (kp[1, 0] / 300 - 0.5) * 2, (kp[1, 1] / 300 - 0.5) * 2])
    np.testing.assert_allclose(denormalize_keypoints(flat, 300), kp[:68, :2], rtol=0, atol=1e-9)
    batch = torch.from_numpy(rng.uniform(0, 256, (4, 5, 68, 2)))
    torch.testing.assert_close(denormalize_keypoints(normalize_keypoints(batch, 256), 256), batch)
    assert normalize_keypoints(torch.full((68, 2), 128.0), 256).abs().max() == 0  # the centre maps to 0


# ------------------------------------------------------------------------------------------------ sampling
def test_random_sampling_is_reproducible_and_varies(tree):
    a, b, other = dataset(tree, seed=7), dataset(tree, seed=7), dataset(tree, seed=8)
    frames = lambda ds: [ds[i].source_frames + ds[i].target_frames for i in range(len(ds))]  # noqa: E731
    first = frames(a)
    assert first == frames(b) == frames(a)  # same seed, same epoch: same frames, also on re-reading
    assert first != frames(other)
    a.set_epoch(1)
    assert frames(a) != first
    for item in first:
        assert len(set(item)) == 4  # drawn without replacement
    # every frame of a 6-frame video is drawn over a few epochs
    seen = set()
    for epoch in range(10):
        a.set_epoch(epoch)
        seen.update(a.frame_indices(0))
    assert seen == set(range(6))


def test_reference_sampling_follows_the_weyl_sequence(tree):
    ds = dataset(tree, sampling="reference")
    assert 0 <= ds.weyl_cur < 1
    ds.weyl_cur = 0.3
    cur, expected = 0.3, []
    for _ in range(2 * 4):
        expected.append(round(cur * 5))  # L = 6 frames
        cur = (cur + math.sqrt(5)) % 1
    s0, s1 = ds[0], ds[1]
    got = [ds.videos[0].frames.index(f) for f in s0.source_frames + s0.target_frames]
    got += [ds.videos[1].frames.index(f) for f in s1.source_frames + s1.target_frames]
    assert got == expected
    assert math.isclose(ds.weyl_cur, cur)
    assert weyl_indices(0.3, 6, 8) == (expected, pytest.approx(cur))
    assert math.isclose(WEYL_STEP % 1, 0.2360679775, rel_tol=1e-9)
    # the released test phase: cur reset to 0 for every item → the first frame, then round(0.236·(L−1))
    test = VideoDataset(tree, split="test", image_size=S, sampling="reference")
    for item in range(len(test)):
        s = test[item]
        assert [test.videos[item].frames.index(f) for f in s.source_frames + s.target_frames] == [0, 1]


def test_reference_sequence_values():
    indices, cur = weyl_indices(0.0, 101, 5)
    assert indices == [0, 24, 47, 71, 94]  # round(k·0.23607·100)
    assert math.isclose(cur, (5 * math.sqrt(5)) % 1)


def test_test_protocol_first_frame_and_one_fps_targets(tree):
    assert evaluation_targets(250, 25) == list(range(25, 250, 25))
    assert evaluation_targets(60, 29.97) == [30]
    ds = dataset(tree, split="test", sampling="test", num_sources=1, num_targets=1, fps=2)
    assert len(ds.videos) == 2 and len(ds) == 4  # 6 frames at "2 fps": targets 2 and 4
    picked = [(ds[i].index, ds[i].source_frames, ds[i].target_frames) for i in range(len(ds))]
    f = ds.videos[0].frames
    assert picked[:2] == [(0, (f[0],), (f[2],)), (0, (f[0],), (f[4],))]
    assert [p[0] for p in picked] == [0, 0, 1, 1]
    # grouped targets; a per-video fps mapping; the default 25 fps leaves no target in 6 frames
    grouped = dataset(tree, split="test", sampling="test", num_sources=1, num_targets=2,
                      fps={"id00/vid0": 2, "id01/vid0": 1})
    assert len(grouped) == 3  # id00: [2, 4]; id01: [1, 2], [3, 4] (5 left out)
    assert grouped[0].target_frames == (f[2], f[4])
    with pytest.raises(DatasetError, match="none of the 2 videos"):
        dataset(tree, split="test", sampling="test", num_sources=1, num_targets=1)


# ------------------------------------------------------------------------------------------------ stickman
def test_stickman_pixels_for_known_keypoints(tmp_path):
    rng = np.random.default_rng(0)
    for f in range(2):
        write_frame(tmp_path, "train", f"p/v/s/{f:05d}", rng)
        kp = np.tile(np.array([[70.0, 8.0]], np.float32), (68, 1))  # everything but the jaw in one corner
        kp[0:17, 0] = np.linspace(20, 60, 17)
        kp[0:17, 1] = 40.0  # a horizontal jaw at y = 40 from x = 20 to 60
        np.save(tmp_path / "keypoints" / "train" / "p" / "v" / "s" / f"{f:05d}.npy", kp)
    ds = VideoDataset(tmp_path, image_size=SIZE, num_sources=1, num_targets=1)
    stickman = ds[0].source_stickmen[0]  # (3, 80, 80); thickness 1 at 80 px
    white = (stickman == 1).all(0)
    assert white[40, 20:61].all()
    assert white.sum() == 41  # exactly the jaw pixels
    assert not white[39].any() and not white[41].any()
    background = torch.tensor(2 / 255 - 1)
    assert torch.isclose(stickman[:, 60:, :], background).all()  # nothing else in the lower part


# ------------------------------------------------------------------------------------------------ errors
def test_rgb_mask_is_a_clear_error(tmp_path):
    root = make_tree(tmp_path, persons=1, videos=1)
    path = root / "segs" / "train" / "id00" / "vid0" / "00001" / "00000.png"
    cv2.imwrite(str(path), np.full((SIZE, SIZE, 3), 255, np.uint8))
    with pytest.raises(DatasetError, match="single-channel") as info:
        dataset(root)
    assert str(path) in str(info.value) and "3-channel" in str(info.value)
    # also when found while reading (the first-frame check is skipped)
    ds = dataset(root, validate=False, sampling="test", num_sources=1, num_targets=1, fps=2)
    with pytest.raises(DatasetError, match="issue #10"):
        ds[0]


def test_wrong_keypoints_shape_is_a_clear_error(tmp_path):
    root = make_tree(tmp_path, persons=1, videos=1)
    path = root / "keypoints" / "train" / "id00" / "vid0" / "00001" / "00000.npy"
    np.save(path, np.zeros((68, 5), np.float32))
    with pytest.raises(DatasetError) as info:
        dataset(root)
    message = str(info.value)
    assert str(path) in message and "(68, 5)" in message and "(68, 2) or (68, 3)" in message
    np.save(path, np.zeros((60, 2), np.float32))
    with pytest.raises(DatasetError, match=r"\(60, 2\)"):
        dataset(root, validate=False, sampling="test", num_sources=1, num_targets=1, fps=2)[0]


def test_missing_and_empty_roots_are_clear_errors(tmp_path):
    with pytest.raises(DatasetError, match="does not exist"):
        VideoDataset(tmp_path / "nowhere")
    for kind in ("imgs", "keypoints"):
        (tmp_path / kind / "train").mkdir(parents=True)
    with pytest.raises(DatasetError, match="use_masks=False"):
        VideoDataset(tmp_path)
    with pytest.raises(DatasetError, match="no videos found under"):
        VideoDataset(tmp_path, use_masks=False)
    with pytest.raises(DatasetError, match="unknown sampling mode 'weyl'"):
        VideoDataset(tmp_path, sampling="weyl")
    with pytest.raises(DatasetError, match="num_targets must be at least 1 with sampling 'test', got 0"):
        VideoDataset(tmp_path, sampling="test", num_targets=0)


# ------------------------------------------------------------------------------------------------ corrupt frames
def test_corrupt_frames_are_replaced_and_counted(tmp_path, caplog):
    root = make_tree(tmp_path, persons=1, videos=2)
    ds = dataset(root, sampling="test", num_sources=1, num_targets=1, fps=2)  # item 0: frames 0 → 2
    frames = ds.videos[0].frames
    jpg = ds.path(0, 0, "imgs")
    jpg.write_bytes(jpg.read_bytes()[:200])  # truncated JPEG
    with caplog.at_level(logging.WARNING, logger="bilayer.data.dataset"):
        sample = ds[0]
        again = ds[0]
    assert sample.source_frames == (frames[1],) and sample.target_frames == (frames[2],)  # walks up from 0
    assert again.source_frames == (frames[1],)
    assert ds.replaced_frames == 2
    assert caplog.text.count(str(jpg)) == 1  # one warning per file

    ds.path(0, 1, "imgs").write_bytes(b"not a jpeg at all")  # the first replacement candidate is bad too
    np.save(ds.path(0, 2, "keypoints"), np.full((68, 2), np.nan, np.float32))  # non-finite keypoints
    ds.path(0, 4, "keypoints").write_bytes(b"garbage")  # unreadable .npy
    fresh = dataset(root, sampling="test", num_sources=1, num_targets=1, fps=2)
    s0, s1 = fresh[0], fresh[1]  # items: 0 → 2 and 0 → 4
    assert s0.source_frames == (frames[3],) and s0.target_frames == (frames[5],)
    assert s1.source_frames == (frames[3],) and s1.target_frames == (frames[5],)
    assert fresh.replaced_frames == 4
    # a video none of whose frames can be read is replaced by the next video
    for f in range(6):
        fresh.path(0, f, "imgs").write_bytes(b"")
    assert fresh[0].video == "id00/vid1"


# ------------------------------------------------------------------------------------------------ flip
def test_flip_permutation_and_identities(tree):
    perm = np.array(IBUG68_FLIP)
    assert (perm[perm] == np.arange(68)).all()  # an involution
    assert perm[36] == 45 and perm[39] == 42 and perm[0] == 16 and perm[8] == 8 and perm[48] == 54
    assert perm[30] == 30 and perm[33] == 33 and perm[51] == 51 and perm[62] == 62
    kp = torch.rand(3, 136) * 2 - 1
    torch.testing.assert_close(flip_keypoints(flip_keypoints(kp)), kp, rtol=0, atol=0)
    np.testing.assert_array_equal(flip_keypoints(flip_keypoints(kp.numpy())), kp.numpy())
    # a mirrored canonical face is the same face (it is symmetric)
    face = torch.from_numpy(canonical_keypoints()).reshape(136)
    torch.testing.assert_close(flip_keypoints(face), face, atol=1e-6, rtol=0)

    plain, flipped = dataset(tree, seed=3), dataset(tree, seed=3, flip_probability=1.0)
    a, b = plain[2], flipped[2]
    assert not a.flipped and b.flipped and a.source_frames == b.source_frames
    torch.testing.assert_close(b.source_images, flip_images(a.source_images), rtol=0, atol=0)
    torch.testing.assert_close(b.target_masks, flip_images(a.target_masks), rtol=0, atol=0)
    torch.testing.assert_close(b.target_keypoints, flip_keypoints(a.target_keypoints), rtol=0, atol=0)
    torch.testing.assert_close(b.target_stickmen, draw_stickmen(b.target_keypoints, S))
    # the stickman of the flipped keypoints has the mirrored geometry of the original stickman (the colours of
    # the left/right parts swap, since each part keeps its colour)
    drawn = (b.source_stickmen > -0.99).any(1)
    mirrored = (flip_images(a.source_stickmen) > -0.99).any(1)
    assert (drawn ^ mirrored).float().mean() < 0.02
    assert (drawn & mirrored).sum() > 0.8 * mirrored.sum()
    # jaw and lips keep their colours: white pixels nearly agree
    white_b, white_a = (b.source_stickmen == 1).all(1), (flip_images(a.source_stickmen) == 1).all(1)
    assert (white_b & white_a).sum() > 0.8 * white_a.sum()
    # half of the items are flipped with probability 0.5
    half = dataset(tree, seed=3, flip_probability=0.5)
    count = sum(half[i].flipped for i in range(len(half)) for _ in [half.set_epoch(i)])
    assert 0 < count < len(half)


# ------------------------------------------------------------------------------------------------ batching
def test_collate_shapes(tree):
    ds = dataset(tree, num_sources=1, num_targets=3)
    batch = collate([ds[0], ds[1], ds[2]])
    assert isinstance(batch, SampleBatch) and batch.batch == 3
    assert batch.source_images.shape == (3, 1, 3, S, S) and batch.target_images.shape == (3, 3, 3, S, S)
    assert batch.source_keypoints.shape == (3, 1, 136) and batch.target_keypoints.shape == (3, 3, 136)
    assert batch.source_masks.shape == (3, 1, 1, S, S) and batch.target_masks.shape == (3, 3, 1, S, S)
    assert batch.source_stickmen.shape == (3, 1, 3, S, S) and batch.target_stickmen.shape == (3, 3, 3, S, S)
    assert batch.index.tolist() == [0, 1, 2] and batch.index.dtype == torch.long
    assert batch.video == [ds.videos[i].name for i in range(3)] and batch.flipped.tolist() == [False] * 3
    moved = batch.to("cpu", non_blocking=True)
    assert isinstance(moved, SampleBatch) and moved.video == batch.video and moved.target_frames == batch.target_frames
    for name in ("source_images", "target_keypoints", "target_masks", "source_stickmen", "index", "flipped"):
        assert torch.equal(getattr(moved, name), getattr(batch, name)), name
    unmasked = collate([dataset(tree, use_masks=False, num_sources=1, num_targets=3)[0]]).to("cpu")
    assert unmasked.source_masks is None and unmasked.target_masks is None and unmasked.batch == 1


def stream(root, workers, batch=2, seed=11, rank=0, world_size=1, **kwargs) -> BatchStream:
    """The training loop's batches (``train.data.BatchStream``, the one path from a dataset to batches)."""
    return BatchStream(dataset(root, **kwargs), batch, rank, world_size, seed, workers)


def test_loader_with_two_workers_matches_one_process(tree):
    kw = dict(num_sources=1, num_targets=2, sampling="random", seed=11)
    single, multi = stream(tree, 0, **kw), stream(tree, 2, **kw)
    per_epoch = single.sampler.batches_per_epoch
    assert per_epoch == multi.sampler.batches_per_epoch == 3
    a = [next(single) for _ in range(2 * per_epoch)]
    b = [next(multi) for _ in range(2 * per_epoch)]
    assert [x.index.tolist() for x in a] == [x.index.tolist() for x in b]
    for x, y in zip(a, b):
        assert isinstance(y, SampleBatch) and y.target_images.shape == (2, 2, 3, S, S)
        torch.testing.assert_close(x.target_images, y.target_images, rtol=0, atol=0)
        assert x.target_frames == y.target_frames
    assert [x.index.tolist() for x in a[per_epoch:]] != [x.index.tolist() for x in a[:per_epoch]]  # reshuffled


def test_reference_sampling_in_workers(tree):
    """Each worker advances its own Weyl state, started per (worker, epoch) rather than one start for all."""
    s = stream(tree, 2, batch=1, seed=2, num_sources=1, num_targets=1, sampling="reference")
    batches = [next(s) for _ in range(s.sampler.batches_per_epoch)]
    assert len(batches) == 7 and sorted(b.index.item() for b in batches) == list(range(7))  # id99/short too
    ds = s.loader.dataset
    starts = {ds.weyl_cur}
    for epoch in (1, 2):
        ds.set_epoch(epoch)
        starts.add(ds.weyl_cur)
    assert len(starts) == 3


def test_loader_counts_corrupt_frames_from_workers(tmp_path):
    root = make_tree(tmp_path, persons=2, videos=2)
    for p in range(2):
        for v in range(2):
            (root / "imgs" / "train" / f"id{p:02d}" / f"vid{v}" / "00001" / "00000.jpg").write_bytes(b"")
    # every item has frame 0 as its source
    s = stream(root, 2, seed=0, num_sources=1, num_targets=1, sampling="test", fps=2)
    batches = [next(s) for _ in range(s.sampler.batches_per_epoch)]
    assert sum(b.batch for b in batches) == len(s.loader.dataset) == 8
    assert s.loader.dataset.replaced_frames == 8


def test_distributed_ranks_partition_the_items(tree):
    ranks = [stream(tree, 0, batch=1, seed=4, rank=r, world_size=2, num_sources=1, num_targets=1) for r in range(2)]
    seen = [sorted(next(s).index.item() for _ in range(s.sampler.batches_per_epoch)) for s in ranks]
    assert len(seen[0]) == len(seen[1]) == 3 and not set(seen[0]) & set(seen[1])
    with pytest.raises(DatasetError, match="fewer than one global batch"):
        stream(tree, 0, batch=4, rank=1, world_size=2, num_sources=1, num_targets=1)


