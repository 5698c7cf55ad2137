// lrnet serve page: upload, follow progress, show the verdict, block timeline and landmark overlay.
// Plain browser JavaScript; talks only to this server's /api/v1.
"use strict";

const $ = (id) => document.getElementById(id);
const STAGES = {
  queued: "Waiting for a free worker", starting: "Starting", landmarks: "Decoding and finding landmarks",
  calibration: "Calibrating the landmarks", scoring: "Scoring blocks", video: "Preparing the video for the browser",
  done: "Done", failed: "Failed", cancelled: "Cancelled",
};
// Share of the bar the upload fills, then each stage's, in order: together exactly 1.
const UPLOAD_SHARE = 0.05;
const WEIGHTS = [["landmarks", 0.7], ["calibration", 0.15], ["scoring", 0.05], ["video", 0.05]];
const state = { token: sessionStorage.getItem("lrnet-token") || "", job: null, shown: null, events: null, marks: null, file: null,
  progress: 0, thumbs: 0 };
const WORDS = { fake: "Looks fake", real: "Looks real", uncertain: "Uncertain", "n/a": "Not judged" };

// ------------------------------------------------------------------------------- API
class AuthError extends Error {}

async function api(path, options = {}) {
  const headers = Object.assign({}, options.headers || {});
  if (state.token) headers.Authorization = "Bearer " + state.token;
  const response = await fetch(path, Object.assign({}, options, { headers }));
  if (response.status === 401) { askToken(); throw new AuthError("token needed"); }
  return response;
}

async function apiJson(path, options) {
  const response = await api(path, options);
  const body = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error(body.detail || response.statusText);
  return body;
}

function withToken(url) {
  return state.token ? url + "?token=" + encodeURIComponent(state.token) : url;
}

function askToken(message) {
  // nothing else works without a token: no empty dropdowns under the prompt
  ["upload", "progress", "result", "recent"].forEach((id) => { $(id).hidden = true; });
  $("auth").hidden = false;
  $("auth-error").textContent = message || (state.token ? "That token was not accepted." : "");
  $("token").focus();
}

// ------------------------------------------------------------------------------- setup
async function loadOptions() {
  const info = await apiJson("/api/v1/weights");
  fillSelect($("weights"), info.weights.map((w) => [w.name, shortWeights(w.source) + (w.fps ? ` (${w.fps} fps)` : "")]), info.default);
  fillSelect($("aggregation"), info.aggregations.map((a) => [a, a]), "vote");
  $("drop-help").textContent += ` · at most ${info.limits.max_upload_mb} MB and ${info.limits.max_seconds} s`;
}

function fillSelect(select, options, chosen) {
  select.replaceChildren(...options.map(([value, label]) => {
    const option = new Option(label, value, false, value === chosen);
    return option;
  }));
}

function pickFile(file) {
  state.file = file || null;
  $("drop-title").textContent = file ? `${file.name} (${(file.size / 1048576).toFixed(1)} MB)` : "Drop a video here, or choose a file";
  $("submit").disabled = !file;
  $("upload-error").textContent = "";
}

function wireUpload() {
  const drop = $("drop");
  drop.addEventListener("click", () => $("file").click());
  drop.addEventListener("keydown", (e) => {
    if (e.key === "Enter" || e.key === " ") { e.preventDefault(); $("file").click(); }
  });
  $("file").addEventListener("change", () => pickFile($("file").files[0]));
  ["dragenter", "dragover"].forEach((t) => drop.addEventListener(t, (e) => { e.preventDefault(); drop.classList.add("over"); }));
  ["dragleave", "drop"].forEach((t) => drop.addEventListener(t, () => drop.classList.remove("over")));
  drop.addEventListener("drop", (e) => { e.preventDefault(); pickFile(e.dataTransfer.files[0]); });
  $("upload-form").addEventListener("submit", (e) => { e.preventDefault(); if (state.file) upload(state.file); });
}

