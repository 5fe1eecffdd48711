"""The training and evaluation dataset over the authors' directory layout (reference §1, docs/data-format.md).

``ROOT/{imgs,keypoints,segs}/SPLIT/PERSON/VIDEO/SEQ/FRAME.{jpg,npy,png}``. One item is one video
(PERSON/VIDEO) — or, with the paper's test protocol, one (video, 1-FPS target) pair. An item yields a
``Sample``: n source frames and t target frames, each with its image in [-1, 1], its 136 normalised keypoints,
its mask in [0, 1] and its stickman (reference §1.5). ``collate`` stacks samples into a ``SampleBatch`` (B, n, …).

Everything the released loader did is kept (PIL bicubic resizing, keypoints divided by the image width,
sorted frame stems, the Weyl sampler as ``sampling="reference"``); its crashes (reference §1.6) are absent, its
frame choice is reproducible, corrupt frames are replaced and counted, and format errors fail with a sentence.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset, get_worker_info

from ..keypoints import NUM_KEYPOINTS, flip_keypoints, normalize_keypoints
from ..structures import Sample
from .sampling import SAMPLING_MODES, evaluation_items, item_generator, random_indices, weyl_indices
from .sequences import finished_sequences, has_records
from .stickman import draw_stickmen

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
_BICUBIC = getattr(Image, "Resampling", Image).BICUBIC
_MAX_WORKER_SLOTS = 256  # counters in shared memory: slot 0 = main process, 1 + worker id otherwise


class DatasetError(ValueError):
    """A dataset that cannot be used as given: a missing folder, a wrong file format, a bad option."""


class _CorruptFile(Exception):
    """A file that could not be read (or holds non-finite keypoints); its frame is replaced, not fatal."""

    def __init__(self, path: Path, reason: str):
        super().__init__(f"{path}: {reason}")
        self.path, self.reason = path, reason


class _UnreadableVideo(Exception):
    """No frame of a video can be read."""


# ============================================================================================ flips
def flip_images(images: torch.Tensor) -> torch.Tensor:
    """Images or masks (..., H, W) flipped horizontally."""
    return torch.flip(images, dims=(-1,))


# ============================================================================================ one file
def read_image(path: Path, size: int) -> tuple[torch.Tensor, int]:
    """An image as (3, size, size) float in [-1, 1] (PIL, bicubic, as reference §1.2) and its original width."""
    try:
        with Image.open(path) as im:
            im.load()
            width = im.width
            rgb = im.convert("RGB")
    except Exception as exc:  # unreadable / truncated / not an image: the caller replaces the frame
        raise _CorruptFile(path, f"unreadable image ({type(exc).__name__}: {exc})") from None
    if rgb.size != (size, size):
        rgb = rgb.resize((size, size), _BICUBIC)
    array = torch.from_numpy(np.asarray(rgb, dtype=np.uint8).copy()).permute(2, 0, 1)  # (3, S, S)
    return array.float().div_(255.0).sub_(0.5).mul_(2.0), width


def _keypoints_format_error(path: Path, shape) -> DatasetError:
    return DatasetError(
        f"keypoints file {path} holds an array of shape {tuple(shape)}; expected (68, 2) or (68, 3) pixel "
        "coordinates of the iBUG 68 landmarks (more rows are allowed, only the first 68 are used)."
    )


def _check_keypoints_array(path: Path, array) -> None:
    if not isinstance(array, np.ndarray):
        raise DatasetError(f"keypoints file {path} is not a single .npy array; expected a (68, 2) or (68, 3) array.")
    if array.dtype.kind not in "fiu":
        raise DatasetError(
            f"keypoints file {path} holds {array.dtype} values; expected a float (68, 2) or (68, 3) array."
        )
    if array.ndim != 2 or array.shape[0] < NUM_KEYPOINTS or array.shape[1] not in (2, 3):
        raise _keypoints_format_error(path, array.shape)


def read_keypoints(path: Path) -> np.ndarray:
    """(68, 2) float32 pixel keypoints from a (K ≥ 68, 2 or 3) .npy file; a wrong shape is a ``DatasetError``,
    an unreadable file or non-finite values make the frame corrupt (replaced by the dataset)."""
    try:
        array = np.load(path, allow_pickle=False)
    except Exception as exc:
        raise _CorruptFile(path, f"unreadable keypoints ({type(exc).__name__}: {exc})") from None
    _check_keypoints_array(path, array)
    keypoints = array[:NUM_KEYPOINTS, :2].astype(np.float32)
    if not np.isfinite(keypoints).all():
        raise _CorruptFile(path, "non-finite keypoint values")
    return keypoints


# single-channel PIL modes → the value that means "foreground"
_SINGLE_CHANNEL_SCALE = {
    "1": 1.0, "L": 255.0, "I;16": 65535.0, "I;16B": 65535.0, "I;16L": 65535.0, "I": 65535.0, "F": 1.0,
}


def _check_mask_mode(path: Path, im: Image.Image) -> None:
    if im.mode not in _SINGLE_CHANNEL_SCALE:
        bands = len(im.getbands())
        what = "a palette (mode P) image" if im.mode == "P" else f"a {bands}-channel image (PIL mode {im.mode})"
        raise DatasetError(
            f"mask {path} is {what}; expected a single-channel grayscale PNG holding the foreground probability "
            "(a colour mask breaks the segmentation loss, as in the released code's issue #10)."
        )


def read_mask(path: Path, size: int) -> torch.Tensor:
    """A mask as (1, size, size) float in [0, 1], resized bicubic (reference §1.2); it must be single-channel."""
    try:
        with Image.open(path) as im:
            im.load()
            _check_mask_mode(path, im)
            mode = im.mode
            if mode in ("1", "L"):
                gray = im.convert("L")
                if gray.size != (size, size):
                    gray = gray.resize((size, size), _BICUBIC)  # clipped to 0..255 by PIL, as the released code
                array = np.asarray(gray, dtype=np.float32) / 255.0
            else:
                values = np.asarray(im, dtype=np.float32) / _SINGLE_CHANNEL_SCALE[mode]
                resized = Image.fromarray(values, mode="F")
                if resized.size != (size, size):
                    resized = resized.resize((size, size), _BICUBIC)
                array = np.clip(np.asarray(resized, dtype=np.float32), 0.0, 1.0)
    except DatasetError:
        raise
    except Exception as exc:
        raise _CorruptFile(path, f"unreadable mask ({type(exc).__name__}: {exc})") from None
    return torch.from_numpy(array.copy())[None]


# ============================================================================================ index
@dataclass(frozen=True)
class Video:
    """One video: its PERSON/VIDEO name and its usable frames, sorted (reference §1.1).

    ``frames`` are SEQ/FRAME stems; ``image_suffixes`` the image file's suffix for each frame."""

    name: str
    frames: tuple[str, ...]
    image_suffixes: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.frames)


