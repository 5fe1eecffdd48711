"""Proof that training learns: synth-quick on SynthHeads, evaluated on held-out identities.

    python benchmarks/learning.py [--steps 1100] [--enhancer-steps 150] [--config synth-quick] [--out benchmarks/results/learning]

1. Generates SynthHeads at 128 px (train and test identities disjoint), unless --data is given.
2. Trains the base model (``bilayer train base --config synth-quick``) for --steps iterations, then the texture
   enhancer (``bilayer train enhancer --init RUN/model``) for --enhancer-steps.
3. One-shot reenactment on the held-out identities (source = first frame, targets = every 5th later frame, other
   poses and expressions). PSNR and SSIM, both images on a black background by the target's ground-truth mask, of
   (a) the model, (b) copying the source image, (c) the mean training image, (d) the model without its texture
   layer (LF only), (e) the model with the texture enhancer.
Writes learning.json (all numbers) and learning_curve.png (losses and held-out PSNR against iterations).
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
from bilayer.io import write_json_atomic
from bilayer.nn.image import apply_mask


def run(cmd: list[str]) -> None:
    print("$", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)


@torch.no_grad()
def evaluate(model_dir: Path, data: Path, mean_image: torch.Tensor) -> dict:
    model = BilayerModel.from_pretrained(model_dir).eval()
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


def plot(run_dirs: dict[str, Path], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4))
    for stage, run_dir in run_dirs.items():
        logs = [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]
        steps = [r["step"] for r in logs]
        for key in ("G_L1", "G_VGG19", "G_FM", "D_ADV"):
            if key in logs[0]:
                axes[0].plot(steps, [r[key] for r in logs], label=f"{stage} {key}")
        metrics = run_dir / "metrics.jsonl"
        if metrics.exists():
            m = [json.loads(line) for line in metrics.read_text().splitlines()]
            axes[1].plot([r["step"] for r in m], [r["psnr"] for r in m], marker="o", label=f"{stage} held-out PSNR")
    axes[0].set_xlabel("iteration"), axes[0].set_yscale("log"), axes[0].legend(fontsize=7), axes[0].set_title("training losses")
    axes[1].set_xlabel("iteration"), axes[1].set_ylabel("dB"), axes[1].legend(fontsize=7), axes[1].set_title("held-out PSNR")
    fig.tight_layout()
    fig.savefig(out, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="synth-quick", help="training preset or JSON file (default synth-quick)")
    parser.add_argument("--steps", type=int, default=1100)
    parser.add_argument("--enhancer-steps", type=int, default=150)
    parser.add_argument("--data", type=Path, default=None, help="an existing SynthHeads root (default: generate one)")
    parser.add_argument("--identities", type=int, default=30)
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

    mean = mean_train_image(data, 128)
    base = evaluate(base_run / "model", data, mean)
    enhanced = evaluate(enh_run / "model", data, mean)
    results = {
        "config": args.config, "image_size": 128, "base_steps": args.steps, "enhancer_steps": args.enhancer_steps,
        "wall_seconds_generate_and_train": round(train_seconds, 1), "threads": torch.get_num_threads(),
        "held_out": {
            "model": base["model"], "copy_source": base["copy_source"], "mean_train_image": base["mean_train_image"],
            "lf_only": base["lf_only"], "model_with_enhancer": enhanced.get("enhanced"),
        },
    }
    plot({"base": base_run, "enhancer": enh_run}, args.out / "learning_curve.png")
    write_json_atomic(args.out / "learning.json", results)
    for name, m in results["held_out"].items():
        if m:
            print(f"{name:<22} PSNR {m['psnr']:6.2f} dB   SSIM {m['ssim']:.4f}   ({m['pairs']} pairs)")
    print(f"wrote {args.out / 'learning.json'} and {args.out / 'learning_curve.png'}")


if __name__ == "__main__":
    main()
