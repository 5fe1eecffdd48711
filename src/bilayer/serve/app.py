"""The web app behind ``bilayer serve``: make an avatar from a photo, animate it with a video, drive it live from
the browser's webcam — one page, served with everything it needs (no CDN), on 127.0.0.1 unless told otherwise.

HTTP API (JSON errors are ``{"error": "one sentence"}`` with status 400, 404 or 413):

* ``POST /api/avatars`` (multipart ``photo``) → ``{"id", "crop", "mask", "enhanced"}``: the avatar is made at once
  (landmarks, crop, mask, personalisation and texture enhancer); ``crop`` and ``mask`` are the preview images'
  URLs (``GET /api/avatars/ID/crop.png``, ``…/mask.png``).
* ``POST /api/animations`` (multipart ``avatar`` id, ``driver`` video, and ``paste_back``, ``side_by_side``,
  ``alpha``) → ``{"id"}``: a background job running ``bilayer animate``'s pipeline; ``GET /api/animations/ID`` →
  ``{"state": "running" | "done" | "failed", "frames", "total", "error", "result"}``; ``result`` is the URL of the
  video (an .mp4, or a .mov with an alpha channel).
* ``WebSocket /api/live/ID``: the browser sends its webcam frames as JPEG (binary messages) and ``{"recenter":
  true}`` (text); the server tracks, renders and answers with the avatar's frames as JPEG, newest first (a frame
  that arrives while another is tracked or rendered replaces the waiting one), and every second a text message
  with the session's figures (``live.session.LiveReport.to_dict``).
* ``GET /api/info`` → the model and limits.

Uploads larger than ``max_upload_bytes`` are refused with 413 before being read whole; every input is checked
with the same one-sentence messages as the command line.
"""

import asyncio
import contextlib
import json
import shutil
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

STATIC = Path(__file__).resolve().parent / "static"
ORT_WEB_VERSION = "1.22.0"  # onnxruntime-web, fetched from npm by `make` (never committed)
MAX_GRAPH_BYTES = 256 * 2**20  # an avatar's per-frame ONNX graph (the medium model's is about 10 MB)


def ort_web_dir() -> Path:
    """Where ``make`` puts onnxruntime-web's browser files (ort.min.js and its WebAssembly)."""
    from ..io import cache_home

    return cache_home() / "web" / f"onnxruntime-web-{ORT_WEB_VERSION}"
PHOTO_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
VIDEO_SUFFIXES = (".mp4", ".mov", ".mkv", ".webm", ".avi", ".m4v")
MAX_UPLOAD_BYTES = 100 * 2**20
MAX_AVATARS = 32  # kept in memory; the oldest is forgotten first


class WebError(Exception):
    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class _Avatar:
    id: str
    avatar: object
    folder: Path
    photo: Path
    file: Path
    renderer: object = None
    lock: threading.Lock = field(default_factory=threading.Lock)


@dataclass
class _Stream:
    """A keypoint stream: the avatar's graph, and a one-slot queue per watcher (newest frame wins)."""

    name: str
    graph: bytes
    size: int
    watchers: set = field(default_factory=set)
    frames: int = 0
    sender: bool = False


@dataclass
class _Job:
    id: str
    state: str = "running"
    frames: int = 0
    total: int | None = None
    error: str | None = None
    result: Path | None = None
    started: float = field(default_factory=time.time)


def describe(exc: BaseException) -> str:
    """The one sentence the command line would print for ``exc``."""
    from ..messages import os_error_message, sentence

    return os_error_message(exc) if isinstance(exc, OSError) else sentence(str(exc))


def _png(image: np.ndarray) -> bytes:
    ok, data = cv2.imencode(".png", cv2.cvtColor(image, cv2.COLOR_RGB2BGR) if image.ndim == 3 else image)
    return data.tobytes()


