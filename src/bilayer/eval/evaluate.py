"""The paper's evaluation protocol (§4, supplement Table 2) over one or more models: `bilayer evaluate`.

For every test video the avatar is made once from its first frame (``personalize``, plus the texture enhancer
when the model has one; with ``source_split`` from the first frame of the sequence of the same name in that split,
e.g. the training part of a person's own video), then every target frame taken at 1 FPS is rendered from its keypoints and compared
with the ground truth by the metrics of ``eval.registry``. In cross-person mode the avatar of video i is driven
by the keypoints of the next video of another person (cyclic, absolute motion): only the metrics that need no
ground-truth image (CSIM against the source, NME against the driver) apply.

Outputs under ``out_dir``: ``videos/MODEL/PERSON__VIDEO.json`` (per-frame values; an interrupted run resumes by
reusing the files made from the same dataset with the same settings and model weights), ``results.json`` (means,
frames covered, skipped metrics with their reason, GMACs per frame and per avatar, milliseconds per avatar and per
frame), ``results.md`` (paper Table 2 layout) and ``quality_vs_gmacs.png`` (paper Fig. 4 layout). Every file is
written atomically.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from ..hardware import cpu_name
from ..outputs import check_folder, claim_folder
from ..io import atomic_path, write_bytes_atomic, write_json_atomic
from .registry import (
    DEFAULT_METRICS, EVALUATION_MODES, METRICS, EvaluationError, Metric, MetricContext, MetricInputs,
    build_metrics, check_metric_names, gmacs_per_avatar, gmacs_per_frame, make_avatar, time_frame, time_init,
)

log = logging.getLogger("bilayer.eval")

MASKING_MODES = ("reference", "gt", "none")
LANDMARK_BACKENDS = ("mediapipe", "face-alignment", "dlib")
DEFAULT_FPS = 25.0
RECORD_VERSION = 2  # 2: records name their dataset root

# Paper Table 2: (header, key in a model's results); metrics outside it follow as extra columns.
TABLE2_METRICS = ("lpips", "ssim", "csim", "nme")
TABLE2_FIGURES = (("GMACs↓", "gmacs_per_frame"), ("Init. (ms)↓", "init_ms"), ("Inf. (ms)↓", "frame_ms"))


# ============================================================================================ inputs
def model_names(paths: Sequence[Path]) -> list[str]:
    """A short name per model folder: its name, or its parent's when it is called ``model`` (runs/x/model → x);
    repeated names get ``-2``, ``-3``, … in order."""
    names: list[str] = []
    seen: dict[str, int] = {}
    for path in paths:
        path = Path(path).resolve()
        base = path.parent.name if path.name == "model" and path.parent.name else path.name
        base = base or "model"
        seen[base] = seen.get(base, 0) + 1
        name = base if seen[base] == 1 else f"{base}-{seen[base]}"
        while name in names:
            seen[base] += 1
            name = f"{base}-{seen[base]}"
        names.append(name)
    return names


def dataset_fps(root: Path, split: str) -> tuple[float | dict[str, float], str]:
    """The frame rate of the dataset's videos and where it came from.

    ``ROOT/synth.json`` (SynthHeads) gives one "fps" for all videos; ``ROOT/.preprocess/SPLIT/PERSON/VIDEO/SEQ.json``
    (``bilayer preprocess``) gives each video the rate its frames were kept at (the source rate, or the lower
    ``--fps`` it was subsampled to). Anything else: (25, "default"); the caller says so once the dataset has
    proved readable (a missing split should be the only message)."""
    from ..preprocess.pipeline import MARKER_DIR

    meta = root / "synth.json"
    if meta.is_file():
        fps = _read_json_object(meta).get("fps")
        if isinstance(fps, (int, float)) and not isinstance(fps, bool) and 0 < fps < math.inf:
            return float(fps), meta.name
        log.warning("cannot read a frame rate from %s; ignoring it", meta)
    markers = root / MARKER_DIR / split
    images = root / "imgs" / split
    if markers.is_dir() and images.is_dir():
        rates: dict[str, float] = {}
        missing = 0
        for person in sorted(p for p in images.iterdir() if p.is_dir()):
            for video in sorted(v for v in person.iterdir() if v.is_dir()):
                name = f"{person.name}/{video.name}"
                rate = _marker_fps(markers / person.name / video.name)
                if rate is None:
                    missing += 1
                    rate = DEFAULT_FPS
                rates[name] = rate
        if rates and missing < len(rates):
            if missing:
                log.warning("no frame rate recorded for %d of %d videos under %s; assuming %g fps for those",
                            missing, len(rates), images, DEFAULT_FPS)
            return rates, f"{markers.relative_to(root)} markers"
    return DEFAULT_FPS, "default"


def _read_json_object(path: Path) -> dict:
    """The JSON object in ``path``; {} when it cannot be read or holds something else (a list, a number)."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _marker_fps(folder: Path) -> float | None:
    if not folder.is_dir():
        return None
    for marker in sorted(folder.glob("*.json")):
        info = _read_json_object(marker)
        settings = info.get("settings")
        kept = settings.get("fps") if isinstance(settings, dict) else None
        rates = [float(r) for r in (info.get("source_fps"), kept)
                 if isinstance(r, (int, float)) and not isinstance(r, bool) and 0 < r < math.inf]
        if rates:
            return min(rates)
    return None


