"""`bilayer evaluate`: the paper's test protocol on a tiny SynthHeads test split (2 people × 2 videos, 64 px) with
tiny random-weight models. LPIPS and CSIM weights are absent here (the project's cache folder is pointed at an
empty folder, hiding the ImageNet networks `make install` converts; tests/test_pretrained.py evaluates with them),
so those metrics are checked to be skipped with a sentence naming their file; NME runs, but MediaPipe may find no
face at 64 px, so only its bookkeeping is asserted (frames covered ≤ pairs, NaN frames left out)."""

from __future__ import annotations

import json
import logging
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from bilayer import BilayerModel, preset
from bilayer.cli import main
from bilayer.data.dataset import VideoDataset
from bilayer.structures import collate
from bilayer.keypoints import denormalize_keypoints
from bilayer.eval.complexity import complexity
from bilayer.eval.evaluate import aggregate, dataset_fps, evaluate, model_names
from bilayer.eval.metrics import psnr, ssim
from bilayer.eval.registry import EvaluationError, LandmarkPairs, MetricInputs, check_metric_names
from bilayer.nn.image import apply_mask

from .conftest import assert_user_error_text, build_model, run_main, without_pretrained

TABLE2_HEADER = "| Method | LPIPS↓ | SSIM↑ | CSIM↑ | NME↓ | GMACs↓ | Init. (ms)↓ | Inf. (ms)↓ |"
FAST_TIMING = {"init_runs": (0, 1), "frame_runs": (1, 2)}


@pytest.fixture(autouse=True)
def _no_imagenet_networks(monkeypatch, tmp_path_factory):
    without_pretrained(monkeypatch, tmp_path_factory.mktemp("empty-cache"))


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict:
    from bilayer.synth import generate

    root = tmp_path_factory.mktemp("evaluate")
    data = root / "synth"
    # 27 frames at 25 fps: the source (frame 0) and one 1-FPS target (frame 25) per video.
    generate(data, identities=3, videos_per_identity=2, frames=27, size=64, seed=0, test_identities=2, progress=False)
    build_model(preset("tiny"), seed=0).save_pretrained(root / "runs" / "a" / "model")
    build_model(preset("tiny"), seed=1).save_pretrained(root / "b")
    weights = root / "no-weights"
    weights.mkdir()
    pairs = len(VideoDataset(data, "test", 64, 1, 1, "test", fps=25.0))
    return {"root": root, "data": data, "a": root / "runs" / "a" / "model", "b": root / "b", "weights": weights,
            "pairs": pairs}


def direct_scores(model_dir: Path, data: Path, source_split: str | None = None) -> dict[str, float]:
    """SSIM and PSNR means recomputed here, pair by pair, under the protocol and the reference masking; with
    ``source_split`` each avatar comes from the first frame of the same-named video in that split."""
    model = BilayerModel.from_pretrained(model_dir).eval()
    dataset = VideoDataset(data, "test", model.config.image_size, 1, 1, "test", fps=25.0)
    sources, first = dataset, {}
    if source_split is not None:
        sources = VideoDataset(data, source_split, model.config.image_size, 1, 1, "test", fps=1.0)
        for i in range(len(sources)):
            first.setdefault(sources.videos[sources.item_video(i)].name, i)
    values: dict[str, list[float]] = {"ssim": [], "psnr": []}
    for i in range(len(dataset)):
        b = collate([dataset[i]])
        s = b if source_split is None else collate([sources[first[dataset.videos[dataset.item_video(i)].name]]])
        with torch.no_grad():
            state = model.enhance(model.personalize(s.source_images, s.source_keypoints, s.source_masks,
                                                    s.source_stickmen))
            render = model.render(state, b.target_keypoints)
        pred = apply_mask(render.image[:, 0].clamp(-1, 1), render.mask[:, 0])
        target = apply_mask(b.target_images[:, 0], b.target_masks[:, 0])
        values["ssim"].append(float(ssim(pred, target)))
        values["psnr"].append(float(psnr(pred, target)))
    return {k: float(np.mean(v)) for k, v in values.items()}


