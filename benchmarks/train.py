"""Training speed: iterations/s, where an iteration's time goes, and its FLOP/s against this machine's ceilings.

    python benchmarks/train.py [--compare REV] [--rounds 3] [--steps 40] [--warmup 10] [--learning 300]
                               [--medium] [--medium-only] [--quick] [--out benchmarks/results]

* **Arms**, each one `bilayer.train.train` run in its own process on the same SynthHeads data (128 px, the
  synth-quick preset, random-init perceptual networks in every arm so that all do the same work), alternated
  round by round so that they share the load of the host: `current` (this checkout, the preset's default
  precision), `fp32` (this checkout in float32) and, with `--compare REV`, the same preset at git revision REV
  (checked out into a temporary worktree). Each run trains `warmup + steps` iterations; iterations/s is the median
  of its logged windows after the warm-up, and one maintenance event (standing statistics, held-out evaluation,
  image grid, checkpoint) half-way through is timed as the extra time of its window.
* **Phases**: the milliseconds per iteration of data, generator, losses (the perceptual networks), discriminator,
  backward, optimizer and maintenance that the training log records (`ms_*`).
* **FLOP/s**: one iteration's FLOPs counted by `torch.utils.flop_counter` (forward and backward), divided by its
  time, against the fp32 and bf16 ceilings of `benchmarks/render.py` (a large 3×3 convolution) measured in the
  same run.
* **Learning per step** (`--learning N`): N iterations in fp32 and with the default precision, from the same
  seed, with held-out PSNR every N/3 iterations: both curves side by side.
* **Medium** (`--medium`): the paper's medium model at 256 px, batch 2, every loss term, a few iterations, with
  the default precision and in fp32 (`--medium-only`: just this, updating an existing `train.json`).

Writes `train.json`. Nothing is asserted; the numbers depend on the machine and on what else runs.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import render  # noqa: E402  (ceilings)

from bilayer.hardware import cpu_info  # noqa: E402
from bilayer.io import cache_home, write_json_atomic  # noqa: E402

REPO = Path(__file__).resolve().parents[1]

# One arm's run: only the API that every revision has (train, train_config, Perceptual), so the same script runs
# at an older commit. Prints the log records as one JSON list.
ARM = r"""
import json, sys, tempfile, time
from pathlib import Path
from bilayer.train import Perceptual, train, train_config
opts = json.loads(sys.argv[1])
config = train_config(opts["preset"]).replace(**opts["overrides"])
run = Path(tempfile.mkdtemp()) / "run"
start = time.perf_counter()
train("base", config, opts["data"], run, perceptual=Perceptual(allow_random=opts["random_perceptual"]),
      steps=opts["steps"], device="cpu", progress=False)
