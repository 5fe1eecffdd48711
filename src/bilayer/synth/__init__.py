"""SynthHeads: procedural talking-head videos with exact keypoints and masks, rendered in NumPy.

- ``params``: the random identity, scene and per-frame performance parameters;
- ``head``, ``body``, ``raster``, ``render``: the meshes, the z-buffer rasteriser and the shading that turn
  parameters into an RGB frame, its 68 keypoints and its person mask;
- ``dataset``: the dataset writer behind ``bilayer synth`` (splits, shards, cross-person ground truth).

Everything is deterministic in the seed: ``identity_params(seed, person)``, ``scene_params(seed, person, video)``
and ``sequence_trajectory(seed, person, video, sequence, frames)`` give the parameters the dataset writer uses, so
``render_sequence`` reproduces any sequence of a dataset without reading it.
"""

from __future__ import annotations

import numpy as np

from .dataset import (JPEG_QUALITY, cross_pair_list, cross_pairs, generate, identity_params, scene_params,
                      sequence_trajectory)
from .params import FrameParams, IdentityParams, SceneParams, sample_identity, sample_scene, sample_trajectory
from .render import SynthRenderer, render_frame


def render_sequence(seed: int, person: int, frames: int, size: int, video: int = 0, sequence: int = 0
                    ) -> tuple[list[np.ndarray], np.ndarray, list[np.ndarray]]:
    """The frames of one SynthHeads sequence as the dataset writer renders them: RGB uint8 images (size, size, 3),
    float32 keypoints (frames, 68, 2) in pixels, and uint8 person masks (size, size)."""
    renderer = SynthRenderer(identity_params(seed, person), scene_params(seed, person, video), size)
    out = [renderer.render(f) for f in sequence_trajectory(seed, person, video, sequence, frames)]
    return [o[0] for o in out], np.stack([o[1] for o in out]).astype(np.float32), [o[2] for o in out]


__all__ = ["JPEG_QUALITY", "FrameParams", "IdentityParams", "SceneParams", "SynthRenderer", "cross_pair_list",
           "cross_pairs", "generate", "identity_params", "render_frame", "render_sequence", "sample_identity",
           "sample_scene", "sample_trajectory", "scene_params", "sequence_trajectory"]