# ============================================================================================ end to end
def test_two_models_table_plot_and_direct_recomputation(files, tmp_path):
    out = tmp_path / "eval"
    report = evaluate([files["a"], files["b"]], files["data"], out, weights_dir=files["weights"], progress=False,
                      **FAST_TIMING)
    assert files["pairs"] == 4
    saved = json.loads((out / "results.json").read_text())
    assert set(saved["models"]) == {"a", "b"} and saved["models"] == json.loads(json.dumps(report["models"]))

    lines = (out / "results.md").read_text().splitlines()
    assert lines[0].startswith(TABLE2_HEADER)
    rows = [ln for ln in lines[2:] if ln.startswith("| ")]
    assert [r.split(" | ")[0] for r in rows] == ["| a", "| b"]
    assert all(r.split(" | ")[1] == "–" for r in rows)  # LPIPS skipped: "–"
    assert any("vgg16-397923af.pth" in ln for ln in lines) and any("insight_face.pth" in ln for ln in lines)
    png = out / "quality_vs_gmacs.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    counted = complexity(preset("tiny"))
    gmacs = counted["macs_per_frame"] / 1e9
    for name in ("a", "b"):
        entry = saved["models"][name]
        assert entry["pairs"] == files["pairs"] and entry["videos"] == 4
        assert "vgg16-397923af.pth" in entry["skipped"]["lpips"] and "insight_face.pth" in entry["skipped"]["csim"]
        assert entry["metrics"]["ssim"]["frames"] == entry["metrics"]["psnr"]["frames"] == files["pairs"]
        for nme in ("nme", "nme_released"):
            assert 0 <= entry["metrics"][nme]["frames"] <= files["pairs"]
        assert entry["gmacs_per_frame"] == pytest.approx(gmacs)
        assert entry["gmacs_per_avatar"] == pytest.approx(
            counted["macs_per_avatar"] / 1e9 if entry["enhancer"] else counted["macs_per_avatar_breakdown"]["personalize"] / 1e9)
        assert entry["init_ms"] > 0 and entry["frame_ms"] > 0 and entry["params"] > 0
        direct = direct_scores(Path(entry["path"]), files["data"])
        assert entry["metrics"]["ssim"]["mean"] == pytest.approx(direct["ssim"], abs=1e-5)
        assert entry["metrics"]["psnr"]["mean"] == pytest.approx(direct["psnr"], abs=1e-3)
        assert len(list((out / "videos" / name).glob("*.json"))) == 4


def test_cli_prints_skipped_metrics_table_and_paths(files, tmp_path, capsys):
    code, out, err = run_main(
        main, capsys, "evaluate", "--model", str(files["a"]), "--data", str(files["data"]), "--out", str(tmp_path / "o"),
        "--weights-dir", str(files["weights"]), "--metrics", "lpips,csim,ssim", "--no-timing", "--no-progress",
    )
    assert code == 0, err
    skip_lines = [ln for ln in out.splitlines() if ln.startswith("skipped ")]
    assert len(skip_lines) == 2
    assert "lpips" in skip_lines[0] and "vgg16-397923af.pth" in skip_lines[0]
    assert "csim" in skip_lines[1] and "insight_face.pth" in skip_lines[1]
    assert TABLE2_HEADER in out
    row = next(ln for ln in out.splitlines() if ln.startswith("| a |"))
    cells = row.split(" | ")
    assert cells[1] == "–" and cells[2] != "–" and cells[6] == "–"  # LPIPS skipped, SSIM measured, no timing
    assert "results.json" in out.splitlines()[-1] and "results.md" in out.splitlines()[-1]


