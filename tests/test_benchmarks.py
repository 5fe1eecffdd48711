"""The speed benchmarks run end to end and write the JSON they promise (tiny model, 64 px, minimal timing windows:
these check the scripts, not the machine's speed, which no test asserts)."""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from bilayer import preset

from .conftest import build_model, material

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


def bench_module(name: str):
    """A benchmark script imported as a module (the scripts import each other by name from benchmarks/)."""
    if str(BENCH) not in sys.path:
        sys.path.insert(0, str(BENCH))
    return importlib.import_module(name)


def run_benchmark(script: str, *args: str) -> str:
    proc = subprocess.run([sys.executable, str(BENCH / script), *args], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr[-3000:]}"
    return proc.stdout


@pytest.mark.slow
def test_render_benchmark(tmp_path):
    out = run_benchmark("render.py", "--presets", "tiny", "--image-size", "64", "--backends", "eager", "bf16", "onnx",
                        "--quick", "--out", str(tmp_path))
    report = json.loads((tmp_path / "render.json").read_text())
    assert f"wrote {tmp_path / 'render.json'}" in out
    (tiny,) = report["results"]
    assert tiny["preset"] == "tiny" and tiny["image_size"] == 64 and set(tiny["backends"]) == {"eager", "bf16", "onnx"}
    for backend, entry in tiny["backends"].items():
        assert "error" not in entry, entry
        # the paired ceiling is a real measurement of this run, and the figures follow from the latency
        assert entry["ceiling_gflops"] > 1 and entry["ms"] > 0 and abs(entry["fps"] * entry["ms"] - 1000) < 1e-6
        assert entry["fraction_of_ceiling"] == pytest.approx(entry["gflops"] / entry["ceiling_gflops"])
        assert entry["executed_gflops"] < entry["gflops"]  # baking runs fewer MACs than the network as trained
    assert tiny["backends"]["bf16"]["psnr_vs_fp32"] > 40 and tiny["backends"]["onnx"]["psnr_vs_fp32"] > 80
    bound = tiny["layer_bound"]  # the convolutions alone bound the frame time from below
    assert bound["layers"] >= 7 and bound["max_fps"] == pytest.approx(1000 / bound["conv_ms"])
    assert bound["conv_ms"] < tiny["backends"]["eager"]["ms"] * 3
    stream = tiny["stream"]
    assert stream["one_worker_fps"] > 0 and stream["two_workers_fps"] > 0
    assert stream["speedup"] == pytest.approx(stream["two_workers_fps"] / stream["one_worker_fps"])
    fastest = tiny["stream_fastest"]  # the fastest timed backend besides eager and onnx streams too
    assert fastest["backend"] == "bf16" and fastest["two_workers_fps"] > 0 and "stream  bf16" in out
    assert tiny["fold_upsampling"]["folded_ms"] > 0 and report["ceiling"]["float32"]["gflops"] > 1
    tail = tiny["tail"]  # the heads and tail alone, native against oneDNN + PyTorch (the CI machine has g++)
    assert tail["native_ms"] > 0 and tail["speedup"] == pytest.approx(tail["pytorch_ms"] / tail["native_ms"])
    ab = tiny["bf16_vs_eager"]  # bf16 and eager timed in alternation with each other
    assert ab["speedup"] == pytest.approx(ab["eager_ms"] / ab["bf16_ms"]) and "bf16    " in out
    from bilayer.hardware import cpu_info

    assert report["machine"] == json.loads(json.dumps(cpu_info()))  # which kind of CPU the figures belong to
    assert report["machine"]["cpu"] and f"native bfloat16: {'yes' if cpu_info()['native_bfloat16'] else 'no'}" in out


