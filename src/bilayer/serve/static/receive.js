// bilayer receiver: renders a keypoint stream in the browser with ONNX Runtime Web (WebAssembly; WebGPU with
// ?ep=webgpu). ?stream=NAME names the stream; ?bench=N instead renders the avatar N times back to back.
"use strict";

const params = new URLSearchParams(location.search);
const streamName = params.get("stream") || "live";
const bench = parseInt(params.get("bench") || "0", 10);
const stats = { frames: 0, bytes: 0, fps: 0, renderMs: [], ready: false, error: null, backend: null };
window.bilayerStats = stats;

const LOW = -2, HIGH = 2, LEVELS = 65535, VALUES = 136, HEADER = 12;

function say(text, error = false) {
  const el = document.getElementById("status");
  el.textContent = text;
  el.classList.toggle("error", error);
  if (error) stats.error = text;
}

function decode(buffer) {
  const view = new DataView(buffer);
  if (buffer.byteLength !== HEADER + 2 * VALUES || view.getUint8(0) !== 0x42 || view.getUint8(1) !== 0x4b) return null;
  const kp = new Float32Array(VALUES);
  for (let i = 0; i < VALUES; i++) kp[i] = LOW + (HIGH - LOW) * view.getUint16(HEADER + 2 * i, true) / LEVELS;
  return { index: view.getUint32(4, true), noFace: (view.getUint8(3) & 1) === 1, keypoints: kp };
}

let session = null, size = 256, busy = false, pending = null, lastKeypoints = null;
const canvas = document.getElementById("view");
const context = canvas.getContext("2d");

async function load(url, avatarSize) {
  size = avatarSize;
  canvas.width = canvas.height = size;
  const threads = self.crossOriginIsolated ? Math.min(4, navigator.hardwareConcurrency || 1) : 1;
  ort.env.wasm.wasmPaths = "/ort/";
  ort.env.wasm.numThreads = threads;
  const ep = params.get("ep") === "webgpu" && navigator.gpu ? "webgpu" : "wasm";  // WebGPU falls back to wasm
  session = await ort.InferenceSession.create(url, { executionProviders: [ep], graphOptimizationLevel: "all" });
  stats.backend = `${ep}, ${threads} thread${threads === 1 ? "" : "s"}`;
  stats.ready = true;
}

function paint(image, mask) {
  const n = size * size, out = context.createImageData(size, size), px = out.data;
  for (let i = 0; i < n; i++) {
    const m = Math.min(1, Math.max(0, mask[i]));
    for (let c = 0; c < 3; c++) {
      const v = (image[c * n + i] + 1) * 127.5 * m;
      px[4 * i + c] = v < 0 ? 0 : v > 255 ? 255 : Math.round(v);
    }
    px[4 * i + 3] = 255;
  }
  context.putImageData(out, 0, 0);
}

async function render(keypoints) {
  const t0 = performance.now();
  const result = await session.run({ keypoints: new ort.Tensor("float32", keypoints, [1, VALUES]) });
  paint(result.image.data, result.mask.data);
  stats.renderMs.push(performance.now() - t0);
  if (stats.renderMs.length > 300) stats.renderMs.shift();
  stats.frames += 1;
}

async function pump() {
  // one frame in flight; a frame that arrives meanwhile replaces the waiting one (the newest pose wins)
  if (busy || !pending || !session) return;
  busy = true;
  const kp = pending;
  pending = null;
  try { await render(kp); } catch (e) { say(`rendering failed: ${e.message}`, true); }
  busy = false;
  pump();
}

function connect() {
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  const socket = new WebSocket(`${scheme}://${location.host}/api/streams/${encodeURIComponent(streamName)}/watch`);
  socket.binaryType = "arraybuffer";
  let started = null;
  socket.onmessage = async (message) => {
    if (typeof message.data === "string") {
      const info = JSON.parse(message.data);
      if (info.error) { say(info.error, true); return; }
      say("loading the avatar…");
      try { await load(info.avatar, info.size); } catch (e) { say(`the avatar cannot be loaded: ${e.message}`, true); return; }
      say(`receiving stream ${streamName} (${stats.backend})…`);
      return;
    }
    stats.bytes += message.data.byteLength;
    const frame = decode(message.data);
    if (!frame) return;
    if (!frame.noFace) lastKeypoints = frame.keypoints;
    if (!lastKeypoints) return;
    pending = lastKeypoints;
    started = started || performance.now();
    const seconds = (performance.now() - started) / 1000;
    if (seconds > 0) stats.fps = stats.frames / seconds;
    if (stats.frames % 10 === 0 && stats.frames) {
      const ms = [...stats.renderMs].sort((a, b) => a - b)[Math.floor(stats.renderMs.length / 2)];
      say(`${stats.frames} frames · ${stats.fps.toFixed(1)} frames/s · render ${ms.toFixed(1)} ms median · ` +
          `${(stats.bytes / stats.frames).toFixed(0)} bytes a frame · ${stats.backend}`);
    }
    pump();
  };
  socket.onclose = () => { if (!stats.error) say("the stream has ended"); };
}

async function benchmark() {
  // render the avatar's graph N times back to back with slightly moving keypoints, then report frames/s
  const info = await (await fetch(`/api/streams/${encodeURIComponent(streamName)}`.replace(/\/[^/]*$/, ""))).json();
  const stream = info.streams.find((s) => s.name === streamName);
  if (!stream) { say(`there is no stream ${streamName}`, true); return; }
  await load(`/api/streams/${encodeURIComponent(streamName)}/avatar.onnx`, stream.size);
  const kp = new Float32Array(VALUES);
  for (let i = 0; i < VALUES; i++) kp[i] = Math.sin(i) * 0.5;
  for (let i = 0; i < 5; i++) await render(kp);  // warm-up
  stats.frames = 0; stats.renderMs = [];
  const t0 = performance.now();
  for (let i = 0; i < bench; i++) { kp[i % VALUES] += 0.001; await render(kp); }
  stats.fps = bench / ((performance.now() - t0) / 1000);
  stats.benchDone = true;
  say(`benchmark: ${bench} frames at ${stats.fps.toFixed(1)} frames/s (${stats.backend})`);
}

if (typeof ort === "undefined") {
  say("onnxruntime-web is not installed on this server (`make install` fetches it from npm).", true);
} else if (bench > 0) {
  benchmark().catch((e) => say(`benchmark failed: ${e.message}`, true));
} else {
  connect();
}