// ------------------------------------------------------------------------------- upload and progress
function upload(file) {
  const form = new FormData();
  form.append("weights", $("weights").value);
  form.append("aggregation", $("aggregation").value);
  form.append("file", file);
  const xhr = new XMLHttpRequest();
  xhr.open("POST", "/api/v1/jobs");
  if (state.token) xhr.setRequestHeader("Authorization", "Bearer " + state.token);
  xhr.upload.onprogress = (e) => e.lengthComputable && showProgress("Uploading", e.loaded / e.total * UPLOAD_SHARE, file.name);
  xhr.onload = () => uploaded(xhr);
  xhr.onerror = () => failUpload("The upload did not reach the server.");
  state.progress = 0;
  showProgress("Uploading", 0, file.name);
  $("submit").disabled = true;
  xhr.send(form);
}

function uploaded(xhr) {
  let body = {};
  try { body = JSON.parse(xhr.responseText); } catch (e) { /* not JSON: use the status line */ }
  if (xhr.status === 401) { $("progress").hidden = true; askToken(); return; }
  if (xhr.status !== 202) {
    const wait = xhr.getResponseHeader("Retry-After");
    failUpload((body.detail || xhr.statusText) + (wait ? ` (try again in ${wait} s)` : ""));
    return;
  }
  follow(body.id);
  refreshRecent();
}

function failUpload(message) {
  $("progress").hidden = true;
  $("upload").hidden = false;
  $("upload-error").textContent = message;
  $("submit").disabled = !state.file;
}

// The bar never moves back (a stage may report again, e.g. a second decode) and never passes 100 %.
function showProgress(label, fraction, name) {
  $("upload").hidden = true;
  $("result").hidden = true;
  $("progress").hidden = false;
  if (name) $("progress-name").textContent = name;
  state.progress = Math.min(1, Math.max(state.progress, fraction ?? 0));
  $("bar").value = state.progress;
  $("stage").textContent = `${label} (${Math.round(state.progress * 100)} %)`;
}

// Fraction of the whole bar at `fraction` of `stage`: the stages before the work (queued, starting)
// sit where the upload ended; an unknown stage gives null (the bar stays where it is).
function overall(stage, fraction) {
  const part = Math.min(1, Math.max(0, Number(fraction) || 0));
  if (stage === "queued" || stage === "starting") return UPLOAD_SHARE;
  let done = UPLOAD_SHARE;
  for (const [name, share] of WEIGHTS) {
    if (name === stage) return Math.min(1, done + share * part);
    done += share;
  }
  return null;
}

function follow(id) {
  closeEvents();
  state.job = id;
  history.replaceState(null, "", "#job=" + id);
  state.events = new EventSource(withToken(`/api/v1/jobs/${id}/events`));
  state.events.onmessage = (e) => onJob(JSON.parse(e.data));
  state.events.onerror = () => { closeEvents(); setTimeout(() => reopen(id), 1000); };
}

async function reopen(id) {
  if (state.job !== id) return;
  try {
    const job = await apiJson(`/api/v1/jobs/${id}`);
    if (["queued", "running"].includes(job.status)) follow(id); else onJob(job);
  } catch (e) { if (!(e instanceof AuthError)) failUpload(e.message); }
}

function closeEvents() {
  if (state.events) state.events.close();
  state.events = null;
}

function onJob(job) {
  if (job.id !== state.job) return;
  const stage = job.progress.stage;
  if (job.status === "queued" || job.status === "running") {
    showProgress(STAGES[stage] || stage, overall(stage, job.progress.fraction), job.filename);
    return;
  }
  closeEvents();
  refreshRecent();
  if (job.status === "done") showResult(job);
  else failUpload(job.status === "cancelled" ? `${job.filename}: cancelled.` : job.error || "The job failed.");
}

async function cancel() {
  if (!state.job) return;
  const id = state.job;
  state.job = null;
  closeEvents();
  await api(`/api/v1/jobs/${id}`, { method: "DELETE" }).catch(() => null);
  failUpload("Cancelled.");
  refreshRecent();
}

