"""Preprocessing: videos or images → 68 keypoints, stabilised reference crops and masks (the training layout).

Library::

    from bilayer.preprocess import preprocess
    summary = preprocess("videos/", "data/", size=256, fps=25, workers=2)
    print(summary.report())

The face and video tools it is built from live in ``bilayer.vision`` (shared with the animation application) and
are re-exported here: ``decode_frames``, ``detect_keypoints`` and the backends (``create_landmark_backend``),
``crop_box``, ``stabilise_boxes``, ``resolve_box_mode``, ``crop_image``, ``keypoints_to_crop``, ``OneEuroFilter``,
``smooth_keypoints``, ``create_segmentation_backend``. CLI glue: ``configure_parser`` and ``command`` (``bilayer
preprocess``).
See docs/preprocessing.md.
"""

from .cli import command, configure_parser
from ..vision.crop import (
    CropBox,
    crop_box,
    crop_image,
    is_static,
    keypoints_from_crop,
    keypoints_to_crop,
    resolve_box_mode,
    stabilise_boxes,
)
from ..vision.errors import MissingWeightsError, PreprocessError, UnknownBackendError, VideoReadError
from ..vision.index_map import MEDIAPIPE_TO_IBUG68, mesh_to_ibug68
from ..vision.landmarks import (
    LANDMARK_BACKENDS,
    DlibLandmarks,
    Face,
    FaceAlignmentLandmarks,
    FileLandmarks,
    LandmarkBackend,
    MainFaceTracker,
    MediaPipeLandmarks,
    create_landmark_backend,
    detect_keypoints,
    register_landmark_backend,
)
from .pipeline import SequenceResult, Settings, Summary, preprocess, process_sequence
from ..vision.segmentation import (
    SEGMENTATION_BACKENDS,
    MediaPipeSegmentation,
    SegmentationBackend,
    create_segmentation_backend,
    register_segmentation_backend,
)
from ..vision.smoothing import BOX_SMOOTHING, KEYPOINT_SMOOTHING, OneEuroFilter, OneEuroParams, smooth_keypoints
from .sources import SequenceJob, discover
from ..vision.video import Frame, decode_frames, iter_frames, video_fps

__all__ = [
    "BOX_SMOOTHING", "KEYPOINT_SMOOTHING", "LANDMARK_BACKENDS", "MEDIAPIPE_TO_IBUG68", "SEGMENTATION_BACKENDS",
    "CropBox", "DlibLandmarks", "Face", "FaceAlignmentLandmarks", "FileLandmarks", "Frame", "LandmarkBackend",
    "MainFaceTracker",
    "MediaPipeLandmarks", "MediaPipeSegmentation", "MissingWeightsError", "OneEuroFilter", "OneEuroParams",
    "PreprocessError", "SegmentationBackend", "SequenceJob", "SequenceResult", "Settings", "Summary",
    "UnknownBackendError", "VideoReadError", "command", "configure_parser", "create_landmark_backend",
    "create_segmentation_backend", "crop_box", "crop_image", "decode_frames", "detect_keypoints", "discover",
    "is_static", "iter_frames", "keypoints_from_crop", "keypoints_to_crop", "mesh_to_ibug68", "preprocess",
    "process_sequence", "register_landmark_backend", "register_segmentation_backend", "smooth_keypoints",
    "resolve_box_mode", "stabilise_boxes", "video_fps",
]
