"""Per-frame and per-avatar MACs and parameter counts of the model family, next to the paper's figures.

    python benchmarks/complexity.py [--image-size 256] [--out benchmarks/results]

Writes complexity.json. Counting is exact arithmetic on shapes (meta device), so the figures do not depend on
the machine. Paper Table 2 (per-frame GMACs): small 1.08, medium 4.32, large 17.3.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from bilayer.config import preset
from bilayer.io import write_json_atomic
from bilayer.eval.complexity import complexity

PAPER_GMACS = {"small": 1.08, "medium": 4.32, "large": 17.3}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--image-size", type=int, default=256)
    parser.add_argument("--out", default="benchmarks/results")
    args = parser.parse_args()
    results = {}
    for name, paper in PAPER_GMACS.items():
        report = complexity(preset(name, args.image_size))
        gmacs = report["macs_per_frame"] / 1e9
        report["paper_gmacs_per_frame"] = paper
        report["relative_to_paper"] = gmacs / paper - 1
        results[name] = report
        print(f"{name:<7} {gmacs:7.3f} GMACs/frame (paper {paper:5.2f}, {100 * (gmacs / paper - 1):+5.1f}%)  "
              f"{report['macs_per_avatar'] / 1e9:7.1f} GMACs/avatar")
    print(f"wrote {write_json_atomic(Path(args.out) / 'complexity.json', results)}")


if __name__ == "__main__":
    main()