class ServeState:
    """The app's avatars, jobs and model; one per app."""

    def __init__(self, model_dir: str | Path, work_dir: Path, max_upload_bytes: int, backend: str = "auto") -> None:
        from ..models.bilayer import BilayerModel

        self.model_dir = str(model_dir)
        self.model = BilayerModel.from_pretrained(model_dir).eval()
        self.work = work_dir
        self.max_upload = int(max_upload_bytes)
        self.backend = backend
        self.avatars: dict[str, _Avatar] = {}
        self.jobs: dict[str, _Job] = {}
        self.streams: dict[str, _Stream] = {}
        self.lock = threading.Lock()

    # -------------------------------------------------------------------------------------- uploads
    async def save_upload(self, upload, folder: Path, name: str, suffixes: tuple[str, ...], what: str) -> Path:
        """Stream an upload into ``folder``, refusing (413) past the size limit and (400) a wrong kind of file."""
        original = Path(upload.filename or "").name
        suffix = Path(original).suffix.lower()
        if suffix not in suffixes:
            raise WebError(f"{original or 'the upload'} is not {what} ({', '.join(suffixes)}).")
        # kept under the name it was sent with, so that every message names the user's own file
        path = folder / (original if original not in ("", ".", "..") else f"{name}{suffix}")
        size = 0
        with open(path, "wb") as f:
            while chunk := await upload.read(1 << 20):
                size += len(chunk)
                if size > self.max_upload:
                    f.close()
                    path.unlink(missing_ok=True)
                    raise WebError(f"{original} is larger than the {self.max_upload // 2**20} MiB upload limit.", 413)
                f.write(chunk)
        if size == 0:
            path.unlink(missing_ok=True)
            raise WebError(f"{original} is empty.")
        return path

    # -------------------------------------------------------------------------------------- avatars
    def make_avatar(self, photo: Path, folder: Path, name: str) -> _Avatar:
        from ..runtime.avatar import Avatar

        avatar = Avatar.create(self.model, str(photo), name=name)
        avatar_id = folder.name
        file = avatar.save(folder / "avatar.avatar")
        entry = _Avatar(avatar_id, avatar, folder, photo, file)
        with self.lock:
            self.avatars[avatar_id] = entry
            while len(self.avatars) > MAX_AVATARS:
                old = next(iter(self.avatars))
                shutil.rmtree(self.avatars.pop(old).folder, ignore_errors=True)
        return entry

    def get_avatar(self, avatar_id: str) -> _Avatar:
        entry = self.avatars.get(avatar_id)
        if entry is None:
            raise WebError(f"there is no avatar {avatar_id!r}; make one from a photo first.", 404)
        return entry

    def renderer(self, entry: _Avatar):
        from ..live.app import choose_backend, render_device

        with entry.lock:
            if entry.renderer is None:
                backend, _ = choose_backend(self.backend)
                entry.renderer = entry.avatar.renderer(self.model, backend, device=render_device(backend)).warmup(1)
            return entry.renderer

    # -------------------------------------------------------------------------------------- jobs
    def start_animation(self, entry: _Avatar, driver: Path, paste_back: bool, side_by_side: bool,
                        alpha: bool) -> _Job:
        from ..animate.app import AnimateOptions, animate, check

        job = _Job(uuid.uuid4().hex[:12])
        out = driver.parent / ("result.mov" if alpha else "result.mp4")
        options = AnimateOptions(
            model=self.model_dir, driver=str(driver), out=str(out),
            source=str(entry.photo) if paste_back else None, avatar=None if paste_back else str(entry.file),
            paste_back=paste_back, side_by_side=side_by_side, alpha=alpha, progress=False)
        check(options)  # one sentence now, not in the job

        def progress(done: int, total: int | None) -> None:
            job.frames, job.total = done, total

        def run() -> None:
            try:
                report = animate(options, on_frame=progress)
                job.frames, job.result, job.state = report.frames, out, "done"
            except Exception as exc:  # noqa: BLE001 - shown to the user as one sentence
                job.error, job.state = describe(exc), "failed"

        with self.lock:
            self.jobs[job.id] = job
        threading.Thread(target=run, name=f"bilayer-serve-job-{job.id}", daemon=True).start()
        return job


def _offer(queue: asyncio.Queue, item) -> None:
    """Put ``item`` in a one-slot queue, replacing what is waiting there (the newest frame wins)."""
    try:
        queue.get_nowait()
    except asyncio.QueueEmpty:
        pass
    queue.put_nowait(item)


