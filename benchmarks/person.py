"""A real person from their own video: a person-specific model, scored on the part of the video it never saw.

    python benchmarks/person.py VIDEO [--data DIR] [--config person-quick] [--steps N] [--enhancer-steps M]
                                [--test-tail 0.2] [--fps 12] [--every 4] [--ablation NAME=JSON ...]
                                [--init MODEL] [--evaluate-only] [--no-identity]
                                [--out benchmarks/results/person-NAME, or person-NAME-init with --init]

1. Data: ``bilayer preprocess VIDEO --size 128 --fps FPS --test-tail F``: the last F of the video's duration (after
   a one-second gap) is held out as the test split; the rest is the training split. Skipped when --data exists.
2. Training: ``bilayer train base --config CONFIG`` (from a new initialisation, or with ``--init MODEL`` from a
   trained model's weights, e.g. the one-shot model ``assets/synth-quick``) then ``bilayer train enhancer --init
   RUN/model``; each run resumes where it stopped, so a run cut short is continued by the same command.
   ``--ablation NAME=JSON`` also trains a base model with the config changed by JSON (e.g. ``gan='{"gan_start":
   3000, "losses": {"adversarial": 0.5, "feature_matching": 10}}'``: person-quick with the adversarial terms),
   scored like the base model.
3. Scoring on every --every-th held-out frame, with the first training frame as the source (the avatar is made
   once from it): the full model (base + enhancer), the base model, its LF layer alone, and three baselines —
   copying the source, the mean training image, and the training frame whose keypoints are nearest to the
   target's (a lookup that needs the whole training video). PSNR, SSIM and LPIPS (VGG16), both images on black by
   the target's ground-truth mask. Identity (dlib's 128-d embedding): the cosine similarity of each result to its
   held-out frame, against the similarity of real frames of the same video to each other (each held-out frame
   with a random training frame); the source and the nearest training frame are scored the same way. Every
   frame's similarity is kept, with the frame's mouth opening (inner-lip gap over the eye-corner distance), and
   the means are also given apart for the frames whose mouth opens wider than 95 % of the training frames'
   (expressions the training video rarely or never shows) and the rest.
4. Writes person.json (every number and which targets are met), person_curve.png, person_identity.png (identity
   per held-out frame above its mouth opening; no picture of the person) and person_grid.jpg (source, target,
   nearest training frame, LF, HF, base, full; each on black by the target's mask, as scored). The grid shows the
   person in the video: keep it local unless the video is yours to publish.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from learning import (Scorer, previous_results, load, parse_ablations, picture_grid, plot, run, schedules,  # noqa: E402
                      to_uint8, train_stages)

from bilayer.data.dataset import read_image, read_keypoints, read_mask  # noqa: E402
from bilayer.keypoints import normalize_keypoints  # noqa: E402
from bilayer.data.stickman import draw_stickmen  # noqa: E402
from bilayer.eval.dlib_identity import cosine  # noqa: E402
from bilayer.io import atomic_path, write_json_atomic  # noqa: E402
from bilayer.nn.image import apply_mask  # noqa: E402

CHUNK = 16  # target frames rendered at once


def sequence_frames(data: Path, split: str) -> list[tuple[Path, Path, Path]]:
    """(image, keypoints, mask) paths of every frame of the split's first sequence, in time order."""
    seqs = sorted(p for p in (data / "imgs" / split).glob("*/*/*") if p.is_dir())
    if not seqs:
        raise SystemExit(f"error: {data / 'imgs' / split} holds no PERSON/VIDEO/SEQ folder; expected a dataset "
                         "written by bilayer preprocess --test-tail (a longer video or a larger --test-tail gives "
                         "the held-out part enough frames).")
    if len(seqs) > 1:
        print(f"note: {len(seqs)} sequences under {data / 'imgs' / split}; scoring the first, {seqs[0].name}")
    rel = seqs[0].relative_to(data / "imgs" / split)
    out = []
    for image in sorted(seqs[0].glob("*.jpg")):
        kp = data / "keypoints" / split / rel / (image.stem + ".npy")
        mask = data / "segs" / split / rel / (image.stem + ".png")
        if kp.exists() and mask.exists():
            out.append((image, kp, mask))
    return out


