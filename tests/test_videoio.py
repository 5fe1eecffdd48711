"""Runtime video output: streaming H.264 with copied audio, alpha outputs, atomic writing, output-path checks.

The inputs are real media files written here with PyAV: a short H.264 video with an AAC sine tone (the audio is
remuxed into the output) and one with PCM audio in a .mov (re-encoded to AAC for mp4).
"""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np
import pytest

from bilayer.vision.errors import VideoReadError
from bilayer.animate.videoio import OutputError, VideoWriter, check_output_path, output_kind

av = pytest.importorskip("av")

FPS, SAMPLE_RATE = 25, 44100


def make_video(path: Path, frames: list[np.ndarray], fps: int = FPS, audio: str | None = None,
               audio_seconds: float | None = None, keyframe_every: int | None = None) -> Path:
    """An H.264 video of ``frames`` (RGB uint8), with a 440 Hz mono tone of ``audio_seconds`` (default: the video's
    length) in codec ``audio`` ("aac", "pcm_s16le", ...) when given; a keyframe every ``keyframe_every`` frames
    when given (x264's default otherwise: at most every 250)."""
    h, w = frames[0].shape[:2]
    with av.open(str(path), "w") as container:
        video = container.add_stream("libx264" if "libx264" in av.codecs_available else "mpeg4", rate=fps)
        video.width, video.height, video.pix_fmt = w, h, "yuv420p"
        if video.name == "libx264":
            video.options = {"preset": "ultrafast", "crf": "18"}
            if keyframe_every:
                video.options = {**video.options, "g": str(keyframe_every), "keyint_min": str(keyframe_every),
                                 "sc_threshold": "0"}
        sound = None
        if audio is not None:
            sound = container.add_stream(audio, rate=SAMPLE_RATE)
            sound.layout = "mono"
        for i, f in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(f, format="rgb24")
            frame.pts = i
            container.mux(video.encode(frame))
        container.mux(video.encode())
        if sound is not None:
            seconds = len(frames) / fps if audio_seconds is None else audio_seconds
            t = np.arange(int(round(SAMPLE_RATE * seconds))) / SAMPLE_RATE
            tone = 0.3 * np.sin(2 * np.pi * 440 * t)
            fmt = sound.codec_context.format.name
            for start in range(0, len(tone), 1024):
                chunk = tone[start : start + 1024]
                data = (chunk * 32767).astype(np.int16) if fmt.startswith("s16") else chunk.astype(np.float32)
                frame = av.AudioFrame.from_ndarray(data[None], format=fmt, layout="mono")
                frame.sample_rate, frame.pts = SAMPLE_RATE, start
                container.mux(sound.encode(frame))
            container.mux(sound.encode())
    return path


def gradient_frames(n: int, w: int = 64, h: int = 48) -> list[np.ndarray]:
    y, x = np.mgrid[0:h, 0:w]
    return [np.stack([(x * 4 + 10 * i) % 256, y * 5 % 256, np.full_like(x, 20 * i % 256)], -1).astype(np.uint8)
            for i in range(n)]


def probe(path: Path) -> dict:
    """What a player sees: frame count, size, fps, audio codec and decoded audio duration."""
    with av.open(str(path)) as c:
        v = c.streams.video[0]
        info = {"fps": float(v.average_rate), "size": (v.codec_context.width, v.codec_context.height),
                "audio": None, "audio_seconds": 0.0}
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
        info["frames"] = frames
        if c.streams.audio:
            info["audio"] = c.streams.audio[0].codec_context.name
    if info["audio"]:
        with av.open(str(path)) as c:
            a = c.streams.audio[0]
            info["audio_seconds"] = sum(f.samples for f in c.decode(a)) / a.codec_context.sample_rate
    return info


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if "partial" in p.name or p.name.endswith(".old"))


@pytest.fixture(scope="module")
def aac_video(tmp_path_factory) -> Path:
    return make_video(tmp_path_factory.mktemp("media") / "driver.mp4", gradient_frames(20), audio="aac")


# ------------------------------------------------------------------------------------------------ H.264
def test_write_with_copied_audio(tmp_path, aac_video):
    frames = gradient_frames(10)
    out = tmp_path / "out.mp4"
    with VideoWriter(out, FPS, (64, 48), audio_from=aac_video, preset="ultrafast") as w:
        assert w.audio
        for f in frames:
            w.write(f)
    assert w.frames_written == 10 and w.audio_error is None
    info = probe(out)
    assert len(info["frames"]) == 10 and info["size"] == (64, 48) and info["fps"] == pytest.approx(FPS)
    assert info["audio"] == "aac"  # remuxed as it was
    assert info["audio_seconds"] == pytest.approx(10 / FPS, abs=0.05)
    for got, want in zip(info["frames"], frames):
        assert np.abs(got.astype(int) - want).mean() < 4
    assert leftovers(tmp_path) == []