def create_app(model_dir: str | Path, *, max_upload_bytes: int = MAX_UPLOAD_BYTES, work_dir: str | Path | None = None,
               backend: str = "auto"):
    """The FastAPI app for ``model_dir``; uploads and results live under ``work_dir`` (a temporary folder removed
    at shutdown when not given)."""
    from fastapi import FastAPI, File, Form, Request, UploadFile, WebSocket, WebSocketDisconnect
    from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response
    from fastapi.staticfiles import StaticFiles

    temporary = work_dir is None
    work = Path(tempfile.mkdtemp(prefix="bilayer-serve-")) if temporary else Path(work_dir)
    work.mkdir(parents=True, exist_ok=True)
    state = ServeState(model_dir, work, max_upload_bytes, backend)
    app = FastAPI(title="bilayer", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.bilayer = state

    if temporary:
        @app.on_event("shutdown")
        def _cleanup() -> None:
            shutil.rmtree(work, ignore_errors=True)

    @app.exception_handler(WebError)
    async def _web_error(request: Request, exc: WebError):
        return JSONResponse({"error": str(exc)}, status_code=exc.status)

    @contextlib.contextmanager
    def upload_folder(kind: str) -> Iterator[Path]:
        """A new folder under the work folder for one request's upload, removed again when handling it fails; a
        user error (a bad photo or video, a file that cannot be read) becomes a 400 answer with its sentence."""
        from ..messages import user_error_types

        folder = work / kind / uuid.uuid4().hex[:12]
        folder.mkdir(parents=True)
        try:
            yield folder
        except WebError:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        except (*user_error_types(), OSError) as exc:
            shutil.rmtree(folder, ignore_errors=True)
            raise WebError(describe(exc)) from None

    @app.middleware("http")
    async def _limit(request: Request, call_next):
        length = request.headers.get("content-length")
        limited = not request.url.path.startswith("/api/streams/")  # an avatar graph has its own limit
        if limited and length and length.isdigit() and int(length) > state.max_upload + 2**20:
            return JSONResponse({"error": f"the upload is larger than the {state.max_upload // 2**20} MiB upload limit."},
                                status_code=413)
        return await call_next(request)

    @app.get("/", response_class=HTMLResponse)
    def index() -> str:
        return (STATIC / "index.html").read_text()

    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/api/info")
    def info() -> dict:
        from ..live.app import choose_backend

        return {"model": state.model_dir, "image_size": state.model.config.image_size,
                "max_upload_mib": state.max_upload // 2**20, "backend": choose_backend(state.backend)[0]}

    @app.post("/api/avatars")
    async def make_avatar(photo: UploadFile = File(...)) -> dict:
        with upload_folder("avatars") as folder:
            path = await state.save_upload(photo, folder, "photo", PHOTO_SUFFIXES, "a photo")
            name = Path(photo.filename or "photo").name
            entry = await asyncio.to_thread(state.make_avatar, path, folder, name)
        base = f"/api/avatars/{entry.id}"
        return {"id": entry.id, "crop": f"{base}/crop.png", "mask": f"{base}/mask.png",
                "enhanced": bool(entry.avatar.enhanced)}

    @app.get("/api/avatars/{avatar_id}/{kind}.png")
    def avatar_image(avatar_id: str, kind: str) -> Response:
        from ..animate.compose import to_mask, to_uint8

        entry = state.get_avatar(avatar_id)
        if kind == "crop":
            image = to_uint8(entry.avatar.source_image)
        elif kind == "mask":
            image = (to_mask(entry.avatar.source_mask) * 255).round().astype(np.uint8)
        else:
            raise WebError(f"there is no {kind}.png; expected crop.png or mask.png.", 404)
        return Response(_png(image), media_type="image/png")

    @app.post("/api/animations")
    async def animate(avatar: str = Form(...), driver: UploadFile = File(...), paste_back: bool = Form(False),
                      side_by_side: bool = Form(False), alpha: bool = Form(False)) -> dict:
        entry = state.get_avatar(avatar)
        with upload_folder("animations") as folder:
            path = await state.save_upload(driver, folder, "driver", VIDEO_SUFFIXES, "a video")
            job = state.start_animation(entry, path, paste_back, side_by_side, alpha)
        return {"id": job.id}

    @app.get("/api/animations/{job_id}")
    def job_status(job_id: str) -> dict:
        job = state.jobs.get(job_id)
        if job is None:
            raise WebError(f"there is no animation {job_id!r}.", 404)
        return {"state": job.state, "frames": job.frames, "total": job.total, "error": job.error,
                "result": f"/api/animations/{job.id}/{job.result.name}" if job.result else None,
                "seconds": time.time() - job.started}

    @app.get("/api/animations/{job_id}/{name}")
    def job_result(job_id: str, name: str) -> FileResponse:
        job = state.jobs.get(job_id)
        if job is None or job.result is None or name != job.result.name:
            raise WebError(f"there is no result {name!r} for animation {job_id!r}.", 404)
        kind = "video/mp4" if job.result.suffix == ".mp4" else "video/quicktime"
        return FileResponse(job.result, media_type=kind, filename=f"bilayer-{job.id}{job.result.suffix}")

    @app.websocket("/api/live/{avatar_id}")
    async def live(socket: WebSocket, avatar_id: str) -> None:
        from ..live.capture import PushSource
        from ..live.outputs import FrameHub
        from ..live.session import LiveSession
        from ..live.track import LiveTracker

        await socket.accept()
        try:
            entry = state.get_avatar(avatar_id)
        except WebError as exc:
            await socket.send_text(json.dumps({"error": str(exc)}))
            await socket.close()
            return
        renderer = await asyncio.to_thread(state.renderer, entry)
        source = PushSource("webcam", kind="browser")
        tracker = await asyncio.to_thread(LiveTracker, "mediapipe")
        hub = FrameHub(quality=85)
        session = LiveSession(entry.avatar, renderer, source, tracker, outputs=(hub,))
        worker = threading.Thread(target=session.run, name="bilayer-serve-live", daemon=True)
        worker.start()

        async def send_frames() -> None:
            seen, last_stats = 0, 0.0
            while not hub.closed:
                seen_new, jpeg = await asyncio.to_thread(hub.wait, seen, 0.5)
                if jpeg is not None:
                    seen = seen_new
                    await socket.send_bytes(jpeg)
                if time.monotonic() - last_stats > 1.0:
                    last_stats = time.monotonic()
                    await socket.send_text(json.dumps(session.stats()))

        sender = asyncio.create_task(send_frames())
        try:
            while True:
                message = await socket.receive()
                if message["type"] == "websocket.disconnect":
                    break
                if message.get("bytes"):
                    image = cv2.imdecode(np.frombuffer(message["bytes"], np.uint8), cv2.IMREAD_COLOR)
                    if image is not None:
                        source.push(cv2.cvtColor(image, cv2.COLOR_BGR2RGB))
                elif message.get("text"):
                    try:
                        command = json.loads(message["text"])
                    except ValueError:
                        command = {}
                    if isinstance(command, dict) and command.get("recenter"):
                        session.recenter()
        except WebSocketDisconnect:
            pass
        finally:
            session.stop()
            source.close()
            hub.close()
            sender.cancel()
            await asyncio.to_thread(worker.join, 5)
            tracker.close()

    # ---------------------------------------------------------------------------------- keypoint streams
    isolation = {"Cross-Origin-Opener-Policy": "same-origin", "Cross-Origin-Embedder-Policy": "require-corp",
                 "Cross-Origin-Resource-Policy": "same-origin"}  # lets ONNX Runtime Web use threads

    def check_stream_name(name: str) -> str:
        from ..live.wire import check_stream_name as check

        try:
            return check(name)
        except ValueError as exc:
            raise WebError(str(exc)) from None

    @app.post("/api/streams/{name}/avatar")
    async def publish_avatar(name: str, request: Request) -> dict:
        check_stream_name(name)
        graph = bytearray()
        async for chunk in request.stream():
            graph += chunk
            if len(graph) > MAX_GRAPH_BYTES:
                raise WebError(f"the avatar graph is larger than {MAX_GRAPH_BYTES // 2**20} MiB.", 413)
        size = request.headers.get("x-bilayer-size", "")
        if not size.isdigit() or not 32 <= int(size) <= 2048:
            raise WebError("the avatar's image size (header X-Bilayer-Size) must be a number of pixels from 32 to 2048.")
        try:
            import onnx

            model = onnx.load_model_from_string(bytes(graph))
            inputs = [i.name for i in model.graph.input]
        except Exception:  # noqa: BLE001 - any parse failure is the same mistake
            inputs = []
        if inputs != ["keypoints"]:
            raise WebError("the avatar is not a per-frame bilayer ONNX graph (one input named keypoints).")
        with state.lock:
            old = state.streams.get(name)
            stream = _Stream(name, bytes(graph), int(size), watchers=old.watchers if old else set())
            state.streams[name] = stream
        for queue in list(stream.watchers):  # watchers already waiting reload the new avatar
            _offer(queue, json.dumps({"avatar": f"/api/streams/{name}/avatar.onnx", "size": stream.size}))
        return {"stream": name, "receive": f"/receive?stream={name}", "bytes": len(graph)}

    def get_stream(name: str) -> _Stream:
        stream = state.streams.get(name)
        if stream is None:
            raise WebError(f"there is no stream {name!r}; start one with bilayer live --send.", 404)
        return stream

    async def open_stream_socket(socket: WebSocket, name: str) -> _Stream | None:
        """Accept ``socket``; the stream it names, or None after telling the client there is none."""
        await socket.accept()
        try:
            return get_stream(name)
        except WebError as exc:
            await socket.send_text(json.dumps({"error": str(exc)}))
            await socket.close()
            return None

    @app.get("/api/streams/{name}/avatar.onnx")
    def stream_graph(name: str) -> Response:
        return Response(get_stream(name).graph, media_type="application/octet-stream", headers=isolation)

    @app.get("/api/streams")
    def list_streams() -> dict:
        return {"streams": [{"name": s.name, "size": s.size, "frames": s.frames, "watchers": len(s.watchers),
                             "avatar_bytes": len(s.graph)} for s in state.streams.values()]}

    @app.websocket("/api/streams/{name}/send")
    async def stream_send(socket: WebSocket, name: str) -> None:
        from ..live.wire import decode_keypoints

        stream = await open_stream_socket(socket, name)
        if stream is None:
            return
        try:
            while True:
                message = await socket.receive()
                if message["type"] == "websocket.disconnect":
                    break
                data = message.get("bytes")
                if not data:
                    continue
                try:
                    decode_keypoints(data)
                except ValueError:
                    continue  # not a keypoint message: dropped
                stream.frames += 1
                for queue in list(stream.watchers):
                    _offer(queue, data)
        except WebSocketDisconnect:
            pass

    @app.websocket("/api/streams/{name}/watch")
    async def stream_watch(socket: WebSocket, name: str) -> None:
        stream = await open_stream_socket(socket, name)
        if stream is None:
            return
        queue: asyncio.Queue = asyncio.Queue(maxsize=1)
        stream.watchers.add(queue)
        try:
            await socket.send_text(json.dumps({"avatar": f"/api/streams/{name}/avatar.onnx", "size": stream.size}))
            while True:
                item = await queue.get()
                if isinstance(item, str):
                    await socket.send_text(item)
                else:
                    await socket.send_bytes(item)
        except (WebSocketDisconnect, RuntimeError):
            pass
        finally:
            stream.watchers.discard(queue)

    @app.get("/receive", response_class=HTMLResponse)
    def receive_page() -> Response:
        return HTMLResponse((STATIC / "receive.html").read_text(), headers=isolation)

    @app.get("/ort/{file}")
    def ort_asset(file: str) -> Response:
        folder = ort_web_dir()
        path = folder / file
        if "/" in file or ".." in file or not path.is_file():
            raise WebError(f"onnxruntime-web's {file} is not installed in {folder}; `make install` fetches it.", 404)
        kind = {".js": "text/javascript", ".mjs": "text/javascript", ".wasm": "application/wasm"}.get(
            path.suffix, "application/octet-stream")
        return FileResponse(path, media_type=kind, headers=isolation)

    return app


def serve(model_dir: str | Path, host: str = "127.0.0.1", port: int = 7860, *, max_upload_bytes: int = MAX_UPLOAD_BYTES,
          backend: str = "auto", on_ready=None) -> None:
    """Run the app with uvicorn until Ctrl-C. ``on_ready(url)`` is called once it listens."""
    import uvicorn

    app = create_app(model_dir, max_upload_bytes=max_upload_bytes, backend=backend)
    config = uvicorn.Config(app, host=host, port=port, log_level="warning", ws_max_size=16 * 2**20)
    server = uvicorn.Server(config)
    if on_ready is not None:
        async def _ready() -> None:
            while not server.started:
                await asyncio.sleep(0.05)
            sockets = [s for srv in server.servers for s in srv.sockets]
            bound = sockets[0].getsockname()[1] if sockets else port
            on_ready(f"http://{host}:{bound}/")

        async def main() -> None:
            await asyncio.gather(server.serve(), _ready())

        asyncio.run(main())
    else:
        server.run()
