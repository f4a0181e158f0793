// Untrusted bundles: a tampered, missing, oversized or misplaced file, an unknown format version,
// a graph that breaks the contract, a malformed head: each an error naming the file, never an answer.
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { cpSync, mkdtempSync, readFileSync, rmSync, statSync, symlinkSync, unlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, test } from "node:test";
import { Bundle, BundleError } from "../src/node.js";
import { TINY } from "./config.js";

const temp = mkdtempSync(join(tmpdir(), "ipt-edge-js-"));
after(() => rmSync(temp, { recursive: true, force: true }));
let copies = 0;

/** A copy of the sentiment bundle, changed by `change(dir, manifest)`; the manifest is written
 * back with the size and sha256 of every file listed in `refresh`. */
function tampered(change, refresh = []) {
  const dir = join(temp, `b${copies++}`);
  cpSync(TINY.sentiment, dir, { recursive: true });
  const manifest = JSON.parse(readFileSync(join(dir, "manifest.json"), "utf8"));
  change(dir, manifest);
  for (const file of refresh) {
    const bytes = readFileSync(join(dir, file));
    manifest.files[file] = { size: bytes.length, sha256: createHash("sha256").update(bytes).digest("hex") };
  }
  writeFileSync(join(dir, "manifest.json"), JSON.stringify(manifest, null, 2));
  return dir;
}

async function refused(dir, pattern, task = "sentiment", options = {}) {
  await assert.rejects(
    async () => {
      const bundle = await Bundle.load(dir, options);
      await bundle.predict(["a good film"], task);
    },
    (error) => {
      assert.ok(error instanceof BundleError, `${error.name}: ${error.message}`);
      assert.match(error.message, pattern);
      return true;
    },
  );
}

const safetensors = (header, data) => {
  const json = Buffer.from(JSON.stringify(header));
  const length = Buffer.alloc(8);
  length.writeBigUInt64LE(BigInt(json.length));
  return Buffer.concat([length, json, data]);
};

test("a changed byte in a shared graph is refused, naming the file", async () => {
  const dir = tampered((d) => {
    const bytes = readFileSync(join(d, "encoder.onnx"));
    bytes[bytes.length >> 1] ^= 1;
    writeFileSync(join(d, "encoder.onnx"), bytes);
  });
  await refused(dir, /^encoder\.onnx: sha256 does not match the manifest/);
});

test("a task's damaged head is refused when the task is first used", async () => {
  const dir = tampered((d) => writeFileSync(join(d, "tasks/sentiment/head.safetensors"), readFileSync(join(d, "tasks/sentiment/head.safetensors")).subarray(0, 100)));
  const bundle = await Bundle.load(dir); // the shared files are fine
  for (let i = 0; i < 2; i++) {
    await assert.rejects(bundle.predict(["good"], "sentiment"), /tasks\/sentiment\/head\.safetensors: 100 bytes, the manifest says 392/);
  }
});

test("a missing file is refused, naming it", async () => {
  await refused(tampered((d) => unlinkSync(join(d, "embed.onnx"))), /embed\.onnx: missing/);
  await refused(join(temp, "nowhere"), /nowhere: no such bundle folder/);
});

test("paths that leave the bundle are refused", async () => {
  for (const path of ["../embed.onnx", "/etc/passwd", "tasks/../../x", ".hidden", "a\\b"]) {
    const dir = tampered((d, m) => {
      m.files[path] = m.files["embed.onnx"];
      m.embed_file = path;
    });
    await refused(dir, /is not a plain relative path inside the bundle/);
  }
  const dir = tampered((d) => {
    const outside = join(temp, "outside-tokenizer.json");
    cpSync(join(d, "tokenizer.json"), outside);
    unlinkSync(join(d, "tokenizer.json"));
    symlinkSync(outside, join(d, "tokenizer.json"));
  });
  await refused(dir, /tokenizer\.json: resolves outside the bundle/);
});

test("unknown and older format versions are refused", async () => {
  await refused(tampered((d, m) => (m.format_version = 2)), /format_version 2, from an older ipt-edge .* Re-export/);
  await refused(tampered((d, m) => (m.format_version = 4)), /format_version 4 is not understood/);
  await refused(tampered((d, m) => (m.format = "other")), /not an ipt-edge bundle/);
});

test("manifest fields are checked", async () => {
  await refused(tampered((d, m) => delete m.backbone.hidden_size), /missing field backbone\.hidden_size/);
  await refused(tampered((d, m) => (m.tasks.sentiment.labels = ["a", "a"])), /labels repeats a name/);
  await refused(tampered((d, m) => (m.backbone.num_heads = 3)), /num_heads must divide hidden_size/);
  await refused(tampered((d, m) => (m.tasks.sentiment.pooling = "max")), /pooling should be one of/);
  await refused(tampered((d, m) => (m.tasks["../x"] = m.tasks.sentiment)), /task name "..\/x" is not allowed/);
  await refused(tampered((d, m) => delete m.files["embed.onnx"]), /embed\.onnx is used but has no entry in files/);
  const broken = tampered(() => {});
  writeFileSync(join(broken, "manifest.json"), "{");
  await refused(broken, /manifest\.json: is not valid JSON/);
});

