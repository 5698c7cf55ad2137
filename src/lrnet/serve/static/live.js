// lrnet serve page, Live tab: send a camera or a shared tab/window/screen to the server over WebRTC
// (POST /api/v1/live with an SDP offer) and show the events it sends back on the "lrnet" data channel:
// one bar per block, the rolling verdict with its interval, alerts, and a downloadable record.
// Uses app.js's $, api, fmt and colour (loaded first); everything else here is its own.
"use strict";

const LIVE_MAX_BARS = 120; // bars kept on screen; the record keeps every event
const LIVE_STOP_WAIT = 10000; // ms to wait for the server's last blocks and summary after Stop
const LIVE_WORDS = { fake: "Looks fake", real: "Looks real", uncertain: "Uncertain" };
// One colour per face (the stripe under its bars and its swatch in the list); the server follows at most 8.
const LIVE_FACE_COLOURS = ["#2459c9", "#8a3ffc", "#17202c", "#0e8a9c", "#c2185b", "#7a5a00", "#5f6b7a", "#e0590b"];
const live = { pc: null, stream: null, channel: null, record: null, word: null, blocks: 0, fake: 0, stopTimer: null, started: 0,
               faces: new Map() };

// ------------------------------------------------------------------------------- tabs
function liveSelectTab(which) {
  for (const name of ["file", "live"]) {
    const on = name === which;
    const tab = $("tab-" + name);
    tab.setAttribute("aria-selected", String(on));
    tab.tabIndex = on ? 0 : -1;
    $("view-" + name).hidden = !on;
  }
  if (which === "live") {
    liveFillWeights();
    api("/api/v1/live/warm", { method: "POST" }).catch(() => null); // the server loads a worker while you choose
  }
}

function liveWireTabs() {
  const tabs = [$("tab-file"), $("tab-live")];
  tabs.forEach((tab, i) => {
    tab.addEventListener("click", () => liveSelectTab(tab.id.slice(4)));
    tab.addEventListener("keydown", (e) => {
      const next = { ArrowRight: i + 1, ArrowLeft: i - 1, Home: 0, End: tabs.length - 1 }[e.key];
      if (next === undefined) return;
      e.preventDefault();
      const target = tabs[(next + tabs.length) % tabs.length];
      liveSelectTab(target.id.slice(4));
      target.focus();
    });
  });
  // the tabs show when app.js shows the file view's controls (the API answered, the token was accepted)
  const follow = () => {
    const off = $("recent").hidden;
    document.querySelector("[role=tablist]").hidden = off;
    if (off && !$("view-live").hidden) liveSelectTab("file");
  };
  new MutationObserver(follow).observe($("recent"), { attributes: true, attributeFilter: ["hidden"] });
  follow();
  if (location.hash === "#live") liveSelectTab("live");
}

function liveFillWeights() {
  // the file view's list (filled by app.js from GET /api/v1/weights): same weights, same default
  const source = $("weights"), target = $("live-weights");
  if (target.options.length === source.options.length && target.options.length) return;
  target.replaceChildren(...Array.from(source.options).map((o) => new Option(o.text, o.value, false, o.selected)));
}

// ------------------------------------------------------------------------------- start and stop
function liveSettings() {
  const window = Number($("live-window").value);
  if (!Number.isInteger(window) || window < 1 || window > 1000) throw new Error("The rolling window must be 1 to 1000 blocks.");
  const alert = $("live-alert").value.trim().toLowerCase();
  const rule = alert.match(/^(\d+)\s*\/\s*(\d+)$/);
  if (alert !== "off" && !(rule && 1 <= Number(rule[1]) && Number(rule[1]) <= Number(rule[2])))
    throw new Error('The alert rule must be K/N with 1 ≤ K ≤ N (for example 3/5), or "off".');
  const source = document.querySelector("input[name=live-source]:checked").value;
  return { source, window, alert: alert === "off" ? null : `${rule[1]}/${rule[2]}`, weights: $("live-weights").value || undefined };
}