def load_frames(paths: list[tuple[Path, Path, Path]], size: int):
    """Images (N, 3, S, S) in [-1, 1], pixel keypoints at S (N, 68, 2), masks (N, 1, S, S)."""
    images, kps, masks = [], [], []
    for image_path, kp_path, mask_path in paths:
        image, width = read_image(image_path, size)
        images.append(image)
        kps.append(read_keypoints(kp_path) * (size / width))
        masks.append(read_mask(mask_path, size))
    return torch.stack(images), np.stack(kps).astype(np.float32), torch.stack(masks)


def mouth_opening(kps: np.ndarray) -> np.ndarray:
    """(N, 68, 2) keypoints → (N,) the gap between the inner lips (points 62 and 66) over the distance between the
    outer eye corners (36 and 45): 0 for a closed mouth, about 0.2 for a wide laugh; independent of scale."""
    eyes = np.linalg.norm(kps[:, 36] - kps[:, 45], axis=1)
    return np.linalg.norm(kps[:, 62] - kps[:, 66], axis=1) / np.maximum(eyes, 1e-6)


def by_expression(per_frame: dict[str, list[float]], mouth: np.ndarray, train_mouth: np.ndarray,
                  percentile: float = 95) -> dict:
    """Mean identity per candidate on the held-out frames whose mouth opens at most as wide as ``percentile`` % of
    the training frames, and on those that open it wider (expressions the training video rarely or never shows)."""
    limit = float(np.percentile(train_mouth, percentile))
    out = {"mouth_opening_limit": round(limit, 4), "percentile": percentile}
    for part, pick in (("within", mouth <= limit), ("beyond", mouth > limit)):
        out[part] = {"frames": int(pick.sum())}
        for name, values in per_frame.items():
            chosen = np.asarray(values, np.float64)[pick]
            chosen = chosen[np.isfinite(chosen)]  # frames where dlib found no face count in neither mean
            out[part][name] = float(chosen.mean()) if chosen.size else None
    return out


def nearest_by_keypoints(train_kp: np.ndarray, target_kp: np.ndarray) -> np.ndarray:
    """For each target, the index of the training frame with the nearest keypoints (mean squared pixel distance)."""
    a = train_kp.reshape(len(train_kp), -1)
    b = target_kp.reshape(len(target_kp), -1)
    d = (b ** 2).sum(1)[:, None] - 2 * b @ a.T + (a ** 2).sum(1)[None]
    return d.argmin(1)