// ------------------------------------------------------------------------------- result
function fmt(x, digits = 3) {
  return x === null || x === undefined ? "–" : Number(x).toFixed(digits);
}

function shortWeights(source) {
  // a folder path is long on a phone: its last part names it well enough (the full source is in Details)
  const parts = String(source).split("/").filter(Boolean);
  return parts.length > 1 ? parts[parts.length - 1] : String(source);
}

function verdictWord(result) {
  const call = result.call || result.verdict;
  return call === "uncertain" ? "uncertain" : result.verdict;
}

function showResult(job) {
  const r = job.result;
  state.shown = job;
  const word = verdictWord(r);
  $("progress").hidden = true;
  $("upload").hidden = true;
  $("result").hidden = false;
  $("verdict").className = "verdict " + word;
  $("verdict-file").textContent = job.filename;
  $("verdict-word").textContent = WORDS[word] || word;
  const details = r.block_details || [];
  const forged = details.filter((b) => b.p_fake >= 0.5).length;
  $("verdict-blocks").textContent = `${forged} of ${details.length} blocks look forged`;
  $("verdict-meta").textContent = `score ${fmt(r.score)} (${r.aggregation}; fake at ≥ ${fmt(r.threshold, 2)})` +
    ` · weights ${shortWeights(r.weights)}`;
  showNotes(r);
  showFaces(job);
  drawTimeline(r);
  showFacts(r);
  setupPlayer(job);
  $("verdict-word").focus();
}

function intervalText(interval) {
  if (Array.isArray(interval)) return `${fmt(interval[0])} to ${fmt(interval[1])}`;
  if (interval && typeof interval === "object") {
    const lo = interval.low ?? interval.lower ?? interval.lo, hi = interval.high ?? interval.upper ?? interval.hi;
    if (lo !== undefined && hi !== undefined) return `${fmt(lo)} to ${fmt(hi)}`;
  }
  return JSON.stringify(interval);
}

function showNotes(r) {
  const notes = [];
  if (r.interval !== undefined && r.interval !== null) notes.push(`Score interval: ${intervalText(r.interval)}`);
  if (r.fps_warning) notes.push(`Frame rate: ${r.fps_warning}`);
  if (Array.isArray(r.segments) && r.segments.length > 1) notes.push(`${r.segments.length} segments (shots) scored separately`);
  if (Array.isArray(r.cuts) && r.cuts.length) notes.push(`Cuts: ${r.cuts.length}`);
  if (r.dropped_frames) notes.push(`Dropped frames: ${typeof r.dropped_frames === "object" ? JSON.stringify(r.dropped_frames) : r.dropped_frames}`);
  (Array.isArray(r.notes) ? r.notes : r.notes ? [r.notes] : []).forEach((n) => notes.push(String(n)));
  if (r.time_note) notes.push(r.time_note);
  $("notes").replaceChildren(...notes.map((text) => Object.assign(document.createElement("li"), { textContent: text })));
}

function colour(p) {
  return `hsl(${Math.round(130 * (1 - p))}, 65%, ${p >= 0.5 ? 46 : 40}%)`;
}

// Seconds the timelines span: the video, or the last block if it ends later (every face's timeline shares it).
function timelineEnd(r) {
  const ends = [r.block_details || [], ...(r.faces || []).map((f) => f.blocks_detail || [])].flat().map((b) => b.end_s);
  return Math.max(r.duration_s || 0, ...ends) || 1;
}

