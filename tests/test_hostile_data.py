"""Hostile conditions for the commands that write datasets (``bilayer synth``, ``bilayer preprocess``) and for the
dataset that reads them: a run killed in the middle of a sequence, a full disk, absurd sizes and counts, and an
output folder that holds someone else's files.

Everything runs through the real command line: killed runs are real subprocesses stopped with SIGKILL, and a full
disk is a real write failure, made without root by a file-size limit (``RLIMIT_FSIZE`` with ``SIGXFSZ`` ignored:
a write past the limit fails with EFBIG, as a write to a full disk fails with ENOSPC).
"""

from __future__ import annotations

import math
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from bilayer.cli import main
from bilayer.data.dataset import DatasetError, VideoDataset, index_videos

from .conftest import _SUBPROCESS_ENV, assert_user_error_text, run_cli, run_main

av = pytest.importorskip("av")

SYNTH = ("--identities", "2", "--videos-per-identity", "1", "--size", "64", "--test-identities", "0")
# a temporary name of bilayer's writers: .NAME.HOST-PID-TOKEN.partial (or .old, .tmp)
TEMPORARY = re.compile(r"^\..+\.[A-Za-z0-9]+-\d+-[0-9a-f]{8}\.(partial|old|tmp)")


# ---------------------------------------------------------------------------------------------- helpers
def bilayer_command(*args: str) -> list[str]:
    """The argv of ``bilayer ARGS``, as ``run_cli`` runs it."""
    script = Path(sys.executable).with_name("bilayer")
    if script.is_file() and os.access(script, os.X_OK):
        return [str(script), *args]
    return [sys.executable, "-c", "import sys; from bilayer.cli import main; sys.exit(main())", *args]


def run_with_file_size_limit(limit: int, *args: str) -> subprocess.CompletedProcess:
    """``bilayer ARGS`` where writing a file past ``limit`` bytes fails (EFBIG), as on a full disk."""
    def limit_file_size() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)

    return subprocess.run(bilayer_command(*args), capture_output=True, text=True, timeout=120, env=_SUBPROCESS_ENV,
                          preexec_fn=limit_file_size)


def kill_when(args: tuple[str, ...], ready, sig: int = signal.SIGKILL, timeout: float = 90) -> int:
    """Start ``bilayer ARGS``, send it ``sig`` as soon as ``ready()`` is true (fail if it never was); returns its
    exit status."""
    # a runner that starts the tests in the background may ignore SIGINT, which children inherit; the run under
    # test gets the default disposition, as a command started from a terminal has
    proc = subprocess.Popen(bilayer_command(*args), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env=_SUBPROCESS_ENV, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    seen = False
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and proc.poll() is None:
            if ready():
                seen = True
                break
            time.sleep(0.005)
        if seen:
            proc.send_signal(sig)
            return proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    raise AssertionError(f"the run ended (exit {proc.returncode}) before the moment it was to be stopped")


def partial_folders(folder: Path, least: int) -> list[Path]:
    """The hidden temporary folders in ``folder`` that hold at least ``least`` files."""
    try:
        entries = list(folder.iterdir())
    except FileNotFoundError:
        return []
    out = []
    for e in entries:
        if TEMPORARY.match(e.name) and e.is_dir():
            try:
                if len(os.listdir(e)) >= least:
                    out.append(e)
            except FileNotFoundError:
                continue
    return out


def temporaries(root: Path) -> list[Path]:
    return [p for p in root.rglob(".*") if TEMPORARY.match(p.name)]


def dataset_view(root: Path, use_masks: bool = True) -> tuple[dict[str, int], list[str]]:
    """What the dataset sees of ``root/imgs/train``: {PERSON/VIDEO: frames} and the unfinished sequences."""
    unfinished: list[str] = []
    videos = index_videos(root, "train", use_masks, unfinished)
    return {v.name: len(v) for v in videos if len(v)}, unfinished


def frame_times(folder: Path) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in folder.iterdir()}


def one_error_line(proc: subprocess.CompletedProcess, *needles: str) -> str:
    """A run that failed with exit 2 and one ``error:`` line, the last one on stderr (synth's progress bar may come
    before it), without a traceback."""
    assert proc.returncode == 2, f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("error: ")]
    assert len(errors) == 1 and lines[-1] == errors[0], proc.stderr
    for needle in needles:
        assert needle in errors[0], f"{needle!r} not in {errors[0]!r}"
    return errors[0]