# ============================================================================================ resume
def test_resume_reuses_per_video_files_and_recomputes_on_new_settings(files, tmp_path):
    out = tmp_path / "eval"
    common = dict(metrics=("ssim", "psnr"), weights_dir=files["weights"], timing=False, progress=False)
    first = evaluate([files["a"]], files["data"], out, **common)
    records = sorted((out / "videos" / "a").glob("*.json"))
    assert len(records) == 4 and first["models"]["a"]["reused_videos"] == 0
    mtimes = {p: p.stat().st_mtime_ns for p in records}

    edited = json.loads(records[0].read_text())
    old = edited["metrics"]["ssim"][0]
    edited["metrics"]["ssim"][0] = old + 0.4  # a reused file is read, not recomputed
    records[0].write_text(json.dumps(edited))
    mtimes[records[0]] = records[0].stat().st_mtime_ns

    second = evaluate([files["a"]], files["data"], out, **common)
    assert second["models"]["a"]["reused_videos"] == 4
    assert {p: p.stat().st_mtime_ns for p in records} == mtimes
    expected = first["models"]["a"]["metrics"]["ssim"]["mean"] + 0.4 / files["pairs"]
    assert second["models"]["a"]["metrics"]["ssim"]["mean"] == pytest.approx(expected, abs=1e-6)

    third = evaluate([files["a"]], files["data"], out, masking="gt", **common)  # another setting: recomputed
    assert third["models"]["a"]["reused_videos"] == 0
    assert json.loads(records[0].read_text())["settings"]["masking"] == "gt"
    assert json.loads(records[0].read_text())["metrics"]["ssim"][0] != pytest.approx(old + 0.4)

    fourth = evaluate([files["a"]], files["data"], out, masking="gt", **{**common, "metrics": ("ssim",)})
    assert fourth["models"]["a"]["reused_videos"] == 4  # a subset of the stored metrics: still reused


def test_resume_ignores_records_of_another_dataset_and_malformed_records(files, tmp_path):
    """Records name their dataset: another dataset whose videos and frames have the same names (here a copy) is
    evaluated afresh, not read from the first one's files; a record with a non-number value is recomputed."""
    out = tmp_path / "eval"
    common = dict(metrics=("ssim",), weights_dir=files["weights"], timing=False, progress=False, max_videos=1)
    evaluate([files["a"]], files["data"], out, **common)
    other = tmp_path / "copy"
    shutil.copytree(files["data"], other)
    assert evaluate([files["a"]], other, out, **common)["models"]["a"]["reused_videos"] == 0
    assert evaluate([files["a"]], other, out, **common)["models"]["a"]["reused_videos"] == 1

    (record,) = (out / "videos" / "a").glob("*.json")
    edited = json.loads(record.read_text())
    edited["metrics"]["ssim"][0] = "0.5"
    record.write_text(json.dumps(edited))
    again = evaluate([files["a"]], other, out, **common)
    assert again["models"]["a"]["reused_videos"] == 0
    assert isinstance(json.loads(record.read_text())["metrics"]["ssim"][0], float)


# ============================================================================================ cross-person
def test_cross_mode_skips_reference_metrics_and_drives_with_another_person(files, tmp_path):
    out = tmp_path / "cross"
    report = evaluate([files["a"]], files["data"], out, mode="cross", weights_dir=files["weights"], timing=False,
                      progress=False)
    entry = report["models"]["a"]
    for name in ("lpips", "ssim", "psnr", "lpips_alex"):
        assert "cross-person" in entry["skipped"][name]
    assert "insight_face.pth" in entry["skipped"]["csim"]
    assert set(entry["metrics"]) - {"csim_dlib"} == {"nme", "nme_released"}  # csim_dlib runs where dlib is installed
    assert 0 <= entry["metrics"]["nme"]["frames"] <= entry["pairs"] == files["pairs"]
    for record in (out / "videos" / "a").glob("*.json"):
        r = json.loads(record.read_text())
        assert r["driver"] is not None and r["driver"].split("/")[0] != r["video"].split("/")[0]
    md = (out / "results.md").read_text()
    assert "cross-person reenactment" in md and "SSIM↑ skipped" in md