def test_audio_is_reencoded_when_the_container_needs_it_and_stops_with_the_source(tmp_path):
    source = make_video(tmp_path / "pcm.mov", gradient_frames(8), audio="pcm_s16le", audio_seconds=0.32)
    out = tmp_path / "out.mp4"
    with VideoWriter(out, FPS, (64, 48), audio_from=source, preset="ultrafast") as w:
        for f in gradient_frames(20):  # longer than the source's audio
            w.write(f)
    info = probe(out)
    assert len(info["frames"]) == 20
    assert info["audio"] == "aac"
    assert info["audio_seconds"] == pytest.approx(0.32, abs=0.05)


def test_source_without_audio_and_odd_sizes(tmp_path):
    silent = make_video(tmp_path / "silent.mp4", gradient_frames(3))
    out = tmp_path / "odd.mp4"
    frames = [f[:47, :63] for f in gradient_frames(4)]
    with VideoWriter(out, 30000 / 1001, (63, 47), audio_from=silent, preset="ultrafast") as w:
        assert not w.audio and w.frame_size == (64, 48)
        for f in frames:
            w.write(np.ascontiguousarray(f))
    info = probe(out)
    assert info["audio"] is None and info["size"] == (64, 48) and len(info["frames"]) == 4
    assert info["fps"] == pytest.approx(29.97, abs=0.01)
    assert np.abs(info["frames"][0][:47, :63].astype(int) - frames[0]).mean() < 4


def test_exception_leaves_no_output_and_keeps_a_previous_one(tmp_path, aac_video):
    out = tmp_path / "out.mp4"
    with pytest.raises(RuntimeError, match="render failed"):
        with VideoWriter(out, FPS, (64, 48), audio_from=aac_video) as w:
            w.write(gradient_frames(1)[0])
            raise RuntimeError("render failed")
    assert not out.exists() and leftovers(tmp_path) == []
    out.write_bytes(b"previous")
    with pytest.raises(ValueError, match=r"frame 1 for out.mp4 must be 48×64×3 uint8"):
        with VideoWriter(out, FPS, (64, 48)) as w:
            w.write(gradient_frames(1)[0])
            w.write(np.zeros((48, 64, 4), np.uint8))
    assert out.read_bytes() == b"previous" and leftovers(tmp_path) == []
    with pytest.raises(OutputError, match="no frame was written"):
        with VideoWriter(tmp_path / "empty.mp4", FPS, (64, 48)):
            pass
    assert not (tmp_path / "empty.mp4").exists() and leftovers(tmp_path) == []


# ------------------------------------------------------------------------------------------------ alpha
def rgba_frames(n: int, w: int = 41, h: int = 33) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [rng.integers(0, 256, (h, w, 4), dtype=np.uint8) for _ in range(n)]


def test_alpha_mov_is_lossless(tmp_path, aac_video):
    frames = rgba_frames(5)
    out = tmp_path / "head.mov"
    with VideoWriter(out, FPS, (41, 33), alpha=True, audio_from=aac_video) as w:
        for f in frames:
            w.write(f)
    with av.open(str(out)) as c:
        assert c.streams.video[0].codec_context.name == "png" and c.streams.audio
        back = [f.to_ndarray(format="rgba") for f in c.decode(video=0)]
    assert len(back) == 5
    for got, want in zip(back, frames):
        np.testing.assert_array_equal(got, want)
    assert leftovers(tmp_path) == []


def test_alpha_png_folder(tmp_path):
    frames = rgba_frames(3)
    out = tmp_path / "frames"
    with VideoWriter(out, FPS, (41, 33), alpha=True, audio_from=None) as w:
        for f in frames:
            w.write(f)
    names = sorted(p.name for p in out.iterdir())
    assert names == ["000000.png", "000001.png", "000002.png"]
    for name, want in zip(names, frames):
        back = cv2.cvtColor(cv2.imread(str(out / name), cv2.IMREAD_UNCHANGED), cv2.COLOR_BGRA2RGBA)
        np.testing.assert_array_equal(back, want)
    # a second run replaces the previous frames folder; an RGB frame is opaque
    with VideoWriter(out, FPS, (41, 33), alpha=True) as w:
        w.write(frames[0][..., :3].copy())
    assert sorted(p.name for p in out.iterdir()) == ["000000.png"]
    assert (cv2.imread(str(out / "000000.png"), cv2.IMREAD_UNCHANGED)[..., 3] == 255).all()
    assert leftovers(tmp_path) == []


