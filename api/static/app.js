// The search page: sends a file, or 5-10 s recorded from the microphone, to POST /v1/search and lists the matches.
"use strict";

const MIN_RECORD_S = 5;
const MAX_RECORD_S = 10;
const $ = (id) => document.getElementById(id);

const keyInput = $("api-key");
keyInput.value = sessionStorage.getItem("cloudtune-api-key") || "";
keyInput.addEventListener("change", () => sessionStorage.setItem("cloudtune-api-key", keyInput.value));

function showStatus(text, isError) {
  const status = $("status");
  status.textContent = text;
  status.classList.toggle("error", Boolean(isError));
}

function showMatches(answer) {
  const table = $("results");
  const body = table.querySelector("tbody");
  body.replaceChildren();
  const best = Math.max(1e-6, ...answer.matches.map((m) => m.score));
  answer.matches.forEach((match, index) => {
    const row = body.insertRow();
    row.insertCell().textContent = String(index + 1);
    const track = row.insertCell();
    track.className = "track";
    track.textContent = match.track_id;
    const score = row.insertCell();
    score.className = "score";
    score.textContent = match.score.toFixed(4);
    const bar = document.createElement("div");
    bar.className = "bar";
    bar.style.width = `${Math.max(0, (100 * match.score) / best).toFixed(0)}%`;
    row.insertCell().append(bar);
  });
  table.hidden = answer.matches.length === 0;
  showStatus(`${answer.matches.length} matches for ${answer.query_seconds.toFixed(1)} s of audio in ${answer.latency_ms.toFixed(0)} ms`);
}

async function search(blob, filename) {
  const form = new FormData();
  form.append("file", blob, filename);
  form.append("top_k", $("top-k").value || "10");
  const headers = keyInput.value ? { "X-API-Key": keyInput.value } : {};
  showStatus("searching ...");
  $("results").hidden = true;
  try {
    const response = await fetch("/v1/search", { method: "POST", body: form, headers });
    const answer = await response.json().catch(() => ({ detail: response.statusText }));
    if (!response.ok) {
      const retry = response.headers.get("Retry-After");
      showStatus(`${response.status}: ${answer.detail}${retry ? ` (retry in ${retry} s)` : ""}`, true);
      return;
    }
    showMatches(answer);
  } catch (error) {
    showStatus(`the server did not answer: ${error}`, true);
  }
}

$("search-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const file = $("file").files[0];
  if (!file) {
    showStatus("choose a file first", true);
    return;
  }
  search(file, file.name);
});

// Recording: MediaRecorder gives WebM/Opus in Chromium and Firefox, MP4/AAC in Safari; the API decodes both.
let recorder = null;
let timer = null;

function stopRecording() {
  if (recorder && recorder.state === "recording") recorder.stop();
}

$("record").addEventListener("click", async () => {
  let stream;
  try {
    stream = await navigator.mediaDevices.getUserMedia({ audio: true });
  } catch (error) {
    showStatus(`no microphone: ${error.message || error}`, true);
    return;
  }
  const chunks = [];
  recorder = new MediaRecorder(stream);
  recorder.addEventListener("dataavailable", (event) => chunks.push(event.data));
  recorder.addEventListener("stop", () => {
    clearInterval(timer);
    stream.getTracks().forEach((track) => track.stop());
    $("record").disabled = false;
    $("stop").disabled = true;
    $("recording-time").textContent = "";
    const type = recorder.mimeType || "audio/webm";
    search(new Blob(chunks, { type }), type.includes("mp4") ? "recording.m4a" : "recording.webm");
  });
  const started = Date.now();
  recorder.start();
  $("record").disabled = true;
  showStatus(`recording: stop after ${MIN_RECORD_S} s, it stops by itself at ${MAX_RECORD_S} s`);
  timer = setInterval(() => {
    const seconds = (Date.now() - started) / 1000;
    $("recording-time").textContent = `${seconds.toFixed(1)} s`;
    $("stop").disabled = seconds < MIN_RECORD_S;
    if (seconds >= MAX_RECORD_S) stopRecording();
  }, 100);
});

$("stop").addEventListener("click", stopRecording);