# ============================================================================================ user errors
def test_cli_errors_are_one_sentence(files, tmp_path, capsys, caplog):
    base = ["evaluate", "--data", str(files["data"]), "--out", str(tmp_path / "o"), "--no-progress", "--no-timing"]
    code, _, err = run_main(main, capsys, *base, "--model", str(tmp_path / "missing"))
    assert code == 2
    assert_user_error_text(code, err, str(tmp_path / "missing"))
    code, _, err = run_main(main, capsys, *base, "--model", str(files["a"]), "--metrics", "ssim,fid")
    assert_user_error_text(code, err, "unknown metric 'fid'")
    code, _, err = run_main(main, capsys, "evaluate", "--model", str(files["a"]), "--data", str(tmp_path / "nodata"),
                            "--out", str(tmp_path / "o"))
    assert_user_error_text(code, err, "dataset root")
    code, _, err = run_main(main, capsys, *base, "--model", str(files["a"]), "--max-videos", "1", "--mode", "cross")
    assert_user_error_text(code, err, "at least two people")
    code, _, err = run_main(main, capsys, *base, "--model", str(files["a"]), "--device", "gpu0")
    assert_user_error_text(code, err, "unknown device 'gpu0'")
    code, _, err = run_main(main, capsys, *base, "--model", str(files["a"]), "--fps", "inf")
    assert_user_error_text(code, err, "fps must be a positive number")
    if not torch.cuda.is_available():
        code, _, err = run_main(main, capsys, *base, "--model", str(files["a"]), "--device", "cuda")
        assert_user_error_text(code, err, "CUDA is not available")
    for option, value, needle in (("--batch-size", "0", "batch size must be at least 1, got 0"),
                                  ("--max-videos", "0", "max videos must be at least 1, got 0")):
        code, _, err = run_main(main, capsys, *base, "--model", str(files["a"]), option, value)
        assert_user_error_text(code, err, needle)
    code, _, err = run_main(main, capsys, *base, "--model", str(files["a"]), "--frame-runs", "1", "0")
    assert_user_error_text(code, err, "per-frame timing runs", "(1, 0)")
    weights_file = tmp_path / "weights.pth"
    weights_file.write_bytes(b"x")
    code, _, err = run_main(main, capsys, *base, "--model", str(files["a"]), "--weights-dir", str(weights_file))
    assert_user_error_text(code, err, f"weights folder {weights_file} is a file")
    # A dataset root without the split: the dataset's sentence alone, no frame-rate warning before it.
    (tmp_path / "empty").mkdir()
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="bilayer.eval"):
        code, _, err = run_main(main, capsys, "evaluate", "--model", str(files["a"]), "--data", str(tmp_path / "empty"),
                                "--out", str(tmp_path / "o"), "--no-progress", "--no-timing")
    assert_user_error_text(code, err, f"dataset folder {tmp_path / 'empty' / 'imgs' / 'test'} does not exist")
    assert not caplog.records
    assert not (tmp_path / "o").exists()


def test_default_frame_rate_is_announced_once_the_dataset_reads(files, tmp_path, caplog):
    data = tmp_path / "no-metadata"
    shutil.copytree(files["data"], data)
    (data / "synth.json").unlink()
    with caplog.at_level(logging.WARNING, logger="bilayer.eval"):
        report = evaluate([files["a"]], data, tmp_path / "o", metrics=("psnr",), weights_dir=files["weights"],
                          timing=False, progress=False, max_videos=1)
    assert report["settings"]["fps"] == 25.0 and report["settings"]["fps_source"] == "default"
    assert [r.getMessage() for r in caplog.records if "assuming 25 fps" in r.getMessage()] == [
        f"no frame rate in the dataset's metadata (synth.json or .preprocess/ markers) under {data}; assuming 25 fps "
        "(pass --fps to set it)"]


# ============================================================================================ pieces
def test_model_names():
    paths = [Path("runs/x/model"), Path("other/x/model"), Path("checkpoints/y"), Path("z/y")]
    assert model_names(paths) == ["x", "x-2", "y", "y-2"]


def test_frame_rate_from_metadata(tmp_path, caplog):
    synth = tmp_path / "s"
    synth.mkdir()
    (synth / "synth.json").write_text(json.dumps({"fps": 30.0}))
    assert dataset_fps(synth, "test") == (30.0, "synth.json")

    pre = tmp_path / "p"
    for video in ("A/v1", "A/v2", "B/v1"):
        (pre / "imgs" / "test" / video / "seq").mkdir(parents=True)
    markers = pre / ".preprocess" / "test"
    (markers / "A" / "v1").mkdir(parents=True)
    (markers / "A" / "v1" / "seq.json").write_text(json.dumps({"source_fps": 30.0, "settings": {"fps": None}}))
    (markers / "A" / "v2").mkdir(parents=True)
    (markers / "A" / "v2" / "seq.json").write_text(json.dumps({"source_fps": 50.0, "settings": {"fps": 10.0}}))
    with caplog.at_level(logging.WARNING, logger="bilayer.eval"):
        rates, source = dataset_fps(pre, "test")
    assert rates == {"A/v1": 30.0, "A/v2": 10.0, "B/v1": 25.0} and "markers" in source
    assert "1 of 3 videos" in caplog.text

    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="bilayer.eval"):
        assert dataset_fps(tmp_path / "nothing", "test") == (25.0, "default")
    assert not caplog.records  # evaluate says it once the dataset has been read (see above)

    # Valid JSON of another shape is metadata without a frame rate, not a crash.
    (synth / "synth.json").write_text("[30]")
    (markers / "A" / "v1" / "seq.json").write_text(json.dumps({"source_fps": 30.0, "settings": ["fps", 10]}))
    (markers / "A" / "v2" / "seq.json").write_text("[]")
    assert dataset_fps(synth, "test") == (25.0, "default")
    rates, _ = dataset_fps(pre, "test")
    assert rates == {"A/v1": 30.0, "A/v2": 25.0, "B/v1": 25.0}