async function liveCapture(source) {
  const media = navigator.mediaDevices;
  if (!media) throw new Error("This browser gives no camera or screen access here (it needs https:// or http://localhost).");
  try {
    if (source === "screen") return await media.getDisplayMedia({ video: { frameRate: { ideal: 30 } }, audio: false });
    return await media.getUserMedia({ video: { width: { ideal: 1280 }, height: { ideal: 720 }, frameRate: { ideal: 30 } }, audio: false });
  } catch (e) {
    if (e.name === "NotAllowedError") throw new Error(source === "screen" ? "Sharing was not allowed." : "The camera was not allowed.");
    if (e.name === "NotFoundError" || e.name === "OverconstrainedError") throw new Error("No camera was found.");
    if (e.name === "NotReadableError") throw new Error("The camera is in use by another program.");
    throw new Error(`${source === "screen" ? "Sharing" : "The camera"} failed: ${e.message || e.name}`);
  }
}

function liveGathered(pc, limit = 3000) {
  // the server takes the offer in one piece (no trickle): wait until its candidates are in it
  if (pc.iceGatheringState === "complete") return Promise.resolve();
  return new Promise((resolve) => {
    const done = () => { if (pc.iceGatheringState === "complete") { pc.removeEventListener("icegatheringstatechange", done); resolve(); } };
    pc.addEventListener("icegatheringstatechange", done);
    setTimeout(resolve, limit);
  });
}

async function liveStart() {
  $("live-error").textContent = "";
  let settings;
  try { settings = liveSettings(); } catch (e) { $("live-error").textContent = e.message; return; }
  liveBusy(true);
  liveStatus(settings.source === "screen" ? "Choose what to share…" : "Opening the camera…");
  try {
    live.stream = await liveCapture(settings.source);
    const track = live.stream.getVideoTracks()[0];
    track.addEventListener("ended", () => liveStop("The shared video stopped."));
    $("live-preview").srcObject = live.stream;
    liveReset(settings);
    liveStatus("Connecting to the server…");
    const pc = live.pc = new RTCPeerConnection({ iceServers: [] }); // the server is reached directly
    pc.addTransceiver(track, { direction: "sendonly", streams: [live.stream] });
    live.channel = pc.createDataChannel("lrnet");
    live.channel.onmessage = (e) => liveEvent(JSON.parse(e.data));
    live.channel.onclose = () => { if (live.pc === pc) liveFinish(); };
    pc.onconnectionstatechange = () => {
      if (live.pc === pc && pc.connectionState === "failed") liveFail("The connection to the server failed.");
    };
    await pc.setLocalDescription(await pc.createOffer());
    await liveGathered(pc);
    const response = await api("/api/v1/live", {
      method: "POST", headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ sdp: pc.localDescription.sdp, type: "offer", weights: settings.weights,
                             window: settings.window, alert: settings.alert }) });
    const body = await response.json().catch(() => ({}));
    if (!response.ok) {
      const wait = response.headers.get("Retry-After");
      throw new Error((body.detail || response.statusText) + (wait ? ` (try again in ${wait} s)` : ""));
    }
    live.record.session = body.id;
    await pc.setRemoteDescription({ type: "answer", sdp: body.sdp });
    liveKeepResolution(pc);
  } catch (e) {
    liveFail(e instanceof AuthError ? "This server needs the access token (see above)." : e.message);
  }
}

async function liveKeepResolution(pc) {
  // landmarks need the face's detail: when the link is short of bandwidth, lower the frame rate, not the size
  for (const sender of pc.getSenders()) {
    try {
      const params = sender.getParameters();
      params.degradationPreference = "maintain-resolution";
      await sender.setParameters(params);
    } catch (e) { /* older browsers: the default (balanced) */ }
  }
}

function liveStop(reason) {
  if (!live.pc) return;
  liveStatus("Stopping: scoring the last frames…");
  $("live-stop").disabled = true;
  if (live.channel && live.channel.readyState === "open") {
    live.channel.send(JSON.stringify({ type: "stop" }));
    if (reason) liveLog(reason);
    live.stopTimer = setTimeout(liveFinish, LIVE_STOP_WAIT);
  } else {
    liveFinish(reason);
  }
}

