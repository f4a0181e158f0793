// The JavaScript runtime's speed against the Python runtime's, on one machine, in one run:
// rows/s (batch 32), cold start (load + first prediction) and, in Chromium, bytes downloaded for
// the first task and for each further one. Prints a markdown table.
//
//   node js/bench/bench.mjs BUNDLE [--data FILE.tsv] [--column sentence] [--rows 200] [--rounds 3]
//
// Each configuration runs in a fresh process (Python, Node) or a fresh page (Chromium, wasm, 1 and
// 2 threads). Python and Node use 2 threads. The texts are the first --rows rows of --data
// (default: work/sst2/test.tsv, the shipped task's held-out sentences, else ../shared/data/sst2/dev.tsv).
// Further-task bytes are measured on a copy of the bundle holding the task twice (a second name,
// the same files), so the second task's first use downloads only its own files.
import { execFileSync } from "node:child_process";
import { cpSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";
import { serve } from "../scripts/serve.mjs";

const REPO = fileURLToPath(new URL("../../", import.meta.url));
const args = process.argv.slice(2);
const option = (name, fallback) => {
  const at = args.indexOf(name);
  return at >= 0 ? args.splice(at, 2)[1] : fallback;
};
const rows = Number(option("--rows", 200));
const rounds = Number(option("--rounds", 3));
const column = option("--column", "sentence");
const held = join(REPO, "work/sst2/test.tsv");
const data = option("--data", existsSync(held) ? held : join(REPO, "../shared/data/sst2/dev.tsv"));
const python = process.env.PYTHON ?? "python";
const bundleDir = args[0] && resolve(args[0]);
if (!bundleDir) throw new Error("usage: node js/bench/bench.mjs BUNDLE [--data FILE.tsv] [--column sentence] [--rows 200] [--rounds 3]");

// TSV as the project reads it: a header, tab-separated, no quoting.
const [header, ...lines] = readFileSync(data, "utf8").split("\n").filter(Boolean);
const at = header.split("\t").indexOf(column);
if (at < 0) throw new Error(`${data}: no column ${column}`);
const texts = lines.slice(0, rows).map((line) => line.split("\t")[at]);

const manifest = JSON.parse(readFileSync(join(bundleDir, "manifest.json"), "utf8"));
const task = Object.keys(manifest.tasks).sort()[0];
const temp = mkdtempSync(join(tmpdir(), "ipt-edge-bench-"));
const textsFile = join(temp, "texts.json");
writeFileSync(textsFile, JSON.stringify(texts));
// The bundle with its task twice, for the further task's bytes.
const twice = join(temp, "bundle");
cpSync(bundleDir, twice, { recursive: true });
const second = `${task}-again`;
cpSync(join(twice, "tasks", task), join(twice, "tasks", second), { recursive: true });
const info = manifest.tasks[task];
manifest.tasks[second] = { ...info, generator_file: info.generator_file.replace(`tasks/${task}/`, `tasks/${second}/`), head_file: info.head_file.replace(`tasks/${task}/`, `tasks/${second}/`) };
manifest.files[manifest.tasks[second].generator_file] = manifest.files[info.generator_file];
manifest.files[manifest.tasks[second].head_file] = manifest.files[info.head_file];
writeFileSync(join(twice, "manifest.json"), JSON.stringify(manifest, null, 2));

const precisions = manifest.encoder.int8_file ? ["fp32", "int8"] : ["fp32"];
const results = [];
const run = (command, argv) => JSON.parse(execFileSync(command, argv, { encoding: "utf8", maxBuffer: 1 << 26 }).trim().split("\n").at(-1));
for (const precision of precisions) {
  results.push({ engine: "Python runtime (onnxruntime)", precision, threads: 2, ...run(python, [join(REPO, "js/bench/python_bench.py"), bundleDir, textsFile, task, precision, "2", String(rounds)]) });
  results.push({ engine: "Node (onnxruntime-node)", precision, threads: 2, ...run(process.execPath, [join(REPO, "js/bench/node_bench.mjs"), bundleDir, textsFile, task, precision, "2", String(rounds)]) });
}
const server = await serve({ bundles: { bench: twice } });
const browser = await chromium.launch({ executablePath: process.env.CHROMIUM || "/usr/bin/chromium", args: ["--no-sandbox"] });
const browserVersion = browser.version();
try {
  for (const precision of precisions) {
    for (const threads of [1, 2]) {
      const page = await browser.newPage();
      await page.route("**/*", (route) => (route.request().url().startsWith(`${server.url}/`) ? route.continue() : route.abort()));
      await page.goto(`${server.url}/test/browser/`);
      await page.waitForFunction(() => window.checksReady && globalThis.crossOriginIsolated);
      const result = await page.evaluate(([t, name, options]) => window.checks.bench("/bundles/bench/", t, name, options), [texts, task, { precision, threads, rounds, secondTask: second }]);
      results.push({ engine: "Chromium (onnxruntime-web, wasm)", precision, threads, ...result });
      await page.close();
    }
  }
} finally {
  await browser.close();
  await server.close();
  rmSync(temp, { recursive: true, force: true });
}

const python_ = (precision) => results.find((r) => r.precision === precision && r.engine.startsWith("Python"));
const node_ = (precision) => results.find((r) => r.precision === precision && r.engine.startsWith("Node"));
const mb = (bytes) => (bytes / 1e6).toFixed(2);
const chromium_ = (precision) => results.find((r) => r.precision === precision && r.firstTaskBytes);
console.log(`\n${texts.length} sentences of ${data.replace(REPO, "")} (column ${column}), batch 32, median of ${rounds} rounds; task ${task}; ` +
  `node ${process.versions.node}, Chromium ${browserVersion}\n`);
console.log("| engine | precision | threads | rows/s | × Python | × Node | cold start (load + first prediction) | labels = Python's |");
console.log("|---|---|---|---|---|---|---|---|");
for (const r of results) {
  const same = r.labels.filter((label, i) => label === python_(r.precision).labels[i]).length;
  console.log(`| ${r.engine} | ${r.precision} | ${r.threads} | ${r.rowsPerSecond.toFixed(1)} | ${(r.rowsPerSecond / python_(r.precision).rowsPerSecond).toFixed(2)} | ` +
    `${(r.rowsPerSecond / node_(r.precision).rowsPerSecond).toFixed(2)} | ${r.cold.toFixed(2)} s | ${same}/${r.labels.length} |`);
}
console.log("");
for (const precision of precisions) {
  const c = chromium_(precision);
  console.log(`Chromium downloads (${precision}): first task ${mb(c.firstTaskBytes)} MB (manifest, tokenizer, embedding, backbone, task), each further task ${mb(c.furtherTaskBytes)} MB.`);
}