records = [json.loads(line) for line in open(run / "log.jsonl")]
metrics = [json.loads(line) for line in open(run / "metrics.jsonl")] if (run / "metrics.jsonl").exists() else []
print("ARM-RESULT " + json.dumps({"records": records, "metrics": metrics, "seconds": time.perf_counter() - start}))
"""


def synth_data(size: int, identities: int, frames: int) -> Path:
    """A SynthHeads set in the cache (made once; reused by later runs)."""
    from bilayer.synth import generate

    root = cache_home() / "benchmarks" / f"synth-{size}px-{identities}id-{frames}f"
    if not (root / "synth.json").is_file():
        print(f"making {root} …", flush=True)
        generate(root, identities, 2, frames, size=size, seed=0, workers=2, progress=False)
    return root


def run_arm(src: Path, options: dict, timeout: float = 3600) -> dict:
    env = {**os.environ, "PYTHONPATH": str(src), "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run([sys.executable, "-c", ARM, json.dumps(options)], capture_output=True, text=True,
                          env=env, timeout=timeout, cwd=tempfile.gettempdir())
    for line in proc.stdout.splitlines():
        if line.startswith("ARM-RESULT "):
            return json.loads(line[len("ARM-RESULT "):])
    raise RuntimeError(f"arm at {src} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")


def summarise(result: dict, warmup: int, event_step: int | None) -> dict:
    """Iterations/s (median of the post-warm-up windows without the event), the event's extra seconds, the phases,
    and the losses by step."""
    windows, event = [], None
    previous = None
    for r in result["records"]:
        if previous is not None and r["step"] > warmup:
            seconds = (r["step"] - previous) / r["it_per_s"]
            # the event runs after the log record of its step: its time lands in the window that follows
            if event_step is not None and previous <= event_step < r["step"]:
                event = (seconds, r["step"] - previous)
            else:
                windows.append((seconds, r["step"] - previous, r))
        previous = r["step"]
    per_step = statistics.median(s / n for s, n, _ in windows)
    phases = {}
    for key in [k for k in windows[0][2] if k.startswith("ms_")]:
        phases[key[3:]] = statistics.median(r[key] for _, _, r in windows)
    out = {"it_per_s": 1.0 / per_step, "ms_per_iteration": 1000 * per_step, "phases_ms": phases or None,
           "losses": {r["step"]: {k: v for k, v in r.items() if k.startswith("G_")} for r in result["records"]}}
    if event is not None:
        out["maintenance_event_s"] = event[0] - event[1] * per_step
    return out


def count_flops(preset: str, data: Path, batch: int, overrides: dict) -> dict:
    """FLOPs of one iteration (generator forward, losses, backward) of this checkout's training, counted."""
    from torch.utils.flop_counter import FlopCounterMode

    from bilayer.data.dataset import VideoDataset
    from bilayer.structures import collate
    from bilayer.losses.objectives import GeneratorObjective
    from bilayer.models.bilayer import BilayerModel
    from bilayer.models.discriminator import Discriminator
    from bilayer.train import train_config
    from bilayer.train.loop import GeneratorStep, discriminator_objective
    from bilayer.train.policy import STAGES

    config = train_config(preset).replace(**overrides)
    model = BilayerModel(config.model).train()
    objective = GeneratorObjective(config.losses, config.perceptual_layer_weights, config.perceptual_layers)
    disc = Discriminator.from_config(config.model).train() if objective.uses_discriminator else None
    dataset = VideoDataset(data, "train", config.model.image_size, config.num_sources, config.num_targets)
    b = collate([dataset[i] for i in range(batch)])
    with FlopCounterMode(display=False) as counter:
        terms = GeneratorStep(model, STAGES["base"])(b)
        generator = counter.get_total_flops()
        loss, _, real, fake = objective(terms, disc, 0)
        if disc is not None and config.losses.adversarial:
            loss = loss + discriminator_objective(disc, real, fake, terms.target_stickmen, 1.0)[0]
        losses = counter.get_total_flops() - generator
        loss.backward()
        total = counter.get_total_flops()
    return {"generator_forward": generator, "losses_forward": losses, "backward": total - generator - losses,
            "total": total}


