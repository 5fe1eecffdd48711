"""Writing output videos: streaming H.264 with the driver's audio, RGBA output, and never a half-written file.

``bilayer animate`` renders frame after frame; ``VideoWriter`` encodes each frame as it arrives (PyAV, so no
``ffmpeg`` binary is needed and memory stays flat whatever the length). Everything is written to a hidden
temporary name in the output folder (``.NAME.HOST-PID-TOKEN.partial.mp4``) and renamed onto the output only when
``close()`` succeeds: an exception, Ctrl-C or SIGTERM leaves either the previous file or nothing, never a truncated
video that looks finished, and the temporary that a killed process (SIGKILL, power loss) leaves behind is removed
by the next run writing the same output. ``check_output_path`` validates the output before any work starts (one-sentence
``OutputError``), so a typo in the folder name does not cost a whole render.

Output kinds (chosen by the path's suffix):

* ``.mp4`` / ``.m4v`` / ``.mov`` / ``.mkv``: H.264 (libx264, ``crf``, ``preset``) in yuv420p, which every player
  decodes. yuv420p needs even sizes: a frame with an odd width or height gets one replicated column / row
  (``frame_size`` is the encoded size).
* alpha (``alpha=True``): a ``.mov`` with the lossless PNG codec in RGBA (QuickTime, ffmpeg, Blender, After
  Effects and DaVinci read it; PyAV decodes it back bit-exact) — H.264 and mp4 cannot carry alpha, and VP9 alpha
  in WebM is only decoded with its alpha by libvpx, not by FFmpeg's native decoder that PyAV uses by default.
* no suffix: a folder of PNG frames ``000000.png, 000001.png, …`` (RGB, or RGBA with ``alpha=True``); the
  simplest thing to feed to other tools. An existing folder is only replaced if it holds nothing but such
  frames (a previous run's output).

Audio (``audio_from``, usually the driving video): its first audio stream is copied into a video output while
the frames stream in (packets whose time is before the current video time are muxed after each frame, so the
file is interleaved). The packets are remuxed as they are when the output container accepts the codec (AAC or
MP3 into mp4 / mov, nearly anything into mkv), otherwise decoded and re-encoded to AAC. The audio is cut at the
end of the video, and time 0 of the audio is the start of ``audio_from``'s video stream, so a driver read from
its first frame stays in sync. A source without audio, a PNG-folder output, or an audio stream that fails to
decode half-way (the video is kept; ``audio_error`` says why) give an output without (the rest of the) audio.
"""

from __future__ import annotations

import errno
import logging
import os
import re
import shutil
from fractions import Fraction
from pathlib import Path
from types import TracebackType

import cv2
import numpy as np

from ..outputs import OutputError, partial_name, replace_folder, staging_folder, sweep_stale, writable_folder
from ..vision.errors import short_reason
from .compose import even_size, pad_even

log = logging.getLogger(__name__)

VIDEO_SUFFIXES = (".mp4", ".m4v", ".mov", ".mkv")
ALPHA_SUFFIXES = (".mov",)
_FORMATS = {".mp4": "mp4", ".m4v": "mp4", ".mov": "mov", ".mkv": "matroska"}
# Audio codecs copied without re-encoding, per container: those players read there (FFmpeg's muxers accept more,
# e.g. PCM in mp4, which browsers and QuickTime do not play). Anything else is re-encoded to AAC.
_REMUX_AUDIO = {
    "mp4": frozenset({"aac", "mp3", "alac", "ac3", "eac3"}),
    "mov": frozenset({"aac", "mp3", "alac", "ac3", "eac3", "pcm_s16le", "pcm_s16be", "pcm_s24le", "pcm_f32le"}),
    "matroska": None,  # anything the muxer accepts
}
_FRAME_NAME = re.compile(r"^\d{6}\.png$")

__all__ = ["ALPHA_SUFFIXES", "OutputError", "VIDEO_SUFFIXES", "VideoWriter", "check_output_path", "output_kind"]