function liveFail(message) {
  $("live-error").textContent = message;
  liveFinish();
}

function liveFinish(reason) {
  clearTimeout(live.stopTimer);
  if (live.pc) live.pc.close();
  if (live.stream) live.stream.getTracks().forEach((t) => t.stop());
  live.pc = live.channel = live.stream = null;
  $("live-preview").srcObject = null;
  liveBusy(false);
  if (reason) liveStatus(reason);
  else if (!/^Stopped/.test($("live-status").textContent)) liveStatus("Stopped.");
}

function liveBusy(running) {
  $("live-start").disabled = running;
  $("live-stop").disabled = !running;
  document.querySelectorAll("#live-form input, #live-form select").forEach((el) => { el.disabled = running; });
}

function liveStatus(text) {
  $("live-status").textContent = text;
}

// ------------------------------------------------------------------------------- events
function liveReset(settings) {
  live.record = { lrnet_live: 1, started: new Date().toISOString(), source: settings.source, weights: settings.weights || null,
                  window: settings.window, alert: settings.alert, session: null, events: [] };
  live.started = performance.now();
  live.word = null;
  live.blocks = live.fake = 0;
  live.faces = new Map();
  $("live-faces").hidden = true;
  $("live-faces-list").replaceChildren();
  $("live-timeline").querySelectorAll(".bar").forEach((b) => b.remove());
  $("live-timeline").classList.remove("by-face");
  $("live-log").replaceChildren();
  $("live-alarm").hidden = true;
  $("live-behind").hidden = true;
  $("live-verdict").className = "verdict";
  $("live-word").textContent = "–";
  $("live-score").textContent = "";
  $("live-counts").textContent = "";
  $("live-download").disabled = false;
}

function liveEvent(event) {
  if (!live.record) return;
  live.record.events.push(Object.assign({ received_ms: Math.round(performance.now() - live.started) }, event));
  const handler = {
    status: liveOnStatus, block: liveOnBlock, summary: liveOnSummary,
    error: (e) => { $("live-error").textContent = e.message; },
    behind: (e) => {  // one line kept up to date, not a log entry per second
      $("live-behind").hidden = false;
      $("live-behind").textContent = `The server is falling behind: ${e.dropped_total} frame(s) dropped so far (last at ` +
        `${fmt(e.time_s, 1)} s). Blocks are only made of consecutive frames, so fewer blocks arrive.`;
    },
    cut: (e) => liveLog(`${fmt(e.time_s, 1)} s: shot change; the next blocks start a new segment`),
    face_lost: (e) => { liveFacePresent(e.face, false); liveLog(`${fmt(e.time_s, 1)} s: ${liveFaceName(e.face)} lost`); },
    face_found: (e) => { liveFacePresent(e.face, true); liveLog(`${fmt(e.time_s, 1)} s: ${liveFaceName(e.face)} found`); },
    gap: (e) => { if (e.cause !== "behind") liveLog(`${fmt(e.time_s, 1)} s: ${e.reason || "gap in the video"}; a new segment starts`); },
    resolution: (e) => liveLog(`${fmt(e.time_s, 1)} s: the picture size changed to ${e.width}×${e.height}; a new segment starts`),
  }[event.type];
  if (handler) handler(event);
}

function liveOnStatus(e) {
  if (e.state === "starting") liveStatus("Connected; loading the detector…");
  else if (e.state === "ready") {
    const rate = e.fps ? `${e.fps} frames/s` : "the video's own rate";
    liveStatus(`Live: the first verdict comes after ${e.block_size} frames at ${rate}.`);
  } else if (e.state === "ended") {
    liveStatus(`Stopped: ${e.reason}. ${e.blocks} block(s) from ${e.frames} frame(s)` +
               (e.dropped ? `, ${e.dropped} dropped because the server fell behind.` : "."));
    liveFinish();
  }
}

