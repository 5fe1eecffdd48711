"""Nothing a user owns is lost: every command's outputs against its inputs, folders bilayer does not own, and runs
killed half-way — through the real command line, checking exit codes, one-sentence errors and the bytes of every
input afterwards."""

from __future__ import annotations

import os
import re
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from bilayer import BilayerModel, preset
from bilayer.cli import main
from bilayer.weights import save_pretrained
from bilayer.outputs import MARKER, OutputError, Outputs, atomic_folder, claim_folder, partial_name, sweep_stale

from .conftest import _SUBPROCESS_ENV, assert_user_error_text, build_model, run_main
from .test_driver import render_person

TEMPORARY = re.compile(r"\.(partial|tmp|old)(\.[a-z0-9]+)?$")


# ------------------------------------------------------------------------------------------------ helpers
def snapshot(*paths: Path) -> dict[str, bytes]:
    """The bytes of every file under ``paths`` (files or folders), by path."""
    out = {}
    for path in paths:
        path = Path(path)
        files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
        for f in files:
            out[str(f)] = f.read_bytes()
    return out


def temporaries(folder: Path) -> list[str]:
    return sorted(p.name for p in Path(folder).rglob(".*") if TEMPORARY.search(p.name))


def refused(capsys, *args, needles=()) -> str:
    code, _, err = run_main(main, capsys, *(str(a) for a in args))
    return assert_user_error_text(code, err, *needles)


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("hostile")
    model = build_model(preset("tiny"), seed=3)
    model.save_pretrained(root / "model")
    images, kps = render_person(12, person=2)
    photo = root / "photo.png"
    cv2.imwrite(str(photo), cv2.cvtColor(images[0], cv2.COLOR_RGB2BGR))
    np.save(root / "photo_kp.npy", kps[0].astype(np.float32))
    np.save(root / "driver.npy", kps.astype(np.float32))
    source = ["--source", photo, "--source-keypoints", root / "photo_kp.npy",
              "--segmentation", "none"]
    avatar = root / "me.avatar"
    code = main([str(a) for a in ["avatar", "--model", root / "model", *source, "--out", avatar]])
    assert code == 0 and avatar.is_file()
    return {"root": root, "model": root / "model", "photo": photo, "source": source, "avatar": avatar,
            "driver": root / "driver.npy"}


@pytest.fixture
def guard(files):
    """Asserts after the test that no input of the module's fixture changed and no temporary was left."""
    before = snapshot(files["model"], files["photo"], files["avatar"], files["driver"], files["root"] / "photo_kp.npy")
    yield
    assert snapshot(files["model"], files["photo"], files["avatar"], files["driver"],
                    files["root"] / "photo_kp.npy") == before
    assert temporaries(files["root"]) == []


# ----------------------------------------------------------------------------- outputs that are inputs
def test_avatar_out_equal_to_its_inputs_is_refused(files, guard, capsys):
    model = files["model"]
    for out, needle in ((files["photo"], "--source"), (model / "model.safetensors", "--model"),
                        (model / "new.avatar", "--model"), (files["root"] / "photo_kp.npy", "--source-keypoints"), (files["root"] / "kp.png", ".avatar")):
        refused(capsys, "avatar", "--model", model, *files["source"], "--out", out, needles=(str(out), needle))


def test_avatar_out_through_a_symlink_or_hard_link_is_refused(files, guard, capsys, tmp_path):
    link = tmp_path / "link.avatar"
    link.symlink_to(files["photo"])
    refused(capsys, "avatar", "--model", files["model"], *files["source"], "--out", link, needles=("--source",))
    hard = tmp_path / "hard.avatar"
    os.link(files["photo"], hard)
    refused(capsys, "avatar", "--model", files["model"], *files["source"], "--out", hard, needles=("--source",))
    assert hard.read_bytes() == files["photo"].read_bytes()


