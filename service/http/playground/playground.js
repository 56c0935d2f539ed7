// The playground: plain browser JavaScript over the REST API (no build step).
// Errors are shown exactly as the API gives them: `{"error": {code, message, field}}`.
"use strict";

const $ = (id) => document.getElementById(id);
const LABELS = { translate: "Translate", summarize: "Summarize", answer: "Answer" };
const languageName = (() => {
  try {
    const names = new Intl.DisplayNames(["en"], { type: "language" });
    return (code) => `${names.of(code) || code} (${code})`;
  } catch {
    return (code) => code;
  }
})();

function task() {
  return document.querySelector("input[name=task]:checked").value;
}

function headers() {
  const h = { "Content-Type": "application/json", "Accept": "application/json" };
  const key = $("api-key").value.trim();
  if (key) h["Authorization"] = `Bearer ${key}`;
  return h;
}

function showError(error) {
  const el = $("error");
  el.textContent = typeof error === "string" ? error
    : `${error.code}: ${error.message}` + (error.field ? ` (field: ${error.field})` : "");
  el.hidden = false;
}

async function apiError(response) {
  try {
    const body = await response.json();
    if (body && body.error) return body.error;
  } catch { /* not JSON: a proxy answered */ }
  return { code: `http_${response.status}`, message: response.statusText || "request failed" };
}

function fill(select, values, keepFirst, preferred) {
  const old = select.value;
  while (select.options.length > keepFirst) select.remove(keepFirst);
  for (const [value, label] of values) select.add(new Option(label, value));
  if ([...select.options].some((o) => o.value === old)) select.value = old;
  else if (preferred && values.some(([v]) => v === preferred)) select.value = preferred;
}

async function loadModels() {
  const response = await fetch("/v1/models", { headers: headers() });
  if (!response.ok) {
    showError(await apiError(response));
    return;
  }
  $("error").hidden = true;
  const { models } = await response.json();
  const languages = [...new Set(models.flatMap((m) => m.languages))].sort();
  const pairs = languages.map((code) => [code, languageName(code)]);
  fill($("source"), pairs, 1);
  fill($("target"), pairs, 0, "de");
  fill($("model"), models.map((m) => [m.name, `${m.name} (v${m.version})`]), 1);
}

function requestBody() {
  const t = task();
  const body = {};
  const options = {};
  const maxNew = parseInt($("max-new-tokens").value, 10);
  if (!Number.isNaN(maxNew)) options.max_new_tokens = maxNew;
  const alternatives = t === "translate" ? parseInt($("alternatives").value, 10) || 0 : 0;
  if (t === "answer") {
    body.question = $("text").value;
    if ($("context").value) body.context = $("context").value;
  } else {
    body.text = $("text").value;
  }
  if (t === "translate") {
    body.target_lang = $("target").value;
    if ($("source").value) body.source_lang = $("source").value; // none: auto-detect
  }
  if (alternatives > 0) {
    // The best hypothesis and `alternatives` more, from beam search (not streamed).
    options.strategy = "beam";
    options.beam_size = Math.max(4, alternatives + 1);
    options.num_return_sequences = alternatives + 1;
  }
  if ($("model").value) body.model = $("model").value;
  if (Object.keys(options).length) body.options = options;
  body.stream = $("stream").checked && alternatives === 0;
  return body;
}

function showStatus(reply, seconds) {
  const usage = reply.usage || {};
  const finish = (reply.results || []).map((r) => r.finish_reason).join(", ");
  $("status").textContent = `${reply.model} v${reply.version} · ` +
    `${usage.completion_tokens} tokens · finished: ${finish} · ${seconds.toFixed(2)} s`;
}

function showResult(reply, seconds) {
  const result = reply.results[0];
  $("output").textContent = result.text;
  // results[].candidates: the n best, best (= text) first; the rest are alternatives.
  const alternatives = (result.candidates || []).slice(1);
  const list = $("alternatives-list");
  for (const alt of alternatives) {
    const item = document.createElement("li");
    item.textContent = `${alt.text} (score ${alt.score.toFixed(3)})`;
    list.append(item);
  }
  list.hidden = alternatives.length === 0;
  showDetected(result.detected_language);
  showStatus(reply, seconds);
}