// One block's bar on a timeline `end` seconds long: a button that plays the video from the block's start.
function blockBar(b, index, end, playable, who = "") {
  const bar = document.createElement("button");
  bar.type = "button";
  bar.className = "bar";
  bar.style.left = `${(b.start_s / end) * 100}%`;
  bar.style.width = `max(3px, calc(${((b.end_s - b.start_s) / end) * 100}% - 2px))`;
  bar.style.height = `max(3px, ${Math.max(4, b.p_fake * 100)}%)`; // a near-zero block stays visible on a small timeline
  bar.style.background = colour(b.p_fake);
  const branches = b.p_g1 !== null && b.p_g1 !== undefined ? `, g1 ${fmt(b.p_g1, 2)}, g2 ${fmt(b.p_g2, 2)}` : "";
  bar.title = `${who}block ${index + 1}: ${fmt(b.start_s, 1)}–${fmt(b.end_s, 1)} s, p(fake) ${fmt(b.p_fake, 2)}${branches}`;
  bar.setAttribute("aria-label", bar.title + (playable ? "; press to play from here" : ""));
  bar.addEventListener("click", () => seek(b.start_s));
  return bar;
}

function drawTimeline(r) {
  const timeline = $("timeline");
  timeline.querySelectorAll(".bar").forEach((b) => b.remove());
  const details = r.block_details || [];
  const end = timelineEnd(r);
  for (const b of details) timeline.appendChild(blockBar(b, b.index, end, r.kind === "video"));
  $("axis-mid").textContent = `${fmt(end / 2, 1)} s`;
  $("axis-end").textContent = `${fmt(end, 1)} s`;
}

// ------------------------------------------------------------------------------- every face
const THUMB = 88; // CSS px of a face's thumbnail (drawn at twice that for sharp screens)
const THUMB_MARGIN = 0.3; // share of the landmark box added on each side: the box stops at the brows and chin
const THUMB_AFTER = 0.2; // s after a face's first frame: past a fade-in, still inside its span

// A video with more than one face: one row per face (thumbnail, verdict, score, span, its own timeline).
// One face: the section stays hidden and the page is as it always was.
function showFaces(job) {
  const r = job.result, faces = Array.isArray(r.faces) ? r.faces : [];
  state.thumbs += 1; // a newer job's thumbnails replace any still being drawn
  const many = r.kind === "video" && faces.length > 1;
  $("faces").hidden = !many;
  $("timeline-title").textContent = many ? `Fake probability per block of face ${r.face} (the verdict's face)`
    : "Fake probability per block";
  if (!many) { $("faces-list").replaceChildren(); return; }
  const end = timelineEnd(r);
  $("faces-list").replaceChildren(...faces.map((f) => faceRow(f, f.face === r.face, end)));
  if (job.urls && job.urls.video) drawThumbs(withToken(job.urls.video), faces, r, state.thumbs);
  else faces.forEach((f) => thumbFailed(f.face, "no video to take it from"));
}

function faceRow(f, main, end) {
  const details = f.blocks_detail || [];
  const word = !f.blocks ? "n/a" : f.call === "uncertain" ? "uncertain" : f.verdict;
  const item = Object.assign(document.createElement("li"), { className: `face-row ${word}${main ? " main" : ""}` });
  item.dataset.face = f.face;
  const canvas = Object.assign(document.createElement("canvas"), { className: "face-thumb", width: 2 * THUMB, height: 2 * THUMB });
  canvas.setAttribute("role", "img");
  canvas.setAttribute("aria-label", `Face ${f.face}: picture loading`);
  const info = Object.assign(document.createElement("div"), { className: "face-info" });
  const title = Object.assign(document.createElement("p"), { className: "face-title" });
  title.append(Object.assign(document.createElement("strong"), { textContent: `Face ${f.face}` }), " ",
               Object.assign(document.createElement("span"), { className: "face-word", textContent: WORDS[word] || word }));
  if (main) title.append(" ", Object.assign(document.createElement("span"), { className: "tag main", textContent: "the verdict is this face's" }));
  const forged = details.filter((b) => b.p_fake >= 0.5).length;
  const interval = f.interval ? ` (interval ${intervalText(f.interval)})` : "";
  const meta = Object.assign(document.createElement("p"), { className: "face-meta",
    textContent: `score ${fmt(f.score)}${interval} · in the video ${fmt(f.first_s, 1)}–${fmt(f.last_s, 1)} s · ` +
                 (f.blocks ? `${forged} of ${details.length} blocks look forged` : "too short for one block") });
  const timeline = Object.assign(document.createElement("div"), { className: "timeline face-timeline" });
  timeline.setAttribute("role", "group");
  timeline.setAttribute("aria-label", `Fake probability per block of face ${f.face}`);
  const threshold = Object.assign(document.createElement("div"), { className: "threshold" });
  threshold.setAttribute("aria-hidden", "true");
  timeline.appendChild(threshold);
  details.forEach((b, i) => timeline.appendChild(blockBar(b, i, end, true, `face ${f.face}, `)));
  info.append(title, meta, timeline);
  item.append(canvas, info);
  return item;
}