@torch.no_grad()
def score(models: dict, data: Path, every: int, identity: bool, grid_rows: int = 4) -> tuple[dict, list, dict]:
    size = next(iter(models.values())).config.image_size
    train = load_frames(sequence_frames(data, "train"), size)
    test_paths = sequence_frames(data, "test")[::every]
    test = load_frames(test_paths, size)
    src_img, src_kp, src_mask = train[0][0], train[1][0], train[2][0]
    src_norm = normalize_keypoints(torch.from_numpy(src_kp), size)[None, None]
    src_stick = draw_stickmen(src_norm, size)
    target, target_kp, target_mask = test
    nearest = nearest_by_keypoints(train[1], target_kp)
    mean_image = train[0].mean(0)

    scorer = Scorer()
    renders: dict[str, torch.Tensor] = {}
    for i in range(0, len(target), CHUNK):
        t, m = target[i:i + CHUNK], target_mask[i:i + CHUNK]
        scorer.add("copy_source", src_img[None].expand_as(t), t, m)
        scorer.add("mean_train_image", mean_image[None].expand_as(t), t, m)
        scorer.add("nearest_train_frame", train[0][nearest[i:i + CHUNK]], t, m)
    for name, model in models.items():
        state = model.personalize(src_img[None, None], src_norm, src_mask[None, None], src_stick)
        if name == "full":
            state = model.enhance(state)
        outs, lfs, hfs = [], [], []
        for i in range(0, len(target), CHUNK):
            kp = normalize_keypoints(torch.from_numpy(target_kp[i:i + CHUNK]), size)[None]
            render = model.render(state, kp)
            outs.append(render.image[0])
            lfs.append(render.lf[0])
            hfs.append(render.hf[0])
        out = torch.cat(outs)
        renders[name] = out
        for i in range(0, len(target), CHUNK):
            sl = slice(i, i + CHUNK)
            scorer.add(name, out[sl], target[sl], target_mask[sl])
            if name == "base":
                scorer.add("base_lf_only", torch.cat(lfs)[sl], target[sl], target_mask[sl])
        if name == "base":
            renders["lf"], renders["hf"] = torch.cat(lfs), torch.cat(hfs)
    scores = scorer.summary()

    ident = {}
    if identity:
        try:
            from bilayer.eval.dlib_identity import DlibFaceEmbedder

            embedder = DlibFaceEmbedder()
        except Exception as exc:  # dlib missing: the image metrics still stand
            print(f"identity similarity skipped: {exc}")
            embedder = None
        if embedder is not None:
            def embed(images: torch.Tensor, masks: torch.Tensor, kps: np.ndarray):
                return embedder.embed([to_uint8(apply_mask(x[None], k[None])[0]) for x, k in zip(images, masks)],
                                      list(kps))

            e_true = embed(target, target_mask, target_kp)
            g = np.random.default_rng(0)
            others = g.integers(0, len(train[0]), len(target))
            e_other = embed(train[0][others], train[2][others], train[1][others])
            real = [cosine(a, b) for a, b in zip(e_true, e_other)]
            ident["real_frames_to_each_other"] = float(np.nanmean(real))
            per_frame = {"real_frames_to_each_other": real}
            candidates = {"copy_source": (src_img[None].expand_as(target), src_mask[None].expand_as(target_mask),
                                          np.broadcast_to(src_kp, target_kp.shape)),
                          "nearest_train_frame": (train[0][nearest], train[2][nearest], train[1][nearest])}
            candidates |= {n: (renders[n], target_mask, target_kp) for n in renders if n not in ("lf", "hf")}
            for name, (images, masks, kps) in candidates.items():  # real frames by their own masks and keypoints
                e = embed(images, masks, kps)
                per_frame[name] = [cosine(a, b) for a, b in zip(e, e_true)]
                ident[name] = float(np.nanmean(per_frame[name]))
            ident["frames"] = int(np.isfinite(real).sum())
            mouth, train_mouth = mouth_opening(target_kp), mouth_opening(train[1])
            ident["by_expression"] = by_expression(per_frame, mouth, train_mouth)
            ident["per_frame"] = {name: [None if not np.isfinite(v) else round(float(v), 4) for v in values]
                                  for name, values in per_frame.items()}
            ident["per_frame"]["mouth_opening"] = [round(float(v), 4) for v in mouth]
            ident["per_frame"]["training_mouth_opening"] = {"p95": ident["by_expression"]["mouth_opening_limit"],
                                                            "max": round(float(train_mouth.max()), 4)}

    picks = np.linspace(0, len(target) - 1, grid_rows).round().astype(int)
    grid = []
    for k in picks:
        row = {"source": apply_mask(src_img[None], src_mask[None])[0],
               "target": apply_mask(target[k:k + 1], target_mask[k:k + 1])[0],
               "nearest": apply_mask(train[0][nearest[k]][None], train[2][nearest[k]][None])[0]}
        for name in ("lf", "hf", "base", "full"):  # on black by the target's mask, as scored
            if name in renders:
                row[name] = apply_mask(renders[name][k:k + 1], target_mask[k:k + 1])[0]
        grid.append(row)
    return scores, grid, ident


