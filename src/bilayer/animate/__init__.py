"""The animation application: a photo (or a saved avatar) driven by a video, a folder of frames or a keypoint file.

- ``app``: ``animate(AnimateOptions(...))``, the one call behind ``bilayer animate``;
- ``driver``: the driver's frames and its tracked, smoothed keypoints;
- ``motion``: the driver's motion carried over to the avatar's face (relative or absolute) and its crop box;
- ``pipeline``: the streamed stages (read → render → compose and encode) on bounded queues;
- ``compose``, ``videoio``: paste-back, RGBA and side-by-side frames; video files with the driver's audio.
"""

from .app import AnimateOptions, animate
from .pipeline import AnimationReport, stream

__all__ = ["AnimateOptions", "AnimationReport", "animate", "stream"]
