"""Finding the sequences of an input path and naming them PERSON/VIDEO/SEQ (the reference layout, reference §1.1)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ..vision.errors import PreprocessError
from ..vision.video import IMAGE_EXTENSIONS, VIDEO_EXTENSIONS, is_image, is_video, list_images


@dataclass(frozen=True)
class SequenceJob:
    """One sequence to process: ``source`` (a video file, an image file or a folder of images), its output name
    ``key`` = (PERSON, VIDEO, SEQ), its path ``relative`` to the input folder and the ``split`` it is written to
    (None: the run's ``--split``; with ``--test-tail`` a source gives a ``train`` and a ``test`` job)."""

    key: tuple[str, str, str]
    source: Path
    relative: Path
    split: str | None = None

    @property
    def name(self) -> str:
        return "/".join(self.key)


def _key(relative: Path, stem: str) -> tuple[str, str, str]:
    """PERSON/VIDEO/SEQ from a path relative to the input folder.

    * ``PERSON/VIDEO/CLIP.mp4`` (VoxCeleb2) → PERSON/VIDEO/CLIP; deeper paths use their last three parts;
    * ``VIDEO/CLIP.mp4`` → VIDEO/VIDEO/CLIP;
    * ``CLIP.mp4`` (a flat folder, or a single file) → CLIP/CLIP/CLIP: every file is its own person.
    """
    parents = relative.parent.parts
    if len(parents) >= 2:
        return (parents[-2], parents[-1], stem)
    if len(parents) == 1:
        return (parents[0], parents[0], stem)
    return (stem, stem, stem)


def discover(input_path: str | Path, exclude: Sequence[str | Path] = ()) -> list[SequenceJob]:
    """The sequences of ``input_path``, sorted by name.

    ``input_path`` is a video file, an image file (a one-frame sequence), a folder of images (one sequence, frames in
    sorted order) or a folder tree holding videos and/or image folders, named by ``_key``. Raises
    ``PreprocessError`` when the path does not exist or holds nothing to process, or when two sources would get the
    same name. Folders in ``exclude`` (e.g. the output root when it lies inside the input) are not searched.
    """
    root = Path(input_path).expanduser()
    if not root.exists():
        raise PreprocessError(f"input path {root} does not exist.")
    if root.is_file():
        if not (is_video(root) or is_image(root)):
            known = ", ".join(sorted(VIDEO_EXTENSIONS | IMAGE_EXTENSIONS))
            raise PreprocessError(f"input {root} is neither a video nor an image (known extensions: {known}).")
        return [SequenceJob(_key(Path(root.name), root.stem), root, Path(root.name))]

    skip = [Path(e).expanduser().resolve() for e in exclude]

    def excluded(path: Path) -> bool:
        resolved = path.resolve()
        return any(resolved == e or e in resolved.parents for e in skip)

    jobs: list[SequenceJob] = []
    if list_images(root):  # the folder itself is an image sequence
        jobs.append(SequenceJob((root.resolve().name or "images",) * 3, root, Path(".")))
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        # prune hidden folders (our .preprocess markers) and excluded ones (an output root inside the input)
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and not excluded(here / d))
        for d in dirnames:
            if list_images(here / d):
                rel = (here / d).relative_to(root)
                jobs.append(SequenceJob(_key(rel, d), here / d, rel))
        for name in sorted(filenames):
            path = here / name
            if not name.startswith(".") and is_video(path):
                rel = path.relative_to(root)
                jobs.append(SequenceJob(_key(rel, path.stem), path, rel))
    if not jobs:
        raise PreprocessError(f"no videos or images found in {root}.")
    seen: dict[tuple[str, str, str], Path] = {}
    for job in jobs:
        if job.key in seen:
            raise PreprocessError(
                f"{seen[job.key]} and {job.source} would both be written as {job.name}; rename one of them."
            )
        seen[job.key] = job.source
    return sorted(jobs, key=lambda j: j.key)