def write_clip(folder: Path, name: str, frames: int, noise: bool = False) -> None:
    """``folder/name.mp4`` (96×80) and the keypoint file ``folder/name.npy`` of the ``file`` backend."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    ramp = np.linspace(0, 255, 96, dtype=np.float32)[None, :, None]
    with av.open(str(folder / f"{name}.mp4"), "w") as container:
        stream = container.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = 96, 80, "yuv420p"
        stream.options = {"preset": "ultrafast"}
        for i in range(frames):
            if noise:
                image = rng.integers(0, 256, (80, 96, 3), dtype=np.uint8)
            else:
                image = np.broadcast_to((ramp + i) % 256, (80, 96, 3)).astype(np.uint8)
            container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        container.mux(stream.encode())
    kp = np.stack([np.linspace(20, 70, 68), 30 + 15 * np.sin(np.linspace(0, 6, 68))], 1).astype(np.float32)
    np.save(folder / f"{name}.npy", np.repeat(kp[None], frames, 0))


def preprocess_args(clips: Path, out: Path) -> tuple[str, ...]:
    return ("preprocess", str(clips), "--out", str(out), "--landmarks", "file", "--segmentation", "none",
            "--size", "64", "--min-frames", "2", "--no-progress")


def snapshot(folder: Path) -> dict[str, bytes | None]:
    return {str(p.relative_to(folder)): (p.read_bytes() if p.is_file() else None) for p in sorted(folder.rglob("*"))}


# ---------------------------------------------------------------------------------------------- killed runs
@pytest.mark.slow
def test_synth_killed_mid_sequence_leaves_nothing_unfinished_and_a_rerun_resumes(tmp_path):
    root = tmp_path / "synth"
    args = ("synth", "--out", str(root), *SYNTH, "--frames", "60")
    first = root / ".synth/train/id00000/vid000/seq000.json"
    second = root / "imgs/train/id00001/vid000"
    # killed while the second sequence is half-written (the first is finished)
    kill_when(args, lambda: first.is_file() and bool(partial_folders(second, 5)))
    assert temporaries(root), "the killed run left no temporaries: it was not killed mid-sequence"
    videos, unfinished = dataset_view(root)
    assert videos == {"id00000/vid000": 60} and unfinished == []
    assert len(VideoDataset(root, "train", 64, 1, 1)) == 1
    before = frame_times(root / "imgs/train/id00000/vid000/seq000")

    proc = run_cli(*args)
    assert proc.returncode == 0, proc.stderr
    assert "1 sequences finished by an earlier run" in proc.stdout
    assert temporaries(root) == []
    assert dataset_view(root) == ({"id00000/vid000": 60, "id00001/vid000": 60}, [])
    assert frame_times(root / "imgs/train/id00000/vid000/seq000") == before  # resumed, not rendered again


@pytest.mark.slow
def test_preprocess_killed_mid_sequence_leaves_nothing_unfinished_and_a_rerun_completes(tmp_path):
    clips, out = tmp_path / "clips", tmp_path / "out"
    write_clip(clips, "a", 500)
    args = preprocess_args(clips, out)
    kill_when(args, lambda: bool(partial_folders(out / "imgs/train/a/a", 20)))
    assert temporaries(out)
    assert dataset_view(out, use_masks=False) == ({}, [])

    proc = run_cli(*args)
    assert proc.returncode == 0, proc.stderr
    assert "1 done" in proc.stdout
    assert temporaries(out) == []
    assert dataset_view(out, use_masks=False) == ({"a/a": 500}, [])

    # killed after moving the folders into place and before writing the marker: unfinished, and redone
    from bilayer.preprocess import preprocess

    (out / ".preprocess/train/a/a/a.json").unlink()
    (out / "imgs/train/a/a/a/999999.jpg").write_bytes(b"stale")
    assert dataset_view(out, use_masks=False) == ({}, ["a/a/a"])
    summary = preprocess(clips, out, landmarks="file", segmentation="none", size=64, min_frames=2, progress=False)
    assert summary.count("done") == 1
    assert dataset_view(out, use_masks=False) == ({"a/a": 500}, [])
    assert not (out / "imgs/train/a/a/a/999999.jpg").exists()


@pytest.mark.slow
def test_synth_interrupted_with_ctrl_c_removes_its_temporaries_at_once(tmp_path):
    root = tmp_path / "synth"
    code = kill_when(("synth", "--out", str(root), *SYNTH, "--frames", "60"),
                     lambda: bool(partial_folders(root / "imgs/train/id00000/vid000", 5)), sig=signal.SIGINT)
    assert code == 130
    assert temporaries(root) == []
    assert dataset_view(root) == ({}, [])


def test_dataset_skips_sequences_without_a_finished_record_and_counts_them(tmp_path, caplog):
    from bilayer.synth import generate

    root = tmp_path / "synth"
    generate(root, identities=2, videos_per_identity=1, frames=4, size=64, test_identities=0, sequences_per_video=2,
             progress=False)
    assert dataset_view(root) == ({"id00000/vid000": 8, "id00001/vid000": 8}, [])
    # a run killed after moving a sequence into place and before recording it
    (root / ".synth/train/id00001/vid000/seq001.json").unlink()
    with caplog.at_level("WARNING", logger="bilayer.data.dataset"):
        ds = VideoDataset(root, "train", 64, 1, 1)
    assert ds.unfinished == ["id00001/vid000/seq001"]
    assert {v.name: len(v) for v in ds.videos} == {"id00000/vid000": 8, "id00001/vid000": 4}
    assert (f"skipped 1 unfinished sequence under {root / 'imgs' / 'train'} (e.g. id00001/vid000/seq001); rerun "
            "the command that wrote them") in caplog.text
    # a video none of whose sequences is finished is not listed
    (root / ".synth/train/id00001/vid000/seq000.json").unlink()
    assert dataset_view(root) == ({"id00000/vid000": 8}, ["id00001/vid000/seq000", "id00001/vid000/seq001"])
    # nothing finished at all: one sentence
    (root / ".synth/train/id00000/vid000/seq000.json").unlink()
    (root / ".synth/train/id00000/vid000/seq001.json").unlink()
    with pytest.raises(DatasetError, match=r"every sequence under .* is unfinished \(4, e\.g\. id00000/vid000/"):
        VideoDataset(root, "train", 64, 1, 1)
    # the same files without bilayer's records (another tool's dataset) are read as they are
    foreign = tmp_path / "foreign"
    for tree in ("imgs", "keypoints", "segs"):
        shutil.copytree(root / tree, foreign / tree)
    assert dataset_view(foreign) == ({"id00000/vid000": 8, "id00001/vid000": 8}, [])
    # a rerun redoes the unrecorded sequences
    summary = generate(root, identities=2, videos_per_identity=1, frames=4, size=64, test_identities=0,
                       sequences_per_video=2, progress=False)
    assert summary["resumed"] == 0
    assert dataset_view(root) == ({"id00000/vid000": 8, "id00001/vid000": 8}, [])


# ---------------------------------------------------------------------------------------------- full disk
@pytest.mark.slow
@pytest.mark.parametrize("extra, limit, failing", [
    ((), 1024, r"imgs/train/id00000/vid000/seq000/000000\.jpg"),  # the first JPEG (2.5 kB)
    (("--videos",), 6000, r"videos/train/id00000/vid000/seq000\.mp4"),  # the mp4, after every frame's files
    # two workers: the first failure stops the run, the other worker's sequence ends by itself
    (("--videos", "--workers", "2"), 6000, r"videos/train/id0000[01]/vid00[01]/seq000\.mp4"),
], ids=["jpeg", "video", "two-workers"])
def test_synth_on_a_full_disk_names_the_file_and_leaves_no_partial_sequence(tmp_path, extra, limit, failing):
    root = tmp_path / "synth"
    args = ("synth", "--out", str(root), *SYNTH, "--frames", "40", *extra)
    proc = run_with_file_size_limit(limit, *args)
    line = one_error_line(proc)
    assert re.match(f"error: {re.escape(str(root))}/{failing}: ", line), line
    assert ".partial" not in line
    assert temporaries(root) == []
    assert dataset_view(root) == ({}, [])
    assert not (root / "synth.json").exists()

    proc = run_cli(*args[:args.index("--workers")] if "--workers" in args else args)  # workers do not matter
    assert proc.returncode == 0, proc.stderr
    assert temporaries(root) == []
    assert dataset_view(root) == ({"id00000/vid000": 40, "id00001/vid000": 40}, [])


@pytest.mark.slow
def test_preprocess_on_a_full_disk_stops_the_run_and_leaves_no_partial_sequence(tmp_path):
    clips, out = tmp_path / "clips", tmp_path / "out"
    for name in ("a", "b"):
        write_clip(clips, name, 10, noise=True)  # noise: every 64-px JPEG is over 1 kB
    proc = run_with_file_size_limit(1024, *preprocess_args(clips, out))
    one_error_line(proc, f"error: {out / 'imgs/train/a/a/a/000000.jpg'}: ")
    assert proc.stdout == ""  # no summary of sequences "failed" one by one: the run stopped
    assert not (out / "imgs/train/b").exists()
    assert temporaries(out) == []
    assert dataset_view(out, use_masks=False) == ({}, [])

    proc = run_cli(*preprocess_args(clips, out))
    assert proc.returncode == 0 and "2 done" in proc.stdout, proc.stdout + proc.stderr
    assert temporaries(out) == []
    assert dataset_view(out, use_masks=False) == ({"a/a": 10, "b/b": 10}, [])


# ---------------------------------------------------------------------------------------------- sizes, counts
@pytest.mark.parametrize("flag, value, needle", [
    ("--size", "8192", "--size must be at most 2048 pixels"),
    ("--size", "1000000", "--size must be at most 2048 pixels"),
    ("--identities", str(10**12), "--identities must be at most 100000"),
    ("--frames", str(10**9), "--frames must be at most 100000 per sequence"),
    ("--videos-per-identity", "5000", "--videos-per-identity must be at most 1000"),
    ("--sequences-per-video", "5000", "--sequences-per-video must be at most 1000"),
])
def test_synth_refuses_absurd_sizes_and_counts_in_one_sentence(tmp_path, capsys, flag, value, needle):
    argv = {"--identities": "2", "--frames": "2", "--size": "64", flag: value}
    code, out, err = run_main(main, capsys, "synth", "--out", str(tmp_path / "out"),
                              *(part for item in argv.items() for part in item))
    assert_user_error_text(code, err, needle, f"got {value}")
    assert out == "" and not (tmp_path / "out").exists()


def test_synth_refuses_a_run_larger_than_the_free_disk_space(tmp_path, capsys):
    code, out, err = run_main(main, capsys, "synth", "--out", str(tmp_path / "out"), "--identities", "99999",
                              "--videos-per-identity", "1000", "--frames", "100000", "--size", "64")
    line = assert_user_error_text(code, err, "9,999,900,000,000 frames", "of disk space", f"{tmp_path} has")
    assert "--identities 99999 × --videos-per-identity 1000" in line
    assert not (tmp_path / "out").exists()


def test_synth_refuses_a_run_needing_more_memory_than_is_available(tmp_path):
    from bilayer.synth.dataset import available_memory, worker_memory

    available = available_memory()
    if available is None:
        pytest.skip("the available memory cannot be read here")
    # twice the workers the available memory holds at 2048 px, so that the check refuses even if memory frees up
    workers = math.ceil(2 * available / worker_memory(2048, 2)) + 1
    proc = run_cli("synth", "--out", str(tmp_path / "out"), "--identities", str(workers), "--frames", "2",
                   "--size", "2048", "--workers", str(workers), timeout=60)
    line = assert_user_error_text(proc.returncode, proc.stderr, "of memory", "is available")
    assert "--size 2048" in line
    assert not (tmp_path / "out").exists()


# ---------------------------------------------------------------------------------------------- foreign folders
def test_a_folder_bilayer_did_not_write_is_refused_and_left_as_it_was(tmp_path, capsys):
    from bilayer.synth import generate
    from bilayer.outputs import OutputError
    from bilayer.preprocess import PreprocessError, preprocess

    foreign = tmp_path / "photos"
    (foreign / "2019").mkdir(parents=True)
    (foreign / "notes.txt").write_text("my notes\n")
    (foreign / "2019" / "beach.jpg").write_bytes(bytes(range(256)) * 4)
    before = snapshot(foreign)
    clips = tmp_path / "clips"
    write_clip(clips, "a", 4)

    code, out, err = run_main(main, capsys, "synth", "--out", str(foreign), "--identities", "2", "--frames", "2",
                              "--size", "64")
    assert_user_error_text(code, err, str(foreign), "not empty", "bilayer did not write it")
    code, out, err = run_main(main, capsys, *preprocess_args(clips, foreign))
    assert_user_error_text(code, err, str(foreign), "not empty", "bilayer did not write it")
    with pytest.raises(OutputError, match="bilayer did not write it"):
        generate(foreign, identities=2, videos_per_identity=1, frames=2, size=64, progress=False)
    with pytest.raises(PreprocessError, match="bilayer did not write it") as info:
        preprocess(clips, foreign, landmarks="file", segmentation="none", size=64, min_frames=2, progress=False)
    assert isinstance(info.value, OutputError)
    assert snapshot(foreign) == before