function faceThumb(face) {
  return $("faces-list").querySelector(`li[data-face="${face}"] canvas`);
}

function thumbFailed(face, why) {
  const canvas = faceThumb(face);
  if (!canvas) return;
  canvas.classList.add("failed");
  canvas.setAttribute("aria-label", `Face ${face}: no picture (${why})`);
  canvas.title = `No picture: ${why}`;
}

// Resolves on the media element's `name` event; rejects on its error or after `ms`.
function mediaEvent(video, name, ms = 20000) {
  return new Promise((resolve, reject) => {
    const stop = () => { clearTimeout(timer); video.removeEventListener(name, done); video.removeEventListener("error", fail); };
    const done = () => { stop(); resolve(); };
    const fail = () => { stop(); reject(new Error(video.error ? video.error.message || "the video did not decode" : `no ${name} event`)); };
    const timer = setTimeout(fail, ms);
    video.addEventListener(name, done);
    video.addEventListener("error", fail);
  });
}

// Each face's thumbnail, cut from the job's own (same-origin) video. A second, unseen <video> seeks to
// each face, so the player's position and the user's playback are never disturbed.
async function drawThumbs(src, faces, r, ticket) {
  const video = Object.assign(document.createElement("video"), { muted: true, preload: "auto", playsInline: true });
  let face = null;
  try {
    video.src = src;
    await mediaEvent(video, "loadeddata");
    for (const f of faces) {
      if (ticket !== state.thumbs) return;
      face = f.face;
      const last = Math.max(f.first_s, Math.min(f.last_s, video.duration) - 0.05);
      const at = Math.min(f.first_s + THUMB_AFTER, last);
      const seeked = mediaEvent(video, "seeked");
      video.currentTime = at;
      await seeked;
      if (ticket !== state.thumbs) return;
      drawThumb(faceThumb(f.face), video, f, r, at);
    }
  } catch (e) {
    if (ticket !== state.thumbs) return;
    const from = faces.findIndex((f) => f.face === face);
    faces.slice(Math.max(0, from)).forEach((f) => thumbFailed(f.face, e.message));
  } finally {
    video.removeAttribute("src");
    video.load(); // lets the browser drop the decoder
  }
}

function drawThumb(canvas, video, f, r, at) {
  if (!canvas) return;
  // the box is in the landmarks' pixels; the browser's copy may be scaled
  const kx = video.videoWidth / (r.width || video.videoWidth), ky = video.videoHeight / (r.height || video.videoHeight);
  const [x0, y0, x1, y1] = f.box;
  const fw = (x1 - x0) * kx, fh = (y1 - y0) * ky;
  const side = Math.min(Math.max(fw, fh) * (1 + 2 * THUMB_MARGIN), video.videoWidth, video.videoHeight);
  // a square around the face, moved (not shrunk) to stay inside the picture
  const left = Math.min(Math.max(0, (x0 * kx + fw / 2) - side / 2), video.videoWidth - side);
  const top = Math.min(Math.max(0, (y0 * ky + fh / 2) - side / 2), video.videoHeight - side);
  const ctx = canvas.getContext("2d");
  ctx.drawImage(video, left, top, side, side, 0, 0, canvas.width, canvas.height);
  canvas.classList.remove("failed");
  canvas.setAttribute("aria-label", `Face ${f.face}, at ${fmt(at, 1)} s in the video`);
  canvas.title = `Face ${f.face} at ${fmt(at, 1)} s`;
}