@pytest.mark.slow
def test_native_benchmark(tmp_path):
    out = run_benchmark("native.py", "--presets", "tiny", "--image-size", "64", "--backends", "eager", "--rounds", "2",
                        "--quick", "--out", str(tmp_path))
    report = json.loads((tmp_path / "native.json").read_text())
    assert f"wrote {tmp_path / 'native.json'}" in out and out.count("round ") == 2
    (tiny,) = report["results"]
    entry = tiny["backends"]["eager"]
    assert len(entry["rounds"]) == 2 and entry["max_abs_difference"] < 1e-4  # the same frames, float rounding apart
    for r in entry["rounds"]:
        assert r["native_ms"] > 0 and r["speedup"] == pytest.approx(r["without_ms"] / r["native_ms"])
    assert report["ceiling"]["gflops"] > 1 and report["ceiling_after"]["gflops"] > 1


@pytest.mark.slow
def test_packing_benchmark(tmp_path):
    out = run_benchmark("packing.py", "--presets", "tiny", "--image-size", "64", "--backends", "eager", "bf16",
                        "--rounds", "2", "--quick", "--out", str(tmp_path))
    report = json.loads((tmp_path / "packing.json").read_text())
    assert f"wrote {tmp_path / 'packing.json'}" in out and out.count("round ") == 4
    (tiny,) = report["results"]
    assert tiny["backends"]["eager"]["max_abs_difference"] < 1e-4  # packing changes float rounding only
    assert tiny["backends"]["bf16"]["max_abs_difference"] < 0.1  # bfloat16 convolutions, ordered differently
    for backend in ("eager", "bf16"):
        for r in tiny["backends"][backend]["rounds"]:
            assert r["packed_ms"] > 0 and r["speedup"] == pytest.approx(r["plain_ms"] / r["packed_ms"])


@pytest.mark.slow
def test_keypoint_stream_benchmark(tmp_path):
    from .conftest import material

    out = run_benchmark("keypoint_stream.py", "--frames", "20", "--driver", str(material("franck.mp4")), "--photo",
                        str(material("grace_hopper.jpg")), "--out", str(tmp_path / "ks.json"))
    report = json.loads((tmp_path / "ks.json").read_text())
    assert f"wrote {tmp_path / 'ks.json'}" in out and report["frames"] == 20
    stream = report["keypoint_stream"]
    assert stream["bytes_per_frame"] == 284 and stream["psnr_vs_exact_keypoints_db"]["min"] > 50
    for ladder in report["h264"].values():
        rates = [v["kbit_per_second"] for v in ladder]
        assert rates == sorted(rates, reverse=True) and all(v["psnr_db"] > 25 for v in ladder)


@pytest.mark.slow
def test_receiver_benchmark(tmp_path):
    import shutil

    from bilayer.serve.app import ort_web_dir

    if not (shutil.which("chromium") and shutil.which("chromedriver") and (ort_web_dir() / "ort.min.js").is_file()):
        pytest.skip("chromium, chromium-driver or onnxruntime-web is missing (`make test` installs them)")
    from .conftest import material

    out = run_benchmark("receiver.py", "--presets", "tiny", "--image-size", "64", "--frames", "10", "--photo",
                        str(material("grace_hopper.jpg")), "--out", str(tmp_path / "receiver.json"))
    report = json.loads((tmp_path / "receiver.json").read_text())
    tiny = report["results"]["tiny"]
    assert f"wrote {tmp_path / 'receiver.json'}" in out and tiny["image_size"] == 64
    assert tiny["browser_fps"] > 0 and tiny["python_onnxruntime_fps"] > 0 and "wasm" in tiny["browser_backend"]


@pytest.mark.slow
def test_live_benchmark(tmp_path):
    from .conftest import material

    out = run_benchmark("live.py", "--presets", "tiny", "--image-size", "64", "--backends", "auto", "eager",
                        "--seconds", "1", "--rounds", "2", "--driver", str(material("franck.mp4")), "--photo",
                        str(material("grace_hopper.jpg")), "--out", str(tmp_path / "live.json"))
    report = json.loads((tmp_path / "live.json").read_text())
    assert f"wrote {tmp_path / 'live.json'}" in out and out.count("round ") == 2 * len(report["summary"])
    for name, s in report["summary"].items():
        assert name.startswith("tiny ") and s["fps"] > 0 and s["latency_p95_ms"] >= s["latency_median_ms"] > 0
        assert 0 <= s["dropped_fraction"] < 1 and isinstance(s["meets_25fps_p95_100ms"], bool)
    assert all(len(runs) == 2 for runs in report["runs"].values()) and report["rate"] == 30.0