def worktree(rev: str) -> Path:
    path = Path(tempfile.mkdtemp(prefix="bilayer-rev-"))
    shutil.rmtree(path)
    subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", "-q", str(path), rev], check=True)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--compare", default=None, metavar="REV", help="also time the preset at this git revision")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=40, help="timed iterations per run (after --warmup)")
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--learning", type=int, default=300, help="iterations of the fp32 / default learning check "
                        "(0: skip)")
    parser.add_argument("--medium", action="store_true", help="also time the paper's medium model at 256 px")
    parser.add_argument("--medium-only", action="store_true", help="time only the medium model and update its entry "
                        "in an existing train.json under --out")
    parser.add_argument("--quick", action="store_true", help="a minimal run that checks the script (tests)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.steps, args.warmup, args.learning = 1, 4, 2, 0

    machine = cpu_info()
    if args.medium_only:
        out = args.out / ("train_quick.json" if args.quick else "train.json")
        report = json.loads(out.read_text()) if out.is_file() else {"machine": machine}
        report["medium_256"] = medium(args.quick)
        write_json_atomic(out, report)
        print(f"wrote {out}")
        return
    print(f"CPU: {machine['cpu']}; native bfloat16: {machine['native_bfloat16']}; threads {torch.get_num_threads()}")
    data = synth_data(128, 10, 30 if not args.quick else 6)
    log_every = 2 if args.quick else 5
    event = args.warmup + (args.steps // 2 // log_every) * log_every
    base = {"eval_every": event, "visual_every": event, "checkpoint_every": event, "log_every": log_every,
            "workers": 0 if args.quick else 1}
    arms = {"current": (REPO / "src", {}), "fp32": (REPO / "src", {"precision": "fp32"})}
    tree = None
    if args.compare:
        tree = worktree(args.compare)
        arms[args.compare] = (tree / "src", {})
    report: dict = {"machine": machine, "threads": torch.get_num_threads(), "preset": "synth-quick",
                    "batch": 4, "image_size": 128, "steps": args.steps, "warmup": args.warmup,
                    "maintenance_every": event, "arms": {}}
    try:
        ceilings = [render.ceilings()]
        runs: dict[str, list] = {name: [] for name in arms}
        for r in range(args.rounds):
            for name, (src, overrides) in arms.items():
                options = {"preset": "synth-quick", "overrides": {**base, **overrides}, "data": str(data),
                           "steps": args.warmup + args.steps, "random_perceptual": True}
                result = summarise(run_arm(src, options), args.warmup, event)
                runs[name].append(result)
                phases = result["phases_ms"] or {}
                print(f"round {r + 1} {name:>10}: {result['it_per_s']:.2f} it/s ({result['ms_per_iteration']:.0f} ms; "
                      + ", ".join(f"{k} {v:.0f}" for k, v in phases.items()) + ")"
                      + (f"; maintenance event {result['maintenance_event_s']:.1f} s"
                         if "maintenance_event_s" in result else ""), flush=True)
        ceilings.append(render.ceilings())
        for name, results in runs.items():
            its = [x["it_per_s"] for x in results]
            events = [x["maintenance_event_s"] for x in results if "maintenance_event_s" in x]
            report["arms"][name] = {"it_per_s": statistics.median(its), "it_per_s_runs": its,
                                    "maintenance_event_s": statistics.median(events) if events else None,
                                    "phases_ms": results[-1]["phases_ms"], "losses": results[-1]["losses"]}
        report["ceilings"] = ceilings
        if args.compare:
            old = report["arms"][args.compare]["it_per_s"]
            report["speedup_vs_" + args.compare] = {name: report["arms"][name]["it_per_s"] / old
                                                   for name in ("current", "fp32")}
            # the same learning per step: the logged losses of the same steps, this checkout (fp32) against REV
            a, b = report["arms"]["fp32"]["losses"], report["arms"][args.compare]["losses"]
            diffs = [abs(a[s][k] - b[s][k]) / max(abs(b[s][k]), 1e-9) for s in a if s in b for k in a[s] if k in b[s]]
            report["loss_relative_difference_fp32_vs_" + args.compare] = {
                "median": statistics.median(diffs), "max": max(diffs), "count": len(diffs)}
        flops = count_flops("synth-quick", data, 4, {})
        seconds = report["arms"]["current"]["phases_ms"]
        per_it = 1.0 / report["arms"]["current"]["it_per_s"]
        report["flops_per_iteration"] = flops
        report["achieved_gflops"] = flops["total"] / per_it / 1e9
        report["fraction_of_ceiling"] = {k: report["achieved_gflops"] / statistics.mean(c[k]["gflops"] for c in ceilings)
                                         for k in ("float32", "bfloat16")}
        print(f"one iteration: {flops['total'] / 1e9:.1f} GFLOP → {report['achieved_gflops']:.0f} GFLOP/s = "
              f"{100 * report['fraction_of_ceiling']['float32']:.0f} % of the fp32 ceiling, "
              f"{100 * report['fraction_of_ceiling']['bfloat16']:.0f} % of the bf16 ceiling "
              f"(phases {seconds})")
        if args.compare:
            print("speed-up against " + args.compare + ": " + ", ".join(
                f"{k} {v:.2f}×" for k, v in report["speedup_vs_" + args.compare].items()))
        if args.learning:
            report["learning"] = learning_curves(data, args.learning, {args.compare: tree / "src"} if tree else {})
        if args.medium:
            report["medium_256"] = medium(args.quick)
    finally:
        if tree is not None:
            subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(tree)], check=False)
    out = args.out / ("train_quick.json" if args.quick else "train.json")
    write_json_atomic(out, report)
    print(f"wrote {out}")


