"""``bilayer preprocess`` glue: ``configure_parser(subparser)`` adds the options, ``command(args)`` runs them.

``command`` raises ``PreprocessError`` (a ``ValueError``) with one sentence for a user error (missing input,
unknown backend, missing face-alignment weights, an ``--out`` folder bilayer did not write, a bad ``--shard`` or
``--test-tail``), raises the ``OSError`` that stops a run whose outputs cannot be written (a full disk; it names
the file), and returns 1 only when nothing could be processed.
"""

from __future__ import annotations

import argparse
import json

from ..vision.crop import BOX_MODES
from ..vision.landmarks import LANDMARK_BACKENDS
from .pipeline import SPLITS, preprocess
from ..vision.segmentation import SEGMENTATION_BACKENDS
from ..vision.smoothing import SMOOTHING_METHODS
from .tail import DEFAULT_TEST_GAP


def configure_parser(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the ``preprocess`` arguments to ``p`` (a subparser) and set ``func=command``."""
    p.description = (
        "Turn a video, a folder of videos (PERSON/VIDEO/CLIP.mp4) or a folder of images into the training layout "
        "ROOT/{imgs,keypoints,segs}/SPLIT/PERSON/VIDEO/SEQ/FRAME.{jpg,npy,png}: 68 keypoints, stabilised "
        "reference crops, segmentation masks. Finished sequences are skipped when the command is run again."
    )
    p.add_argument("input", help="a video file, an image, a folder of images, or a folder tree of videos")
    p.add_argument("--out", required=True, metavar="ROOT", help="dataset root to write into: new, empty, or a dataset bilayer wrote")
    p.add_argument("--size", type=int, default=256, help="side of the saved crops in pixels (default 256)")
    p.add_argument("--fps", type=float, default=None, help="subsample videos to at most this frame rate")
    p.add_argument("--max-frames", type=int, default=None, help="keep at most this many frames per sequence")
    p.add_argument("--landmarks", default="mediapipe", metavar="NAME",
                   help=f"keypoint backend: {', '.join(sorted(LANDMARK_BACKENDS))} (default mediapipe)")
    p.add_argument("--max-faces", type=int, default=4, metavar="N",
                   help="faces MediaPipe follows per frame (default 4; the largest is kept, then the same person); "
                        "1 is faster for one-person videos but keeps MediaPipe's most confident face")
    p.add_argument("--landmark-weights", default=None, metavar="DIR",
                   help="folder holding the face-alignment weight files (FAN and S3FD) or dlib's "
                        "shape_predictor_68_face_landmarks.dat (default: the one make install puts in place); "
                        "nothing is downloaded")
    p.add_argument("--keypoints", default=None, metavar="PATH",
                   help="file backend: a .npy (one sequence) or a folder of them (default: the .npy beside each video)")
    p.add_argument("--segmentation", default="mediapipe", metavar="NAME",
                   help=f"segmentation backend: {', '.join(sorted(SEGMENTATION_BACKENDS))} "
                        "(default mediapipe; none writes no segs folder)")
    p.add_argument("--smoothing", default="one-euro", choices=SMOOTHING_METHODS,
                   help="temporal smoothing of the keypoints (default one-euro)")
    p.add_argument("--crop-box", dest="box_mode", default="auto", choices=BOX_MODES,
                   help="crop-box stabilisation: auto (one box when the head barely moves, else smoothed), smooth, "
                        "fixed (one box per sequence) or none (the reference per-frame crop) (default auto)")
    p.add_argument("--min-frames", type=int, default=10,
                   help="skip sequences with fewer frames that show a face (default 10)")
    p.add_argument("--split", default="train", choices=SPLITS, help="dataset split to write (default train)")
    p.add_argument("--test-tail", type=float, default=None, metavar="F",
                   help="a held-out split in time: the last F (0 < F < 1, e.g. 0.2) of each video's duration goes to "
                        "the test split and the rest to train, as sequences of the same name; a folder of frames "
                        "is split by its sorted frames; --max-frames applies to each part; not with --split test")
    p.add_argument("--test-gap", type=float, default=None, metavar="SECONDS",
                   help=f"with --test-tail: seconds of video between the last training and the first test frame, "
                        f"written nowhere (default {DEFAULT_TEST_GAP:g})")
    p.add_argument("--shard", default=None, metavar="K/N",
                   help="process only shard K of N (0 ≤ K < N): inputs K, K+N, K+2N, … of the sorted list; run "
                        "the N shards into N roots (e.g. on N machines), then copy the roots together")
    p.add_argument("--workers", type=int, default=1, help="parallel processes (default 1)")
    p.add_argument("--jpeg-quality", type=int, default=95, help="JPEG quality of the saved crops (default 95)")
    p.add_argument("--overwrite", action="store_true", help="redo sequences that are already finished")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(func=command)
    return p


def command(args: argparse.Namespace) -> int:
    """Run ``preprocess`` from parsed arguments; print the summary. 0 if anything is finished, else 1."""
    summary = preprocess(
        args.input, args.out, size=args.size, fps=args.fps, max_frames=args.max_frames, landmarks=args.landmarks,
        segmentation=args.segmentation, smoothing=args.smoothing, min_frames=args.min_frames, workers=args.workers,
        split=args.split, progress=args.progress, landmark_weights=args.landmark_weights, keypoints=args.keypoints,
        box_mode=args.box_mode, jpeg_quality=args.jpeg_quality, overwrite=args.overwrite, max_faces=args.max_faces,
        shard=args.shard, test_tail=args.test_tail, test_gap=args.test_gap,
    )
    print(json.dumps(summary.to_dict(), indent=2) if args.json else summary.report())
    return 0 if summary.ok else 1
