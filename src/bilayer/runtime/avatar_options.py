"""The options the commands share, one frozen dataclass each, filled from parsed command-line options by
``fields_from(args)`` (a subclass's own fields too). Light to import: the model code loads only when an avatar is
made.

- ``AvatarOptions``: how an avatar is made (a photo with optional keypoints and mask, or a saved avatar; the
  landmark and segmentation back-ends; the texture enhancer) — ``bilayer animate``, ``live``, ``avatar``, ``export``.
- ``DrivenOptions``: those plus what every command that drives an avatar takes (the model, how the driver's motion
  is applied, the keypoint smoothing, the picture's layout and background, the per-frame engine, a frame limit, the
  report and the progress messages) — the base of ``AnimateOptions`` and ``LiveOptions``."""

from __future__ import annotations

import dataclasses
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

    from ..models.bilayer import BilayerModel
    from .avatar import Avatar


@dataclass(frozen=True, kw_only=True)
class AvatarOptions:
    source: str | None = None  # a photo
    avatar: str | None = None  # or an .avatar file made by `bilayer avatar`
    source_keypoints: str | None = None
    source_mask: str | None = None
    source_is_crop: bool = False
    landmarks: str = "mediapipe"
    landmark_weights: str | None = None
    segmentation: str = "mediapipe"
    enhance: bool = True

    @classmethod
    def fields_from(cls, args) -> dict:
        """This class's fields from parsed command-line options: each field from the option of its name (--source →
        ``source``), a field that is on by default from its --no-NAME option (--no-enhance → ``enhance``); a field
        whose option a command lacks keeps its default."""
        fields = {}
        for f in dataclasses.fields(cls):
            if hasattr(args, f.name):
                fields[f.name] = getattr(args, f.name)
            elif hasattr(args, f"no_{f.name}"):
                fields[f.name] = not getattr(args, f"no_{f.name}")
        return fields

    def avatar_inputs(self) -> tuple[tuple[str, str | None], ...]:
        """(command-line flag, path) of every file these options read, for the input checks."""
        return (("--source", self.source), ("--avatar", self.avatar), ("--source-keypoints", self.source_keypoints),
                ("--source-mask", self.source_mask), ("--landmark-weights", self.landmark_weights))

    def make_avatar(self, model: "BilayerModel", landmarks) -> tuple["Avatar", "np.ndarray | None"]:
        """The avatar (loaded, or made now from the photo) and the photo (None for a saved avatar);
        ``landmarks``: the back-end object from ``landmark_context(self.landmarks, self.landmark_weights)``."""
        from .avatar import avatar_from

        return avatar_from(model, source=self.source, avatar=self.avatar, source_keypoints=self.source_keypoints,
                           source_mask=self.source_mask, source_is_crop=self.source_is_crop, landmarks=landmarks,
                           segmentation=self.segmentation, enhance=self.enhance)


@dataclass(frozen=True, kw_only=True)
class DrivenOptions(AvatarOptions):
    model: str
    motion: str = "relative"
    smoothing: bool = True
    side_by_side: bool = False
    background: str = "black"
    backend: str = "auto"
    max_frames: int | None = None
    report: str | None = None
    progress: bool = True

    def say(self, text: str) -> None:
        """A progress message on stderr, unless progress is off."""
        if self.progress:
            print(text, file=sys.stderr, flush=True)
