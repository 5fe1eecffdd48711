"""int8 quality by calibration: the photo's jittered poses alone (``Avatar.renderer``) against those plus the
driver's own poses (``animate.calibration_poses``, what ``bilayer animate --backend int8`` uses).

    python benchmarks/int8_calibration.py [--model assets/synth-quick] [--drivers 1008 1011 1013] [--frames 150]
                                          [--out benchmarks/results]

The avatar is the held-out SynthHeads person of ``make demo``; each driver is another held-out person's
keypoint track of ``--frames`` frames, transferred with relative motion as ``animate`` does. Every frame is
rendered in float32 (eager) and by both int8 renderers; the figures are PSNR of the int8 image against the
float32 one, per frame (mean, 5th percentile, worst).

The same drivers are then written as H.264 videos and tracked by MediaPipe as ``animate`` tracks them, and the
driver poses are taken two ways: the first 64 tracked frames (what ``calibration_poses`` gave such a driver
before), and 64 frames sought across the video with their faces detected one by one (what it gives now);
rendered frames are the tracked ones. Writes ``int8_calibration.json``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from bilayer.io import write_json_atomic


def psnr_per_frame(images: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """PSNR in dB of (N, 3, H, W) images in [-1, 1] against the reference, per frame."""
    mse = ((images - reference) ** 2).flatten(1).mean(1).clamp_min(1e-12)
    return 10 * torch.log10(4.0 / mse)


def render_all(render, poses: torch.Tensor, batch: int = 8) -> torch.Tensor:
    with torch.inference_mode():
        return torch.cat([render(poses[i : i + batch])[0] for i in range(0, len(poses), batch)])


def main() -> None:
    from bilayer import BilayerModel
    from bilayer.demo import ASSET_MODEL, DATA_SEED, SOURCE_PERSON
    from bilayer.synth import render_sequence
    from bilayer.animate.pipeline import CALIBRATION_POSES, DriverPoses, calibration_poses
    from bilayer.runtime.avatar import Avatar
    from bilayer.animate.driver import open_driver
    from bilayer.animate.videoio import VideoWriter

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=ASSET_MODEL, help="a save_pretrained folder")
    parser.add_argument("--drivers", nargs="+", type=int, default=[1008, 1011, 1013], help="SynthHeads driver people (held out of the asset's training data)")
    parser.add_argument("--frames", type=int, default=150, help="frames per driver")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = parser.parse_args()

    model = BilayerModel.from_pretrained(args.model).eval()
    size = model.config.image_size
    images, keypoints, masks = render_sequence(DATA_SEED, SOURCE_PERSON, 1, size)
    avatar = Avatar.create(model, images[0], keypoints=keypoints[0], mask=masks[0] / 255.0, crop=False)
    eager = avatar.renderer(model, "eager")
    results = []

    def measure(entry, name, label, calibration, poses, reference):
        psnr = psnr_per_frame(render_all(avatar.renderer(model, "int8", calibration=calibration), poses), reference)
        entry[name] = {"mean_db": psnr.mean().item(), "p5_db": psnr.quantile(0.05).item(),
                       "worst_db": psnr.min().item()}
        print(f"driver {entry['driver']} ({entry['kind']}): calibrated on {label}: mean {psnr.mean():.2f} dB, "
              f"5th percentile {psnr.quantile(0.05):.2f} dB, worst {psnr.min():.2f} dB", flush=True)

    with tempfile.TemporaryDirectory(prefix="bilayer-int8-calibration-") as tmp:
        for person in args.drivers:
            frames, track, _ = render_sequence(DATA_SEED, person, args.frames, size)
            path = Path(tmp) / f"driver{person}.npy"
            np.save(path, track)
            with open_driver(path, smoothing=False) as driver:
                to_pose = DriverPoses(avatar, "relative")
                poses = torch.from_numpy(np.stack([to_pose(kp, i / driver.fps) for i, kp in enumerate(track)]))
                driver_poses = calibration_poses(avatar, driver)
            reference = render_all(eager, poses)
            entry = {"driver": person, "kind": "keypoints", "frames": args.frames, "driver_poses": len(driver_poses)}
            measure(entry, "photo", "the photo's poses", avatar.calibration(), poses, reference)
            measure(entry, "photo_and_driver", "the photo's and the driver's poses",
                    avatar.calibration(driver_poses), poses, reference)
            results.append(entry)

            # the same driver as a video, tracked by MediaPipe while it plays
            video = Path(tmp) / f"driver{person}.mp4"
            with VideoWriter(video, 25.0, (size, size)) as writer:
                for frame in frames:
                    writer.write(frame)
            with open_driver(video) as driver:
                to_pose = DriverPoses(avatar, "relative")
                poses = torch.from_numpy(np.stack([to_pose(f.keypoints, f.time) for f in driver]))
                first = DriverPoses(avatar, "relative")
                first_poses = np.stack([first(f.keypoints, f.time)
                                        for f in itertools.islice(driver, CALIBRATION_POSES)])
                started = time.perf_counter()
                spread_poses = calibration_poses(avatar, driver)
                seconds = time.perf_counter() - started
            reference = render_all(eager, poses)
            entry = {"driver": person, "kind": "tracked video", "frames": args.frames,
                     "driver_poses": len(spread_poses), "spread_poses_s": seconds}
            measure(entry, "photo_and_first_frames", f"the photo's poses and the first {len(first_poses)} tracked",
                    avatar.calibration(first_poses), poses, reference)
            measure(entry, "photo_and_driver", f"the photo's poses and {len(spread_poses)} sought across the video "
                    f"({seconds:.1f} s)", avatar.calibration(spread_poses), poses, reference)
            results.append(entry)
    report = {"model": str(args.model), "image_size": size, "source_person": SOURCE_PERSON, "results": results}
    print(json.dumps({f"{r['driver']} {r['kind']}": {k: round(v["worst_db"], 2) for k, v in r.items()
                                                     if isinstance(v, dict)} for r in results}))
    print(f"wrote {write_json_atomic(args.out / 'int8_calibration.json', report)}")


if __name__ == "__main__":
    main()
