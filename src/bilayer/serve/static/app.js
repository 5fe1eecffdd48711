// bilayer serve: the page's logic (no libraries; everything it needs is served with it).
"use strict";

const $ = (id) => document.getElementById(id);
let avatarId = null;

function showTab(name) {
  for (const tab of document.querySelectorAll(".tab")) tab.classList.toggle("active", tab.dataset.tab === name);
  for (const panel of document.querySelectorAll(".panel")) panel.classList.toggle("active", panel.id === name);
}
for (const tab of document.querySelectorAll(".tab")) tab.addEventListener("click", () => showTab(tab.dataset.tab));

function say(id, text, error = false) {
  const el = $(id);
  el.textContent = text;
  el.classList.toggle("error", error);
}

async function postForm(url, form) {
  const response = await fetch(url, { method: "POST", body: form });
  const body = await response.json().catch(() => ({ error: `the server answered ${response.status}` }));
  if (!response.ok) throw new Error(body.error || `the server answered ${response.status}`);
  return body;
}

// ------------------------------------------------------------------------------------------------ avatar
$("avatar-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const file = $("photo").files[0];
  if (!file) return;
  const form = new FormData();
  form.append("photo", file);
  $("make-avatar").disabled = true;
  say("avatar-status", "making the avatar (landmarks, crop, mask, texture)…");
  try {
    const made = await postForm("/api/avatars", form);
    avatarId = made.id;
    $("crop").src = made.crop;
    $("mask").src = made.mask;
    $("avatar-preview").hidden = false;
    say("avatar-status", `avatar ready${made.enhanced ? " (texture enhanced)" : ""}: animate it with a video or drive it live.`);
    $("tab-animate").disabled = false;
    $("tab-live").disabled = false;
    document.body.dataset.avatar = made.id;
  } catch (error) {
    say("avatar-status", error.message, true);
  } finally {
    $("make-avatar").disabled = false;
  }
});

// ------------------------------------------------------------------------------------------------ animate
$("animate-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const file = $("driver").files[0];
  if (!file || !avatarId) return;
  const form = new FormData();
  form.append("avatar", avatarId);
  form.append("driver", file);
  form.append("paste_back", $("paste-back").checked);
  form.append("side_by_side", $("side-by-side").checked);
  form.append("alpha", $("alpha").checked);
  $("start-animation").disabled = true;
  $("animate-result").hidden = true;
  $("animate-progress").hidden = false;
  $("animate-progress").removeAttribute("value");
  say("animate-status", "uploading…");
  try {
    const job = await postForm("/api/animations", form);
    for (;;) {
      await new Promise((r) => setTimeout(r, 400));
      const s = await (await fetch(`/api/animations/${job.id}`)).json();
      if (s.total) { $("animate-progress").max = s.total; $("animate-progress").value = s.frames; }
      if (s.state === "running") { say("animate-status", `rendering frame ${s.frames}${s.total ? " of " + s.total : ""}…`); continue; }
      if (s.state === "failed") throw new Error(s.error);
      $("animate-progress").hidden = true;
      say("animate-status", `done: ${s.frames} frames in ${s.seconds.toFixed(1)} s.`);
      $("result-download").href = s.result;
      if (s.result.endsWith(".mp4")) { $("result-video").src = s.result; $("result-video").hidden = false; }
      else { $("result-video").hidden = true; }
      $("animate-result").hidden = false;
      document.body.dataset.result = s.result;
      break;
    }
  } catch (error) {
    $("animate-progress").hidden = true;
    say("animate-status", error.message, true);
  } finally {
    $("start-animation").disabled = false;
  }
});

// ------------------------------------------------------------------------------------------------ live
let socket = null, stream = null, timer = null, received = 0, lastUrl = null;

async function startLive() {
  if (!avatarId) return;
  try {
    stream = await navigator.mediaDevices.getUserMedia({ video: { width: 640, height: 480 }, audio: false });
  } catch (error) {
    say("live-status", `the camera cannot be opened: ${error.message}`, true);
    return;
  }
  $("webcam").srcObject = stream;
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  socket = new WebSocket(`${scheme}://${location.host}/api/live/${avatarId}`);
  socket.binaryType = "blob";
  const canvas = document.createElement("canvas");
  canvas.width = 320; canvas.height = 240;
  const context = canvas.getContext("2d");
  socket.onopen = () => {
    say("live-status", "connected: waiting for a face…");
    timer = setInterval(() => {
      // one frame at a time on the wire: the server keeps only the newest anyway
      if (socket.readyState !== WebSocket.OPEN || socket.bufferedAmount > 0 || $("webcam").readyState < 2) return;
      context.drawImage($("webcam"), 0, 0, canvas.width, canvas.height);
      canvas.toBlob((blob) => { if (blob && socket.readyState === WebSocket.OPEN) socket.send(blob); }, "image/jpeg", 0.8);
    }, 1000 / 30);
  };
  socket.onmessage = (message) => {
    if (typeof message.data === "string") {
      const s = JSON.parse(message.data);
      if (s.error) { say("live-status", s.error, true); return; }
      if (s.rendered) {
        const l = s.latency_ms;
        say("live-status", `${s.fps.toFixed(1)} frames/s rendered · server latency ${l.median.toFixed(0)} ms median, ` +
            `${l.p95.toFixed(0)} ms p95 · dropped ${s.dropped_before_tracking + s.dropped_before_rendering} · ${s.backend}`);
      }
      return;
    }
    received += 1;
    document.body.dataset.liveFrames = received;
    const url = URL.createObjectURL(message.data);
    $("live-view").src = url;
    if (lastUrl) URL.revokeObjectURL(lastUrl);
    lastUrl = url;
  };
  socket.onclose = () => stopLive(false);
  $("live-start").disabled = true;
  $("live-stop").disabled = false;
  $("live-recenter").disabled = false;
}

function stopLive(close = true) {
  if (timer) clearInterval(timer);
  timer = null;
  if (close && socket) socket.close();
  socket = null;
  if (stream) for (const track of stream.getTracks()) track.stop();
  stream = null;
  $("live-start").disabled = false;
  $("live-stop").disabled = true;
  $("live-recenter").disabled = true;
}

$("live-start").addEventListener("click", startLive);
$("live-stop").addEventListener("click", () => stopLive(true));
$("live-recenter").addEventListener("click", () => socket && socket.send(JSON.stringify({ recenter: true })));
