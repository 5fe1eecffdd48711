"""Keypoint streaming against video: the bytes a receiver needs per second, at the same picture.

    python benchmarks/keypoint_stream.py [--driver .cache/material/franck.mp4] [--frames 250]
                                         [--model assets/synth-quick] [--out benchmarks/results/keypoint_stream.json]

A real talking head (--driver, tracked with MediaPipe) drives the trained avatar of grace_hopper.jpg with relative
motion, as ``bilayer live`` does. The reference is what a receiver renders from the exact keypoints. Then:

* keypoint stream: the avatar's ONNX graph once, then one 284-byte message per frame (``live.wire``); the frames
  a receiver renders from the quantised keypoints are compared with the reference (PSNR);
* H.264 (libx264, ``tune=zerolatency`` as a call would use, preset medium) of the reference frames at several CRFs:
  bitrate and PSNR against the reference.

Reported: kbit/s of each, and the H.264 bitrate needed to reach the PSNR thresholds (35, 40 and 45 dB) next to the
keypoint stream's, which renders the receiver's picture exactly (up to the quantisation). The H.264 ladder is run
on the model's own 128-px frames and on the same frames upscaled (bicubic) to 256 px, the paper's resolution:
the keypoint stream does not grow with the picture, video does (a 256-px model with real detail needs more bits
than this smooth upscale, so the 256-px figures are a lower bound).
"""

from __future__ import annotations

import argparse
import io
import json
import sys
from pathlib import Path

import av
import numpy as np
import torch

from bilayer import BilayerModel
from bilayer.animate.driver import open_driver
from bilayer.animate.pipeline import DriverPoses
from bilayer.io import write_json_atomic
from bilayer.live.wire import MESSAGE_BYTES, avatar_graph, quantize
from bilayer.runtime.avatar import Avatar

ROOT = Path(__file__).resolve().parents[1]
CRFS = (14, 18, 23, 28, 33, 38)
THRESHOLDS = (35.0, 40.0, 45.0)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else float(10 * np.log10(255**2 / mse))


def compose(image: torch.Tensor, mask: torch.Tensor) -> np.ndarray:
    out = (image.clamp(-1, 1) + 1) * 127.5 * mask.clamp(0, 1)
    return out.round().byte().permute(0, 2, 3, 1).numpy()


def h264(frames: list[np.ndarray], fps: float, crf: int) -> tuple[int, list[np.ndarray]]:
    """(bytes of the encoded stream, decoded frames) for libx264 at ``crf``."""
    buffer = io.BytesIO()
    h, w = frames[0].shape[:2]
    with av.open(buffer, "w", format="mp4") as out:
        stream = out.add_stream("libx264", rate=int(round(fps)))
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        stream.options = {"crf": str(crf), "preset": "medium", "tune": "zerolatency"}
        for f in frames:
            out.mux(stream.encode(av.VideoFrame.from_ndarray(f, format="rgb24")))
        out.mux(stream.encode())
    data = buffer.getvalue()
    # the elementary stream's size: the container's own bytes are not what a call would send
    with av.open(io.BytesIO(data)) as c:
        size = sum(p.size for p in c.demux(video=0) if p.size)
    with av.open(io.BytesIO(data)) as c:
        decoded = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    return size, decoded


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--driver", type=Path, default=ROOT / ".cache" / "material" / "franck.mp4")
    p.add_argument("--photo", type=Path, default=ROOT / ".cache" / "material" / "grace_hopper.jpg")
    p.add_argument("--model", type=Path, default=ROOT / "assets" / "synth-quick")
    p.add_argument("--frames", type=int, default=250)
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "keypoint_stream.json")
    args = p.parse_args()
    for path in (args.driver, args.photo):
        if not path.is_file():
            sys.exit(f"error: {path} is missing; `make test` fetches the test material (tests/material.py).")
    torch.set_grad_enabled(False)
    model = BilayerModel.from_pretrained(args.model).eval()
    avatar = Avatar.create(model, str(args.photo))
    baked = avatar.bake(model)
    poses = DriverPoses(avatar, "relative")
    keypoints = []
    with open_driver(args.driver, max_frames=args.frames) as driver:
        fps = driver.fps
        for frame in driver:
            keypoints.append(poses(frame.keypoints, frame.time))
    kp = torch.from_numpy(np.stack(keypoints))
    reference, received = [], []
    for chunk in kp.split(16):
        reference.extend(compose(*baked(chunk)))
        q = torch.from_numpy(np.stack([quantize(k) for k in chunk.numpy()]))
        received.extend(compose(*baked(q)))
    n = len(reference)
    seconds = n / fps
    graph = avatar_graph(avatar, model)
    quant_psnr = [psnr(a, b) for a, b in zip(reference, received)]
    stream = {"avatar_bytes_once": len(graph), "bytes_per_frame": MESSAGE_BYTES,
              "kbit_per_second": MESSAGE_BYTES * 8 * fps / 1000,
              "psnr_vs_exact_keypoints_db": {"mean": float(np.mean(np.minimum(quant_psnr, 100))),
                                             "min": float(np.min(quant_psnr)),
                                             "identical_frames": int(sum(np.isinf(quant_psnr)))}}
    import cv2

    ladders, needs = {}, {}
    for side in (avatar.size, 2 * avatar.size):
        frames = reference if side == avatar.size else [cv2.resize(f, (side, side), interpolation=cv2.INTER_CUBIC)
                                                        for f in reference]
        videos = []
        for crf in CRFS:
            size, decoded = h264(frames, fps, crf)
            scores = [psnr(a, b) for a, b in zip(frames, decoded)]
            videos.append({"crf": crf, "bytes": size, "kbit_per_second": size * 8 / seconds / 1000,
                           "bytes_per_frame": size / n, "psnr_db": float(np.mean(np.minimum(scores, 100))),
                           "psnr_min_db": float(np.min(scores))})
            print(f"H.264 {side} px crf {crf:2d}: {videos[-1]['kbit_per_second']:7.1f} kbit/s, PSNR "
                  f"{videos[-1]['psnr_db']:.1f} dB (worst frame {videos[-1]['psnr_min_db']:.1f})", flush=True)
        needed = {}
        for t in THRESHOLDS:
            ok = [v for v in videos if v["psnr_db"] >= t]
            needed[f"{t:g} dB"] = min(v["kbit_per_second"] for v in ok) if ok else None
        ladders[f"{side}px"], needs[f"{side}px"] = videos, needed
    result = {"driver": args.driver.name, "frames": n, "fps": fps, "image_size": avatar.size,
              "model": str(args.model.relative_to(ROOT) if args.model.is_relative_to(ROOT) else args.model),
              "keypoint_stream": stream, "h264": ladders, "h264_kbit_per_second_for_psnr": needs,
              "h264_kbit_per_second_at_crf_23": {k: next(v["kbit_per_second"] for v in ladder if v["crf"] == 23)
                                                  for k, ladder in ladders.items()}}
    print(f"keypoints: {stream['kbit_per_second']:.1f} kbit/s ({MESSAGE_BYTES} bytes a frame at {fps:g} fps; the "
          f"avatar once: {len(graph) / 2**20:.2f} MiB), received frames {stream['psnr_vs_exact_keypoints_db']['mean']:.1f} dB "
          "against exact keypoints")
    for side, needed in needs.items():
        print(f"H.264 at {side} needs " + ", ".join(f"{v:.0f} kbit/s for {k}" if v else f"more than crf {CRFS[0]} "
                                                  f"gives for {k}" for k, v in needed.items()))
    print(f"wrote {write_json_atomic(args.out, result)}")


if __name__ == "__main__":
    main()