def learning_curves(data: Path, steps: int, others: dict[str, Path]) -> dict:
    """Held-out PSNR/SSIM every steps/3 iterations: fp32 and the default precision of this checkout, and the preset
    at the ``others`` revisions (name → their src folder), same seed and data."""
    every = max(1, steps // 3)
    curves = {}
    arms = [("fp32", REPO / "src", {"precision": "fp32"}), ("default", REPO / "src", {})]
    arms += [(name, src, {}) for name, src in others.items()]
    for name, src, overrides in arms:
        options = {"preset": "synth-quick", "data": str(data), "steps": steps, "random_perceptual": True,
                   "overrides": {"eval_every": every, "checkpoint_every": steps, "visual_every": 0, "log_every": 10,
                                 **overrides}}
        result = run_arm(src, options)
        curves[name] = {"metrics": result["metrics"],
                        "losses": {r["step"]: {k: v for k, v in r.items() if k.startswith("G_")}
                                   for r in result["records"]}}
        print(f"learning, {name}: " + ", ".join(f"step {m['step']} PSNR {m['psnr']:.2f} dB"
                                                  for m in result["metrics"]), flush=True)
    return curves


def medium(quick: bool) -> dict:
    """The paper's medium model at 256 px (every loss term, random-init perceptual networks), batch 2."""
    data = synth_data(256, 4, 8)
    steps = 2 if quick else 6
    out = {}
    for name, overrides in (("default", {}), ("fp32", {"precision": "fp32"})):
        options = {"preset": "paper-base", "data": str(data), "steps": steps, "random_perceptual": True,
                   "overrides": {"batch_size": 2, "workers": 0, "eval_every": 0, "visual_every": 0,
                                 "checkpoint_every": 10_000, "log_every": 1, "standing_stats_batches": 1,
                                 **overrides}}
        result = run_arm(REPO / "src", options)
        records = result["records"][1:] or result["records"]
        per_it = statistics.median(1 / r["it_per_s"] for r in records)
        out[name] = {"it_per_s": 1 / per_it, "phases_ms": {k[3:]: statistics.median(r[k] for r in records)
                                                           for k in records[0] if k.startswith("ms_")},
                     "memory_mb": max(r["memory_mb"] for r in records)}
        print(f"medium 256 px, batch 2, {name}: {1 / per_it:.3f} it/s, {max(r['memory_mb'] for r in records):.0f} MB",
              flush=True)
    flops = count_flops("paper-base", data, 2, {})
    ceiling = render.ceilings()
    per_it = 1 / out["default"]["it_per_s"]
    out["flops_per_iteration"] = flops
    out["achieved_gflops"] = flops["total"] / per_it / 1e9
    out["fraction_of_ceiling"] = {k: out["achieved_gflops"] / ceiling[k]["gflops"] for k in ceiling}
    out["ceilings"] = ceiling
    return out


if __name__ == "__main__":
    main()