def test_avatar_out_suffix_and_folder(files, guard, capsys, tmp_path):
    refused(capsys, "avatar", "--model", files["model"], *files["source"], "--out", tmp_path / "me.png",
            needles=(".avatar",))
    refused(capsys, "avatar", "--model", files["model"], *files["source"], "--out", tmp_path / "no" / "me.avatar",
            needles=("does not exist",))
    assert list(tmp_path.iterdir()) == []


def test_export_out_equal_to_its_inputs_is_refused(files, guard, capsys, tmp_path):
    model = files["model"]
    refused(capsys, "export", "--model", model, "--avatar", files["avatar"], "--out", files["avatar"],
            needles=("--avatar",))
    refused(capsys, "export", "--model", model, "--avatar", files["avatar"], "--out", model / "model.safetensors",
            needles=("--model",))
    refused(capsys, "export", "--model", model, "--avatar", files["avatar"], "--out", tmp_path / "me.avatar",
            needles=(".onnx",))


def test_animate_outputs_against_inputs(files, guard, capsys, tmp_path):
    base = ["animate", "--model", files["model"], "--avatar", files["avatar"], "--driver", files["driver"],
            "--no-progress"]
    out = tmp_path / "out.mp4"
    refused(capsys, *base, "--out", out, "--report", out, needles=("--report", "--out"))
    refused(capsys, *base, "--out", out, "--report", files["avatar"], needles=("--avatar",))
    refused(capsys, *base, "--out", out, "--report", tmp_path / "r.txt", needles=(".json",))
    report = files["root"] / "me.json"
    os.link(files["avatar"], report)  # a .json name that is the avatar file under another name
    try:
        refused(capsys, *base, "--out", out, "--report", report, needles=("--avatar",))
    finally:
        report.unlink()
    refused(capsys, *base, "--out", files["model"] / "out.mp4", needles=("--model",))
    refused(capsys, *base, "--out", tmp_path / "frames", "--report", tmp_path / "frames" / "r.json",
            needles=("--report", "--out"))
    assert list(tmp_path.iterdir()) == []
    video = tmp_path / "driver.mp4"
    video.write_bytes(b"not decoded: refused before")
    refused(capsys, "animate", "--model", files["model"], "--avatar", files["avatar"], "--driver", video,
            "--out", video, needles=("--driver",))
    assert video.read_bytes() == b"not decoded: refused before"


def test_animate_report_folder_checked_before_rendering(files, guard, capsys, tmp_path):
    base = ["animate", "--model", files["model"], "--avatar", files["avatar"], "--driver", files["driver"],
            "--no-progress", "--out", tmp_path / "out.mp4"]
    refused(capsys, *base, "--report", tmp_path / "missing" / "r.json", needles=("--report", "does not exist"))
    # a folder where no file can be created, even by root: /proc
    refused(capsys, *base, "--report", "/proc/bilayer-report.json", needles=("--report", "not writable"))
    assert list(tmp_path.iterdir()) == []


def test_animate_writes_both_outputs(files, guard, capsys, tmp_path):
    code, out, err = run_main(main, capsys, "animate", "--model", str(files["model"]), "--avatar",
                              str(files["avatar"]), "--driver", str(files["driver"]), "--no-progress", "--out",
                              str(tmp_path / "out.mp4"), "--report", str(tmp_path / "r.json"), "--backend", "eager")
    assert code == 0, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.mp4", "r.json"]


# ---------------------------------------------------------------------------------- folders bilayer owns
def _foreign(folder: Path) -> dict[str, bytes]:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "thesis.tex").write_text("years of work")
    (folder / "data").mkdir(exist_ok=True)
    (folder / "data" / "results.csv").write_text("1,2,3")
    return snapshot(folder)