def _check_model_dir(path: Path) -> None:
    from ..weights import CONFIG_FILE, WEIGHTS_FILE

    layout = f"a save_pretrained folder ({CONFIG_FILE} + {WEIGHTS_FILE})"
    if not path.is_dir():
        raise EvaluationError(f"model folder {path} does not exist; expected {layout}, e.g. runs/NAME/model.")
    for name in (CONFIG_FILE, WEIGHTS_FILE):
        if not (path / name).is_file():
            raise EvaluationError(f"model folder {path} has no {name}; expected {layout}.")


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``device`` as a torch.device (None: cuda when available, else cpu); an unknown name or an unavailable
    CUDA device is an ``EvaluationError``."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise EvaluationError(f"unknown device {str(device)!r}; expected cpu, cuda or cuda:N.") from None
    if resolved.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise EvaluationError(f"device {resolved} was requested but CUDA is not available here; use --device cpu.")
        if resolved.index is not None and resolved.index >= count:
            raise EvaluationError(f"device {resolved} does not exist; this machine has {count} CUDA device(s).")
    elif resolved.type != "cpu":
        raise EvaluationError(f"unsupported device {str(device)!r}; expected cpu, cuda or cuda:N.")
    return resolved


def _check_options(mode: str, masking: str, landmarks: str, batch_size: int, max_videos: int | None) -> None:
    if mode not in EVALUATION_MODES:
        raise EvaluationError(f"unknown mode {mode!r}; expected one of {', '.join(EVALUATION_MODES)}.")
    if masking not in MASKING_MODES:
        raise EvaluationError(f"unknown masking {masking!r}; expected one of {', '.join(MASKING_MODES)}.")
    if landmarks not in LANDMARK_BACKENDS:
        raise EvaluationError(
            f"unknown landmark backend {landmarks!r}; expected one of {', '.join(LANDMARK_BACKENDS)}.")
    if batch_size < 1:
        raise EvaluationError(f"batch size must be at least 1, got {batch_size}.")
    if max_videos is not None and max_videos < 1:
        raise EvaluationError(f"max videos must be at least 1, got {max_videos}.")


# ============================================================================================ protocol
@dataclass
class VideoPlan:
    """One evaluated video: its avatar's source item and the items whose targets drive it (its own 1-FPS
    targets, or another person's in cross mode)."""

    video: str
    source_item: int
    target_items: list[int]
    driver: str | None  # the driving video in cross mode


