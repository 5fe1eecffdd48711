"""The learning proof: a model trained on SynthHeads, scored on people it never saw, against honest baselines.

    python benchmarks/learning.py [--config synth-quick] [--steps N] [--enhancer-steps M] [--data DIR]
                                  [--identities 1025] [--test-identities 25] [--frames 20] [--fps 5] [--cross-pairs 25]
                                  [--ablation NAME[=JSON] ...] [--evaluate-only] [--out benchmarks/results/learning]

1. Data: SynthHeads at 128 px (``bilayer synth``: --identities people, the last --test-identities of them held out,
   2 videos each of --frames frames at --fps, with --cross-pairs cross-person ground-truth pairs among the held-out
   people), unless --data names an existing root. At 5 fps the 20 frames of a sequence span 4 s of the
   performance, so a held-out target turns away from its source as far as frames of a real video seconds apart.
2. Training: the base model (``bilayer train base --config CONFIG``) for --steps iterations, then the texture
   enhancer (``bilayer train enhancer --init RUN/model``) for --enhancer-steps; each run resumes where it stopped.
   ``--ablation NAME=JSON`` also trains a base model with the config changed by JSON (e.g. ``no-gan='{"losses":
   {"adversarial": 0, "feature_matching": 0}}'``), scored like the base model; ``--ablation gan``, ``no-gan`` and
   ``lf-only`` name the paper's Table 1 ablations (``NAMED_ABLATIONS``: the adversarial terms with their warm-up
   added, removed, and a model without the texture layer); ``constant-lr`` and ``no-tail`` train synth-quick
   without its learning-rate tail, for all its iterations and up to where the tail begins.
3. Self-reenactment on every held-out video: the source is its first frame, the targets every 3rd later frame.
   Scored: the full model (base + enhancer), the base model, its LF layer alone, copying the source image and the
   mean training image, with PSNR, SSIM and LPIPS (VGG16), both images on black by the target's ground-truth mask.
4. Cross-person reenactment against the ground truth (``synth.cross_pairs``): person A's avatar is made from the
   first ground-truth frame (A in B's first pose) and driven by B's keypoints with relative motion (the path of
   ``bilayer animate``); every later frame is scored against A performing it. Identity: the dlib embedding of each
   result is compared with A's true frame and with B's frame, each on black by its own mask (is the result closer
   to A?); the copied source photo, a sharp picture of A, gives the measure's ceiling.
5. Writes learning.json (every number, and which targets are met), learning_curve.png (losses, held-out PSNR
   and LPIPS over training) and learning_grid.jpg (source, target, LF, HF, base, full model for a few held-out people).

Times depend on the machine; every comparison is within one run.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from bilayer import BilayerModel
from bilayer.data.dataset import VideoDataset, read_image, read_keypoints, read_mask
from bilayer.data.stickman import draw_stickmen
from bilayer.eval.dlib_identity import cosine
from bilayer.eval.metrics import psnr, ssim
from bilayer.io import atomic_path, write_json_atomic
from bilayer.keypoints import normalize_keypoints
from bilayer.nn.image import apply_mask
from bilayer.animate.motion import MotionTransfer
from bilayer.structures import collate
from bilayer.train.checkpoint import checkpoint_step, latest_checkpoint

LOSS_KEYS = ("G_L1", "G_VGG19", "G_FM", "G_ADV", "D_ADV")
TARGET_EVERY = 3  # self-reenactment: every 3rd frame after the source


def run(cmd: list[str]) -> None:
    print("$", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)


# The paper's Table 1 ablations, by name (``--ablation gan``), for a preset without adversarial terms: ``gan`` adds
# them with the measured warm-up (off until iteration 2000, full weight at 4000, the discriminator at 5e-5);
# ``no-gan`` removes them from a preset that has them; ``lf-only`` drops the texture layer. Beyond the paper, for
# synth-quick's cosine tail (its last 2,000 of 12,000 iterations): ``constant-lr`` keeps the rate constant to the
# end, ``no-tail`` stops at 10,000 iterations at the constant rate (where the tail begins).
NAMED_ABLATIONS = {
    "gan": {"losses": {"adversarial": 0.5, "feature_matching": 10.0}, "gan_start": 2000, "gan_ramp": 2000,
            "discriminator_lr": 5e-5},
    "no-gan": {"losses": {"adversarial": 0, "feature_matching": 0}},
    "lf-only": {"model": {"texture_layer": False, "enhancer": None}},
    "constant-lr": {"lr_decay": "none"},
    "no-tail": {"steps": 10000, "lr_decay": "none"},
}


def parse_ablations(parser: argparse.ArgumentParser, specs: list[str], out: Path, config: str,
                    steps: int | None) -> dict[str, tuple[Path, dict]]:
    """--ablation NAME=JSON (or a NAME of ``NAMED_ABLATIONS``) values → {NAME: (OUT/run-NAME, changes)}; a
    malformed one, or one whose changes make no valid training config from ``config``, is a parser error (before
    anything trains)."""
    ablations = {}
    for spec in specs:
        name, sep, changes = spec.partition("=")
        if not sep and name in NAMED_ABLATIONS:
            ablations[name] = (out / f"run-{name}", NAMED_ABLATIONS[name])
            continue
        try:
            value = json.loads(changes)
        except ValueError:
            value = None
        if not name or not isinstance(value, dict):
            parser.error(f"--ablation {spec!r} is not NAME=JSON with a JSON object of config changes, nor one of "
                         f"{', '.join(NAMED_ABLATIONS)}.")
        ablations[name] = (out / f"run-{name}", value)
    from bilayer.config import ConfigError

    for name, (_, changes) in ablations.items():
        try:
            ablation_config(config, changes, steps)
        except (ConfigError, TypeError, ValueError) as exc:
            parser.error(f"--ablation {name}: {exc}")
    return ablations


# The config fields an ablation may change and still repeat the base model's iterations up to its end.
CONTINUING_FIELDS = {"steps", "lr_decay", "lr_decay_start", "lr_decay_to"}


def start_from_base(base_run: Path, run_dir: Path, base_config, ablation_config) -> bool:
    """An ablation that only runs longer than the base model, with a learning rate that matches the base model's at
    every iteration the base run took, would repeat those iterations exactly: its new run folder starts as a copy
    of the base run at its last checkpoint (that checkpoint, the logs and the weights) and trains on from there.
    Returns whether it did; an existing run folder is never touched."""
    from bilayer.train.policy import lr_scale

    latest = latest_checkpoint(base_run)
    base, changed = base_config.to_dict(), ablation_config.to_dict()
    differs = {k for k, v in changed.items() if base[k] != v}
    if run_dir.exists() or latest is None or not differs or differs - CONTINUING_FIELDS:
        return False
    done = checkpoint_step(latest)
    if ablation_config.steps <= done or any(
            lr_scale(ablation_config, i, ablation_config.steps) != lr_scale(base_config, i, base_config.steps)
            for i in range(done)):
        return False
    partial = run_dir.with_name(run_dir.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    (partial / "checkpoints").mkdir(parents=True)
    shutil.copytree(latest, partial / "checkpoints" / latest.name)
    for name in ("log.jsonl", "metrics.jsonl", "run.json", "train_config.json"):
        if (base_run / name).exists():
            shutil.copy2(base_run / name, partial / name)
    if (base_run / "model").is_dir():
        shutil.copytree(base_run / "model", partial / "model")
    write_json_atomic(partial / "started_from.json", {"run": str(base_run), "step": done})
    partial.rename(run_dir)
    return True


def ablation_config(config: str, changes: dict, steps: int | None):
    """The training config of an ablation: the preset (or JSON file) ``config`` with ``changes`` merged in, one
    level deep, and ``steps`` (--steps) unless the changes set their own; a ConfigError names a bad value."""
    from bilayer.config import ConfigError
    from bilayer.train.config import TrainConfig, train_config

    changed = train_config(config).to_dict()
    for key, value in changes.items():
        section = isinstance(value, dict) and key in changed  # an unknown key is left to from_dict to name
        if section and not isinstance(changed[key], dict):
            raise ConfigError(f"{key} is not a section of the training config; give it a value, not an object.")
        changed[key] = {**changed[key], **value} if section else value
    if steps and "steps" not in changes:
        changed["steps"] = steps
    return TrainConfig.from_dict(changed)


def train_stages(config: str, data: Path, base_run: Path, enh_run: Path, ablations: dict[str, tuple[Path, dict]],
                 out: Path, steps: int | None, enhancer_steps: int, init: Path | None = None) -> dict[str, float]:
    """Base model, enhancer, then a base model per ablation (its config written to OUT/config-NAME.json), each
    resumed where it stopped; ``init`` (a model folder) starts the base model and the ablations from its weights.
    Returns the wall seconds of each stage that trained (see ``timed``)."""
    train = [sys.executable, "-m", "bilayer", "train"]
    init_args = ["--init", str(init)] if init else []
    common = ["--data", str(data), "--no-progress"]
    seconds: dict[str, float] = {}
    timed_stage(seconds, "base", base_run, train + ["base", "--run", str(base_run), "--config", config]
                + (["--steps", str(steps)] if steps else []) + init_args + common)
    timed_stage(seconds, "enhancer", enh_run, train + ["enhancer", "--run", str(enh_run), "--init",
                                                       str(base_run / "model"), "--config", config, "--steps",
                                                       str(enhancer_steps)] + common)
    base_config = ablation_config(config, {}, steps)
    for name, (run_dir, changes) in ablations.items():
        changed = ablation_config(config, changes, steps)
        config_file = out / f"config-{name}.json"
        config_file.write_text(changed.to_json() + "\n")
        if start_from_base(base_run, run_dir, base_config, changed):
            print(f"ablation {name}: its first iterations are the base model's, so it starts from the base run's "
                  "last checkpoint", flush=True)
        timed_stage(seconds, f"ablation {name}", run_dir,
                    train + ["base", "--run", str(run_dir), "--config", str(config_file)] + init_args + common)
    return seconds


def checkpointed_step(run_dir: Path) -> int:
    """The iteration of the run's latest complete checkpoint; 0 when it has none (or the folder does not exist)."""
    latest = latest_checkpoint(run_dir)
    return checkpoint_step(latest) if latest is not None else 0