def _subdirs(path: Path) -> list[str]:
    try:
        with os.scandir(path) as it:
            return sorted(e.name for e in it if e.is_dir() and not e.name.startswith("."))
    except FileNotFoundError:
        return []


def _stems(video_dir: Path, suffixes: tuple[str, ...], seqs: list[str] | None = None) -> dict[tuple[str, str], str]:
    """(SEQ, FRAME) → suffix for every file with one of ``suffixes`` two levels below ``video_dir`` (in the
    sequences ``seqs`` only, when given)."""
    out: dict[tuple[str, str], str] = {}
    for seq in _subdirs(video_dir) if seqs is None else seqs:
        if seqs is not None and not (video_dir / seq).is_dir():
            continue
        with os.scandir(video_dir / seq) as it:
            entries = sorted(it, key=lambda e: e.name)  # deterministic when FRAME.jpg and FRAME.png both exist
            for entry in entries:
                stem, suffix = os.path.splitext(entry.name)
                if suffix.lower() in suffixes and not entry.name.startswith(".") and entry.is_file():
                    out.setdefault((seq, stem), suffix)
    return out


def index_videos(root: Path, split: str, use_masks: bool, unfinished: list[str] | None = None) -> list[Video]:
    """Every PERSON/VIDEO under ``root/imgs/split`` with its frames: stems under imgs ∩ keypoints (∩ segs when
    ``use_masks``), sorted as path parts (SEQ, then FRAME), like the released code. Videos may have no frames.

    In a split that ``bilayer preprocess`` or ``bilayer synth`` wrote (it has their records, ``data.sequences``)
    only finished sequences count: the PERSON/VIDEO/SEQ names of the others are appended to ``unfinished`` (when
    given), and a video none of whose sequences is finished is left out. Splits without records (datasets made
    by other tools) are read as they are."""
    images_root = root / "imgs" / split
    recorded = has_records(root, split)
    videos = []
    for person in _subdirs(images_root):
        for video in _subdirs(images_root / person):
            rel = Path(person) / video
            seqs = None
            if recorded:
                present = _subdirs(images_root / rel)
                done = finished_sequences(root, split, person, video)
                seqs = [q for q in present if q in done]
                if unfinished is not None:
                    unfinished.extend(f"{person}/{video}/{q}" for q in present if q not in done)
                if not seqs:
                    continue
            images = _stems(images_root / rel, IMAGE_SUFFIXES, seqs)
            common = set(images) & set(_stems(root / "keypoints" / split / rel, (".npy",), seqs))
            if use_masks:
                common &= set(_stems(root / "segs" / split / rel, (".png",), seqs))
            keys = sorted(common)
            frames = tuple(f"{seq}/{frame}" for seq, frame in keys)
            videos.append(Video(f"{person}/{video}", frames, tuple(images[k] for k in keys)))
    return videos