# ------------------------------------------------------------------------------------------------ checks
def test_check_output_path(tmp_path, aac_video):
    assert check_output_path(tmp_path / "a.mp4") == tmp_path / "a.mp4"
    assert output_kind(tmp_path / "a.mov", alpha=True) == "alpha-mov"
    assert output_kind(tmp_path / "a.mkv") == "video" and output_kind(tmp_path / "frames") == "frames"
    with pytest.raises(OutputError, match="output folder .*missing does not exist"):
        check_output_path(tmp_path / "missing" / "a.mp4")
    with pytest.raises(OutputError, match=r"unsupported output suffix '\.gif'"):
        check_output_path(tmp_path / "a.gif")
    with pytest.raises(OutputError, match="cannot write an alpha .* expected a .mov file or a folder"):
        check_output_path(tmp_path / "a.mp4", alpha=True)
    (tmp_path / "dir.mp4").mkdir()
    with pytest.raises(OutputError, match="is a folder; expected a video file"):
        check_output_path(tmp_path / "dir.mp4")
    (tmp_path / "stuff").mkdir()
    (tmp_path / "stuff" / "notes.txt").write_text("mine")
    with pytest.raises(OutputError, match="holds other files"):
        check_output_path(tmp_path / "stuff")
    with pytest.raises(OutputError, match="is also an input"):
        check_output_path(aac_video, inputs=(aac_video,))
    with pytest.raises(OutputError, match="does not exist"):
        VideoWriter(tmp_path / "nope" / "a.mp4", FPS, (64, 48))


def test_check_output_path_read_only(tmp_path):
    # a folder where nobody, root included, can create a file: writability is tried, not read off permission bits
    with pytest.raises(OutputError, match="output folder /proc is not writable"):
        check_output_path(Path("/proc") / "a.mp4")
    if os.name == "posix" and os.geteuid() != 0:
        folder = tmp_path / "ro"
        folder.mkdir()
        folder.chmod(0o500)
        try:
            with pytest.raises(OutputError, match="output folder .*ro is not writable"):
                check_output_path(folder / "a.mp4")
        finally:
            folder.chmod(0o700)


def numbered_frames(n: int) -> list[np.ndarray]:
    """Flat frames whose colour spells their index (red: index // 16, green: index % 16), robust to H.264."""
    return [np.dstack([np.full((32, 32), 8 + 16 * (i // 16)), np.full((32, 32), 8 + 16 * (i % 16)),
                       np.full((32, 32), 128)]).astype(np.uint8) for i in range(n)]


def frame_number(image: np.ndarray) -> int:
    red, green = image[..., 0].mean(), image[..., 1].mean()
    return int(round((red - 8) / 16)) * 16 + int(round((green - 8) / 16))


class _SeekCounting:
    """A real PyAV container that counts its seeks (everything else goes straight to it)."""

    def __init__(self, container, seeks: list) -> None:
        self._container, self._seeks = container, seeks

    def seek(self, *args, **kwargs):
        self._seeks.append(args[0])
        return self._container.seek(*args, **kwargs)

    def __getattr__(self, name):
        return getattr(self._container, name)


@pytest.mark.parametrize("keyframe_every, seeks", [(10, 4), (240, 2)])
def test_sample_video_gives_the_frame_at_each_time(tmp_path, monkeypatch, keyframe_every, seeks):
    """sample_video finds the first frame at or after each time, seeking (keyframes every 10 frames) or decoding
    on (one keyframe in 240 frames, where a seek would land back at the start); times past the end yield none.
    It seeks to every target more than 2 s ahead (3.0, 6.99, 9.56 and 12.0 s with keyframes every 0.4 s); with
    one keyframe, each seek lands at 0 s and teaches it that interval, so after the seeks to 3.0 and 6.99 s it
    decodes on to 9.56 and 12.0 s."""
    from bilayer.vision.video import sample_video

    video = make_video(tmp_path / "n.mp4", numbered_frames(240), keyframe_every=keyframe_every)  # 9.6 s
    times = [0.0, 0.5, 0.52, 3.0, 3.01, 6.99, 9.56, 12.0]
    done: list = []
    real_open = av.open
    monkeypatch.setattr(av, "open", lambda *a, **k: _SeekCounting(real_open(*a, **k), done))
    got = list(sample_video(video, times))
    monkeypatch.setattr(av, "open", real_open)
    assert len(done) == seeks
    expected = [0, 13, 13, 75, 76, 175, 239]  # ⌈t × 25⌉
    assert [frame_number(f.image) for f in got] == expected
    assert [f.index for f in got] == expected
    assert [round(f.time * FPS) for f in got] == expected
    assert list(sample_video(video, [])) == []
    with pytest.raises(VideoReadError, match=r"^cannot open missing\.mp4: "):
        list(sample_video(tmp_path / "missing.mp4", [0.0]))
    (tmp_path / "noise.mp4").write_bytes(bytes(range(256)) * 64)
    with pytest.raises(VideoReadError, match=r"noise\.mp4"):
        list(sample_video(tmp_path / "noise.mp4", [0.0]))