def identity_plot(ident: dict, out: Path, names: tuple[str, ...] = ("real_frames_to_each_other", "full",
                                                                      "nearest_train_frame")) -> None:
    """Identity per scored held-out frame, in time order, above the frame's mouth opening with the training
    video's range: where the results fall below real frames, and whether the expression is one training showed."""
    from matplotlib.figure import Figure  # no pyplot: the Agg canvas, no global backend switch

    frames = ident["per_frame"]
    fig = Figure(figsize=(10, 5.5))
    top, bottom = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [2, 1]})
    labels = {"real_frames_to_each_other": "a random training frame (real frames to each other)",
              "full": "full model", "base": "base model", "nearest_train_frame": "nearest training frame by keypoints",
              "copy_source": "the source frame"}
    for name in names:
        if name in frames:
            values = np.array([np.nan if v is None else v for v in frames[name]], np.float64)
            colour = {"real_frames_to_each_other": "0.35", "full": "C3"}.get(name)
            top.plot(values, label=f"{labels.get(name, name)}: mean {np.nanmean(values):.3f}", linewidth=1.2,
                     color=colour, alpha=1.0 if colour else 0.5)
    top.set_ylabel("dlib cosine to the held-out frame")
    top.set_title("identity over the held-out part of the video")
    top.legend(fontsize=8, loc="lower right")
    mouth = np.asarray(frames["mouth_opening"])
    train = frames["training_mouth_opening"]
    bottom.plot(mouth, color="C0", linewidth=1.2, label="held-out frame")
    bottom.axhline(train["max"], color="k", linestyle="--", linewidth=1, label=f"training maximum {train['max']:.3f}")
    bottom.axhline(train["p95"], color="0.5", linestyle=":", linewidth=1,
                   label=f"training 95th percentile {train['p95']:.3f}")
    bottom.set_ylabel("mouth opening")
    bottom.set_xlabel("scored held-out frame, in time order")
    bottom.legend(fontsize=8, loc="upper right")
    fig.tight_layout()
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format="png", dpi=110)


