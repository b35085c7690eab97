// densedpo review: two players under one transport, a segment timeline, keyboard labels saved at once.
"use strict";
const $ = (id) => document.getElementById(id);
const L = $("video-left"), R = $("video-right");  // L leads, R follows
// seg: the selected segment, the one label keys act on (outlined in the timeline); playhead: the segment under the
// playhead (marked while playing). Playing never moves the selection: a key labels what the timeline outlines.
const state = { session: null, index: 0, pair: null, seg: 0, playhead: 0, loop: false };
const EPS = 1e-4;  // a hair past a frame's start, so float rounding never shows the previous frame

const fps = () => state.pair ? state.pair.fps : 16;
const segs = () => state.pair ? state.pair.segments : [];
const frameTime = (k) => k / fps() + EPS;
const duration = () => (isFinite(L.duration) && L.duration > 0) ? L.duration : (segs().length ? segs()[segs().length - 1].t_end_s : 1);

function seekBoth(t) {
  t = Math.max(0, Math.min(t, duration() - EPS));
  L.currentTime = t;
  R.currentTime = t;
}
function play() { R.playbackRate = L.playbackRate; seekBoth(L.currentTime); L.play(); R.play(); }
function pause() { L.pause(); R.pause(); R.currentTime = L.currentTime; }
function togglePlay() { L.paused ? play() : pause(); }

function stepFrame(dir) {
  pause();
  const k = Math.round((L.currentTime - EPS) * fps()) + dir;
  seekBoth(frameTime(Math.max(0, k)));
}

function selectSegment(i, seek = true) {
  if (!segs().length) return;
  state.seg = Math.max(0, Math.min(i, segs().length - 1));
  if (seek) seekBoth(frameTime(segs()[state.seg].frame_start));
  renderTimeline();
  renderDetails();
}

function segmentAt(t) {
  const s = segs();
  for (let i = 0; i < s.length; i++) if (t < s[i].frame_end / fps()) return i;
  return s.length - 1;
}

// One clock: R follows L. Drift over half a frame is corrected by a seek; loops wrap both players at once.
function tick() {
  if (!state.pair) return;
  const seg = segs()[state.seg];
  if (state.loop && seg && !L.paused && L.currentTime >= seg.frame_end / fps() - EPS) {
    seekBoth(frameTime(seg.frame_start));
  }
  const i = segmentAt(L.currentTime);
  if (i !== state.playhead) { state.playhead = i; markPlayhead(); }
  if (R.playbackRate !== L.playbackRate) R.playbackRate = L.playbackRate;
  if (L.paused !== R.paused) { L.paused ? R.pause() : R.play(); }
  if (Math.abs(R.currentTime - L.currentTime) > 0.5 / fps()) R.currentTime = L.currentTime;
  $("clock").textContent = `${L.currentTime.toFixed(2)} s · frame ${Math.floor((L.currentTime + EPS / 2) * fps())}`;
  $("seek").value = L.currentTime / duration();
  $("play").textContent = L.paused ? "▶" : "❚❚";
}
setInterval(tick, 8);
L.addEventListener("ended", () => { R.pause(); });

async function api(path, opts) {
  const r = await fetch(path, opts);
  const body = await r.json();
  if (!r.ok) {
    const msg = typeof body.detail === "string" ? body.detail : JSON.stringify(body.detail || r.statusText);
    $("saved").textContent = `error: ${msg}`;
    throw new Error(msg);
  }
  return body;
}

function sideName(pref) {  // a/b/tie -> what the annotator saw
  if (!pref) return "";
  if (pref === "tie") return "tie";
  return pref === state.pair.left ? "◀ left" : "right ▶";
}