function seek(seconds) {
  const video = $("video");
  if ($("player").hidden) return;
  video.currentTime = seconds + 0.001;
  video.focus();
}

function showFacts(r) {
  const t = r.timing || {};
  const facts = [
    ["Frames", `${r.frames} scored` + (r.decoded_frames !== undefined ? ` of ${r.decoded_frames} decoded` : "")],
    ["Blocks", `${r.blocks} of ${r.block_size} frames`],
    ["Landmarks", r.landmarked !== undefined ? `${r.landmarked} detected, ${r.reused} reused, ${r.skipped} skipped at the start` : "from the uploaded file"],
    ["Frame rate", `${fmt(r.fps ?? r.time_fps, 2)} frames/s`],
    ["Weights", `${r.weights} (threshold ${fmt(r.threshold, 2)}, ${r.threshold_source})`],
    ["Time", Object.entries(t).map(([k, v]) => `${k} ${fmt(v, 2)} s`).join(", ")],
  ];
  $("facts").replaceChildren(...facts.flatMap(([k, v]) => [
    Object.assign(document.createElement("dt"), { textContent: k }),
    Object.assign(document.createElement("dd"), { textContent: v }),
  ]));
}

// ------------------------------------------------------------------------------- video and overlay
async function setupPlayer(job) {
  const video = $("video");
  state.marks = null;
  if (job.kind === "landmarks" || !job.urls.video) {
    $("player").hidden = true;
    video.removeAttribute("src");
    return;
  }
  $("player").hidden = false;
  video.src = withToken(job.urls.video);
  try {
    state.marks = await apiJson(job.urls.landmarks);
  } catch (e) { state.marks = null; }
  drawOverlay();
}

function frameAt(times, t) {
  let lo = 0, hi = times.length - 1;
  if (hi < 0 || t < times[0] - 0.5 / state.marks.fps) return -1;
  while (lo < hi) {
    const mid = (lo + hi + 1) >> 1;
    if (times[mid] <= t + 1e-4) lo = mid; else hi = mid - 1;
  }
  return lo;
}

function drawPoints(ctx, row, scale, fill) {
  ctx.fillStyle = fill;
  const r = Math.max(2, 2.6 * scale);
  for (let k = 0; k < row.length; k += 2) {
    ctx.beginPath();
    ctx.arc(row[k] * scale, row[k + 1] * scale, r, 0, 2 * Math.PI);
    ctx.fill();
  }
}

function drawOverlay(mediaTime) {
  const video = $("video"), canvas = $("overlay"), marks = state.marks;
  const w = video.clientWidth, h = video.clientHeight;
  if (canvas.width !== w || canvas.height !== h) { canvas.width = w; canvas.height = h; }
  const ctx = canvas.getContext("2d");
  ctx.clearRect(0, 0, w, h);
  if (!marks || !marks.raw || !video.videoWidth) return;
  // the picture is letter-boxed inside the element: fit the landmark frame the same way
  const scale = Math.min(w / marks.width, h / marks.height);
  ctx.save();
  ctx.translate((w - marks.width * scale) / 2, (h - marks.height * scale) / 2);
  const i = frameAt(marks.times, mediaTime ?? video.currentTime);
  if (i >= 0) {
    if ($("show-raw").checked) drawPoints(ctx, marks.raw[i], scale, "rgba(40, 220, 90, 0.9)");
    if ($("show-cal").checked) drawPoints(ctx, marks.calibrated[i], scale, "rgba(240, 60, 60, 0.9)");
  }
  ctx.restore();
}