def output_kind(path: str | os.PathLike, alpha: bool = False) -> str:
    """``"video"`` (H.264), ``"alpha-mov"`` (PNG codec in .mov) or ``"frames"`` (a folder of PNGs) for ``path``.
    Raises ``OutputError`` for a suffix that cannot hold the requested output."""
    path = Path(path)
    suffix = path.suffix.lower()
    if not suffix:
        return "frames"
    if alpha:
        if suffix in ALPHA_SUFFIXES:
            return "alpha-mov"
        raise OutputError(
            f"cannot write an alpha (RGBA) output to {path}: expected a .mov file or a folder path without a suffix."
        )
    if suffix in VIDEO_SUFFIXES:
        return "video"
    raise OutputError(
        f"unsupported output suffix {path.suffix!r} for {path}: expected {', '.join(VIDEO_SUFFIXES)} or a folder "
        "path without a suffix (PNG frames)."
    )


def check_output_path(path: str | os.PathLike, *, alpha: bool = False,
                      inputs: tuple[str | os.PathLike, ...] = ()) -> Path:
    """Validate an output path before work starts; returns it as a ``Path``. Raises ``OutputError`` (one sentence)
    when the parent folder is missing or not writable, the suffix is unsupported, the path is a folder where a
    file is expected (or a folder holding other files where PNG frames are expected), or it is one of ``inputs``."""
    path = Path(path).expanduser()
    kind = output_kind(path, alpha)
    parent = path.parent
    if not parent.is_dir():
        raise OutputError(f"the output folder {parent} does not exist (for {path.name}).")
    if not writable_folder(parent):
        raise OutputError(f"the output folder {parent} is not writable (for {path.name}).")
    for other in inputs:
        if path.exists() and Path(other).exists() and path.resolve() == Path(other).resolve():
            raise OutputError(f"the output {path} is also an input; choose another output path.")
    if kind == "frames":
        if path.exists() and not path.is_dir():
            raise OutputError(f"the output {path} exists and is not a folder; expected a folder for PNG frames.")
        if path.is_dir() and any(not _FRAME_NAME.match(p.name) for p in path.iterdir()):
            raise OutputError(f"the output folder {path} holds other files; expected a new folder or a previous "
                              "frames folder.")
    elif path.is_dir():
        raise OutputError(f"the output {path} is a folder; expected a video file path.")
    return path


def _rate(fps: float) -> Fraction:
    if not fps or fps <= 0 or not np.isfinite(fps):
        raise ValueError(f"fps must be a positive number, got {fps}")
    return Fraction(fps).limit_denominator(1001)


def _video_codec() -> str:
    import av

    for name in ("libx264", "h264", "mpeg4"):
        try:
            av.Codec(name, "w")
            return name
        except Exception:  # noqa: BLE001 - not compiled into this FFmpeg
            continue
    raise OutputError("this PyAV build has no H.264 or MPEG-4 encoder; install the PyAV wheel from PyPI.")


class _AudioCopy:
    """Copies the first audio stream of ``source`` into ``output`` up to a given time (see the module docstring)."""

    def __init__(self, source: Path, output, container_format: str) -> None:
        import av

        self.input = av.open(str(source))
        try:
            self.in_stream = self.input.streams.audio[0]
            video = self.input.streams.video
            start = None
            if video and video[0].start_time is not None and video[0].time_base is not None:
                start = float(video[0].start_time * video[0].time_base)
            elif self.in_stream.start_time is not None and self.in_stream.time_base is not None:
                start = float(self.in_stream.start_time * self.in_stream.time_base)
            self.offset = start or 0.0
            allowed = _REMUX_AUDIO.get(container_format)
            self.remux = allowed is None or self.in_stream.codec_context.name in allowed
            if self.remux:
                try:
                    self.out_stream = output.add_stream_from_template(self.in_stream)
                except ValueError:  # the output container does not accept this codec
                    self.remux = False
            if not self.remux:  # re-encode to AAC
                rate = self.in_stream.codec_context.sample_rate or 48000
                self.out_stream = output.add_stream("aac", rate=rate)
                layout = self.in_stream.codec_context.layout
                self.out_stream.layout = layout.name if layout.nb_channels <= 2 else "stereo"
                self.out_stream.bit_rate = 160_000
            tb = self.in_stream.time_base
            self.shift = int(round(self.offset / tb)) if tb else 0  # time 0 = the start of the video stream
            self.items = self._items()
            self.pending = None  # the packet (remux) or decoded frame (re-encode) that starts at or after `end`
            self.done = False
        except BaseException:
            self.input.close()
            raise

    def _time(self, item) -> float | None:
        if item.pts is None or item.time_base is None:
            return None
        return float(item.pts * item.time_base) - self.offset

    def _items(self):
        for packet in self.input.demux(self.in_stream):
            if self.remux:
                if packet.size:  # not the demuxer's final empty packet
                    yield packet
            else:
                yield from packet.decode()  # the final empty packet flushes the decoder

    def copy_until(self, output, end: float) -> None:
        """Mux every audio packet that starts before ``end`` seconds (video time)."""
        while not self.done:
            if self.pending is None:
                self.pending = next(self.items, None)
                if self.pending is None:
                    self.done = True
                    return
            item = self.pending
            t = self._time(item)
            if t is not None and t >= end:
                return
            self.pending = None
            if self.remux:
                if self.shift:
                    item.pts = None if item.pts is None else item.pts - self.shift
                    item.dts = None if item.dts is None else item.dts - self.shift
                item.stream = self.out_stream
                output.mux(item)
            else:
                if t is not None and t + item.samples / item.sample_rate <= 0:
                    continue  # entirely before the first video frame
                item.pts = None  # the encoder numbers the samples itself
                output.mux(self.out_stream.encode(item))

    def finish(self, output, end: float) -> None:
        self.copy_until(output, end)
        self.done = True
        if not self.remux:
            output.mux(self.out_stream.encode(None))

    def close(self) -> None:
        self.input.close()