function liveRollingWord(r) {
  return r.call === "uncertain" ? "uncertain" : r.verdict;
}

// "face 1" once a second face has been seen, "face" before (one face reads as it always did)
function liveFaceName(face) {
  return live.faces.size > 1 && face !== undefined && face !== null ? `face ${face}` : "face";
}

function liveFace(id) {
  if (!live.faces.has(id)) {
    live.faces.set(id, { id, rolling: {}, blocks: 0, fake: 0, end_s: 0, present: true,
                         colour: LIVE_FACE_COLOURS[live.faces.size % LIVE_FACE_COLOURS.length] });
  }
  return live.faces.get(id);
}

function liveFacePresent(id, present) {
  if (id === undefined || id === null) return;
  liveFace(id).present = present;
  if (live.faces.size > 1) liveShowFaces();
}

// The face the rolling verdict is about: with one face, that face; with several, the most suspicious
// (highest rolling score; ties: more blocks), as the server's summary picks the video's face.
function liveMainFace() {
  let main = null;
  for (const f of live.faces.values()) {
    if (!f.blocks) continue;
    if (!main || f.rolling.score > main.rolling.score || (f.rolling.score === main.rolling.score && f.blocks > main.blocks)) main = f;
  }
  return main;
}

function liveOnBlock(b) {
  live.blocks += 1;
  live.fake += b.p_fake >= 0.5 ? 1 : 0;
  const face = liveFace(b.face ?? 0);
  const many = live.faces.size > 1;
  Object.assign(face, { rolling: b.rolling || {}, blocks: face.blocks + 1, fake: face.fake + (b.p_fake >= 0.5 ? 1 : 0),
                        end_s: b.end_s, present: true });
  liveBar(b, face);
  const main = liveMainFace() || face;
  const r = main.rolling;
  const word = liveRollingWord(r);
  $("live-verdict").className = "verdict " + (word || "");
  $("live-verdict").querySelector(".file").textContent = many ? `Rolling verdict of face ${main.id}, the most suspicious` : "Rolling verdict";
  $("live-word").textContent = LIVE_WORDS[word] || word || "–";
  $("live-score").textContent = `score ${fmt(r.score)} (interval ${fmt((r.interval || [])[0])} to ${fmt((r.interval || [])[1])}) over the last ${r.blocks} block(s)`;
  $("live-counts").textContent = `${live.fake} of ${live.blocks} blocks look forged` + (many ? ` (${live.faces.size} faces)` : "") +
    ` · ${fmt(b.end_s, 1)} s checked` + (b.behind ? ` · ${b.behind} frame(s) dropped` : "");
  if (many) liveShowFaces();
  const said = many ? `${word} ${main.id}` : word;
  if (said !== live.word) {  // announced only when it changes
    $("live-said").textContent = `Rolling verdict${many ? ` of face ${main.id}` : ""}: ${LIVE_WORDS[word] || word}`;
    live.word = said;
  }
  if (b.alert_raised) liveAlarm(`Alert at ${fmt(b.end_s, 1)} s: ${b.alert_raised}.`);
  if (b.index === 0 && /^Live/.test($("live-status").textContent)) liveStatus("Live.");
}

function liveOnSummary(e) {
  const word = e.call === "uncertain" ? "uncertain" : e.verdict;
  liveLog(`Whole session: ${LIVE_WORDS[word] || word || "no verdict"}` +
          (Number.isFinite(e.score) ? `, score ${fmt(e.score)}` : "") + ` over ${e.blocks ?? 0} block(s).`);
}

function liveAlarm(text) {
  const alarm = $("live-alarm");
  alarm.hidden = false;
  alarm.textContent = text; // role="alert": read out at once
  liveLog(text);
}