function wirePlayer() {
  const video = $("video");
  if ("requestVideoFrameCallback" in HTMLVideoElement.prototype) {
    const onFrame = (now, meta) => { drawOverlay(meta.mediaTime); video.requestVideoFrameCallback(onFrame); };
    video.requestVideoFrameCallback(onFrame);
  } else {
    const loop = () => { drawOverlay(); if (!video.paused) requestAnimationFrame(loop); };
    video.addEventListener("play", loop);
  }
  ["seeked", "loadeddata", "pause"].forEach((t) => video.addEventListener(t, () => drawOverlay()));
  ["show-raw", "show-cal"].forEach((id) => $(id).addEventListener("change", () => drawOverlay()));
  new ResizeObserver(() => drawOverlay()).observe(video);
}

// ------------------------------------------------------------------------------- downloads and recent jobs
async function download(url, name) {
  const response = await api(url);
  if (!response.ok) return;
  const link = Object.assign(document.createElement("a"), { href: URL.createObjectURL(await response.blob()), download: name });
  document.body.appendChild(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(link.href), 10000);
}

async function refreshRecent() {
  let jobs = [];
  try { jobs = (await apiJson("/api/v1/jobs?limit=20")).jobs; } catch (e) { return; }
  $("recent-empty").hidden = jobs.length > 0;
  $("recent-list").replaceChildren(...jobs.map((job) => {
    const item = document.createElement("li");
    const button = Object.assign(document.createElement("button"), { type: "button", className: "link" });
    button.textContent = job.filename;
    button.addEventListener("click", () => openJob(job.id));
    const what = job.status === "done" ? `${job.verdict} · score ${fmt(job.score)}` : job.status;
    const tag = Object.assign(document.createElement("span"), { className: "tag " + (job.verdict || job.status), textContent: what });
    item.append(button, tag);
    return item;
  }));
}

async function openJob(id) {
  state.job = id;
  state.progress = 0;
  try {
    const job = await apiJson(`/api/v1/jobs/${id}`);
    if (job.status === "done") { history.replaceState(null, "", "#job=" + id); showResult(job); }
    else if (job.status === "queued" || job.status === "running") follow(id);
    else failUpload(job.error || `${job.filename}: ${job.status}`);
  } catch (e) { if (!(e instanceof AuthError)) failUpload(e.message); }
}

function reset() {
  closeEvents();
  state.job = null;
  state.thumbs += 1; // stop drawing the last job's thumbnails
  state.progress = 0;
  history.replaceState(null, "", location.pathname);
  $("result").hidden = true;
  $("progress").hidden = true;
  $("upload").hidden = false;
  $("video").pause();
  pickFile(null);
  $("file").value = "";
  $("drop").focus();
}

async function start() {
  try {
    await loadOptions();
  } catch (e) {
    if (!(e instanceof AuthError)) {
      $("upload").hidden = false;
      $("upload-error").textContent = "The server did not answer: " + e.message;
    }
    return;
  }
  $("auth").hidden = true;
  $("upload").hidden = false;
  $("recent").hidden = false;
  refreshRecent();
  const match = location.hash.match(/^#job=([0-9a-f]{32})$/);
  if (match) openJob(match[1]);
}

function wire() {
  wireUpload();
  wirePlayer();
  $("cancel").addEventListener("click", cancel);
  $("again").addEventListener("click", reset);
  $("dl-json").addEventListener("click", async () => {
    const job = await apiJson(`/api/v1/jobs/${state.shown.id}`);
    const blob = new Blob([JSON.stringify(job, null, 2)], { type: "application/json" });
    const link = Object.assign(document.createElement("a"), { href: URL.createObjectURL(blob), download: job.filename.replace(/\.[^.]*$/, "") + ".lrnet.json" });
    link.click();
  });
  $("dl-txt").addEventListener("click", () => download(`/api/v1/jobs/${state.shown.id}/landmarks.txt`,
    state.shown.filename.replace(/\.[^.]*$/, "") + ".txt"));
  $("auth-form").addEventListener("submit", (e) => {
    e.preventDefault();
    state.token = $("token").value.trim();
    sessionStorage.setItem("lrnet-token", state.token);
    start();
  });
}

wire();
start();