def targets_met(scores: dict, ident: dict) -> dict:
    out = {}
    if "full" in scores:
        gain = scores["full"]["psnr"] - scores["copy_source"]["psnr"]
        lp = 1 - scores["full"]["lpips"] / scores["copy_source"]["lpips"]
        out["full beats copying the source by >= 3 dB and 40 % LPIPS"] = {
            "psnr_gain_db": round(gain, 3), "lpips_reduction": round(lp, 4), "met": bool(gain >= 3 and lp >= 0.4)}
    if "full" in ident:
        out["identity to the held-out frame >= real frames to each other"] = {
            "result": round(ident["full"], 4), "real": round(ident["real_frames_to_each_other"], 4),
            "met": bool(ident["full"] >= ident["real_frames_to_each_other"])}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("video", type=Path, help="one person's talking-head video")
    parser.add_argument("--data", type=Path, default=None, help="dataset root (default OUT/data; made if missing)")
    parser.add_argument("--config", default="person-quick", help="training preset or JSON file (default person-quick)")
    parser.add_argument("--steps", type=int, default=None, help="base iterations (default: the config's)")
    parser.add_argument("--enhancer-steps", type=int, default=1000)
    parser.add_argument("--init", type=Path, default=None, metavar="MODEL",
                        help="start the base model (and the ablations) from this model folder's weights, e.g. the "
                             "one-shot model assets/synth-quick (default: a new initialisation)")
    parser.add_argument("--test-tail", type=float, default=0.2, help="held-out end of the video (default 0.2)")
    parser.add_argument("--fps", type=float, default=12, help="frames kept per second (default 12)")
    parser.add_argument("--every", type=int, default=4, help="score every N-th held-out frame (default 4)")
    parser.add_argument("--ablation", action="append", default=[], metavar="NAME=JSON",
                        help="also train a base model with these config changes, e.g. gan='{\"gan_start\": 3000, "
                             "\"losses\": {\"adversarial\": 0.5, \"feature_matching\": 10}}'")
    parser.add_argument("--evaluate-only", action="store_true", help="score the runs under --out as they are")
    parser.add_argument("--no-identity", action="store_true", help="skip the dlib identity similarity")
    parser.add_argument("--out", type=Path, default=None,
                        help="default benchmarks/results/person-VIDEONAME (person-VIDEONAME-init with --init)")
    args = parser.parse_args()
    if not args.video.is_file() and not args.evaluate_only:
        raise SystemExit(f"error: {args.video} is not a file; expected one person's talking-head video.")
    if args.init is not None and not (args.init / "config.json").is_file():
        raise SystemExit(f"error: --init {args.init} holds no config.json; expected a model folder (save_pretrained "
                         "format), e.g. assets/synth-quick.")
    # a warm start gets a folder of its own, so that it never resumes runs trained from scratch (or the reverse)
    out = args.out or Path("benchmarks/results") / f"person-{args.video.stem}{'-init' if args.init else ''}"
    ablations = parse_ablations(parser, args.ablation, out, args.config, args.steps)
    out.mkdir(parents=True, exist_ok=True)
    data = args.data or out / "data"
    base_run, enh_run = out / "run-base", out / "run-enhancer"
    bilayer = [sys.executable, "-m", "bilayer"]
    seconds = {}
    if not args.evaluate_only:
        t = time.perf_counter()
        if not (data / "imgs" / "test").exists():  # timed only when it runs: an existing --data is not re-made
            run(bilayer + ["preprocess", str(args.video), "--out", str(data), "--size", "128", "--fps", str(args.fps),
                           "--test-tail", str(args.test_tail), "--max-faces", "1", "--workers", "2", "--no-progress"])
            seconds["preprocess"] = time.perf_counter() - t
        for split in ("train", "test"):  # fail before training when preprocessing left a split empty
            sequence_frames(data, split)
        seconds |= train_stages(args.config, data, base_run, enh_run, ablations, out, args.steps, args.enhancer_steps,
                                init=args.init)

    torch.set_grad_enabled(False)
    models = ({"base": load(base_run)} | ({"full": load(enh_run)} if (enh_run / "model").exists() else {})
              | {name: load(r) for name, (r, _) in ablations.items() if (r / "model").exists()})
    print("scoring the held-out frames …", flush=True)
    scores, grid, ident = score(models, data, args.every, identity=not args.no_identity)
    runs = {"base": base_run, "enhancer": enh_run} | {name: r for name, (r, _) in ablations.items()}
    logs = {name: [json.loads(x) for x in (r / "log.jsonl").read_text().splitlines() if x.strip()]
            for name, r in runs.items() if (r / "log.jsonl").exists()}
    results = {
        "video": str(args.video), "data": str(data), "config": args.config,
        "init": json.loads((base_run / "run.json").read_text()).get("init") if (base_run / "run.json").exists()
                else None,  # as the base run records it
        "image_size": models["base"].config.image_size, "every": args.every,
        "steps": {k: v[-1]["step"] for k, v in logs.items() if v},
        "schedules": schedules(runs),
        # stages not run by this invocation keep the times an earlier one measured
        "wall_seconds": previous_results(out / "person.json").get("wall_seconds", {})
                        | {k: round(v, 1) for k, v in seconds.items()},
        "threads": torch.get_num_threads(),
        "held_out": scores, "identity": ident, "targets": targets_met(scores, ident),
    }
    plot(runs, out / "person_curve.png")
    if "per_frame" in ident:
        identity_plot(ident, out / "person_identity.png")
    picture_grid(grid, out / "person_grid.jpg",
                 columns=("source", "target", "nearest", "lf", "hf", "base", "full"))
    written = write_json_atomic(out / "person.json", results)
    for name, m in scores.items():
        print(f"  {name:<20} PSNR {m['psnr']:6.2f} dB  SSIM {m['ssim']:.4f}  LPIPS {m['lpips']:.4f}  ({m['frames']} frames)")
    if ident:
        print("  identity (dlib cosine to the held-out frame): " +
              ", ".join(f"{k} {v:.3f}" for k, v in ident.items() if isinstance(v, float)))
        split = ident["by_expression"]
        for part in ("within", "beyond"):
            row = split[part]
            print(f"    mouth opening {'<=' if part == 'within' else '> '} {split['mouth_opening_limit']:.3f} "
                  f"(training p{split['percentile']:g}), {row['frames']} frames: " +
                  ", ".join(f"{k} {v:.3f}" for k, v in row.items() if isinstance(v, float)))
    for label, t in results["targets"].items():
        print(f"{'met ' if t['met'] else 'NOT '} {label}: {t}")
    pictures = [out / "person_curve.png", out / "person_grid.jpg"] + (
        [out / "person_identity.png"] if "per_frame" in ident else [])
    print(f"wrote {written}, " + ", ".join(str(p) for p in pictures))


if __name__ == "__main__":
    main()