def test_animate_benchmark(tmp_path):
    run_benchmark("animate.py", "--preset", "tiny", "--image-size", "64", "--frames", "6", "--repeat", "2",
                  "--backends", "eager", "--landmarks", "file", "mediapipe", "--workers", "1", "2",
                  "--driver-faces", "1", "2", "--out", str(tmp_path))
    report = json.loads((tmp_path / "animate.json").read_text())
    assert report["frames_short"] == 6 and report["frames_long"] == 12
    runs = {(r["landmarks"], r["length"], r["workers"], r.get("driver_faces")): r for r in report["runs"]}
    assert set(runs) == {("file", "short", 1, None), ("file", "short", 2, None), ("file", "long", 1, None),
                         ("file", "long", 2, None), *(("mediapipe", "short", w, f) for w in (1, 2) for f in (1, 2))}
    for (_, length, workers, _), r in runs.items():
        assert "error" not in r, r
        assert r["frames"] == (6 if length == "short" else 12) and r["workers"] == workers and r["lost"] == 0
        assert r["threads_per_worker"] == max(1, r["threads"] // workers) and r["peak_rss_mb"] > 50
    for workers in (1, 2):
        summary = report["summary"][f"eager, workers {workers}"]
        assert summary["memory_flat"] and "fps_target" not in summary  # the 25 frames/s target is medium's
        by_faces = summary["fps_mediapipe_by_driver_faces"]  # MediaPipe following one face, then two
        assert summary["fps_mediapipe"] == by_faces["1"] == runs["mediapipe", "short", workers, 1]["fps"]
        assert by_faces["2"] == runs["mediapipe", "short", workers, 2]["fps"]


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_int8_calibration_benchmark(tmp_path):
    out = run_benchmark("int8_calibration.py", "--drivers", "28", "--frames", "6", "--out", str(tmp_path))
    report = json.loads((tmp_path / "int8_calibration.json").read_text())
    assert f"wrote {tmp_path / 'int8_calibration.json'}" in out
    track, video = report["results"]
    assert track["driver"] == video["driver"] == 28 and track["frames"] == video["frames"] == 6
    assert (track["kind"], video["kind"]) == ("keypoints", "tracked video")
    assert track["driver_poses"] == 6 and video["driver_poses"] == 6 and video["spread_poses_s"] > 0
    for entry, names in ((track, ("photo", "photo_and_driver")),
                         (video, ("photo_and_first_frames", "photo_and_driver"))):
        for name in names:  # quantized (not float32's frames), and close to them
            r = entry[name]
            assert 30 < r["worst_db"] <= min(r["p5_db"], r["mean_db"]) and r["mean_db"] < 90


@pytest.mark.slow
def test_train_benchmark(tmp_path):
    out = run_benchmark("train.py", "--quick", "--out", str(tmp_path))
    report = json.loads((tmp_path / "train_quick.json").read_text())
    assert set(report["arms"]) == {"current", "fp32"}
    for arm in report["arms"].values():
        assert arm["it_per_s"] > 0 and arm["phases_ms"]["generator"] > 0 and arm["phases_ms"]["backward"] > 0
    flops = report["flops_per_iteration"]
    assert flops["total"] == flops["generator_forward"] + flops["losses_forward"] + flops["backward"] > 1e9
    assert report["achieved_gflops"] == pytest.approx(flops["total"] * report["arms"]["current"]["it_per_s"] / 1e9)
    assert 0 < report["fraction_of_ceiling"]["float32"] and "GFLOP/s" in out


@pytest.mark.slow
def test_learning_benchmark(tmp_path):
    """The learning proof end to end on a tiny model: data with cross-person pairs, base, enhancer and one ablation
    trained, then every table, the targets, the curve and the picture grid."""
    data = tmp_path / "data"
    subprocess.run([sys.executable, "-m", "bilayer", "synth", "--out", str(data), "--identities", "5",
                    "--test-identities", "2", "--videos-per-identity", "1", "--frames", "7", "--size", "64",
                    "--cross-pairs", "2"], check=True, capture_output=True)
    out = run_benchmark("learning.py", "--config", "tiny", "--steps", "1", "--enhancer-steps", "1", "--data", str(data),
                        "--ablation", 'no-gan={"losses": {"adversarial": 0, "feature_matching": 0}}',
                        "--ablation", "lf-only",
                        "--ablation", 'tail={"steps": 3, "lr_decay": "cosine", "lr_decay_start": 1}',
                        "--out", str(tmp_path / "out"))
    report = json.loads((tmp_path / "out" / "learning.json").read_text())
    self_scores, cross = report["self_reenactment"], report["cross_reenactment"]
    assert set(self_scores) == {"copy_source", "mean_train_image", "base", "base_lf_only", "no-gan", "lf-only", "tail",
                                "full"}
    # an ablation that only runs on past the base model with a decaying rate starts from the base run's checkpoint
    tail = report["ablations"]["tail"]
    assert tail["steps"] == 3 and tail["started_from_base_at"] == 1
    assert "started_from_base_at" not in report["ablations"]["lf-only"]
    tail_log = [json.loads(line) for line in (tmp_path / "out" / "run-tail" / "log.jsonl").read_text().splitlines()]
    base_log = [json.loads(line) for line in (tmp_path / "out" / "run-base" / "log.jsonl").read_text().splitlines()]
    assert tail_log[0] == base_log[0] and [r["step"] for r in tail_log] == [1, 2, 3]
    assert [r["lr"] for r in tail_log] == pytest.approx([2e-4 * f for f in (1, 1, 0.01)])
    assert report["schedules"]["tail"] == {"steps": 3, "lr": 2e-4, "discriminator_lr": 0.0, "lr_decay": "cosine",
                                           "lr_decay_start": 1, "lr_decay_to": 0.01}
    assert report["schedules"]["base"]["lr_decay"] == "none" and set(report["schedules"]) == {
        "base", "enhancer", "no-gan", "lf-only", "tail"}
    assert "starts from the base run's last checkpoint" in out
    # a named ablation: the model without the texture layer, whose frames are its LF layer alone
    assert report["ablations"]["lf-only"]["changes"] == {"model": {"texture_layer": False, "enhancer": None}}
    assert json.loads((tmp_path / "out" / "config-lf-only.json").read_text())["model"]["texture_layer"] is False
    assert all(s["frames"] == 2 * 2 for s in self_scores.values())  # 2 people x targets 3 and 6
    assert set(cross) == {"copy_source", "base", "full"} and cross["full"]["frames"] == 2 * 6
    for table in (self_scores, cross):
        for s in table.values():
            assert 0 < s["lpips"] < 1 and 0 < s["ssim"] <= 1 and np.isfinite(s["psnr"])
    assert 0 <= cross["full"]["identity"]["closer_to_a"] <= 1
    copied = cross["copy_source"]["identity"]  # the copied photo is embedded and compared with every scored frame
    assert 0 < copied["frames"] <= 2 * 6 and 0 <= copied["closer_to_a"] <= 1 and -1 <= copied["to_b"] <= 1
    assert any("copying the source" in label for label in report["targets"])
    assert (tmp_path / "out" / "learning_curve.png").stat().st_size > 0
    assert (tmp_path / "out" / "learning_grid.jpg").read_bytes()[:2] == b"\xff\xd8"
    assert "cross-person" in out
    ablation = report["ablations"]["no-gan"]
    assert ablation["steps"] == 1 and ablation["changes"] == {"losses": {"adversarial": 0, "feature_matching": 0}}
    assert ablation["vs_base"]["psnr_db"] == pytest.approx(
        self_scores["no-gan"]["psnr"] - self_scores["base"]["psnr"], abs=1e-3)
    assert "ablation no-gan (1 steps) against the base model" in out
    # scoring again without training keeps the training times the first invocation measured
    run_benchmark("learning.py", "--config", "tiny", "--data", str(data), "--evaluate-only", "--no-identity",
                  "--ablation", 'no-gan={"losses": {"adversarial": 0, "feature_matching": 0}}',
                  "--out", str(tmp_path / "out"))
    again = json.loads((tmp_path / "out" / "learning.json").read_text())
    assert again["wall_seconds"] == report["wall_seconds"] and {"base", "enhancer"} <= set(report["wall_seconds"])
    proc = subprocess.run([sys.executable, str(BENCH / "learning.py"), "--ablation", "sharper", "--evaluate-only"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "'sharper' is not NAME=JSON" in proc.stderr and "lf-only" in proc.stderr
    for spec, why in (('bad={"lr_decay": "linear"}', "--ablation bad: lr_decay is 'linear'; expected one of"),
                      ('bad={"lr": {"x": 1}}', "--ablation bad: lr is not a section of the training config")):
        proc = subprocess.run([sys.executable, str(BENCH / "learning.py"), "--ablation", spec, "--evaluate-only",
                               "--out", str(tmp_path / "never")], capture_output=True, text=True, timeout=120)
        assert proc.returncode == 2 and why in proc.stderr and "Traceback" not in proc.stderr
        assert not (tmp_path / "never").exists()


@pytest.mark.slow
def test_person_benchmark(tmp_path):
    """The person-specific path end to end on a real 4-second clip: preprocess with a held-out tail, a tiny base
    and enhancer trained on one video, every score against the baselines, identity, targets and pictures."""
    video = material("carphone_pristine.mp4")
    init = build_model(preset("tiny"), seed=3).save_pretrained(tmp_path / "init")  # --init: a warm start
    out = run_benchmark("person.py", str(video), "--config", "tiny", "--steps", "1", "--enhancer-steps", "1",
                        "--init", str(init), "--every", "2", "--test-tail", "0.35", "--ablation",
                        'no-gan={"losses": {"adversarial": 0, "feature_matching": 0}}', "--out", str(tmp_path / "out"))
    report = json.loads((tmp_path / "out" / "person.json").read_text())
    scores = report["held_out"]
    assert set(scores) == {"copy_source", "mean_train_image", "nearest_train_frame", "base", "base_lf_only", "full",
                           "no-gan"}
    frames = {s["frames"] for s in scores.values()}
    assert len(frames) == 1 and frames.pop() >= 3
    for s in scores.values():
        assert 0 < s["lpips"] < 1 and 0 < s["ssim"] <= 1 and np.isfinite(s["psnr"])
    assert report["steps"] == {"base": 1, "enhancer": 1, "no-gan": 1}
    assert set(report["schedules"]) == {"base", "enhancer", "no-gan"}
    assert report["init"] == str(init)
    assert report["schedules"]["base"] == {"steps": 1, "lr": 2e-4, "discriminator_lr": 0.0, "lr_decay": "none",
                                           "lr_decay_start": 0, "lr_decay_to": 0.01}
    ident = report["identity"]
    assert set(ident) >= {"real_frames_to_each_other", "base", "full", "no-gan", "per_frame", "by_expression"}
    scored = scores["full"]["frames"]
    for name in ("real_frames_to_each_other", "full", "base", "copy_source", "mouth_opening"):
        assert len(ident["per_frame"][name]) == scored, name
    split = ident["by_expression"]
    assert split["within"]["frames"] + split["beyond"]["frames"] == scored
    assert (tmp_path / "out" / "person_identity.png").read_bytes()[:4] == b"\x89PNG"
    assert any("copying the source" in label for label in report["targets"])
    assert (tmp_path / "out" / "data" / "imgs" / "test").is_dir()
    assert (tmp_path / "out" / "person_grid.jpg").read_bytes()[:2] == b"\xff\xd8"
    assert "copy_source" in out
    assert set(report["wall_seconds"]) == {"preprocess", "base", "enhancer", "ablation no-gan"}
    # the same command again: every stage is complete, so no stage is re-timed (a no-op once replaced the times)
    run_benchmark("person.py", str(video), "--config", "tiny", "--steps", "1", "--enhancer-steps", "1", "--init",
                  str(init), "--every", "2", "--test-tail", "0.35", "--no-identity", "--ablation",
                  'no-gan={"losses": {"adversarial": 0, "feature_matching": 0}}', "--out", str(tmp_path / "out"))
    again = json.loads((tmp_path / "out" / "person.json").read_text())
    assert again["wall_seconds"] == report["wall_seconds"]


def test_person_benchmark_refuses_a_malformed_ablation_before_writing(tmp_path):
    video = material("carphone_pristine.mp4")
    for spec in ("sharper", "no-gan={losses", 'x=[1]'):
        proc = subprocess.run([sys.executable, str(BENCH / "person.py"), str(video), "--ablation", spec, "--out",
                               str(tmp_path / "out")], capture_output=True, text=True, timeout=120)
        assert proc.returncode == 2 and "is not NAME=JSON with a JSON object" in proc.stderr
        assert "Traceback" not in proc.stderr
    assert not (tmp_path / "out").exists()


def test_person_benchmark_refuses_an_init_that_is_not_a_model(tmp_path):
    video = material("carphone_pristine.mp4")
    proc = subprocess.run([sys.executable, str(BENCH / "person.py"), str(video), "--init", str(tmp_path), "--out",
                           str(tmp_path / "out")], capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0 and f"--init {tmp_path} holds no config.json" in proc.stderr
    assert "Traceback" not in proc.stderr and not (tmp_path / "out").exists()


def test_person_identity_split_by_mouth_opening():
    """mouth_opening is the inner-lip gap over the eye-corner distance; by_expression averages each candidate over
    the held-out frames within and beyond the training frames' 95th percentile."""
    person = bench_module("person")
    kps = np.zeros((3, 68, 2), np.float32)
    kps[:, 45, 0] = 50.0  # eye corners 50 px apart
    kps[:, 66, 1] = [0.0, 5.0, 12.5]  # inner lips 0, 5 and 12.5 px apart
    np.testing.assert_allclose(person.mouth_opening(kps), [0.0, 0.1, 0.25], atol=1e-6)
    train = np.linspace(0.0, 0.2, 101)  # 95th percentile 0.19
    split = person.by_expression({"full": [0.9, 0.95, 0.5, float("nan")], "real": [1.0, 1.0, 0.8, 0.7]},
                                 np.array([0.0, 0.1, 0.25, 0.3]), train)
    assert split["mouth_opening_limit"] == pytest.approx(0.19)
    assert split["within"] == {"frames": 2, "full": pytest.approx(0.925), "real": pytest.approx(1.0)}
    assert split["beyond"] == {"frames": 2, "full": pytest.approx(0.5), "real": pytest.approx(0.75)}


def test_timed_stage_times_only_the_iterations_a_stage_trained(tmp_path):
    """A stage from iteration 0 is timed under its name, a resumed one under its iteration span, and one already
    complete (its command trains nothing) adds no time: the time measured earlier stands."""
    learning = bench_module("learning")
    run_dir = tmp_path / "run"
    assert learning.checkpointed_step(run_dir) == 0  # no folder yet

    def checkpoint_at(step: int) -> list[str]:  # a real process that leaves a complete checkpoint, as training does
        folder = run_dir / "checkpoints" / f"step-{step:07d}"
        return [sys.executable, "-c", f"import pathlib; p = pathlib.Path({str(folder)!r}); "
                "p.mkdir(parents=True); (p / 'state.json').write_text('{}')"]

    seconds: dict[str, float] = {}
    learning.timed_stage(seconds, "base", run_dir, checkpoint_at(3))
    assert set(seconds) == {"base"} and seconds["base"] > 0 and learning.checkpointed_step(run_dir) == 3
    learning.timed_stage(seconds, "base", run_dir, checkpoint_at(5))
    assert set(seconds) == {"base", "base (iterations 3-5)"}
    before = dict(seconds)
    learning.timed_stage(seconds, "base", run_dir, [sys.executable, "-c", "pass"])
    assert seconds == before
