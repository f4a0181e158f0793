// The browser: Debian's Chromium, driven by playwright-core, loads bundles from a local static
// server (scripts/serve.mjs) and checks parity with the Python runtime, the tokenizer on every
// code point, a tampered bundle, and the demo page. Any request that is not to the local server
// fails the test (every JS and wasm file must come from this package or its node_modules).
//
//   CHROMIUM       the browser's executable (default /usr/bin/chromium)
//   IPT_EDGE_SCREENSHOT   where to save a screenshot of the demo (e.g. docs/images/js-demo.png)
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { cpSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { chromium } from "playwright-core";
import { serve } from "../../scripts/serve.mjs";
import { REFERENCES, SHIPPED, SHIPPED_INT8, TINY, reference } from "../config.js";

const executablePath = process.env.CHROMIUM || "/usr/bin/chromium";
const temp = mkdtempSync(join(tmpdir(), "ipt-edge-browser-"));
let server;
let browser;
const outside = [];

before(async () => {
  if (!existsSync(executablePath)) throw new Error(`${executablePath} is missing: apt-get install -y chromium, or set CHROMIUM`);
  const damaged = join(temp, "damaged");
  cpSync(TINY.sentiment, damaged, { recursive: true });
  const encoder = readFileSync(join(damaged, "encoder.onnx"));
  encoder[100] ^= 1;
  writeFileSync(join(damaged, "encoder.onnx"), encoder);
  const bundles = { ...TINY, damaged, ...(SHIPPED ? { shipped: SHIPPED } : {}), ...(SHIPPED_INT8 ? { "shipped-int8": SHIPPED_INT8 } : {}) };
  server = await serve({ bundles, refs: REFERENCES });
  browser = await chromium.launch({ executablePath, args: ["--no-sandbox"] });
});

after(async () => {
  await browser?.close();
  await server?.close();
  rmSync(temp, { recursive: true, force: true });
  assert.deepEqual(outside, [], "requests left the local server");
});

/** A fresh page (its own ONNX Runtime: wasm threads are set once per page) on the checks page. */
async function checksPage(path = "/test/browser/") {
  const page = await browser.newPage();
  await page.route("**/*", (route) => {
    if (route.request().url().startsWith(`${server.url}/`)) return route.continue();
    outside.push(route.request().url());
    return route.abort();
  });
  const errors = [];
  page.on("pageerror", (error) => errors.push(error.message));
  await page.goto(`${server.url}${path}`);
  if (path === "/test/browser/") await page.waitForFunction(() => window.checksReady, null, { timeout: 30_000 });
  page.errors = errors;
  return page;
}

const parityCases = [
  ...Object.entries(TINY).map(([name, dir]) => ({ name, dir, ref: name, options: {} })),
  { name: "sentiment", dir: TINY.sentiment, ref: "sentiment", options: { threads: 2 } },
  { name: "shipped", dir: SHIPPED, ref: "shipped-fp32", options: {} },
  { name: "shipped-int8", dir: SHIPPED_INT8, ref: "shipped-int8", options: { precision: "int8" } },
];

for (const { name, dir, ref, options } of parityCases) {
  const label = `${name} ${options.precision ?? "fp32"}${options.threads ? `, ${options.threads} threads` : ""}`;
  test(`chromium parity: ${label}`, { skip: dir ? false : "IPT_EDGE_BUNDLE is not set (or has no int8 backbone)" }, async (t) => {
    reference(ref, dir); // fails early, saying how to rewrite it, if it is stale
    const page = await checksPage();
    assert.equal(await page.evaluate(() => window.checks.crossOriginIsolated()), true);
    const s = await page.evaluate(([b, r, o]) => window.checks.parity(b, r, o), [`/bundles/${name}/`, `/refs/${ref}.json`, options]);
    await page.close();
    t.diagnostic(`${label}: ${s.rows} rows, ids equal ${s.idsEqual}/${s.rows}, max abs prob diff ${s.maxAbsDiff.toExponential(2)}, labels agree ${s.labelsAgree}/${s.rows}`);
    assert.equal(s.idsEqual, s.rows, s.problems.join("\n"));
    assert.equal(s.truncatedEqual, s.rows, s.problems.join("\n"));
    assert.equal(s.labelsAgree, s.rows, s.problems.join("\n"));
    // int8 kernels differ between wasm and native: labels must agree, probabilities only in fp32
    if (options.precision !== "int8") assert.ok(s.maxAbsDiff <= 1e-4, `max abs probability difference ${s.maxAbsDiff} > 1e-4`);
  });
}

// The tokenizer on every code point, fuzzed texts and truncations, for each tokenizer whose Rust
// ids js/scripts/compare_tokenizers.mjs --out wrote into the references folder.
for (const [name, dir] of Object.entries({ ...TINY, ...(SHIPPED ? { shipped: SHIPPED } : {}) })) {
  if (name === "multi" || name === "pair") continue; // the same tokenizer.json as sentiment
  const sha = createHash("sha256").update(readFileSync(join(dir, "tokenizer.json"))).digest("hex").slice(0, 12);
  const file = `tokenizer-${sha}.json`;
  const present = existsSync(join(REFERENCES, file));
  test(`chromium tokenizer: ${name}`, { skip: present ? false : `no ${file} (js/scripts/compare_tokenizers.mjs --out)` }, async (t) => {
    const page = await checksPage();
    const s = await page.evaluate(([a, b]) => window.checks.tokenizer(a, b), [`/bundles/${name}/tokenizer.json`, `/refs/${file}`]);
    await page.close();
    t.diagnostic(`${name}: ${s.codePoints} code points, ${s.fuzz} fuzzed texts, ${s.encodings} truncation cases; differing blocks/cases ${JSON.stringify(s.differing)}`);
    assert.deepEqual(s.differing, { codePoints: [], fuzz: [], encodings: [] });
  });
}

test("chromium: a 20 MB line without whitespace reaches the tokenizer in kilobytes, with the same tokens", async (t) => {
  const page = await checksPage();
  const { longest, differing } = await page.evaluate((url) => window.checks.longLines(url), "/bundles/sentiment/tokenizer.json");
  await page.close();
  t.diagnostic(`most characters handed to the library at once: ${JSON.stringify(longest)}`);
  for (const [name, n] of Object.entries(longest)) assert.ok(n < 3 * 4096, `${name}: ${n} characters reached the library`);
  assert.deepEqual(differing, []);
});

test("chromium refuses a tampered or missing bundle, naming the file", async () => {
  const page = await checksPage();
  const damaged = await page.evaluate(() => window.checks.loadError("/bundles/damaged/"));
  assert.match(damaged, /^BundleError: encoder\.onnx: sha256 does not match the manifest/);
  const missing = await page.evaluate(() => window.checks.loadError("/bundles/nowhere/"));
  assert.match(missing, /^BundleError: http:\/\/127\.0\.0\.1:\d+\/bundles\/nowhere\/manifest\.json: HTTP 404/);
  await page.close();
});

test("the demo shows each task's labels with probability bars", async (t) => {
  const name = SHIPPED ? "shipped" : "multi";
  const page = await checksPage(`/demo/?bundle=/bundles/${name}/`);
  await page.setViewportSize({ width: 820, height: SHIPPED ? 520 : 1400 });
  await page.waitForFunction(() => document.body.dataset.loaded === "true", null, { timeout: 60_000 });
  await page.fill("#text", "");
  await page.type("#text", "a gorgeous, witty, seductive movie.", { delay: 5 });
  await page.waitForFunction(() => Number(document.body.dataset.predicted) > 0 && !document.querySelector("#status.error"));
  await page.waitForTimeout(300); // the last keystroke's prediction
  const cards = await page.$$eval(".task", (tasks) =>
    tasks.map((task) => ({
      task: task.querySelector("h2 span").textContent,
      rows: [...task.querySelectorAll(".row")].map((row) => [row.querySelector(".label").textContent, row.querySelector(".p").textContent]),
    })),
  );
  t.diagnostic(JSON.stringify(cards));
  assert.ok(cards.length >= 1);
  for (const card of cards) {
    const total = card.rows.reduce((sum, [, p]) => sum + parseFloat(p), 0);
    assert.ok(Math.abs(total - 100) < 0.5, `${card.task}: probabilities add up to ${total}%`);
  }
  if (SHIPPED) assert.equal(cards.find((c) => c.task === "sst2-sentiment").rows.find(([, p]) => parseFloat(p) > 50)[0], "positive");
  if (process.env.IPT_EDGE_SCREENSHOT) { // a text with less certain probabilities, for the picture
    const count = await page.evaluate(() => Number(document.body.dataset.predicted));
    await page.fill("#text", "it's a watchable film, though not a memorable one.");
    await page.waitForFunction((n) => Number(document.body.dataset.predicted) > n, count);
    await page.waitForTimeout(300);
    await page.screenshot({ path: process.env.IPT_EDGE_SCREENSHOT, fullPage: true });
  }
  assert.deepEqual(page.errors, []);
  await page.close();
});