def test_folder_commands_refuse_a_folder_they_do_not_own(files, guard, capsys, tmp_path):
    mine = tmp_path / "mine"
    before = _foreign(mine)
    cases = [
        ("synth", "--out", mine, "--identities", "2", "--frames", "2", "--size", "64"),
        ("preprocess", files["photo"], "--out", mine, "--landmarks", "file", "--keypoints",
         files["root"] / "photo_kp.npy", "--segmentation", "none", "--no-progress"),
        ("evaluate", "--model", files["model"], "--data", tmp_path, "--out", mine),
        ("demo", "--out", mine, "--random-weights"),
        ("train", "base", "--config", "tiny", "--data", tmp_path, "--run", mine, "--no-progress"),
    ]
    for args in cases:
        refused(capsys, *args, needles=(str(mine), "not empty"))
    assert snapshot(mine) == before
    assert sorted(p.name for p in mine.iterdir()) == ["data", "thesis.tex"]


def test_convert_official_never_deletes_the_release(capsys, tmp_path, tiny_config):
    from bilayer.compat.official import export_released_states

    from .test_convert import _discriminator, write_runs

    states = export_released_states(build_model(tiny_config, seed=1), _discriminator(tiny_config, seed=2))
    runs = write_runs(tmp_path, states)
    before = snapshot(tmp_path)
    for out in (runs, tmp_path, runs / ".."):
        refused(capsys, "convert-official", runs, "--out", out, needles=("--out",))
    other = tmp_path / "notes"
    _foreign(other)
    before = snapshot(tmp_path)
    refused(capsys, "convert-official", runs, "--out", other, needles=("not empty",))
    assert snapshot(tmp_path) == before
    # a folder it wrote is replaced, and what the user added to it is kept
    code, _, err = run_main(main, capsys, "convert-official", str(runs), "--out", str(tmp_path / "converted"))
    assert code == 0, err
    (tmp_path / "converted" / "README.md").write_text("my notes")
    code, _, err = run_main(main, capsys, "convert-official", str(runs), "--out", str(tmp_path / "converted"))
    assert code == 0, err
    assert (tmp_path / "converted" / "README.md").read_text() == "my notes"
    assert sorted(p.name for p in (tmp_path / "converted").iterdir()) == [
        MARKER, "README.md", "config.json", "discriminator.safetensors", "model.safetensors"]
    assert snapshot(runs) == {k: v for k, v in before.items() if k.startswith(str(runs))}


def test_save_pretrained_keeps_user_files_and_refuses_foreign_folders(tmp_path, tiny_config):
    model = BilayerModel(tiny_config)
    model.save_pretrained(tmp_path / "m")
    (tmp_path / "m" / "notes.txt").write_text("keep")
    (tmp_path / "m" / "extra").mkdir()
    (tmp_path / "m" / "extra" / "a.txt").write_text("keep too")
    save_pretrained(model, tmp_path / "m", extra={"discriminator": torch.nn.Linear(2, 2)})
    model.save_pretrained(tmp_path / "m")  # the discriminator it wrote before is its own: replaced, not carried
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == [
        MARKER, "config.json", "extra", "model.safetensors", "notes.txt"]
    assert (tmp_path / "m" / "extra" / "a.txt").read_text() == "keep too"
    before = _foreign(tmp_path / "f")
    with pytest.raises(OutputError, match="not empty"):
        model.save_pretrained(tmp_path / "f")
    assert snapshot(tmp_path / "f") == before
    # a model folder written before folders were marked is recognised by its files, and its README kept
    legacy = tmp_path / "legacy"
    model.save_pretrained(legacy)
    (legacy / MARKER).unlink()
    (legacy / "README.md").write_text("how it was trained")
    model.save_pretrained(legacy)
    assert (legacy / "README.md").read_text() == "how it was trained"
    assert temporaries(tmp_path) == []


def test_folder_of_another_kind_is_refused(tmp_path, tiny_config):
    claim_folder(tmp_path / "run", "run")
    with pytest.raises(OutputError, match="training run folder, not a model folder"):
        BilayerModel(tiny_config).save_pretrained(tmp_path / "run")


