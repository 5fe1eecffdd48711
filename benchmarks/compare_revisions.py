"""Per-frame rendering speed of this working tree against another git revision, measured alternately.

    python benchmarks/compare_revisions.py [--base 33f9444] [--presets small medium] [--backend eager] [--threads 2]
                                           [--rounds 5] [--out benchmarks/results]

This shared machine's speed drifts by up to 2× within minutes, so two benchmark runs made at different times
cannot show a 1.5× change. Here the base revision is checked out into a temporary git worktree and the two
versions are timed in alternating fresh processes (base, current, base, current, ...), each rendering the same
random-weight avatar (``render.calibrated_model``) at 256 px, batch 1, for ``--rounds`` rounds. The result is the
median over rounds of each version's median latency, and their ratio. The base must have ``runtime.bake``,
``runtime.backends.make_renderer`` and ``benchmarks/render.py``'s ``calibrated_model`` (any revision since the
runtime landed).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from bilayer.io import write_json_atomic

ROOT = Path(__file__).resolve().parents[1]

# run in a fresh process whose bilayer package comes from the tree given as argv[1]
CHILD = """
import json, sys, torch
tree, backend, presets, threads = sys.argv[1], sys.argv[2], sys.argv[3].split(","), int(sys.argv[4])
sys.path[:0] = [tree + "/src", tree + "/benchmarks"]
from render import calibrated_model, timed
from bilayer.runtime.bake import bake
from bilayer.runtime.backends import make_renderer
torch.set_num_threads(threads)
out = {}
for name in presets:
    model = calibrated_model(name, 256)
    g = torch.Generator().manual_seed(1)
    kp = (torch.rand(1, 1, 136, generator=g) - 0.5) * 1.2
    with torch.no_grad():
        state = model.personalize(torch.rand(1, 1, 3, 256, 256, generator=g) * 2 - 1, kp, torch.ones(1, 1, 1, 256, 256))
    renderer = make_renderer(bake(model, state), backend).warmup()
    out[name] = timed(lambda: renderer(kp[0]), min_seconds=3.0)
print(json.dumps(out))
"""


def time_tree(tree: Path, backend: str, presets: list[str], threads: int = 2) -> dict[str, float]:
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    env.pop("PYTHONPATH", None)
    done = subprocess.run([sys.executable, "-c", CHILD, str(tree), backend, ",".join(presets), str(threads)], env=env,
                          capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"timing {tree} failed: {done.stderr.strip().splitlines()[-1] if done.stderr else '?'}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", default="33f9444", help="git revision to compare with (default: the last "
                        "revision before the baked-graph rewrites)")
    parser.add_argument("--presets", nargs="+", default=["small", "medium"])
    parser.add_argument("--backend", default="eager")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2, help="torch threads per process (default 2; 1: one `animate` render worker's)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bilayer-base-") as tmp:
        base_tree = Path(tmp) / "base"
        added = subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(base_tree), args.base],
                               capture_output=True, text=True, check=False)
        if added.returncode != 0:
            raise SystemExit(f"cannot check out revision {args.base!r}: {added.stderr.strip()}")
        try:
            runs: dict[str, list[dict[str, float]]] = {"base": [], "current": []}
            for r in range(args.rounds):
                for label, tree in (("base", base_tree), ("current", ROOT)):
                    runs[label].append(time_tree(tree, args.backend, args.presets, args.threads))
                    print(f"round {r + 1} {label:<8} " + "  ".join(f"{k} {v:.2f} ms" for k, v in runs[label][-1].items()),
                          flush=True)
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(base_tree)], check=False)
    result = {"base": args.base, "backend": args.backend, "rounds": args.rounds, "threads": args.threads, "presets": {}}
    for name in args.presets:
        base = statistics.median(run[name] for run in runs["base"])
        current = statistics.median(run[name] for run in runs["current"])
        result["presets"][name] = {"base_ms": base, "current_ms": current, "speedup": base / current}
        print(f"{name:<7} base {base:7.2f} ms  current {current:7.2f} ms  {base / current:.2f}× faster")
    print(f"wrote {write_json_atomic(args.out / 'compare_revisions.json', result)}")


if __name__ == "__main__":
    main()
