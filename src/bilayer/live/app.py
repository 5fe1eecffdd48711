"""``live(options)``: an avatar driven live by a camera, stream or file, to a file, a virtual camera or a web page.

Every input and output is checked before anything is loaded (one sentence on a mistake, nothing written); then
the model is loaded, the avatar made or loaded, the backend chosen (``auto``: fp16 on a CUDA GPU; on a CPU bf16
where it computes bfloat16 natively, else eager, which starts at once — a live session cannot wait for int8's
set-up unless asked),
the renderer warmed up, and the session runs until the source ends, the time is up or Ctrl-C.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..runtime.avatar_options import DrivenOptions

from .capture import LiveError
from .session import LiveReport
from .wire import MESSAGE_BYTES


@dataclass(frozen=True, kw_only=True)
class LiveOptions(DrivenOptions):
    """What ``bilayer live`` takes, one field per option (``bilayer live --help`` describes each); the avatar's
    options and those every driven command shares are ``DrivenOptions``."""

    driver: str = "camera"
    out: str | None = None
    virtual_camera: bool = False
    web: str | None = None  # "[HOST:]PORT"
    send: str | None = None  # a bilayer serve app's http:// address
    stream: str = "live"
    loop: bool = False
    driver_fps: float | None = None
    seconds: float | None = None
    fps: float | None = None  # of the file output; default: the source's rate, else 25
    camera_size: str | None = None
    camera_fps: float | None = None


def parse_address(text: str) -> tuple[str, int]:
    """"[HOST:]PORT" → (host, port); the host defaults to 127.0.0.1 (this machine only)."""
    host, sep, port = text.rpartition(":")
    host = host if sep else "127.0.0.1"
    host = host.strip("[]") or "127.0.0.1"
    if not port.isdigit() or not 0 <= int(port) <= 65535:
        raise LiveError(f"--web {text} is not [HOST:]PORT with a port from 0 to 65535.")
    return host, int(port)


def check(options: LiveOptions) -> None:
    """Refuse, in one sentence, missing inputs, impossible outputs and options that do not go together."""
    from ..animate.videoio import check_output_path
    from ..outputs import Outputs

    o = options
    if not (o.out or o.virtual_camera or o.web or o.send):
        raise LiveError("give at least one output: --out FILE.mp4, --virtual-camera, --web [HOST:]PORT or --send URL.")
    if o.send:
        from .wire import _stream_urls, check_stream_name

        _stream_urls(o.send, o.stream)
        check_stream_name(o.stream, "--stream")
    plan = Outputs().model("--model", o.model)
    for flag, value in o.avatar_inputs():
        plan.input(flag, value)
    if o.out:
        plan = plan.other("--out", o.out)
    plan.file("--report", o.report, (".json",), "a JSON file").check()
    if o.out:
        check_output_path(o.out)
        if Path(o.out).expanduser().resolve() == Path(o.driver).expanduser().resolve():
            raise LiveError(f"--out {o.out} is the live source itself; choose another output file.")
    if o.web:
        parse_address(o.web)
    if o.seconds is not None and not o.seconds > 0:
        raise LiveError(f"--seconds is {o.seconds:g}; expected a positive number of seconds.")
    if o.max_frames is not None and o.max_frames < 1:
        raise LiveError(f"--max-frames is {o.max_frames}; expected a whole number ≥ 1.")
    if o.fps is not None and not 0 < o.fps <= 240:
        raise LiveError(f"--fps is {o.fps:g}; expected a frame rate above 0 and at most 240.")
    if o.virtual_camera:
        from .outputs import check_virtual_camera

        check_virtual_camera()


def choose_backend(backend: str) -> tuple[str, str | None]:
    """The backend a live session uses for ``backend`` ("auto" or a name), and why when it chose: fp16 on a CUDA
    GPU when there is one; on a CPU bf16 where it computes bfloat16 natively, else eager (starts at once; a live
    session cannot wait for int8's set-up unless asked)."""
    if backend != "auto":
        return backend, None
    import torch

    if torch.cuda.is_available():
        return "fp16", f"fp16 on the GPU ({torch.cuda.get_device_name(0)})"
    from ..hardware import native_bfloat16

    if native_bfloat16():
        return "bf16", ("bf16: this CPU computes bfloat16 natively, about twice eager's speed with no set-up")
    return "eager", ("eager: starts at once (int8 is faster on CPUs without native bfloat16 after 20–40 s of "
                     "set-up: --backend int8)")


def render_device(backend: str) -> str:
    """Where ``backend`` renders: the GPU for the float backends when CUDA is there, else the CPU (int8 and onnx
    always run on the CPU here)."""
    import torch

    return "cuda" if torch.cuda.is_available() and backend in ("eager", "bf16", "fp16", "compile") else "cpu"


def live(options: LiveOptions, *, on_start=None) -> LiveReport:
    """Run a live session as ``options`` say; returns its report (also written to ``options.report``).
    ``on_start(session, web)`` is called once everything is ready, before the first frame (tests use it)."""
    from ..models.bilayer import BilayerModel
    from ..runtime.avatar import landmark_context
    from .capture import open_live_source
    from .outputs import FileOutput, FrameHub, VirtualCameraOutput
    from .session import LiveSession
    from .track import LiveTracker

    o = options
    check(o)
    source = open_live_source(o.driver, loop=o.loop, camera_size=o.camera_size, camera_fps=o.camera_fps,
                              rate=o.driver_fps)
    outputs: list = []
    web = None
    file_output = None
    try:
        model = BilayerModel.from_pretrained(o.model).eval()
        with landmark_context(o.landmarks, o.landmark_weights) as landmarks:
            avatar, _photo = o.make_avatar(model, landmarks)
            renders = bool(o.out or o.virtual_camera or o.web)  # a sender alone only tracks: the receiver renders
            renderer = None
            if renders:
                backend, why = choose_backend(o.backend)
                if why:
                    o.say(f"backend (auto) {why}")
                if backend in ("int8", "compile"):
                    o.say(f"preparing the {backend} renderer (20–40 s on a first run)…")
                renderer = avatar.renderer(model, backend, device=render_device(backend))
                renderer.warmup(1).warmup(1)  # the first calls set up kernels
            if o.send:
                from .wire import KeypointSender, avatar_graph

                graph = avatar_graph(avatar, model)
                sender = KeypointSender(o.send, o.stream, graph, avatar.size)
                outputs.append(sender)
                o.say(f"sent the avatar ({len(graph) / 2**20:.1f} MiB) once; now only keypoints, "
                        f"{MESSAGE_BYTES} bytes a frame; watch it at {sender.receive_url}")
            tracker = LiveTracker(landmarks, smoothing=o.smoothing)
            try:
                fps = o.fps or source.fps or 25.0
                if o.out:
                    file_output = FileOutput(o.out, fps)
                    outputs.append(file_output)
                if o.virtual_camera:
                    outputs.append(VirtualCameraOutput(fps))
                session = LiveSession(avatar, renderer, source, tracker, motion=o.motion, side=o.side_by_side,
                                      background=o.background, outputs=())
                if o.web:
                    from .web import LiveWeb

                    hub = FrameHub()
                    outputs.append(hub)
                    host, port = parse_address(o.web)
                    try:
                        web = LiveWeb(hub, session.stats, session.recenter, host, port)
                    except OSError as exc:
                        raise LiveError(f"cannot serve the page on {host}:{port}: {exc.strerror or exc}.") from None
                    o.say(f"live page: {web.url}")
                session.outputs = outputs
                o.say(f"live from {source.kind} {source.name}; Ctrl-C stops")
                if on_start is not None:
                    on_start(session, web)
                try:
                    report = session.run(seconds=o.seconds, max_frames=o.max_frames)
                except KeyboardInterrupt:
                    report = session.report  # stopped by the user: the outputs are finished as they are
                    if report is None:
                        raise
                for output in outputs:
                    if hasattr(output, "close"):
                        output.close()
                file_output = None
            finally:
                tracker.close()
    finally:
        if file_output is not None:  # an error: nothing half-written
            file_output.abort()
        if web is not None:
            web.close()
        source.close()
    if o.report:
        from ..io import write_json_atomic

        write_json_atomic(Path(o.report), report.to_dict())
    return report