def timed_stage(seconds: dict[str, float], key: str, run_dir: Path, cmd: list[str]) -> None:
    """Run one training stage and keep its wall seconds in ``seconds`` when it trained: under ``key`` from
    iteration 0, under "KEY (iterations A-B)" when it resumed at A; a run already complete adds nothing, so the
    time an earlier invocation measured stands."""
    before, t = checkpointed_step(run_dir), time.perf_counter()
    run(cmd)
    elapsed, after = time.perf_counter() - t, checkpointed_step(run_dir)
    if after > before:
        seconds[key if before == 0 else f"{key} (iterations {before}-{after})"] = elapsed


class Scorer:
    """PSNR, SSIM and LPIPS (VGG16) per candidate, each image on black by the target's ground-truth mask."""

    def __init__(self) -> None:
        from bilayer.eval.lpips import load_lpips
        from bilayer.eval.weights import default_weights_dir

        self.lpips = load_lpips(default_weights_dir(), "vgg")
        self.scores: dict[str, dict[str, list[float]]] = {}

    @torch.no_grad()
    def add(self, name: str, prediction: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> None:
        pred, truth = apply_mask(prediction.clamp(-1, 1), mask), apply_mask(target, mask)
        s = self.scores.setdefault(name, {"psnr": [], "ssim": [], "lpips": []})
        s["psnr"] += psnr(pred, truth).tolist()
        s["ssim"] += ssim(pred, truth).tolist()
        s["lpips"] += self.lpips(pred, truth).flatten().tolist()

    def summary(self) -> dict:
        return {name: {k: float(np.mean(v)) for k, v in s.items()} | {"frames": len(s["psnr"])}
                for name, s in self.scores.items()}


def load(run_dir: Path) -> BilayerModel:
    return BilayerModel.from_pretrained(run_dir / "model").eval()


@torch.no_grad()
def self_reenactment(models: dict[str, BilayerModel], enhanced: BilayerModel | None, data: Path,
                     mean_image: torch.Tensor, grid_rows: int = 4) -> tuple[dict, list]:
    """Scores of every model and baseline on the held-out videos, and the rows of the picture grid."""
    size = next(iter(models.values())).config.image_size
    # the protocol takes one target per "second" of fps frames: fps = TARGET_EVERY gives every 3rd frame
    dataset = VideoDataset(data, "test", size, 1, 1, "test", fps=float(TARGET_EVERY))
    scorer, grid, seen = Scorer(), [], {}
    for i in range(len(dataset)):
        b = collate([dataset[i]])
        target, mask = b.target_images[:, 0], b.target_masks[:, 0]
        scorer.add("copy_source", b.source_images[:, 0], target, mask)
        scorer.add("mean_train_image", mean_image[None], target, mask)
        row = {}
        for name, model in list(models.items()) + ([("full", enhanced)] if enhanced is not None else []):
            state = model.personalize(b.source_images, b.source_keypoints, b.source_masks, b.source_stickmen)
            if name == "full":
                state = model.enhance(state)
            render = model.render(state, b.target_keypoints)
            scorer.add(name, render.image[:, 0], target, mask)
            if name == "base":
                scorer.add("base_lf_only", render.lf[:, 0], target, mask)
                row.update(lf=render.lf[0, 0], hf=render.hf[0, 0], base=render.image[0, 0])
            if name == "full":
                row["full"] = render.image[0, 0]
        video = b.video[0] if isinstance(b.video, (list, tuple)) else b.video
        seen[video] = seen.get(video, 0) + 1
        person = video.split("/")[0]
        if len(grid) < grid_rows and seen[video] == 2 and person not in {r["person"] for r in grid}:
            grid.append({"person": person, "source": b.source_images[0, 0], "target": apply_mask(target, mask)[0],
                         **row})
    return scorer.summary(), grid


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """(3, H, W) in [-1, 1] → (H, W, 3) uint8."""
    return ((x.clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).numpy()


def _frame(path_image: Path, path_kp: Path, path_mask: Path, size: int):
    image, width = read_image(path_image, size)
    kp_px = read_keypoints(path_kp)
    return image, kp_px * (size / width), read_mask(path_mask, size)


@torch.no_grad()
def cross_reenactment(models: dict[str, BilayerModel], data: Path, identity: bool = True) -> dict:
    """Person A's avatar (made from A in B's first pose) driven by B with relative motion, scored against A
    performing B's motion; with ``identity``, the dlib similarity of each result (and of the copied source photo) to
    A's and to B's frame."""
    from bilayer.synth import cross_pairs

    size = next(iter(models.values())).config.image_size
    embedder = None
    if identity:
        try:
            from bilayer.eval.dlib_identity import DlibFaceEmbedder

            embedder = DlibFaceEmbedder()
        except Exception as exc:  # dlib missing: the image metrics still run
            print(f"identity similarity skipped: {exc}")
    scorer = Scorer()
    closer_to_a: dict[str, list[bool]] = {}
    similarity: dict[str, dict[str, list[float]]] = {}
    for pair in cross_pairs(data):
        src_img, src_kp, src_mask = _frame(pair["truth_images"][0], pair["truth_keypoints"][0],
                                           pair["truth_masks"][0], size)
        ref_kp = read_keypoints(pair["driver_keypoints"][0]).astype(np.float32)
        driver_width = read_image(pair["driver_images"][0], size)[1]
        transfer = MotionTransfer("relative", src_kp, ref_kp * (size / driver_width))
        src_norm = normalize_keypoints(torch.from_numpy(src_kp), size)[None, None]
        src_stick = draw_stickmen(src_norm, size)
        frames = range(1, len(pair["truth_images"]))
        targets = [_frame(pair["truth_images"][i], pair["truth_keypoints"][i], pair["truth_masks"][i], size)
                   for i in frames]
        # B's frames on black by B's own masks, like A's true frames and the results
        drivers = [apply_mask(read_image(pair["driver_images"][i], size)[0][None],
                              read_mask(pair["driver_masks"][i], size)[None])[0] for i in frames]
        driver_kp = [transfer(read_keypoints(pair["driver_keypoints"][i]) * (size / driver_width)) for i in frames]
        kp = normalize_keypoints(torch.from_numpy(np.stack(driver_kp)), size)[None]  # (1, t, 136)
        truth = torch.stack([t[0] for t in targets])
        masks = torch.stack([t[2] for t in targets])
        for i in range(len(truth)):
            scorer.add("copy_source", src_img[None], truth[i:i + 1], masks[i:i + 1])
        if embedder is not None:  # the true frames of A and B's frames, embedded once per pair
            kps = [t[1] for t in targets]
            e_a = embedder.embed([to_uint8(apply_mask(t[None], m[None])[0]) for t, m in zip(truth, masks)], kps)
            e_b = embedder.embed([to_uint8(d) for d in drivers],
                                 [read_keypoints(pair["driver_keypoints"][i]) * (size / driver_width) for i in frames])

        def compare(name: str, e_out: list) -> None:
            sims = similarity.setdefault(name, {"to_a": [], "to_b": []})
            for o, a, bb in zip(e_out, e_a, e_b):
                sa, sb = cosine(o, a), cosine(o, bb)
                if np.isfinite(sa) and np.isfinite(sb):
                    sims["to_a"].append(sa)
                    sims["to_b"].append(sb)
                    closer_to_a.setdefault(name, []).append(sa > sb)

        if embedder is not None:  # the copied photo: the metric's ceiling for a sharp image of A
            (e_src,) = embedder.embed([to_uint8(apply_mask(src_img[None], src_mask[None])[0])], [src_kp])
            compare("copy_source", [e_src] * len(truth))
        for name, model in models.items():
            state = model.personalize(src_img[None, None], src_norm, src_mask[None, None], src_stick)
            if name == "full":
                state = model.enhance(state)
            out = model.render(state, kp).image[0]
            scorer.add(name, out, truth, masks)
            if embedder is not None:
                compare(name, embedder.embed([to_uint8(apply_mask(o[None], m[None])[0]) for o, m in zip(out, masks)],
                                             kps))
    out = scorer.summary()
    for name, sims in similarity.items():
        out[name]["identity"] = {"to_a": float(np.mean(sims["to_a"])), "to_b": float(np.mean(sims["to_b"])),
                                 "closer_to_a": float(np.mean(closer_to_a[name])), "frames": len(sims["to_a"])}
    return out


def mean_train_image(data: Path, size: int, limit: int = 400) -> torch.Tensor:
    dataset = VideoDataset(data, "train", size, 1, 1, "random", seed=0)
    total, count = torch.zeros(3, size, size), 0
    for i in range(0, len(dataset), max(1, len(dataset) // limit)):
        total += dataset[i].target_images[0]
        count += 1
    return total / count


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


SCHEDULE_FIELDS = ("steps", "lr", "discriminator_lr", "lr_decay", "lr_decay_start", "lr_decay_to")


def schedules(run_dirs: dict[str, Path]) -> dict[str, dict]:
    """Each trained run's learning-rate schedule as its train_config.json recorded it, with the number of iterations
    the run was asked for (run.json: --steps or the config's) — a preset's name alone does not say which recipe a
    report measured once the preset changes; runs without a train_config.json are left out."""
    out = {}
    for name, run_dir in run_dirs.items():
        path = run_dir / "train_config.json"
        if path.is_file():
            config = json.loads(path.read_text())
            run = json.loads((run_dir / "run.json").read_text()) if (run_dir / "run.json").is_file() else {}
            out[name] = {k: run.get(k, config[k]) if k == "steps" else config[k]
                         for k in SCHEDULE_FIELDS if k in config}
    return out


def previous_results(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def ablation_summary(ablations: dict[str, tuple[Path, dict]], self_scores: dict) -> dict:
    """Each ablation's config changes, its iterations, and its self-reenactment difference from the base model
    (positive PSNR and negative LPIPS: the ablation is better)."""
    out = {}
    for name, (run_dir, changes) in ablations.items():
        # the weights in run_dir/model are those of the latest checkpoint (a run stopped early logged a few more)
        logs = _jsonl(run_dir / "log.jsonl")
        steps = checkpointed_step(run_dir) or (logs[-1]["step"] if logs else 0)
        entry = {"changes": changes, "steps": steps}
        started = previous_results(run_dir / "started_from.json")
        if started:  # trained on from the base run's checkpoint at this iteration (``start_from_base``)
            entry["started_from_base_at"] = started["step"]
        if name in self_scores and "base" in self_scores:
            a, b = self_scores[name], self_scores["base"]
            entry["vs_base"] = {"psnr_db": round(a["psnr"] - b["psnr"], 3), "ssim": round(a["ssim"] - b["ssim"], 4),
                                "lpips": round(a["lpips"] - b["lpips"], 4)}
        out[name] = entry
    return out


def plot(run_dirs: dict[str, Path], out: Path) -> None:
    """Training losses per run and, where a run evaluated held-out data while training, held-out PSNR and LPIPS."""
    from matplotlib.figure import Figure  # no pyplot: the Agg canvas, no global backend switch

    # one colour per run, one line style per loss; the enhancer's iterations follow the base model's on the axis
    colours = {stage: f"C{i % 10}" for i, stage in enumerate(run_dirs)}
    styles = dict(zip(LOSS_KEYS, ("-", "--", ":", "-.", (0, (1, 1)))))
    base_logs = _jsonl(run_dirs["base"] / "log.jsonl") if "base" in run_dirs else []
    base_end = base_logs[-1]["step"] if base_logs else 0
    losses, held_out, held_out_lpips = [], [], []
    for stage, run_dir in run_dirs.items():
        offset = base_end if stage == "enhancer" else 0
        logs = _jsonl(run_dir / "log.jsonl")
        for key in LOSS_KEYS:
            rows = [r for r in logs if key in r]
            if any(r[key] for r in rows):
                losses.append((f"{stage} {key}", stage, styles[key], [offset + r["step"] for r in rows],
                               [abs(r[key]) for r in rows]))
        m = _jsonl(run_dir / "metrics.jsonl")
        if m:
            held_out.append((stage, stage, "-", [offset + r["step"] for r in m], [r["psnr"] for r in m]))
            rows = [r for r in m if "lpips" in r]  # runs before the evaluation scored LPIPS have none
            if rows:
                held_out_lpips.append((stage, stage, "-", [offset + r["step"] for r in rows],
                                       [r["lpips"] for r in rows]))
    xlabel = "iteration (the enhancer's after the base model's)" if base_end and "enhancer" in run_dirs else "iteration"
    panels = [("training losses", losses, "log", None)]
    panels += [("held-out PSNR (dB)", held_out, "linear", "o")] if held_out else []
    panels += [("held-out LPIPS (VGG16)", held_out_lpips, "linear", "o")] if held_out_lpips else []
    fig = Figure(figsize=(6 * len(panels), 4))
    for ax, (title, curves, yscale, marker) in zip(fig.subplots(1, len(panels), squeeze=False)[0], panels):
        for label, stage, style, steps, values in curves:
            ax.plot(steps, values, label=label, marker=marker, color=colours[stage], linestyle=style, markersize=3)
        ax.set_xlabel(xlabel)
        ax.set_title(title)
        ax.set_yscale(yscale)
        if curves:
            ax.legend(fontsize=7)
    fig.tight_layout()
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format="png", dpi=110)


def picture_grid(rows: list[dict], out: Path,
                 columns: tuple[str, ...] = ("source", "target", "lf", "hf", "base", "full")) -> None:
    """Columns (default: source, target, LF, HF, base model, full model = base + enhancer), those every row has;
    one held-out person or frame a row."""
    import cv2

    columns = [c for c in columns if all(c in r for r in rows)]
    if not rows:
        return
    tile = rows[0]["source"].shape[-1]
    sheet = np.zeros((len(rows) * tile + 16, len(columns) * tile, 3), np.uint8)
    for c, name in enumerate(columns):
        cv2.putText(sheet, name, (c * tile + 4, 12), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (255, 255, 255), 1, cv2.LINE_AA)
        for r, row in enumerate(rows):
            x = row[name].float().clamp(-1, 1)
            if name == "hf":  # centred on grey so both signs show
                x = (x * 2).clamp(-1, 1)
            img = ((x + 1) * 127.5).round().byte().permute(1, 2, 0).numpy()
            sheet[16 + r * tile:16 + (r + 1) * tile, c * tile:(c + 1) * tile] = img
    with atomic_path(out) as tmp:
        cv2.imwrite(str(tmp) + ".jpg", cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 92])
        Path(str(tmp) + ".jpg").replace(tmp)


def targets_met(self_scores: dict, cross_scores: dict) -> dict:
    """The thresholds the recipe aims at, each with its measured margin."""
    out = {}

    def gain(a: str, b: str, table: dict) -> tuple[float, float] | None:
        if a not in table or b not in table:
            return None
        return table[a]["psnr"] - table[b]["psnr"], 1 - table[a]["lpips"] / table[b]["lpips"]

    checks = [
        ("full beats copying the source by >= 3 dB and 30 % LPIPS", self_scores, "full", "copy_source", 3.0, 0.30),
        ("base beats copying the source by >= 2 dB", self_scores, "base", "copy_source", 2.0, None),
        ("LF + HF beats LF alone by >= 0.5 dB and 10 % LPIPS", self_scores, "base", "base_lf_only", 0.5, 0.10),
        ("the enhancer adds >= 0.5 dB and lowers LPIPS", self_scores, "full", "base", 0.5, 0.0),
        ("cross: full beats copying the source by >= 2 dB", cross_scores, "full", "copy_source", 2.0, None),
    ]
    for label, table, a, b, db, lp in checks:
        g = gain(a, b, table)
        if g is None:
            continue
        out[label] = {"psnr_gain_db": round(g[0], 3), "lpips_reduction": round(g[1], 4),
                      "met": bool(g[0] >= db and (lp is None or g[1] > lp))}
    ident = cross_scores.get("full", {}).get("identity")
    if ident:
        out["cross: closer to A than to B for >= 90 % of frames"] = {
            "closer_to_a": round(ident["closer_to_a"], 4), "met": ident["closer_to_a"] >= 0.9}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="synth-quick", help="training preset or JSON file (default synth-quick)")
    parser.add_argument("--steps", type=int, default=None, help="base iterations (default: the config's)")
    parser.add_argument("--enhancer-steps", type=int, default=2000, help="texture-enhancer iterations (default 2000)")
    parser.add_argument("--data", type=Path, default=None, help="an existing SynthHeads root (default: generate one)")
    parser.add_argument("--identities", type=int, default=1025, help="people in the generated data (default 1025)")
    parser.add_argument("--test-identities", type=int, default=25, help="held-out people (default 25)")
    parser.add_argument("--frames", type=int, default=20, help="frames per generated sequence (default 20)")
    parser.add_argument("--fps", type=float, default=5.0,
                        help="frame rate of the generated sequences (default 5: 20 frames span 4 s of head motion)")
    parser.add_argument("--cross-pairs", type=int, default=25, help="cross-person ground-truth pairs (default 25)")
    parser.add_argument("--ablation", action="append", default=[], metavar="NAME[=JSON]",
                        help="also train a base model with these config changes, e.g. no-gan='{\"losses\": "
                             "{\"adversarial\": 0, \"feature_matching\": 0}}', or one named: "
                             + ", ".join(NAMED_ABLATIONS) + " (gan, no-gan, lf-only: the paper's Table 1 ablations; "
                             "constant-lr, no-tail: synth-quick without its learning-rate tail)")
    parser.add_argument("--evaluate-only", action="store_true", help="score the runs under --out as they are")
    parser.add_argument("--no-identity", action="store_true", help="skip the dlib identity similarity")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/learning"))
    args = parser.parse_args()
    ablations = parse_ablations(parser, args.ablation, args.out, args.config, args.steps)
    args.out.mkdir(parents=True, exist_ok=True)
    bilayer = [sys.executable, "-m", "bilayer"]
    data = args.data or args.out / "synthheads"
    base_run, enh_run = args.out / "run-base", args.out / "run-enhancer"
    t0 = time.perf_counter()
    seconds = {}
    if not args.evaluate_only:
        if args.data is None and not (data / "synth.json").exists():
            run(bilayer + ["synth", "--out", str(data), "--identities", str(args.identities), "--test-identities",
                           str(args.test_identities), "--videos-per-identity", "2", "--frames", str(args.frames),
                           "--fps", str(args.fps), "--size", "128", "--workers", "2", "--seed", "0", "--cross-pairs", str(args.cross_pairs)])
        seconds["data"] = time.perf_counter() - t0
        seconds |= train_stages(args.config, data, base_run, enh_run, ablations, args.out, args.steps,
                                args.enhancer_steps)

    torch.set_grad_enabled(False)
    base = load(base_run)
    enhanced = load(enh_run) if (enh_run / "model").exists() else None
    models = {"base": base} | {name: load(run_dir) for name, (run_dir, _) in ablations.items()
                               if (run_dir / "model").exists()}
    size = base.config.image_size
    print("scoring self-reenactment …", flush=True)
    self_scores, grid = self_reenactment(models, enhanced, data, mean_train_image(data, size))
    print("scoring cross-person reenactment …", flush=True)
    cross_models = {"base": base} | ({"full": enhanced} if enhanced is not None else {})
    cross_scores = cross_reenactment(cross_models, data, identity=not args.no_identity)
    previous = previous_results(args.out / "learning.json")
    results = {
        "config": args.config, "image_size": size, "data": str(data),
        "base_steps": _jsonl(base_run / "log.jsonl")[-1]["step"] if _jsonl(base_run / "log.jsonl") else None,
        "enhancer_steps": _jsonl(enh_run / "log.jsonl")[-1]["step"] if _jsonl(enh_run / "log.jsonl") else None,
        "schedules": schedules({"base": base_run, "enhancer": enh_run} | {n: r for n, (r, _) in ablations.items()}),
        # stages not trained by this invocation keep the times an earlier one measured
        "wall_seconds": previous.get("wall_seconds", {}) | {k: round(v, 1) for k, v in seconds.items()},
        "threads": torch.get_num_threads(),
        "self_reenactment": self_scores, "cross_reenactment": cross_scores,
        "targets": targets_met(self_scores, cross_scores),
        "ablations": ablation_summary(ablations, self_scores),
    }
    plot({"base": base_run, "enhancer": enh_run} | {n: r for n, (r, _) in ablations.items()},
         args.out / "learning_curve.png")
    picture_grid(grid, args.out / "learning_grid.jpg")
    written = write_json_atomic(args.out / "learning.json", results)
    for title, table in (("self-reenactment", self_scores), ("cross-person (against the ground truth)", cross_scores)):
        print(title)
        for name, m in table.items():
            extra = ""
            if "identity" in m:
                i = m["identity"]
                extra = f"   identity: to A {i['to_a']:.3f}, to B {i['to_b']:.3f}, closer to A {100 * i['closer_to_a']:.0f} %"
            print(f"  {name:<18} PSNR {m['psnr']:6.2f} dB  SSIM {m['ssim']:.4f}  LPIPS {m['lpips']:.4f}"
                  f"  ({m['frames']} frames){extra}")
    for name, a in results["ablations"].items():
        if "vs_base" in a:
            d = a["vs_base"]
            print(f"ablation {name} ({a['steps']} steps) against the base model: PSNR {d['psnr_db']:+.2f} dB, "
                  f"LPIPS {d['lpips']:+.4f}")
    for label, t in results["targets"].items():
        print(f"{'met ' if t['met'] else 'NOT '} {label}: {t}")
    print(f"wrote {written}, {args.out / 'learning_curve.png'} and {args.out / 'learning_grid.jpg'}")


if __name__ == "__main__":
    main()