def test_metric_names_are_checked_and_deduplicated():
    assert check_metric_names(["psnr", "ssim", "psnr"]) == ["psnr", "ssim"]
    with pytest.raises(EvaluationError, match="unknown metric 'fid'; valid metrics: lpips, ssim, psnr, csim, nme"):
        check_metric_names(["ssim", "fid"])
    with pytest.raises(EvaluationError, match="no metric given"):
        check_metric_names([])


def test_aggregate_leaves_out_nan_frames():
    per_video = [{"m": [1.0, math.nan]}, {"m": [3.0]}, {"m": [math.nan]}]
    assert aggregate(per_video, ["m", "absent"]) == {"m": {"mean": 2.0, "frames": 2},
                                                     "absent": {"mean": None, "frames": 0}}


def test_nme_detects_once_per_batch_and_marks_missing_faces(monkeypatch):
    from bilayer.eval.nme import nme_both

    pairs = LandmarkPairs("mediapipe", Path("."), torch.device("cpu"))
    rng = np.random.default_rng(0)
    faces = {0: rng.uniform(10, 50, (68, 2)).astype(np.float32), 2: rng.uniform(10, 50, (68, 2)).astype(np.float32)}
    calls = []

    def fake_detect(images):  # image 1 has no face in the prediction; the reference is the face plus 1 px
        calls.append(images)
        if len(calls) % 2:  # prediction
            return [faces.get(0), None, faces.get(2)]
        return [faces[0] + 1, faces[2] * 0 + 20, faces[2] + 1]

    monkeypatch.setattr(pairs, "detect", fake_detect)
    images, target = torch.zeros(3, 3, 16, 16), torch.ones(3, 3, 16, 16)
    batch = MetricInputs(images, target, torch.zeros(3, 68, 2), images, torch.zeros(3, 68, 2))
    values = pairs.values(batch)
    assert pairs.values(batch) is values and len(calls) == 2  # nme and nme_released share one detection pass
    assert calls[0] is images and calls[1] is target  # self mode: prediction against the target
    assert math.isnan(values["nme"][1]) and math.isnan(values["nme_released"][1])
    expected = nme_both(np.stack([faces[0], faces[2]]), np.stack([faces[0] + 1, faces[2] + 1]))
    torch.testing.assert_close(values["nme"][[0, 2]], expected["nme"].float())
    torch.testing.assert_close(values["nme"][[0, 2]], 10 * values["nme_released"][[0, 2]])
    driver = torch.full((3, 3, 16, 16), 0.5)
    cross = pairs.values(MetricInputs(images, None, torch.zeros(3, 68, 2), target, torch.zeros(3, 68, 2),
                                      driver=driver))
    assert len(calls) == 4 and calls[3] is driver  # a new batch: detected again; cross mode: against the driver
    torch.testing.assert_close(cross["nme"], values["nme"], equal_nan=True)
    pairs.close()


