// What the Playwright test and the benchmark run inside Chromium (window.checks).
import { Bundle } from "ipt-edge";
import { BertTokenizer } from "/src/tokenization.js";
import { compareWithReference } from "../parity.js";
import { blockHashes, codePointTexts, fuzzTexts, longLineChecks, truncationCases } from "../tokenizer-cases.js";

const getJson = async (url) => {
  const response = await fetch(url);
  if (!response.ok) throw new Error(`${url}: HTTP ${response.status}`);
  return response.json();
};

window.checks = {
  crossOriginIsolated: () => globalThis.crossOriginIsolated,

  /** The bundle at bundleUrl against the reference at referenceUrl. */
  async parity(bundleUrl, referenceUrl, options = {}) {
    const bundle = await Bundle.load(bundleUrl, options);
    const summary = await compareWithReference(bundle, await getJson(referenceUrl));
    await bundle.release();
    return summary;
  },

  /** The error message Bundle.load gives for the bundle at bundleUrl, or null. */
  async loadError(bundleUrl, task) {
    try {
      const bundle = await Bundle.load(bundleUrl);
      if (task) await bundle.predict(["x"], task);
      return null;
    } catch (error) {
      return `${error.name}: ${error.message}`;
    }
  },

  /** The tokenizer comparison of js/scripts/compare_tokenizers.mjs, against its --out file. */
  async tokenizer(tokenizerUrl, referenceUrl) {
    const tokenizer = new BertTokenizer(await getJson(tokenizerUrl), tokenizerUrl);
    const reference = await getJson(referenceUrl);
    const differing = {};
    const groups = { codePoints: codePointTexts(), fuzz: fuzzTexts(1, 4000) };
    for (const [name, texts] of Object.entries(groups)) {
      const ours = blockHashes(texts.map((text) => tokenizer.pieces(text)));
      differing[name] = ours.map((h, i) => (h === reference.hashes[name][i] ? null : i)).filter((i) => i !== null);
    }
    const cases = truncationCases(2);
    differing.encodings = cases
      .map((c, i) => {
        const { ids, typeIds, truncated } = tokenizer.encode(c.text, c.maxLength);
        return JSON.stringify([ids, typeIds, truncated]) === JSON.stringify(reference.encodings[i]) ? null : i;
      })
      .filter((i) => i !== null);
    return { codePoints: groups.codePoints.length, fuzz: groups.fuzz.length, encodings: cases.length, differing };
  },

  /** tokenizer-cases.js's long-line checks (20 MB lines without whitespace) in the browser. */
  async longLines(tokenizerUrl) {
    return longLineChecks(new BertTokenizer(await getJson(tokenizerUrl), tokenizerUrl));
  },

  /**
   * For js/bench/bench.mjs: cold start (load + first prediction), bytes downloaded for the first
   * task (and for `secondTask`, when given), and the median rows/s over `rounds` runs of `texts`.
   */
  async bench(bundleUrl, texts, task, { rounds = 1, secondTask = null, ...options } = {}) {
    const start = performance.now();
    const bundle = await Bundle.load(bundleUrl, options);
    await bundle.predict([texts[0]], task);
    const cold = (performance.now() - start) / 1000;
    const firstTaskBytes = bundle.bytesDownloaded;
    let furtherTaskBytes = null;
    if (secondTask) {
      await bundle.predict([texts[0]], secondTask);
      furtherTaskBytes = bundle.bytesDownloaded - firstTaskBytes;
    }
    const speeds = [];
    let labels;
    for (let i = 0; i < rounds; i++) {
      const t0 = performance.now();
      labels = await bundle.predict(texts, task, { batchSize: 32 });
      speeds.push(texts.length / ((performance.now() - t0) / 1000));
    }
    await bundle.release();
    speeds.sort((a, b) => a - b);
    return { cold, rowsPerSecond: speeds[Math.floor(speeds.length / 2)], firstTaskBytes, furtherTaskBytes, labels };
  },
};
window.checksReady = true;