# ============================================================================================ dataset
class VideoDataset(Dataset):
    """Talking-head videos in the authors' layout; one item = one video (or one evaluation pair).

    Args:
        root: the folder holding ``imgs/``, ``keypoints/`` and (with ``use_masks``) ``segs/``.
        split: the sub-folder to read (``train`` or ``test``).
        image_size: side of the square images, masks and stickmen.
        num_sources, num_targets: n and t frames per item.
        sampling: ``random`` (default), ``reference`` (the released Weyl sequence) or ``test`` (the paper's
            protocol: source = first frame, targets at 1 FPS; one item per (video, group of t targets)).
        seed: seeds the frame choice (and flips); with ``random`` an item depends only on (seed, epoch, item).
        use_masks: read ``segs/`` (frames without a mask are not used); without it the masks are None.
        flip_probability: probability of the horizontal-flip augmentation per item (the paper uses none: 0).
        fps: frames per second for the ``test`` protocol, one number or a mapping PERSON/VIDEO → fps.
        validate: check the first frame of every video (keypoint array shape, mask channels) while indexing,
            so that a format error stops before training instead of inside a worker.
        stickman_thickness: line thickness in px; default scales with the resolution (2 px at 256).
        repeats: items per video per epoch with ``random`` or ``reference`` sampling (default 1); each repeat
            draws its own frames, so a dataset of one long video (a person-specific model) fills whole batches.

    In a split written by ``bilayer preprocess`` or ``bilayer synth`` a sequence without its finished record (a
    killed or failed run) is not used: ``unfinished`` lists those PERSON/VIDEO/SEQ names and a warning counts them.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        split: str = "train",
        image_size: int = 256,
        num_sources: int = 1,
        num_targets: int = 1,
        sampling: str = "random",
        seed: int = 0,
        use_masks: bool = True,
        flip_probability: float = 0.0,
        fps: float | Mapping[str, float] = 25.0,
        validate: bool = True,
        stickman_thickness: int | None = None,
        repeats: int = 1,
    ):
        self.root = Path(root)
        self.split = str(split)
        self.image_size = int(image_size)
        self.num_sources = int(num_sources)
        self.num_targets = int(num_targets)
        self.sampling = sampling
        self.seed = int(seed)
        self.use_masks = bool(use_masks)
        self.flip_probability = float(flip_probability)
        self.fps = fps
        self.stickman_thickness = stickman_thickness
        if isinstance(repeats, bool) or not isinstance(repeats, int) or repeats < 1:
            raise ValueError(f"repeats is {repeats!r}; expected an integer ≥ 1.")
        self.repeats = repeats
        self._check_options()
        self._check_folders()

        self.videos: list[Video] = []
        self.skipped: list[tuple[str, str]] = []  # (PERSON/VIDEO, reason)
        # PERSON/VIDEO/SEQ of sequences that bilayer started but did not finish writing (not used)
        self.unfinished: list[str] = []
        # items: (video index, fixed frame indices for the test protocol, else None)
        self._items: list[tuple[int, tuple[int, ...] | None]] = []
        found = index_videos(self.root, self.split, self.use_masks, self.unfinished)
        if self.unfinished:
            log.warning("skipped %d unfinished sequence%s under %s (e.g. %s); rerun the command that wrote them",
                        len(self.unfinished), "" if len(self.unfinished) == 1 else "s", self.root / "imgs" / self.split,
                        self.unfinished[0])
        if not found and self.unfinished:
            raise DatasetError(
                f"every sequence under {self.root / 'imgs' / self.split} is unfinished ({len(self.unfinished)}, e.g. "
                f"{self.unfinished[0]}): bilayer started writing them but recorded none as finished; rerun the "
                "command that wrote them."
            )
        if not found:
            raise DatasetError(
                f"no videos found under {self.root / 'imgs' / self.split}; expected "
                f"{self.root}/imgs/{self.split}/PERSON/VIDEO/SEQ/FRAME.jpg (with matching keypoints/ .npy"
                f"{' and segs/ .png' if self.use_masks else ''} files)."
            )
        needed = self.num_sources + self.num_targets
        for video in found:
            reason = None
            groups: list[list[int]] = []
            if len(video) < needed:
                reason = f"{len(video)} usable frames, fewer than the {needed} needed ({self._usable_files()})"
            elif self.sampling == "test":
                groups = evaluation_items(len(video), self._fps_of(video.name), self.num_sources, self.num_targets)
                if not groups:
                    reason = (f"{len(video)} usable frames give no group of {self.num_targets} target(s) at 1 FPS "
                              f"(fps {self._fps_of(video.name):g}) after {self.num_sources} source frame(s)")
            if reason is not None:
                self.skipped.append((video.name, reason))
                log.info("skipping video %s: %s", video.name, reason)
                continue
            index = len(self.videos)
            self.videos.append(video)
            if self.sampling == "test":
                self._items.extend((index, tuple(g)) for g in groups)
            else:
                self._items.extend([(index, None)] * self.repeats)
            if validate:
                self._validate_first_frame(video)
        if self.skipped:
            log.warning("skipped %d of %d videos under %s (first: %s: %s)", len(self.skipped), len(found),
                        self.root / "imgs" / self.split, *self.skipped[0])
        if not self._items:
            raise DatasetError(
                f"none of the {len(found)} videos under {self.root / 'imgs' / self.split} is usable: "
                f"{self.skipped[0][0]} has {self.skipped[0][1]}."
            )

        # Shared memory, so that DataLoader workers (forked or spawned, persistent or not) see the epoch set in
        # the main process and report their replaced-frame counts back: [epoch, main count, worker counts…].
        self._shared = torch.zeros(2 + _MAX_WORKER_SLOTS, dtype=torch.int64).share_memory_()
        self._bad: set[tuple[int, int]] = set()  # (video, frame) known to be corrupt, in this process
        self._warned: set[str] = set()
        self._weyl: tuple[tuple[int, int], float] | None = None  # ((worker, epoch), cur)

    # ------------------------------------------------------------------------------------------- checks
    def _check_options(self) -> None:
        if self.sampling not in SAMPLING_MODES:
            raise DatasetError(f"unknown sampling mode {self.sampling!r}; expected one of {', '.join(SAMPLING_MODES)}.")
        if self.image_size < 8:
            raise DatasetError(f"image_size must be at least 8 px, got {self.image_size}.")
        if self.num_sources < 1:
            raise DatasetError(f"num_sources must be at least 1, got {self.num_sources}.")
        least = 1 if self.sampling == "test" else 0
        if self.num_targets < least:
            raise DatasetError(
                f"num_targets must be at least {least} with sampling {self.sampling!r}, got {self.num_targets}."
            )
        if not 0.0 <= self.flip_probability <= 1.0:
            raise DatasetError(f"flip_probability must be in [0, 1], got {self.flip_probability}.")
        if not isinstance(self.fps, Mapping) and not float(self.fps) > 0:
            raise DatasetError(f"fps must be positive, got {self.fps}.")

    def _check_folders(self) -> None:
        if not self.root.is_dir():
            raise DatasetError(f"dataset root {self.root} does not exist or is not a folder.")
        kinds = ("imgs", "keypoints", "segs") if self.use_masks else ("imgs", "keypoints")
        for kind in kinds:
            folder = self.root / kind / self.split
            if not folder.is_dir():
                hint = "; pass use_masks=False to use the dataset without masks" if kind == "segs" else ""
                raise DatasetError(
                    f"dataset folder {folder} does not exist; expected the layout "
                    f"ROOT/{{{','.join(kinds)}}}/{self.split}/PERSON/VIDEO/SEQ/FRAME{hint}."
                )

    def _usable_files(self) -> str:
        return "frames present under imgs/ and keypoints/" + (" and segs/" if self.use_masks else "")

    def _fps_of(self, name: str) -> float:
        if isinstance(self.fps, Mapping):
            if name not in self.fps:
                raise DatasetError(f"the fps mapping has no entry for video {name}.")
            value = float(self.fps[name])
            if not value > 0:
                raise DatasetError(f"fps of video {name} must be positive, got {value}.")
            return value
        return float(self.fps)

    def _validate_first_frame(self, video: Video) -> None:
        """Cheap format checks on one frame (the .npy header and the PNG header only)."""
        path = self.path(video, 0, "keypoints")
        try:
            array = np.load(path, mmap_mode="r", allow_pickle=False)
        except Exception:
            array = None  # unreadable: a corrupt frame, replaced when read
        if array is not None:
            _check_keypoints_array(path, array)
        if self.use_masks:
            path = self.path(video, 0, "segs")
            try:
                with Image.open(path) as im:  # reads the header only
                    mode = im.mode
            except Exception:
                return  # unreadable: a corrupt frame, replaced when read
            if mode not in _SINGLE_CHANNEL_SCALE:
                with Image.open(path) as im:
                    _check_mask_mode(path, im)

    # ------------------------------------------------------------------------------------------- paths
    def path(self, video: Video | int, frame: int, kind: str) -> Path:
        """The file of ``frame`` (an index into the video's frames) for kind ``imgs``, ``keypoints`` or ``segs``."""
        video = self.videos[video] if isinstance(video, int) else video
        stem = video.frames[frame]
        suffix = {"imgs": video.image_suffixes[frame], "keypoints": ".npy", "segs": ".png"}[kind]
        return self.root / kind / self.split / video.name / f"{stem}{suffix}"

    # ------------------------------------------------------------------------------------------- epoch / counters
    @property
    def epoch(self) -> int:
        return int(self._shared[0])

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch (call before each epoch, like ``DistributedSampler.set_epoch``): random frame choices
        and flips depend on it; workers see it through shared memory."""
        self._shared[0] = int(epoch)

    @property
    def replaced_frames(self) -> int:
        """Frames replaced because a file was corrupt, summed over this process and its DataLoader workers."""
        return int(self._shared[1:].sum())

    def _count_replacement(self) -> None:
        info = get_worker_info()
        slot = 1 if info is None else 2 + info.id % _MAX_WORKER_SLOTS
        self._shared[slot] += 1

    # ------------------------------------------------------------------------------------------- Weyl state
    def _weyl_key(self) -> tuple[int, int]:
        info = get_worker_info()
        return (-1 if info is None else info.id, self.epoch)

    @property
    def weyl_cur(self) -> float:
        """The reference sampler's state ``cur`` in [0, 1) for this process and epoch."""
        key = self._weyl_key()
        if self._weyl is None or self._weyl[0] != key:
            # A fresh uniform start per (worker, epoch); the released code used one start for every worker of
            # every epoch (forked copies of a state the main process never advances).
            start = torch.rand((), generator=item_generator(self.seed, key[1], key[0], 0x5765796C)).item()
            self._weyl = (key, start)
        return self._weyl[1]

    @weyl_cur.setter
    def weyl_cur(self, value: float) -> None:
        self._weyl = (self._weyl_key(), float(value) % 1.0)

    # ------------------------------------------------------------------------------------------- items
    def __len__(self) -> int:
        return len(self._items)

    def item_video(self, item: int) -> int:
        """The index in ``videos`` of the video that item ``item`` reads (before any unreadable-video fallback)."""
        return self._items[item][0]

    def frame_indices(self, item: int, generator: torch.Generator | None = None) -> list[int]:
        """The n + t frame indices item ``item`` uses (sources first). ``reference`` advances the Weyl state."""
        video_index, fixed = self._items[item]
        length = len(self.videos[video_index])
        count = self.num_sources + self.num_targets
        if fixed is not None:
            return list(fixed)
        if self.sampling == "random":
            return random_indices(length, count, generator or item_generator(self.seed, self.epoch, item))
        if self.split == "test":  # released test phase: cur reset to 0 for every item (reference §1.3)
            return weyl_indices(0.0, length, count)[0]
        indices, self.weyl_cur = weyl_indices(self.weyl_cur, length, count)
        return indices

    def __getitem__(self, item: int) -> Sample:
        if not 0 <= item < len(self._items):
            raise IndexError(f"item {item} out of range for a dataset of {len(self._items)} items.")
        generator = item_generator(self.seed, self.epoch, item)
        indices = self.frame_indices(item, generator)
        flip = self.flip_probability > 0 and torch.rand((), generator=generator).item() < self.flip_probability
        video_index = self._items[item][0]
        for _ in range(len(self.videos)):
            try:
                return self._build(video_index, indices, flip)
            except _UnreadableVideo:
                following = (video_index + 1) % len(self.videos)
                log.warning("no frame of video %s can be read; using video %s instead",
                            self.videos[video_index].name, self.videos[following].name)
                video_index = following
                length = len(self.videos[video_index])
                indices = random_indices(length, min(length, len(indices)), generator)
        raise DatasetError(f"no frame of any video under {self.root / 'imgs' / self.split} can be read.")

    # ------------------------------------------------------------------------------------------- reading
    def _read_frame(self, video: Video, frame: int):
        image, width = read_image(self.path(video, frame, "imgs"), self.image_size)
        keypoints = normalize_keypoints(torch.from_numpy(read_keypoints(self.path(video, frame, "keypoints"))), width)
        mask = read_mask(self.path(video, frame, "segs"), self.image_size) if self.use_masks else None
        return image, keypoints, mask

    def _note_corrupt(self, video_index: int, frame: int, exc: _CorruptFile) -> None:
        self._bad.add((video_index, frame))
        key = str(exc.path)
        if key not in self._warned:
            self._warned.add(key)
            log.warning("corrupt frame %s (%s); replacing it with another frame of the same video",
                        exc.path, exc.reason)

    def _read_or_replace(self, video_index: int, frame: int, used: set[int]):
        """Read ``frame``; if it is corrupt, the first readable frame of the same video (walking up from index 0,
        like the released code's reserve frames), preferring frames this item does not already use."""
        video = self.videos[video_index]
        if (video_index, frame) not in self._bad:
            try:
                return self._read_frame(video, frame), frame
            except _CorruptFile as exc:
                self._note_corrupt(video_index, frame, exc)
        for allow_used in (False, True):
            for other in range(len(video)):
                if other == frame or (video_index, other) in self._bad or (other in used and not allow_used):
                    continue
                try:
                    result = self._read_frame(video, other)
                except _CorruptFile as exc:
                    self._note_corrupt(video_index, other, exc)
                    continue
                used.add(other)
                self._count_replacement()
                return result, other
        raise _UnreadableVideo(video.name)

    def _build(self, video_index: int, indices: list[int], flip: bool) -> Sample:
        video = self.videos[video_index]
        used = set(indices)
        images, keypoints, masks, read = [], [], [], []
        for frame in indices:
            (image, kp, mask), actual = self._read_or_replace(video_index, frame, used)
            images.append(image)
            keypoints.append(kp)
            masks.append(mask)
            read.append(video.frames[actual])
        images_t = torch.stack(images)  # (n + t, 3, S, S)
        keypoints_t = torch.stack(keypoints).float()  # (n + t, 136)
        masks_t = torch.stack(masks) if self.use_masks else None  # (n + t, 1, S, S)
        if flip:
            images_t, keypoints_t = flip_images(images_t), flip_keypoints(keypoints_t)
            masks_t = flip_images(masks_t) if masks_t is not None else None
        stickmen = draw_stickmen(keypoints_t, self.image_size, self.stickman_thickness)  # (n + t, 3, S, S)
        n = self.num_sources
        return Sample(
            source_images=images_t[:n], source_keypoints=keypoints_t[:n],
            source_masks=masks_t[:n] if masks_t is not None else None, source_stickmen=stickmen[:n],
            target_images=images_t[n:], target_keypoints=keypoints_t[n:],
            target_masks=masks_t[n:] if masks_t is not None else None, target_stickmen=stickmen[n:],
            index=video_index, video=video.name, source_frames=tuple(read[:n]), target_frames=tuple(read[n:]),
            flipped=bool(flip),
        )

    def __repr__(self) -> str:
        return (f"VideoDataset({str(self.root)!r}, split={self.split!r}, videos={len(self.videos)}, "
                f"items={len(self)}, image_size={self.image_size}, n={self.num_sources}, t={self.num_targets}, "
                f"sampling={self.sampling!r})")
