// The public API on the committed tiny bundles: names, shapes, mixed tasks, and the errors the
// Python runtime gives for the same mistakes.
import assert from "node:assert/strict";
import { test } from "node:test";
import { Bundle, BundleError } from "../src/node.js";
import { TINY } from "./config.js";

const multi = await Bundle.load(TINY.multi);
const pair = await Bundle.load(TINY.pair);

test("tasks and labels", () => {
  assert.deepEqual(multi.tasks, ["attn4", "cnn5", "late4", "lookup4", "lstm3", "mlp4", "prefix2", "rating3"]);
  assert.deepEqual(multi.labels("rating3"), ["low", "mid", "high"]);
  assert.deepEqual(pair.labels("entail"), ["differ", "same"]);
  assert.throws(() => multi.labels("nope"), /no task "nope" in the bundle; it has: attn4, cnn5/);
});

test("predictProba: one array per row, following that row's task's labels", async () => {
  const texts = ["a good film", "a dull plot", "the story"];
  const probabilities = await multi.predictProba(texts, ["rating3", "mlp4", "prefix2"]);
  assert.deepEqual(probabilities.map((row) => row.length), [3, 2, 2]);
  for (const row of probabilities) assert.ok(Math.abs(row.reduce((a, b) => a + b) - 1) < 1e-9);
  const labels = await multi.predict(texts, ["rating3", "mlp4", "prefix2"]);
  labels.forEach((label, i) => assert.ok(multi.labels(["rating3", "mlp4", "prefix2"][i]).includes(label)));
  // one task name for every row
  assert.equal((await multi.predict(texts, "mlp4")).length, 3);
  assert.deepEqual(await multi.predictProba([], "mlp4"), []);
});

test("a row's probabilities do not depend on its batch or the tasks beside it", async () => {
  const texts = ["a good film", "the plot was very dull and the cast was poor", "superb", "boring story"];
  const alone = await Promise.all(texts.map((text) => multi.predictProba([text], "lstm3")));
  const mixed = await multi.predictProba(texts, ["lstm3", "prefix2", "lstm3", "cnn5"], { batchSize: 2 });
  for (const i of [0, 2]) alone[i][0].forEach((p, c) => assert.ok(Math.abs(p - mixed[i][c]) < 1e-5));
});

test("pair tasks take [text, textPair] arrays", async () => {
  const probabilities = await pair.predictProba([["the film was good", "the movie was great"]], "entail");
  assert.equal(probabilities[0].length, 2);
  await assert.rejects(pair.predict(["just one text"], "entail"), /text 0: task 'entail' takes \[text, textPair\] pairs/);
  await assert.rejects(multi.predict([["a", "b"]], "mlp4"), /text 0: task 'mlp4' takes single strings/);
});

test("mistakes are errors that say what was expected", async () => {
  await assert.rejects(multi.predict("a good film", "mlp4"), /pass an array of texts/);
  await assert.rejects(multi.predict(["a", "b"], ["mlp4"]), /2 texts but 1 task names/);
  await assert.rejects(multi.predict(["a", "b"], ["mlp4", "nope"]), (e) => e instanceof BundleError && /text 1: no task "nope"/.test(e.message));
  await assert.rejects(multi.predict(["fine", " \t\u3000"], "mlp4"), /text 1 is empty/);
  await assert.rejects(multi.predict([""], "mlp4"), /text 0 is empty/);
  await assert.rejects(multi.predict(["ok", "bad \ud800 half"], "mlp4"), /text 1 is not valid UTF-8 \(it holds a lone surrogate\)/);
  await assert.rejects(multi.predict([42], "mlp4"), /text 0: task 'mlp4' takes single strings/);
  await assert.rejects(pair.predict([["a", null]], "entail"), /text 0 is null, expected str/);
  await assert.rejects(multi.predict(["a"], "mlp4", { batchSize: 0 }), /batchSize must be a whole number >= 1/);
  await assert.rejects(Bundle.load(TINY.multi, { precision: "int8" }), /has no int8 encoder; export with --quantize int8/);
  // near-empty texts the Python runtime accepts
  assert.equal((await multi.predict(["\u200b", ".", "\u0301", "\x00"], "mlp4")).length, 4);
});

test("texts longer than the budget are truncated and say so", async () => {
  const { truncated } = await multi.run(["good ".repeat(100), "good"], "mlp4");
  assert.deepEqual(truncated, [true, false]);
});

test("calls made at once run one after another, each with its own answer", async () => {
  const [a, b] = await Promise.all([multi.predictProba(["a good film"], "mlp4"), multi.predictProba(["a dull plot"], "mlp4")]);
  assert.deepEqual(a, await multi.predictProba(["a good film"], "mlp4"));
  assert.deepEqual(b, await multi.predictProba(["a dull plot"], "mlp4"));
});
