// Compares the JavaScript tokenizer (src/tokenization.js) with the Rust one, through Python:
// the ids of every code point (in a small context), of fuzzed texts, and truncated encodings
// (budgets, pairs, long texts) against the Python runtime's own BundleTokenizer.
//
//   node js/scripts/compare_tokenizers.mjs [--out DIR] TOKENIZER_JSON...
//
// Python on PATH (or $PYTHON) must import tokenizers and ipt_edge. Exit 1 on any difference.
// --out DIR writes DIR/tokenizer-<sha256 of the file, 12 hex>.json per tokenizer: the Rust side's
// ids (hashed by block) and encodings, for the browser test, which repeats the comparison in Chromium.
import { spawnSync } from "node:child_process";
import { createHash } from "node:crypto";
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { BertTokenizer } from "../src/tokenization.js";
import { blockHashes, codePointTexts, fuzzTexts, truncationCases } from "../test/tokenizer-cases.js";

const script = fileURLToPath(new URL("./rust_tokenizer.py", import.meta.url));
const temp = mkdtempSync(join(tmpdir(), "ipt-edge-tokenizers-"));
process.once("exit", () => rmSync(temp, { recursive: true, force: true }));
function python(command, path, input) {
  const [inPath, outPath] = [join(temp, "in.json"), join(temp, "out.json")]; // files: pipes are slow here
  writeFileSync(inPath, JSON.stringify(input));
  const run = spawnSync(process.env.PYTHON ?? "python", [script, command, path, inPath, outPath], { encoding: "utf8" });
  if (run.status !== 0) throw new Error(`rust_tokenizer.py ${command} failed (${run.error ?? run.signal ?? run.status}): ${run.stderr}`);
  return JSON.parse(readFileSync(outPath, "utf8"));
}

const show = (value) => JSON.stringify(value).slice(0, 300);

/** Compares one tokenizer.json; returns the number of differences (printing the first few). */
export function compare(path, out = null) {
  const json = JSON.parse(readFileSync(path, "utf8"));
  const tokenizer = new BertTokenizer(json, path);
  let differences = 0;
  const differ = (what, text, rust, js) => {
    if (differences++ < 10) console.log(`  DIFFERS ${what}: ${show(text)}\n    rust ${show(rust)}\n    js   ${show(js)}`);
  };
  const groups = { codePoints: codePointTexts(), fuzz: fuzzTexts(1, 4000) };
  const hashes = {};
  for (const [name, texts] of Object.entries(groups)) {
    const rust = python("ids", path, texts);
    texts.forEach((text, i) => {
      const js = tokenizer.pieces(text);
      if (js.join() !== rust[i].join()) differ(name, text, rust[i], js);
    });
    hashes[name] = blockHashes(rust);
  }
  const cases = truncationCases(2);
  const rust = python("encode", path, cases);
  cases.forEach((c, i) => {
    const { ids, typeIds, truncated } = tokenizer.encode(c.text, c.maxLength);
    const js = [ids, typeIds, truncated];
    if (JSON.stringify(js) !== JSON.stringify(rust[i])) differ(`encode(maxLength ${c.maxLength})`, c.text, rust[i], js);
  });
  const counts = `${groups.codePoints.length} code points, ${groups.fuzz.length} fuzzed texts, ${cases.length} truncation cases`;
  console.log(`${path}: ${counts}: ${differences ? `${differences} differences` : "ids equal"}`);
  if (out) writeFileSync(out, JSON.stringify({ hashes, encodings: rust }));
  return differences;
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const args = process.argv.slice(2);
  const at = args.indexOf("--out");
  const dir = at >= 0 ? args.splice(at, 2)[1] : null;
  if (dir) mkdirSync(dir, { recursive: true });
  if (!args.length) throw new Error("usage: node js/scripts/compare_tokenizers.mjs [--out DIR] TOKENIZER_JSON...");
  let total = 0;
  for (const path of args) {
    const sha = createHash("sha256").update(readFileSync(path)).digest("hex").slice(0, 12);
    total += compare(path, dir ? join(dir, `tokenizer-${sha}.json`) : null);
  }
  process.exit(total ? 1 : 0);
}