test("a key given twice in the manifest is refused, naming it and where", async () => {
  // JSON.parse keeps the last silently, so a wrong first entry (a sha256, a task) would never be checked.
  const zero = "0".repeat(64);
  const cases = [
    // [before, inserted before it, the error]
    ['"format_version"', '"format_version": 2, ', /manifest\.json: key "format_version" appears twice at the top level/],
    ['"embed.onnx": {', `"embed.onnx": {"size": 1, "sha256": "${zero}"}, `, /manifest\.json: key "embed\.onnx" appears twice in files/],
    ['"sentiment": {', '"sentiment": {}, ', /manifest\.json: key "sentiment" appears twice in tasks/],
    ['"hidden_size"', '"hidden_size": 64, ', /manifest\.json: key "hidden_size" appears twice in backbone/],
    ['"Attention"', '"Attention": 9, ', /manifest\.json: key "Attention" appears twice in encoder\.fusions/],
    ['"generator":', '"notes": [0, {"a": 1, "\\u0061": 1}], ', /manifest\.json: key "a" appears twice in tasks\.sentiment\.notes\[1\]/],
  ];
  for (const [before, inserted, message] of cases) {
    const dir = tampered(() => {});
    const text = readFileSync(join(dir, "manifest.json"), "utf8");
    assert.equal(text.split(before).length, 2, before);
    writeFileSync(join(dir, "manifest.json"), text.replace(before, inserted + before));
    await refused(dir, message);
  }
});

test("graphs that break the contract are refused, naming the file", async () => {
  // the generator fixes P = 4; a manifest that says 5 does not match it
  await refused(tampered((d, m) => (m.tasks.sentiment.prompt_length = 5)), /tasks\/sentiment\/generator\.onnx: prefix_kv\.0 has prompts = 4, but the manifest says 5/);
  // the embedding graph where the backbone should be
  const dir = tampered((d) => cpSync(join(d, "embed.onnx"), join(d, "encoder.onnx")), ["encoder.onnx"]);
  await refused(dir, /^encoder\.onnx: inputs should be token_embeds float32 \[batch, tokens, hidden\], .*; found input_ids int64 rank 2/);
  // a graph ONNX Runtime cannot load
  await refused(tampered((d) => writeFileSync(join(d, "embed.onnx"), "not a graph"), ["embed.onnx"]), /^embed\.onnx: ONNX Runtime cannot load this graph/);
  // a tokenizer of a kind the JS runtime does not reproduce
  const other = tampered((d) => {
    const json = JSON.parse(readFileSync(join(d, "tokenizer.json"), "utf8"));
    json.normalizer.lowercase = false;
    writeFileSync(join(d, "tokenizer.json"), JSON.stringify(json));
  }, ["tokenizer.json"]);
  await refused(other, /^tokenizer\.json: the JavaScript runtime reproduces the Rust tokenizer for uncased BERT WordPiece tokenizers only/);
});

test("an int8 backbone that is the fp32 graph is refused, naming the file", async () => {
  // --precision int8 would run fp32 and say nothing
  const dir = tampered((d, m) => {
    cpSync(join(d, "encoder.onnx"), join(d, "encoder.int8.onnx"));
    m.encoder.int8_file = "encoder.int8.onnx";
  }, ["encoder.int8.onnx"]);
  assert.equal((await (await Bundle.load(dir)).predict(["good"], "sentiment")).length, 1); // fp32 does not open it
  await refused(dir, /^encoder\.int8\.onnx: not a quantized graph/, "sentiment", { precision: "int8" });
});

test("heads are read by a checking safetensors parser", async () => {
  const head = "tasks/sentiment/head.safetensors";
  const write = (header, data) => tampered((d) => writeFileSync(join(d, head), safetensors(header, data)), [head]);
  const weight = { dtype: "F32", shape: [2, 32], data_offsets: [0, 256] };
  const bias = { dtype: "F32", shape: [2], data_offsets: [256, 264] };
  await refused(write({ weight, bias: { ...bias, shape: [3] } }, Buffer.alloc(264)), /safetensors: not a readable safetensors file \(tensor bias: data_offsets \[256, 264\] do not hold F32 \[3\]/);
  await refused(write({ weight: { ...weight, shape: [3, 32], data_offsets: [0, 384] }, bias: { ...bias, data_offsets: [384, 392] } }, Buffer.alloc(392)), /expected float32 weight \[2, 32\] and bias \[2\], found weight F32 \[3, 32\]/);
  await refused(write({ weight: { ...weight, dtype: "F16", data_offsets: [0, 128] }, bias: { ...bias, data_offsets: [128, 136] } }, Buffer.alloc(136)), /expected float32 weight/);
  await refused(write({ weight, bias: { ...bias, data_offsets: [248, 256] } }, Buffer.alloc(264)), /tensors overlap or leave gaps/);
  await refused(write({ weight, bias, extra: { dtype: "XX", shape: [], data_offsets: [264, 264] } }, Buffer.alloc(264)), /unknown dtype "XX"/);
  const huge = tampered((d) => {
    const bytes = Buffer.alloc(16);
    bytes.writeBigUInt64LE(1n << 60n);
    writeFileSync(join(d, head), bytes);
  }, [head]);
  await refused(huge, /header length \d+ does not fit the file/);
  const notJson = tampered((d) => writeFileSync(join(d, head), Buffer.concat([Buffer.from([3, 0, 0, 0, 0, 0, 0, 0]), Buffer.from("{x}")])), [head]);
  await refused(notJson, /header is not UTF-8 JSON/);
  // and a well-formed head with other tensors beside weight and bias is read
  const good = readFileSync(join(TINY.sentiment, head));
  assert.equal(statSync(join(TINY.sentiment, head)).size, good.length);
});