def test_folders_follow_the_umask(tmp_path, tiny_config):
    old = os.umask(0o027)
    try:
        from bilayer import io as bio

        bio.current_umask.cache_clear()
        BilayerModel(tiny_config).save_pretrained(tmp_path / "a" / "m")
        claim_folder(tmp_path / "b", "evaluation")
    finally:
        os.umask(old)
        bio.current_umask.cache_clear()
    for folder in (tmp_path / "a", tmp_path / "a" / "m", tmp_path / "b"):
        assert stat.S_IMODE(folder.stat().st_mode) == 0o750, folder
    assert stat.S_IMODE((tmp_path / "a" / "m" / "model.safetensors").stat().st_mode) == 0o640


def test_atomic_folder_failure_leaves_the_old_folder(tmp_path):
    with atomic_folder(tmp_path / "m", "model") as staging:
        (staging / "config.json").write_text("{}")
    before = snapshot(tmp_path / "m")
    with pytest.raises(RuntimeError):
        with atomic_folder(tmp_path / "m", "model") as staging:
            (staging / "config.json").write_text("half")
            raise RuntimeError("disk full")
    assert snapshot(tmp_path / "m") == before
    assert temporaries(tmp_path) == []


def test_outputs_check_names_the_option(tmp_path):
    (tmp_path / "in.png").write_bytes(b"x")
    with pytest.raises(OutputError, match=r"^--out .* is also the --source input; choose another output path\.$"):
        Outputs().input("--source", tmp_path / "in.png").file("--out", tmp_path / "in.png").check()
    # a folder replaced whole must hold no input; one written in place none among the entries it writes
    (tmp_path / "videos").mkdir()
    with pytest.raises(OutputError, match="holds the --data input"):
        Outputs().input("--data", tmp_path / "videos" / "a.json").folder("--out", tmp_path, "evaluation").check()
    with pytest.raises(OutputError, match="holds the release folder"):
        Outputs().input("release folder", tmp_path / "runs").folder("--out", tmp_path, "model").check()
    with pytest.raises(OutputError, match="not empty"):  # the input is safe; the folder still is not bilayer's
        Outputs().input("--data", tmp_path / "in.png").folder("--out", tmp_path, "evaluation").check()
    Outputs().input("input", tmp_path).folder("--out", tmp_path / "data", "dataset").check()  # inside an input: fine