def test_csim_and_lpips_plumbing_with_random_networks(files):
    """The weight-file-free part of CSIM and LPIPS (random networks, never used for results): CSIM in cross mode
    compares the prediction (driver keypoints) with the source aligned with *its own* keypoints; with the source
    being the target moved inside a larger canvas (keypoints moved with it), it equals self-mode CSIM."""
    from bilayer.eval.arcface import IRSE50
    from bilayer.eval.lpips import LPIPS
    from bilayer.eval.registry import CSIMMetric, LPIPSMetric

    torch.manual_seed(0)
    dataset = VideoDataset(files["data"], "test", 64, 1, 1, "test", fps=25.0)
    b = collate([dataset[0], dataset[2]])
    target, kp = b.target_images[:, 0], denormalize_keypoints(b.target_keypoints[:, 0], 64)
    pred = (target + 0.2 * torch.randn_like(target)).clamp(-1, 1)
    csim_metric, lpips_metric = CSIMMetric(), LPIPSMetric()
    csim_metric.net, csim_metric.device = IRSE50().eval(), torch.device("cpu")
    lpips_metric.net, lpips_metric.device = LPIPS().eval(), torch.device("cpu")
    self_batch = MetricInputs(pred, target, kp, target, kp)
    moved = torch.nn.functional.pad(target, (7, 1, 3, 5))  # 72 × 72, the target's content 7 px right, 3 px down
    moved_kp = kp + torch.tensor([7.0, 3.0])
    cross_batch = MetricInputs(pred, None, kp, moved, moved_kp, driver=target)
    same = csim_metric.compute(self_batch)
    assert same.shape == (2,) and torch.isfinite(same).all()
    torch.testing.assert_close(csim_metric.compute(cross_batch), same, atol=1e-5, rtol=0)
    wrongly_aligned = csim_metric.compute(MetricInputs(pred, None, kp, moved, kp, driver=target))
    assert (wrongly_aligned - same).abs().max() > 1e-3  # the source's own keypoints matter
    with torch.no_grad():
        expected = lpips_metric.net(pred, target).reshape(-1)
    torch.testing.assert_close(lpips_metric.compute(self_batch), expected)


def test_source_split_makes_each_avatar_from_the_same_video_in_another_split(files, tmp_path, capsys):
    """A person's own video split in time: the avatar comes from the first frame of the same-named sequence in the
    source split (here an "early" split holding frames 10… of each test video), the targets from the test split."""
    import shutil

    data = tmp_path / "data"
    shutil.copytree(files["data"], data)
    for kind in ("imgs", "keypoints", "segs"):
        for f in sorted((data / kind / "test").rglob("*.*")):
            if int(f.stem) >= 10:
                dest = data / kind / "early" / f.relative_to(data / kind / "test")
                dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy(f, dest)
    report = evaluate([files["a"]], data, tmp_path / "eval", metrics=["psnr"], weights_dir=files["weights"],
                      progress=False, timing=False, source_split="early")
    assert report["settings"]["source_split"] == "early"
    assert "the first frame of the same video in 'early' is the source" in (tmp_path / "eval" / "results.md").read_text()

    records = [json.loads(p.read_text()) for p in (tmp_path / "eval" / "videos" / "a").glob("*.json")]
    assert len(records) == 4
    assert all(r["settings"]["source"].startswith(f"early/{r['video']}/") and
               r["settings"]["source"].endswith("/000010") for r in records)
    direct = direct_scores(files["a"], data, source_split="early")["psnr"]
    assert report["models"]["a"]["metrics"]["psnr"]["mean"] == pytest.approx(direct, abs=1e-3)
    plain = evaluate([files["a"]], data, tmp_path / "plain", metrics=["psnr"], weights_dir=files["weights"],
                     progress=False, timing=False)
    assert plain["models"]["a"]["metrics"]["psnr"]["mean"] != pytest.approx(direct, abs=1e-3)

    base = ["evaluate", "--model", str(files["a"]), "--data", str(data), "--out", str(tmp_path / "o"), "--no-progress",
            "--no-timing", "--metrics", "psnr", "--weights-dir", str(files["weights"])]
    code, _, err = run_main(main, capsys, *base, "--source-split", "train")
    assert_user_error_text(code, err, "has no sequence of the same name in", "bilayer preprocess --test-tail")
    code, _, err = run_main(main, capsys, *base, "--source-split", "early", "--mode", "cross")
    assert_user_error_text(code, err, "a source split applies to self mode")
    code, _, err = run_main(main, capsys, *base, "--source-split", "test")
    assert_user_error_text(code, err, "the source split is the evaluated split 'test'")
    assert not (tmp_path / "o").exists()
