"""Proof that training learns: synth-quick on SynthHeads, evaluated on held-out identities.

    python benchmarks/learning.py [--steps 1100] [--enhancer-steps 150] [--config synth-quick] [--data DIR]
                                  [--identities 30] [--out benchmarks/results/learning]

1. Generates SynthHeads at 128 px (--identities people; train and test identities disjoint), unless --data is given.
2. Trains the base model (``bilayer train base --config synth-quick``) for --steps iterations, then the texture
   enhancer (``bilayer train enhancer --init RUN/model``) for --enhancer-steps.
3. One-shot reenactment on the held-out identities (source = first frame, targets = every 5th later frame, other
   poses and expressions). PSNR and SSIM, both images on a black background by the target's ground-truth mask, of
   (a) the model, (b) copying the source image, (c) the mean training image, (d) the model without its texture
   layer (LF only), (e) the model with the texture enhancer.
Writes learning.json (all numbers) and learning_curve.png (training losses against iterations, and held-out PSNR
when the training preset evaluates while it trains) under --out, next to the data and the two runs.
Times depend on the machine; the comparison is within one run.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from bilayer import BilayerModel
from bilayer.data.dataset import VideoDataset, collate
from bilayer.eval.metrics import psnr, ssim
from bilayer.io import atomic_path, write_json_atomic
from bilayer.nn.image import apply_mask


def run(cmd: list[str]) -> None:
    print("$", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)


LOSS_KEYS = ("G_L1", "G_VGG19", "G_FM", "D_ADV")


@torch.no_grad()
def evaluate(model: BilayerModel, data: Path, mean_image: torch.Tensor) -> dict:
    dataset = VideoDataset(data, "test", model.config.image_size, 1, 1, "test", fps=5.0)
    scores: dict[str, dict[str, list[float]]] = {k: {"psnr": [], "ssim": []} for k in
                                                  ("model", "copy_source", "mean_train_image", "lf_only", "enhanced")}
    for i in range(len(dataset)):
        b = collate([dataset[i]])
        state = model.personalize(b.source_images, b.source_keypoints, b.source_masks, b.source_stickmen)
        render = model.render(state, b.target_keypoints)
        mask = b.target_masks[:, 0]
        target = apply_mask(b.target_images[:, 0], mask)
        candidates = {
            "model": render.image[:, 0],
            "copy_source": b.source_images[:, 0],
            "mean_train_image": mean_image[None],
            "lf_only": render.lf[:, 0],
        }
        if model.texture_enhancer is not None:
            candidates["enhanced"] = model.render(model.enhance(state), b.target_keypoints).image[:, 0]
        for name, image in candidates.items():
            pred = apply_mask(image, mask)
            scores[name]["psnr"].append(float(psnr(pred, target)))
            scores[name]["ssim"].append(float(ssim(pred, target)))
    return {name: {k: float(np.mean(v)) for k, v in s.items()} | {"pairs": len(s["psnr"])}
            for name, s in scores.items() if s["psnr"]}


def mean_train_image(data: Path, size: int, limit: int = 400) -> torch.Tensor:
    dataset = VideoDataset(data, "train", size, 1, 1, "random", seed=0)
    total, count = torch.zeros(3, size, size), 0
    for i in range(min(len(dataset), limit)):
        s = dataset[i]
        total += s.target_images[0]
        count += 1
    return total / count


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def plot(run_dirs: dict[str, Path], out: Path) -> None:
    """Training losses per stage (the terms switched on) and, when a run evaluated held-out data while training
    (``metrics.jsonl``), held-out PSNR in a second panel."""
    from matplotlib.figure import Figure  # no pyplot: the Agg canvas, no global backend switch

    losses, held_out = [], []  # (label, steps, values)
    for stage, run_dir in run_dirs.items():
        logs = _jsonl(run_dir / "log.jsonl")
        for key in LOSS_KEYS:
            rows = [r for r in logs if key in r]
            if any(r[key] for r in rows):  # a term with weight 0 logs zeros: nothing to draw on a log scale
                losses.append((f"{stage} {key}", [r["step"] for r in rows], [r[key] for r in rows]))
        metrics = run_dir / "metrics.jsonl"
        if metrics.exists():
            m = _jsonl(metrics)
            held_out.append((f"{stage} held-out PSNR", [r["step"] for r in m], [r["psnr"] for r in m]))
    # (title, curves, y scale, marker); the PSNR panel only when there is something to show
    panels = [("training losses", losses, "log", None)]
    if held_out:
        panels.append(("held-out PSNR (dB)", held_out, "linear", "o"))
    fig = Figure(figsize=(6 * len(panels), 4))
    for ax, (title, curves, yscale, marker) in zip(fig.subplots(1, len(panels), squeeze=False)[0], panels):
        for label, steps, values in curves:
            ax.plot(steps, values, label=label, marker=marker)
        ax.set_xlabel("iteration")
        ax.set_title(title)
        ax.set_yscale(yscale)
        if curves:
            ax.legend(fontsize=7)
    fig.tight_layout()
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format="png", dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="synth-quick", help="training preset or JSON file (default synth-quick)")
    parser.add_argument("--steps", type=int, default=1100)
    parser.add_argument("--enhancer-steps", type=int, default=150)
    parser.add_argument("--data", type=Path, default=None, help="an existing SynthHeads root (default: generate one)")
    parser.add_argument("--identities", type=int, default=30, help="people in the generated data (default 30)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/learning"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    bilayer = [sys.executable, "-m", "bilayer"]
    data = args.data or args.out / "synthheads"
    t0 = time.perf_counter()
    if args.data is None and not (data / "synth.json").exists():
        run(bilayer + ["synth", "--out", str(data), "--identities", str(args.identities), "--videos-per-identity", "2",
                       "--frames", "40", "--size", "128", "--workers", "2", "--seed", "0"])
    base_run, enh_run = args.out / "run-base", args.out / "run-enhancer"
    common = ["--config", args.config, "--data", str(data), "--perceptual-init", "random", "--no-progress", "--resume"]
    run(bilayer + ["train", "base", "--run", str(base_run), "--steps", str(args.steps)] + common)
    run(bilayer + ["train", "enhancer", "--run", str(enh_run), "--init", str(base_run / "model"),
                   "--steps", str(args.enhancer_steps)] + common)
    train_seconds = time.perf_counter() - t0

    base_model = BilayerModel.from_pretrained(base_run / "model").eval()
    size = base_model.config.image_size
    mean = mean_train_image(data, size)
    base = evaluate(base_model, data, mean)
    enhanced = evaluate(BilayerModel.from_pretrained(enh_run / "model").eval(), data, mean)
    results = {
        "config": args.config, "image_size": size, "base_steps": args.steps, "enhancer_steps": args.enhancer_steps,
        "wall_seconds_generate_and_train": round(train_seconds, 1), "threads": torch.get_num_threads(),
        "held_out": {
            "model": base["model"], "copy_source": base["copy_source"], "mean_train_image": base["mean_train_image"],
            "lf_only": base["lf_only"], "model_with_enhancer": enhanced.get("enhanced"),
        },
    }
    plot({"base": base_run, "enhancer": enh_run}, args.out / "learning_curve.png")
    written = write_json_atomic(args.out / "learning.json", results)
    for name, m in results["held_out"].items():
        if m:
            print(f"{name:<22} PSNR {m['psnr']:6.2f} dB   SSIM {m['ssim']:.4f}   ({m['pairs']} pairs)")
    print(f"wrote {written} and {args.out / 'learning_curve.png'}")


if __name__ == "__main__":
    main()