class VideoWriter:
    """A streaming video writer (see the module docstring for the output kinds and the audio).

    ``size`` is (width, height) of the frames passed to ``write`` (H × W × 3 uint8 RGB, or H × W × 4 RGBA with
    ``alpha=True``; an RGB frame written to an alpha output is opaque). Use it as a context manager::

        with VideoWriter("out.mp4", fps=25, size=(512, 512), audio_from="driver.mp4") as w:
            for frame in frames:
                w.write(frame)

    The output appears when the ``with`` block ends without an exception (or ``close()`` returns); otherwise the
    temporary file is removed and nothing is left (``abort()`` does it by hand).
    """

    def __init__(self, path: str | os.PathLike, fps: float, size: tuple[int, int], *,
                 audio_from: str | os.PathLike | None = None, alpha: bool = False, crf: int = 18,
                 preset: str = "veryfast"):
        self.path = check_output_path(path, alpha=alpha)
        self.kind = output_kind(self.path, alpha)
        self.alpha = bool(alpha)
        self.rate = _rate(fps)
        self.fps = float(self.rate)
        width, height = (int(v) for v in size)
        if width <= 0 or height <= 0:
            raise ValueError(f"frame size must be positive, got {size}")
        self.size = (width, height)
        self.frame_size = even_size(width, height) if self.kind == "video" else self.size
        self.frames_written = 0
        self.audio = False
        self.audio_error: str | None = None
        self._container = None
        self._stream = None
        self._audio: _AudioCopy | None = None
        self._closed = False
        sweep_stale(self.path.parent, self.path.name)  # what a killed run left for this output
        if self.kind == "frames":
            self.partial = staging_folder(self.path)
            return
        self.partial = self.path.with_name(partial_name(self.path.name, self.path.suffix))
        try:
            self._open(crf, preset, audio_from)
        except BaseException:
            self.abort()
            raise

    # ------------------------------------------------------------------------------------------ set-up
    def _open(self, crf: int, preset: str, audio_from: str | os.PathLike | None) -> None:
        import av

        options = {"movflags": "+faststart"} if _FORMATS[self.path.suffix.lower()] in ("mp4", "mov") else {}
        self._container = av.open(str(self.partial), "w", format=_FORMATS[self.path.suffix.lower()],
                                  options=options)
        width, height = self.frame_size
        if self.kind == "alpha-mov":
            stream = self._container.add_stream("png", rate=self.rate)
            stream.pix_fmt = "rgba"
        else:
            codec = _video_codec()
            stream = self._container.add_stream(codec, rate=self.rate)
            stream.pix_fmt = "yuv420p"
            if codec == "libx264":
                stream.options = {"crf": str(int(crf)), "preset": preset}
            else:
                stream.bit_rate = int(width * height * self.fps * 0.25)
        stream.width, stream.height = width, height
        stream.codec_context.time_base = Fraction(1, 1) / self.rate
        self._stream = stream
        if audio_from is not None:
            self._open_audio(Path(audio_from))

    def _open_audio(self, source: Path) -> None:
        import av

        try:
            with av.open(str(source)) as probe:
                has_audio = bool(probe.streams.audio)
        except (av.FFmpegError, OSError) as exc:
            raise OutputError(f"cannot read the audio of {source}: {short_reason(exc)}.") from exc
        if not has_audio:
            return
        try:
            self._audio = _AudioCopy(source, self._container, _FORMATS[self.path.suffix.lower()])
            self.audio = True
        except (av.FFmpegError, OSError, ValueError) as exc:
            log.warning("the audio of %s cannot be copied (%s); the output has no sound", source, short_reason(exc))
            self.audio_error = short_reason(exc)

    # ------------------------------------------------------------------------------------------- write
    def _prepare(self, frame: np.ndarray) -> np.ndarray:
        frame = np.asarray(frame)
        width, height = self.size
        channels = (3, 4) if self.alpha else (3,)
        if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[:2] != (height, width) \
                or frame.shape[2] not in channels:
            want = f"{height}×{width}×{'3 or 4' if self.alpha else '3'} uint8"
            raise ValueError(f"frame {self.frames_written} for {self.path.name} must be {want}, got "
                             f"{frame.dtype} {frame.shape}")
        if self.alpha and frame.shape[2] == 3:
            frame = np.concatenate([frame, np.full((height, width, 1), 255, np.uint8)], axis=2)
        return np.ascontiguousarray(frame)

    def write(self, frame: np.ndarray) -> None:
        """Encode one frame (see the class docstring for the layout)."""
        if self._closed:
            raise RuntimeError(f"write() on the closed writer of {self.path}")
        image = self._prepare(frame)
        if self.kind == "frames":
            bgr = cv2.cvtColor(image, cv2.COLOR_RGBA2BGRA if image.shape[2] == 4 else cv2.COLOR_RGB2BGR)
            target = self.partial / f"{self.frames_written:06d}.png"
            if not cv2.imwrite(str(target), bgr):
                raise OSError(errno.EIO, "could not write a PNG frame", str(self.path))
            self.frames_written += 1
            return
        import av

        if self.kind == "video":
            image = pad_even(image)
        video_frame = av.VideoFrame.from_ndarray(image, format="rgba" if self.alpha else "rgb24")
        video_frame.pts = self.frames_written
        video_frame.time_base = self._stream.codec_context.time_base
        self._container.mux(self._stream.encode(video_frame))
        self.frames_written += 1
        self._copy_audio(self.frames_written / self.fps)

    def _copy_audio(self, end: float, final: bool = False) -> None:
        import av

        if self._audio is None or self.audio_error is not None:
            return
        try:
            if final:
                self._audio.finish(self._container, end)
            else:
                self._audio.copy_until(self._container, end)
        except (av.FFmpegError, ValueError) as exc:
            self.audio_error = short_reason(exc)
            log.warning("copying the audio stopped at %.2f s (%s); the rest of the output is silent", end,
                        self.audio_error)

    # ------------------------------------------------------------------------------------------- close
    def close(self) -> Path:
        """Finish the file and move it onto ``path``; returns ``path``. Raises ``OutputError`` if no frame was
        written (the temporary output is removed)."""
        if self._closed:
            return self.path
        if self.frames_written == 0:
            self.abort()
            raise OutputError(f"no frame was written to {self.path}; nothing was saved.")
        try:
            if self.kind != "frames":
                self._container.mux(self._stream.encode(None))
                self._copy_audio(self.frames_written / self.fps, final=True)
                self._container.close()
                self._container = None
                if self._audio is not None:
                    self._audio.close()
                    self._audio = None
                os.replace(self.partial, self.path)
            else:
                self._replace_folder()
        except BaseException:
            self.abort()
            raise
        self._closed = True
        return self.path

    def _replace_folder(self) -> None:
        replace_folder(self.partial, self.path)

    def abort(self) -> None:
        """Stop writing and remove the temporary output; ``path`` is left as it was."""
        self._closed = True
        if self._container is not None:
            try:
                self._container.close()
            except Exception:  # noqa: BLE001 - the file is removed anyway
                pass
            self._container = None
        if self._audio is not None:
            self._audio.close()
            self._audio = None
        if self.partial.is_dir():
            shutil.rmtree(self.partial, ignore_errors=True)
        else:
            self.partial.unlink(missing_ok=True)

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()
