// The demo: load a bundle from a URL (?bundle=... or the form), and show, as you type, each task's
// labels with probability bars. All of the bundle's tasks run on the text in one call.
import { Bundle } from "ipt-edge";

const $ = (id) => document.getElementById(id);
const status = (text, error = false) => {
  $("status").textContent = text;
  $("status").className = error ? "error" : "";
};
let bundle = null;
let pending = null; // the text waiting to run while a prediction is in flight
let running = false;

async function load(url) {
  status(`Loading ${url} …`);
  $("tasks").replaceChildren();
  try {
    const start = performance.now();
    bundle = await Bundle.load(url, { threads: globalThis.crossOriginIsolated ? 2 : 1 });
    const mb = (bundle.bytesDownloaded / 1e6).toFixed(1);
    status(`Loaded ${bundle.tasks.length} task(s) from ${url}: ${mb} MB checked in ${((performance.now() - start) / 1000).toFixed(1)} s.`);
    const pairTasks = bundle.tasks.filter((t) => bundle.manifest.tasks[t].text_pair);
    $("pair-label").hidden = !pairTasks.length;
    // The pair tasks and their labels (e.g. entailment / not_entailment) say what second text they take.
    $("pair-caption").textContent = `Second text, for ${pairTasks.map((t) => `${t} (${bundle.labels(t).join(" / ")})`).join(", ")}`;
    document.body.dataset.loaded = "true";
    schedule();
  } catch (error) {
    bundle = null;
    status(`${error.name}: ${error.message}`, true);
  }
}

function schedule() {
  pending = [$("text").value, $("pair").value];
  if (!running) void predict();
}

async function predict() {
  running = true;
  while (bundle && pending) {
    const [text, pair] = pending;
    pending = null;
    if (!text.trim()) {
      $("tasks").replaceChildren();
      continue;
    }
    const tasks = bundle.tasks;
    const texts = tasks.map((t) => (bundle.manifest.tasks[t].text_pair ? [text, pair.trim() ? pair : text] : text));
    try {
      const start = performance.now();
      const probabilities = await bundle.predictProba(texts, tasks);
      const ms = performance.now() - start;
      $("tasks").replaceChildren(...tasks.map((task, i) => card(task, bundle.labels(task), probabilities[i], ms)));
      document.body.dataset.predicted = String(Number(document.body.dataset.predicted ?? 0) + 1);
    } catch (error) {
      status(`${error.name}: ${error.message}`, true);
    }
  }
  running = false;
}

function card(task, labels, probabilities, ms) {
  const top = probabilities.indexOf(Math.max(...probabilities));
  const section = document.createElement("div");
  section.className = "task";
  section.innerHTML = `<h2><span></span><small>${ms.toFixed(0)} ms, all tasks</small></h2>`;
  section.querySelector("span").textContent = task;
  labels.forEach((label, i) => {
    const row = document.createElement("div");
    row.className = i === top ? "row top" : "row";
    row.innerHTML = `<span class="label"></span><div class="bar"><div></div></div><span class="p"></span>`;
    row.querySelector(".label").textContent = label;
    row.querySelector(".bar div").style.width = `${(100 * probabilities[i]).toFixed(1)}%`;
    row.querySelector(".p").textContent = `${(100 * probabilities[i]).toFixed(1)}%`;
    section.append(row);
  });
  return section;
}

$("text").addEventListener("input", schedule);
$("pair").addEventListener("input", schedule);
$("load").addEventListener("submit", (event) => {
  event.preventDefault();
  void load($("url").value);
});
const initial = new URLSearchParams(location.search).get("bundle");
if (initial) {
  $("url").value = initial;
  void load(initial);
}