# ------------------------------------------------------------------------------------- killed half-way
def test_sweep_removes_only_dead_writers_temporaries(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    pid = int(dead.stdout)
    live = tmp_path / partial_name("out.mp4", ".mp4")
    stale = tmp_path / re.sub(r"-\d+-", f"-{pid}-", partial_name("out.mp4", ".mp4"))
    other = tmp_path / re.sub(r"-\d+-", f"-{pid}-", partial_name("b.mp4", ".mp4"))
    for p in (live, stale, other):
        p.write_bytes(b"x")
    assert sweep_stale(tmp_path, "out.mp4") == [stale]
    assert live.exists() and other.exists()
    # a swap killed between its renames is undone: the old folder comes back under its name
    old = tmp_path / re.sub(r"-\d+-", f"-{pid}-", partial_name("model", tag="old"))
    old.mkdir()
    (old / "config.json").write_text("{}")
    sweep_stale(tmp_path)
    assert (tmp_path / "model" / "config.json").is_file() and not old.exists()


def _animate_process(files, out: Path, frames: int = 4000) -> subprocess.Popen:
    long = files["root"] / "long.npy"
    if not long.exists():
        kps = np.load(files["driver"])
        np.save(long, np.concatenate([kps] * (frames // len(kps) + 1))[:frames])
    script = Path(sys.executable).with_name("bilayer")
    return subprocess.Popen([str(script), "animate", "--model", str(files["model"]), "--avatar", str(files["avatar"]),
                             "--driver", str(long), "--out", str(out), "--backend", "eager", "--no-progress"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_SUBPROCESS_ENV)


def _wait_for_partial(folder: Path, proc: subprocess.Popen, timeout: float = 60) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if temporaries(folder) and any(p.stat().st_size > 0 for p in folder.iterdir() if TEMPORARY.search(p.name)):
            time.sleep(0.5)
            return
        assert proc.poll() is None, f"animate ended early: {proc.communicate()}"
        time.sleep(0.1)
    raise AssertionError("no temporary output appeared")


@pytest.mark.slow
def test_animate_sigterm_leaves_nothing_and_sigkill_is_cleaned_by_the_rerun(files, guard, tmp_path):
    out = tmp_path / "out.mp4"
    proc = _animate_process(files, out)
    _wait_for_partial(tmp_path, proc)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143 and "Traceback" not in err, err
    assert list(tmp_path.iterdir()) == []

    proc = _animate_process(files, out)
    _wait_for_partial(tmp_path, proc)
    proc.kill()
    proc.communicate(timeout=60)
    assert temporaries(tmp_path) and not out.exists()  # SIGKILL cannot clean up …
    code = main(["animate", "--model", str(files["model"]), "--avatar", str(files["avatar"]), "--driver",
                 str(files["driver"]), "--out", str(out), "--backend", "eager", "--no-progress"])
    assert code == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.mp4"]  # … the next run does


# --------------------------------------------------------------------------------- training, weights, full disk
@pytest.mark.parametrize("device, needle", [("tpu", "expected cpu, cuda or cuda:N"), ("cpu:1", "expected cpu"),
                                            ("cuda", "use --device cpu")])
def test_train_device_must_exist(capsys, tmp_path, device, needle):
    if device == "cuda" and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    refused(capsys, "train", "base", "--config", "tiny", "--data", tmp_path / "data", "--run", tmp_path / "run",
            "--device", device, "--no-progress", needles=(device, needle))
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("steps", ["-1", "0"])
def test_train_steps_must_be_positive(capsys, tmp_path, steps):
    refused(capsys, "train", "base", "--config", "tiny", "--data", tmp_path / "data", "--run", tmp_path / "run",
            "--steps", steps, needles=(f"--steps is {steps}", "≥ 1"))
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("value, word", [(float("nan"), "NaN"), (float("inf"), "inf")])
def test_model_with_nonfinite_weights_is_refused(files, guard, capsys, tmp_path, tiny_config, value, word):
    model = build_model(tiny_config, seed=3)
    with torch.no_grad():
        next(iter(model.parameters())).view(-1)[:2] = value
    model.save_pretrained(tmp_path / "bad")
    line = refused(capsys, "avatar", "--model", tmp_path / "bad", *files["source"], "--out", tmp_path / "a.avatar",
                   needles=("model.safetensors", f"holds {word} values"))
    assert ("NaN" in line) == (word == "NaN")
    assert not (tmp_path / "a.avatar").exists()


def test_full_disk_while_writing_an_avatar(files, guard, tmp_path):
    from .conftest import assert_user_error, run_cli_file_limit

    out = tmp_path / "me.avatar"
    proc = run_cli_file_limit(20_000, "avatar", "--model", str(files["model"]),
                              *(str(a) for a in files["source"]), "--out", str(out))
    assert_user_error(proc, str(out), "file-size limit", "nothing was left half-written")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_full_disk_while_writing_a_checkpoint(tmp_path):
    from .conftest import assert_user_error, run_cli_file_limit

    assert main(["synth", "--out", str(tmp_path / "data"), "--identities", "2", "--frames", "4", "--size", "64"]) == 0
    run = tmp_path / "run"
    proc = run_cli_file_limit(300_000, "train", "base", "--config", "tiny", "--data", str(tmp_path / "data"), "--run",
                              str(run), "--perceptual-init", "random", "--steps", "2", "--no-progress")
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("error: ")]
    assert proc.returncode == 2 and "Traceback" not in proc.stderr and len(errors) == 1, proc.stderr
    assert_user_error(proc.__class__(proc.args, 2, "", errors[0]), str(run / "checkpoints" / "step-0000001"),
                      "file-size limit")
    assert not (run / "checkpoints" / "step-0000001").exists()
    assert temporaries(tmp_path) == []