function renderTimeline() {
  const tl = $("timeline");
  tl.innerHTML = "";
  const total = segs().reduce((s, x) => s + (x.t_end_s - x.t_start_s), 0) || 1;
  segs().forEach((s, i) => {
    const b = document.createElement("div");
    const judge = s.judge && s.judge.preference ? s.judge.preference : "";
    b.className = "segment" + (i === state.seg ? " current" : "") + (s.judge && !s.judge.preference ? " failed" : "");
    b.dataset.selected = i === state.seg ? "1" : "0";
    b.dataset.testid = "segment";
    b.setAttribute("data-testid", "segment");
    b.dataset.index = s.segment_idx;
    b.dataset.judge = judge;
    b.dataset.human = s.human || "";
    b.dataset.asked = s.asked_because ? "1" : "0";
    b.style.flex = `${(s.t_end_s - s.t_start_s) / total}`;
    const conf = s.judge && s.judge.confidence != null ? ` ${(100 * s.judge.confidence).toFixed(0)}%` : "";
    const judgeText = s.judge ? `judge: ${judge ? sideName(judge) : s.judge.status}${conf}` : "";
    const asked = s.asked_because ? `<span class="asked" title="${esc(s.asked_because)}">asked</span>` : "";
    b.innerHTML = `<span>${s.t_start_s.toFixed(1)}–${s.t_end_s.toFixed(1)} s ${judgeText}</span>${asked}<span class="human">${s.human ? "you: " + sideName(s.human) : ""}</span>`;
    b.title = s.judge ? `${s.judge.status}; p(a) ${fmt(s.judge.p_a)} p(b) ${fmt(s.judge.p_b)} p(tie) ${fmt(s.judge.p_tie)}; answers ab=${s.judge.answer_ab ?? "–"} ba=${s.judge.answer_ba ?? "–"}` : `segment ${s.segment_idx}`;
    b.addEventListener("click", () => { state.loop = true; $("loop").checked = true; selectSegment(i); });
    tl.appendChild(b);
  });
  markPlayhead();
}

function markPlayhead() {
  document.querySelectorAll("[data-testid=segment]").forEach((b, i) => {
    b.classList.toggle("playing", i === state.playhead);
    b.dataset.playhead = i === state.playhead ? "1" : "0";
  });
}

function renderMode() {
  const s = state.session;
  const asked = s.asked_segments ? ` (${s.asked_segments} segments asked)` : "";
  $("mode").textContent = `${s.annotator}${s.blind ? " · blind" : ""} · ${s.order}${asked}`;
  $("done").textContent = `done ${s.finished_pairs}/${s.pairs}`;
}

function message(text) { $("saved").textContent = text; }

function allDone() {
  const s = state.session;
  document.body.dataset.done = "1";
  message(`all done: ${s.finished_pairs} of ${s.pairs} pairs labeled; your labels are in ${s.human_path}`);
}

const fmt = (v) => v == null ? "–" : Number(v).toFixed(3);
const esc = (s) => String(s ?? "–").replace(/[&<>"]/g, (c) => ({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;"}[c]));

function renderDetails() {
  const s = segs()[state.seg];
  if (!s) { $("details").innerHTML = ""; return; }
  let html = `<h3>segment ${s.segment_idx}</h3><table><tr><td>frames</td><td>${s.frame_start}–${s.frame_end - 1}</td></tr>
    <tr><td>time</td><td>${s.t_start_s.toFixed(2)}–${s.t_end_s.toFixed(2)} s</td></tr>
    <tr><td>your label</td><td>${s.human ? sideName(s.human) + ` (${s.human})` : "–"}</td></tr>`;
  if (s.asked_because) {
    html += `<tr class="asked"><td>asked because</td><td data-testid="asked-because">${esc(s.asked_because)}</td></tr>`;
  }
  if (s.judge) {
    const j = s.judge;
    html += `<tr><td>judge</td><td>${esc(String(j.judge_model).startsWith("/") ? String(j.judge_model).split("/").pop() : j.judge_model)}</td></tr><tr><td>label</td><td>${esc(j.preference)} (${sideName(j.preference) || "–"})</td></tr>
      <tr><td>status</td><td>${esc(j.status)}</td></tr><tr><td>confidence</td><td>${fmt(j.confidence)}</td></tr>
      <tr><td>p(a) / p(b) / p(tie)</td><td>${fmt(j.p_a)} / ${fmt(j.p_b)} / ${fmt(j.p_tie)}</td></tr>
      <tr><td>a first → </td><td>${esc(j.answer_ab)}</td></tr><tr><td>b first → </td><td>${esc(j.answer_ba)}</td></tr>
      <tr><td>raw</td><td><code>${esc(j.raw_response)}</code></td></tr>`;
    for (const [order, shown] of [["ab", "a first"], ["ba", "b first"]]) {
      const thought = j[`reasoning_${order}`];
      if (thought != null) {
        html += `<tr class="thought"><td>thought, ${shown}</td><td><details data-testid="thought-${order}"><summary>${thought ? esc(thought.slice(0, 60)) + (thought.length > 60 ? "…" : "") : "(not returned by the endpoint)"}</summary><pre>${esc(thought)}</pre></details></td></tr>`;
      }
    }
    for (const o of s.other_judges || []) {
      html += `<tr class="other-judge"><td>${esc(o.judge)}</td><td>${esc(o.preference)} · ${esc(o.status)} · ${fmt(o.confidence)}</td></tr>`;
    }
  } else if (state.session.blind) {
    html += `<tr><td colspan="2">blind: judge hidden, sides drawn per pair</td></tr>`;
  }
  $("details").innerHTML = html + "</table>";
}