function showDetected(detected) {
  const el = $("detected");
  el.hidden = !detected;
  if (detected) {
    el.textContent = `Detected: ${languageName(detected.language)} ` +
      `(confidence ${Math.round(detected.confidence * 100)}%)`;
  }
}

// A stream carries no detected language: ask POST /v1/detect beside it. A server
// without detection (404) just shows none.
async function detectBeside(text) {
  const response = await fetch("/v1/detect", {
    method: "POST", headers: headers(), body: JSON.stringify({ text, top: 1 }),
  });
  if (response.ok) showDetected((await response.json()).languages[0]);
}

// Server-Sent Events: `data: {"index", "text"}` per piece, then `event: done` (usage,
// finish reasons) or `event: error` (the error body).
async function readStream(response, started) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  const handle = (block) => {
    let name = "message";
    const data = [];
    for (const line of block.split("\n")) {
      if (line.startsWith("event:")) name = line.slice(6).trim();
      else if (line.startsWith("data:")) data.push(line.slice(5).trim());
    }
    if (!data.length) return;
    const payload = JSON.parse(data.join("\n"));
    if (name === "error") showError(payload.error);
    else if (name === "done") showStatus(payload, (performance.now() - started) / 1000);
    else $("output").textContent += payload.text;
  };
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, { stream: true });
    let cut;
    while ((cut = buffer.indexOf("\n\n")) >= 0) {
      handle(buffer.slice(0, cut));
      buffer = buffer.slice(cut + 2);
    }
  }
  if (buffer.trim()) handle(buffer);
}

async function run(event) {
  event.preventDefault();
  for (const id of ["error", "detected", "alternatives-list"]) $(id).hidden = true;
  $("alternatives-list").replaceChildren();
  $("output").textContent = "";
  $("status").textContent = "working…";
  $("run").disabled = true;
  $("copy").disabled = true;
  const body = requestBody();
  const started = performance.now();
  try {
    const response = await fetch(`/v1/${task()}`, {
      method: "POST", headers: headers(), body: JSON.stringify(body),
    });
    if (!response.ok) {
      $("status").textContent = "";
      showError(await apiError(response));
    } else if (body.stream) {
      const detecting = task() === "translate" && !body.source_lang && body.text.trim()
        ? detectBeside(body.text) : null;
      await readStream(response, started);
      await detecting;
    } else {
      showResult(await response.json(), (performance.now() - started) / 1000);
    }
  } catch (e) {
    $("status").textContent = "";
    showError(`cannot reach the server: ${e}`);
  } finally {
    $("run").disabled = false;
    $("copy").disabled = !$("output").textContent;
  }
}

async function copy() {
  const text = $("output").textContent;
  try {
    await navigator.clipboard.writeText(text);
  } catch {
    // No Clipboard API outside secure contexts (plain http to another host).
    const area = Object.assign(document.createElement("textarea"), { value: text });
    document.body.append(area);
    area.select();
    document.execCommand("copy");
    area.remove();
  }
  $("copy").textContent = "Copied";
  setTimeout(() => { $("copy").textContent = "Copy"; }, 1500);
}

// N-best comes from beam search, which is not streamed: the stream box is off meanwhile.
function syncStream() {
  const nBest = task() === "translate" && (parseInt($("alternatives").value, 10) || 0) > 0;
  $("stream").disabled = nBest;
  $("stream").parentElement.title = nBest ? "alternatives come in one reply" : "";
}

function switchTask() {
  const t = task();
  for (const el of document.querySelectorAll("[data-task]")) el.hidden = el.dataset.task !== t;
  $("run").textContent = LABELS[t];
  $("text-label").textContent = t === "answer" ? "Question" : "Text";
  syncStream();
}

document.addEventListener("DOMContentLoaded", () => {
  $("api-key").value = sessionStorage.getItem("sora-api-key") || "";
  $("api-key").addEventListener("change", () => {
    sessionStorage.setItem("sora-api-key", $("api-key").value.trim());
    loadModels();
  });
  for (const radio of document.querySelectorAll("input[name=task]")) {
    radio.addEventListener("change", switchTask);
  }
  $("alternatives").addEventListener("input", syncStream);
  $("form").addEventListener("submit", run);
  $("copy").addEventListener("click", copy);
  switchTask();
  loadModels();
});