def plan_videos(dataset, mode: str, max_videos: int | None) -> list[VideoPlan]:
    """The videos to evaluate, in dataset order (the first ``max_videos``), with their target items."""
    items: dict[int, list[int]] = {}
    for item in range(len(dataset)):
        items.setdefault(dataset.item_video(item), []).append(item)
    order = sorted(items)[: max_videos or None]
    names = [dataset.videos[v].name for v in order]
    plans = []
    for k, v in enumerate(order):
        if mode == "self":
            plans.append(VideoPlan(names[k], items[v][0], items[v], None))
            continue
        person = names[k].split("/")[0]
        for step in range(1, len(order)):
            j = (k + step) % len(order)
            if names[j].split("/")[0] != person:
                plans.append(VideoPlan(names[k], items[v][0], items[order[j]], names[j]))
                break
        else:
            raise EvaluationError(
                f"cross-person mode needs videos of at least two people; the {len(order)} evaluated video(s) "
                f"under {dataset.root / 'imgs' / dataset.split} all show {person}"
                + (" (raise --max-videos)." if max_videos else ".")
            )
    return plans


def _masked(image: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    from ..nn.image import apply_mask

    return image if mask is None else apply_mask(image, mask)


@dataclass
class _Source:
    images: torch.Tensor  # (1, 1, 3, S, S) on the device
    keypoints: torch.Tensor  # (1, 1, 136)
    masks: torch.Tensor  # (1, 1, 1, S, S)
    stickmen: torch.Tensor


def _source_of(dataset, item: int, device: torch.device) -> _Source:
    s = dataset[item]
    return _Source(s.source_images[None].to(device), s.source_keypoints[None].to(device),
                   s.source_masks[None].to(device), s.source_stickmen[None].to(device))


def _avatar(model, source: _Source, enhance: bool):
    return make_avatar(model, source.images, source.keypoints, source.masks, source.stickmen, enhance)


def source_items(dataset, source_dataset, plans: list[VideoPlan]) -> list[VideoPlan]:
    """The plans with each source item taken from ``source_dataset`` (another split of the same root): the first
    frame of the video of the same name there."""
    first: dict[str, int] = {}
    for item in range(len(source_dataset)):
        first.setdefault(source_dataset.videos[source_dataset.item_video(item)].name, item)
    out = []
    for plan in plans:
        if plan.video not in first:
            raise EvaluationError(
                f"video {plan.video} of {dataset.root / 'imgs' / dataset.split} has no sequence of the same name "
                f"in {source_dataset.root / 'imgs' / source_dataset.split}; a source split needs both parts of "
                "each video (bilayer preprocess --test-tail writes them)."
            )
        out.append(VideoPlan(plan.video, first[plan.video], plan.target_items, plan.driver))
    return out


@torch.no_grad()
def evaluate_video(model, dataset, plan: VideoPlan, metrics: Sequence[Metric], *, masking: str, enhance: bool,
                   batch_size: int, device: torch.device, source_dataset=None) -> dict[str, list[float]]:
    """Per-frame values {metric: [N floats, NaN where not computable]} of one video under the protocol; the
    source item indexes ``source_dataset`` when given, else ``dataset``."""
    from ..keypoints import denormalize_keypoints

    size = model.config.image_size
    source = _source_of(source_dataset if source_dataset is not None else dataset, plan.source_item, device)
    state = _avatar(model, source, enhance)
    src_mask = None if masking == "none" else source.masks[0, 0]
    src_image = _masked(source.images[0, 0], src_mask)  # (3, S, S)
    src_kp = denormalize_keypoints(source.keypoints[0, 0], size)  # (68, 2)
    values: dict[str, list[float]] = {m.name: [] for m in metrics}
    for start in range(0, len(plan.target_items), batch_size):
        samples = [dataset[i] for i in plan.target_items[start : start + batch_size]]
        images = torch.stack([s.target_images[0] for s in samples]).to(device)  # (N, 3, S, S)
        keypoints = torch.stack([s.target_keypoints[0] for s in samples]).to(device)  # (N, 136)
        gt_masks = torch.stack([s.target_masks[0] for s in samples]).to(device)  # (N, 1, S, S)
        render = model.render(state, keypoints[None])
        pred = render.image[0].clamp(-1, 1)
        pred_mask = render.mask[0]
        if masking == "none":
            pred_mask, ref_mask = None, None
        elif masking == "gt" and plan.driver is None:
            pred_mask, ref_mask = gt_masks, gt_masks
        else:  # "reference" (reference §3.4); in cross mode no ground-truth mask fits the prediction, "gt" is this too
            ref_mask = gt_masks
        reference = _masked(images, ref_mask)
        n = len(samples)
        batch = MetricInputs(
            pred=_masked(pred, pred_mask).cpu(),
            target=reference.cpu() if plan.driver is None else None,
            target_keypoints_px=denormalize_keypoints(keypoints, size).cpu(),
            source=src_image.expand(n, -1, -1, -1).cpu(),
            source_keypoints_px=src_kp.expand(n, -1, -1).cpu(),
            driver=reference.cpu() if plan.driver is not None else None,
        )
        for metric in metrics:
            out = metric.compute(batch).reshape(-1).float()
            if out.numel() != n:
                raise RuntimeError(f"metric {metric.name} returned {out.numel()} values for {n} images.")
            values[metric.name].extend(out.tolist())
    return values


def _record_path(out_dir: Path, model_name: str, video: str) -> Path:
    return out_dir / "videos" / model_name / (video.replace("/", "__") + ".json")


def _read_record(path: Path, settings: dict, names: Iterable[str]) -> dict[str, list[float]] | None:
    """The stored per-frame values when ``path`` holds every metric in ``names`` made with ``settings``."""
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or record.get("settings") != settings:
        return None
    stored, pairs = record.get("metrics"), len(settings["targets"])
    if not isinstance(stored, dict):
        return None
    values: dict[str, list[float]] = {}
    for name in names:
        column = stored.get(name)
        if not isinstance(column, list) or len(column) != pairs:
            return None
        if not all(v is None or (isinstance(v, (int, float)) and not isinstance(v, bool)) for v in column):
            return None  # a hand-edited or foreign file: recompute rather than fail or guess
        values[name] = [math.nan if v is None else float(v) for v in column]
    return values


def _json_floats(values: Iterable[float]) -> list[float | None]:
    return [v if math.isfinite(v) else None for v in values]


def aggregate(per_video: Sequence[dict[str, list[float]]], names: Iterable[str]) -> dict[str, dict]:
    """{metric: {"mean": mean over the frames where it is finite (None if none), "frames": their number}}."""
    out = {}
    for name in names:
        finite = [v for values in per_video for v in values.get(name, []) if math.isfinite(v)]
        out[name] = {"mean": sum(finite) / len(finite) if finite else None, "frames": len(finite)}
    return out


# ============================================================================================ the runner
def hardware(device: torch.device | None = None) -> dict:
    """What the timings ran on (the GPU's name when ``device`` is a CUDA device, or None with CUDA available)."""
    info = {"cpu": cpu_name(), "cpu_count": os.cpu_count(), "torch": torch.__version__,
            "torch_threads": torch.get_num_threads()}
    if torch.cuda.is_available() and (device is None or device.type == "cuda"):
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def evaluate(
    models: Sequence[str | os.PathLike],
    data_root: str | os.PathLike,
    out_dir: str | os.PathLike,
    split: str = "test",
    mode: str = "self",
    metrics: Sequence[str] = DEFAULT_METRICS,
    weights_dir: str | os.PathLike | None = None,
    landmarks: str = "mediapipe",
    batch_size: int = 8,
    masking: str = "reference",
    max_videos: int | None = None,
    enhance: bool = True,
    timing: bool = True,
    progress: bool = True,
    *,
    fps: float | None = None,
    device: str | torch.device | None = None,
    init_runs: tuple[int, int] = (3, 20),
    frame_runs: tuple[int, int] = (10, 100),
    source_split: str | None = None,
) -> dict:
    """Evaluate ``models`` (save_pretrained folders) on ``data_root``/``split`` under the paper's protocol.

    Returns the content of ``results.json`` plus ``"outputs"`` (the paths written). ``fps`` overrides the
    dataset's frame rate; ``init_runs`` / ``frame_runs`` are (warm-up, timed) runs of the two timings.
    ``source_split`` (self mode): make each avatar from the first frame of the same-named sequence in that split.
    """
    from tqdm import tqdm

    from ..data.dataset import VideoDataset
    from ..models.bilayer import BilayerModel
    from ..runtime.avatar import model_fingerprint
    from .weights import resolve_weights_dir

    paths = [Path(m) for m in models]
    if not paths:
        raise EvaluationError("no model given; pass at least one --model DIR.")
    for path in paths:
        _check_model_dir(path)
    root, out_dir = Path(data_root), Path(out_dir)
    if not root.is_dir():
        raise EvaluationError(f"dataset root {root} does not exist or is not a folder.")
    names = check_metric_names(metrics)
    _check_options(mode, masking, landmarks, batch_size, max_videos)
    if source_split is not None and mode != "self":
        raise EvaluationError(f"a source split applies to self mode; mode {mode!r} drives each avatar by another "
                              "person.")
    if source_split == split:
        raise EvaluationError(f"the source split is the evaluated split {split!r}; name another one (e.g. train).")
    if fps is not None and not 0 < fps < math.inf:
        raise EvaluationError(f"fps must be a positive number, got {fps}.")
    for runs, what in ((init_runs, "init"), (frame_runs, "per-frame")):
        if len(runs) != 2 or runs[0] < 0 or runs[1] < 1:
            raise EvaluationError(f"{what} timing runs must be (warm-up ≥ 0, timed ≥ 1), got {tuple(runs)}.")
    check_folder(out_dir, "evaluation", "--out")
    device = resolve_device(device)
    weights = resolve_weights_dir(weights_dir)
    if weights.exists() and not weights.is_dir():
        raise EvaluationError(f"weights folder {weights} is a file; pass the folder that holds the metric weights.")
    rate, rate_source = (float(fps), "--fps") if fps is not None else dataset_fps(root, split)

    ctx = MetricContext(weights_dir=weights, landmarks=landmarks, device=device, mode=mode)
    ready, skipped = build_metrics(names, ctx)
    ready_names = [m.name for m in ready]
    model_labels = model_names(paths)
    datasets: dict[int, VideoDataset] = {}
    source_datasets: dict[int, VideoDataset] = {}
    results: dict = {}
    try:
        for path, label in zip(paths, model_labels):
            model = BilayerModel.from_pretrained(path, map_location=device).eval()
            size = model.config.image_size
            if size not in datasets:
                datasets[size] = VideoDataset(root, split, size, 1, 1, "test", fps=rate)
                if rate_source == "default" and len(datasets) == 1:
                    log.warning("no frame rate in the dataset's metadata (synth.json or .preprocess/ markers) "
                                "under %s; assuming %g fps (pass --fps to set it)", root, DEFAULT_FPS)
            dataset = datasets[size]
            plans = plan_videos(dataset, mode, max_videos)
            source_dataset = None
            if source_split is not None:
                if size not in source_datasets:
                    # only each video's first frame is used: fps 1 makes any video of two frames or more usable
                    source_datasets[size] = VideoDataset(root, source_split, size, 1, 1, "test", fps=1.0)
                source_dataset = source_datasets[size]
                plans = source_items(dataset, source_dataset, plans)
            source_of = source_dataset if source_dataset is not None else dataset
            uses_enhancer = bool(enhance and model.texture_enhancer is not None)
            fingerprint = model_fingerprint(model)
            per_video, reused = [], 0
            for plan in tqdm(plans, desc=label, unit="video", disable=not progress, dynamic_ncols=True):
                driver_items = plan.target_items
                settings = {
                    "version": RECORD_VERSION, "model": fingerprint, "data_root": str(root.resolve()),
                    "split": split, "mode": mode,
                    "masking": masking, "enhance": uses_enhancer, "landmarks": landmarks,
                    "image_size": size,
                    "fps": rate if isinstance(rate, float) else rate[plan.driver or plan.video],
                    "source": f"{source_split or split}/{plan.video}/"
                              f"{source_of.videos[source_of.item_video(plan.source_item)].frames[0]}",
                    "driver": plan.driver,
                    "targets": [_target_frame(dataset, i) for i in driver_items],
                }
                record = _record_path(out_dir, label, plan.video)
                values = _read_record(record, settings, ready_names) if record.is_file() else None
                if values is None:
                    values = evaluate_video(model, dataset, plan, ready, masking=masking, enhance=enhance,
                                            batch_size=batch_size, device=device, source_dataset=source_dataset)
                    claim_folder(out_dir, "evaluation", "--out")
                    write_json_atomic(record, {
                        "video": plan.video, "driver": plan.driver, "settings": settings, "pairs": len(driver_items),
                        "metrics": {n: _json_floats(v) for n, v in values.items()},
                    })
                else:
                    reused += 1
                per_video.append(values)
            entry = {
                "path": str(path), "videos": len(plans), "reused_videos": reused,
                "pairs": sum(len(p.target_items) for p in plans),
                "metrics": aggregate(per_video, ready_names),
                "skipped": dict(skipped),
                "params": sum(p.numel() for p in model.parameters()),
                "gmacs_per_frame": gmacs_per_frame(model.config),
                "gmacs_per_avatar": gmacs_per_avatar(model.config, uses_enhancer),
                "init_ms": None, "frame_ms": None, "enhancer": uses_enhancer,
            }
            if timing and plans:
                source = _source_of(source_of, plans[0].source_item, device)
                entry["init_ms"] = time_init(model, source.images, source.keypoints, source.masks, uses_enhancer,
                                             *init_runs)
                state = _avatar(model, source, uses_enhancer)
                entry["frame_ms"] = time_frame(model, state, source.keypoints[0], *frame_runs)
            results[label] = entry
            del model
    finally:
        for metric in ready:
            metric.close()

    report = {
        "settings": {
            "data_root": str(root), "split": split, "source_split": source_split, "mode": mode, "metrics": names, "masking": masking,
            "enhance": bool(enhance), "landmarks": landmarks, "weights_dir": str(weights), "batch_size": batch_size,
            "max_videos": max_videos, "fps": rate, "fps_source": rate_source, "device": str(device),
            "timing": {"init": {"warmup": init_runs[0], "runs": init_runs[1]},
                       "frame": {"warmup": frame_runs[0], "runs": frame_runs[1], "backend": "eager", "batch": 1}}
            if timing else None,
            "hardware": hardware(device),
        },
        "models": results,
    }
    claim_folder(out_dir, "evaluation", "--out")
    outputs = {"json": out_dir / "results.json", "markdown": out_dir / "results.md", "plot": None}
    write_json_atomic(outputs["json"], report)
    write_bytes_atomic(outputs["markdown"], markdown_table(report).encode())
    if results:
        outputs["plot"] = plot_quality(report, out_dir / "quality_vs_gmacs.png")
    return {**report, "outputs": {k: (str(v) if v is not None else None) for k, v in outputs.items()}}


def _target_frame(dataset, item: int) -> str:
    video = dataset.videos[dataset.item_video(item)]
    return video.frames[dataset.frame_indices(item)[-1]]


# ============================================================================================ reports
def _fmt(value, digits: int) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    return f"{value:.{digits}f}"


def _fmt_gmacs(value) -> str:
    if value is None:
        return "–"
    return f"{value:.3g}" if value < 10 else f"{value:.1f}"


_DIGITS = {"psnr": 2}


def table_columns(report: dict) -> list[str]:
    """The metric columns: Table 2's four, then the other requested metrics."""
    requested = report["settings"]["metrics"]
    return list(TABLE2_METRICS) + [m for m in requested if m not in TABLE2_METRICS]


def markdown_table(report: dict) -> str:
    """results.md: paper Table 2's layout, one row per model, "–" for what was skipped or not measured."""
    settings, models = report["settings"], report["models"]
    metrics = table_columns(report)
    extra = metrics[len(TABLE2_METRICS):]
    label = lambda m: METRICS[m].label if m in METRICS else m  # noqa: E731
    header = (["Method"] + [label(m) for m in TABLE2_METRICS] + [h for h, _ in TABLE2_FIGURES]
              + [label(m) for m in extra])
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name, entry in models.items():
        cells = [name]
        for m in TABLE2_METRICS:
            cells.append(_fmt((entry["metrics"].get(m) or {}).get("mean"), _DIGITS.get(m, 3)))
        cells += [_fmt_gmacs(entry["gmacs_per_frame"]), _fmt(entry["init_ms"], 1), _fmt(entry["frame_ms"], 1)]
        for m in extra:
            cells.append(_fmt((entry["metrics"].get(m) or {}).get("mean"), _DIGITS.get(m, 3)))
        lines.append("| " + " | ".join(cells) + " |")
    notes = ["“–”: skipped (reason below), not requested, or not measured."]
    skipped: dict[str, str] = {}
    for entry in models.values():
        skipped.update(entry["skipped"])
    for m, reason in skipped.items():
        notes.append(f"{label(m)} skipped: {reason}")
    for name, entry in models.items():
        for m, value in entry["metrics"].items():
            if value["frames"] < entry["pairs"]:
                notes.append(f"{name}: {label(m)} covers {value['frames']} of {entry['pairs']} frames "
                             "(the others could not be scored, e.g. no face detected).")
    pairs = {e["pairs"] for e in models.values()}
    videos = {e["videos"] for e in models.values()}
    fps = settings["fps"]
    fps_text = f"{fps:g} fps" if isinstance(fps, float) else "per-video fps"
    notes.append(
        f"Protocol: {'self' if settings['mode'] == 'self' else 'cross-person'} reenactment on "
        f"{settings['data_root']} ({settings['split']}), {'/'.join(map(str, sorted(videos)))} videos, "
        f"{'/'.join(map(str, sorted(pairs)))} pairs: the first frame"
        f"{' of the same video in ' + repr(settings['source_split']) if settings.get('source_split') else ''}"
        f" is the source, targets at 1 FPS "
        f"({fps_text}, from {settings['fps_source']}); masking {settings['masking']}; texture enhancer "
        f"{'on' if settings['enhance'] else 'off'}; NME landmarks {settings['landmarks']}."
    )
    hw = settings["hardware"]
    timing = settings["timing"]
    on_gpu = "gpu" in hw and settings["device"].startswith("cuda")
    where = f"device {settings['device']} ({hw['gpu'] if on_gpu else hw['cpu']})"
    if timing:
        init, frame = timing["init"], timing["frame"]
        notes.append(
            f"Timing: median of {init['runs']} runs after {init['warmup']} warm-up (init: personalize, plus the "
            f"texture enhancer where used) and of {frame['runs']} after {frame['warmup']} (per frame: baked eager "
            f"renderer, batch 1); {where}, torch {hw['torch']}, {hw['torch_threads']} thread{'s' if hw['torch_threads'] != 1 else ''}."
        )
    else:
        notes.append(f"Timing not measured (--no-timing); {where}.")
    notes.append("GMACs: per frame, keypoints MLP + inference generator, as `bilayer info` counts them.")
    return "\n".join(lines) + "\n\n" + "\n".join(f"- {n}" for n in notes) + "\n"


def plot_quality(report: dict, path: Path) -> Path | None:
    """Quality against GMACs per frame (paper Fig. 4): one panel per metric with values, log-x, labelled points."""
    try:
        from matplotlib.figure import Figure  # no pyplot: the Agg canvas, no global backend switch
    except ImportError:
        log.warning("matplotlib is not installed; %s not written", path)
        return None
    models = report["models"]
    panels = [m for m in table_columns(report)
              if any((e["metrics"].get(m) or {}).get("mean") is not None for e in models.values())]
    if not panels:
        log.warning("no quality metric has a value; %s not written", path)
        return None
    fig = Figure(figsize=(3.6 * len(panels), 3.2))
    axes = fig.subplots(1, len(panels), squeeze=False)
    for ax, m in zip(axes[0], panels):
        for i, (name, entry) in enumerate(models.items()):
            value = (entry["metrics"].get(m) or {}).get("mean")
            if value is None:
                continue
            ax.scatter([entry["gmacs_per_frame"]], [value], s=30, color=f"C{i % 10}")  # one colour per model
            ax.annotate(name, (entry["gmacs_per_frame"], value), textcoords="offset points", xytext=(4, 4),
                        fontsize=8)
        ax.set_xscale("log")
        ax.set_xlabel("GMACs per frame")
        ax.set_title(METRICS[m].label if m in METRICS else m)
        ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    return path