// One row per face: its colour, its rolling verdict and counts; the most suspicious face is marked.
function liveShowFaces() {
  const main = liveMainFace();
  $("live-faces").hidden = false;
  $("live-timeline").classList.add("by-face");
  $("live-faces-list").replaceChildren(...Array.from(live.faces.values()).sort((a, b) => a.id - b.id).map((f) => {
    const word = f.blocks ? liveRollingWord(f.rolling) : "n/a";
    const item = Object.assign(document.createElement("li"), { className: `face-row ${word}${f === main ? " main" : ""}` });
    item.dataset.face = f.id;
    const swatch = Object.assign(document.createElement("span"), { className: "face-swatch" });
    swatch.style.background = f.colour;
    swatch.setAttribute("aria-hidden", "true");
    const title = Object.assign(document.createElement("p"), { className: "face-title" });
    title.append(swatch, Object.assign(document.createElement("strong"), { textContent: `Face ${f.id}` }), " ",
                 Object.assign(document.createElement("span"), { className: "face-word",
                   textContent: f.blocks ? LIVE_WORDS[word] || word : "No block yet" }));
    if (f === main) title.append(" ", Object.assign(document.createElement("span"), { className: "tag main", textContent: "the verdict above" }));
    const r = f.rolling;
    const meta = Object.assign(document.createElement("p"), { className: "face-meta",
      textContent: (f.blocks ? `score ${fmt(r.score)} over its last ${r.blocks} block(s) · ${f.fake} of ${f.blocks} blocks look forged` +
                    ` · last block ending at ${fmt(f.end_s, 1)} s` : "waiting for its first block") +
                   (f.present ? "" : " · not in the picture now") });
    const info = Object.assign(document.createElement("div"), { className: "face-info" });
    info.append(title, meta);
    item.append(info);
    return item;
  }));
  // bars that came before the second face: give them their face's stripe too
  $("live-timeline").querySelectorAll(".bar:not(.by-face)").forEach((bar) => liveMarkBar(bar, live.faces.get(Number(bar.dataset.face))));
}

function liveMarkBar(bar, face) {
  if (!face) return;
  bar.classList.add("by-face");
  bar.style.setProperty("--face", face.colour);
  bar.title = `face ${face.id}, ${bar.dataset.what}`;
}

function liveBar(b, face) {
  const timeline = $("live-timeline");
  const bar = document.createElement("div");
  bar.className = "bar";
  bar.style.height = `${Math.max(4, b.p_fake * 100)}%`;
  bar.style.background = colour(b.p_fake);
  bar.dataset.face = face.id;
  bar.dataset.what = `block ${b.index + 1}: ${fmt(b.start_s, 1)}–${fmt(b.end_s, 1)} s, p(fake) ${fmt(b.p_fake, 2)}`;
  bar.title = bar.dataset.what;
  if (live.faces.size > 1) liveMarkBar(bar, face);
  timeline.appendChild(bar);
  const bars = timeline.querySelectorAll(".bar");
  for (let i = 0; i < bars.length - LIVE_MAX_BARS; i++) bars[i].remove();
  timeline.setAttribute("aria-label", `${live.blocks} blocks so far; the last, ${bar.title}`);
}

function liveLog(text) {
  const item = Object.assign(document.createElement("li"), { textContent: text });
  const log = $("live-log");
  log.appendChild(item);
  while (log.children.length > 50) log.firstElementChild.remove();
}

function liveDownload() {
  if (!live.record) return;
  const blob = new Blob([JSON.stringify(live.record, null, 2)], { type: "application/json" });
  const stamp = live.record.started.replace(/[:.]/g, "-");
  const link = Object.assign(document.createElement("a"), { href: URL.createObjectURL(blob), download: `lrnet-live-${stamp}.json` });
  document.body.appendChild(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(link.href), 10000);
}

function liveWire() {
  liveWireTabs();
  $("live-form").addEventListener("submit", (e) => { e.preventDefault(); liveStart(); });
  $("live-stop").addEventListener("click", () => liveStop());
  $("live-download").addEventListener("click", liveDownload);
  // leaving the page ends the session at once (the server also notices the closed connection)
  window.addEventListener("pagehide", () => {
    if (live.channel && live.channel.readyState === "open") live.channel.send(JSON.stringify({ type: "stop" }));
    if (live.pc) live.pc.close();
  });
}

liveWire();