// Labels are taken in key order: each press labels the selected segment and selects the next at once, and the
// saves go to the server one after the other (a quick double press labels two segments, never one twice).
let saving = Promise.resolve();
function label(choice) {
  const s = segs()[state.seg];
  if (!s) return;
  const index = state.index;
  if (state.seg < segs().length - 1) selectSegment(state.seg + 1, true);
  saving = saving.then(() => save(index, s, choice)).catch(() => {});
  return saving;
}

async function save(index, s, choice) {
  const out = await api("/api/labels", {method: "POST", headers: {"Content-Type": "application/json"},
    body: JSON.stringify({index, segment_idx: s.segment_idx, choice})});
  s.human = out.human;
  state.session.finished_pairs = out.finished_pairs;
  renderMode();
  if (out.finished_pairs === out.pairs) allDone();
  if (index !== state.index) return;  // the annotator moved on: the row is saved, this pair is not on screen
  if (out.finished_pairs !== out.pairs) message(`saved: segment ${s.segment_idx} → ${sideName(out.human)}`);
  renderTimeline();
  renderDetails();
}

async function next() {  // Enter: the next pair, or the end of the queue said as such (once the saves are in)
  if (state.index < state.session.pairs - 1) return load(state.index + 1);
  await saving;
  const s = state.session;
  if (s.finished_pairs === s.pairs) allDone();
  else message(`end of the queue: ${s.finished_pairs} of ${s.pairs} pairs done; unfinished pairs are still open (Backspace goes back)`);
}

async function load(index) {
  const n = state.session.pairs;
  index = Math.max(0, Math.min(index, n - 1));
  pause();
  state.pair = await api(`/api/pairs/${index}`);
  state.index = index;
  state.seg = 0;
  state.playhead = 0;
  if (document.body.dataset.done !== "1") message("");  // a message belongs to the pair it was about
  location.hash = `#${index}`;
  $("pair-id").textContent = state.pair.pair_id;
  $("pair-pos").textContent = `${index + 1} / ${n}`;
  $("caption").textContent = state.pair.prompt;
  $("left-name").textContent = state.session.blind ? "left" : `left: video ${state.pair.left}`;
  $("right-name").textContent = state.session.blind ? "right" : `right: video ${state.pair.right}`;
  const ready = Promise.all([L, R].map((v) => new Promise((res) => { v.addEventListener("loadeddata", res, {once: true}); })));
  L.src = state.pair.video_left;
  R.src = state.pair.video_right;
  L.playbackRate = R.playbackRate = Number($("speed").value);
  renderTimeline();
  renderDetails();
  await ready;
  seekBoth(frameTime(0));
  document.body.dataset.ready = "1";
}

document.addEventListener("keydown", (e) => {
  if (e.target.tagName === "SELECT" || (e.target.tagName === "INPUT" && e.target.type !== "checkbox" && e.target.type !== "range")) return;
  const help = $("help");
  const keys = {
    " ": togglePlay,
    "ArrowLeft": () => stepFrame(-1),
    "ArrowRight": () => stepFrame(1),
    "ArrowUp": () => selectSegment(state.seg - 1),
    "ArrowDown": () => selectSegment(state.seg + 1),
    "1": () => label("left"),
    "2": () => label("right"),
    "3": () => label("tie"),
    "Enter": next,
    "Backspace": () => load(state.index - 1),
    "?": () => { help.hidden = !help.hidden; },
    "Escape": () => { help.hidden = true; },
  };
  if (keys[e.key]) { e.preventDefault(); keys[e.key](); }
});

$("play").addEventListener("click", togglePlay);
$("frame-back").addEventListener("click", () => stepFrame(-1));
$("frame-fwd").addEventListener("click", () => stepFrame(1));
$("seek").addEventListener("input", (e) => { seekBoth(Number(e.target.value) * duration()); });
$("speed").addEventListener("change", (e) => { L.playbackRate = R.playbackRate = Number(e.target.value); });
$("loop").addEventListener("change", (e) => { state.loop = e.target.checked; });
$("next-pair").addEventListener("click", next);
$("prev-pair").addEventListener("click", () => load(state.index - 1));
$("help-btn").addEventListener("click", () => { $("help").hidden = !$("help").hidden; });
$("help").addEventListener("click", () => { $("help").hidden = true; });
document.querySelectorAll("[data-choice]").forEach((b) => b.addEventListener("click", () => label(b.dataset.choice)));

(async () => {
  state.session = await api("/api/session");
  renderMode();
  const fromHash = parseInt(location.hash.slice(1), 10);
  await load(Number.isFinite(fromHash) ? fromHash : state.session.start);
})();
