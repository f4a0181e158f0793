// The Node side of js/bench/bench.mjs, in a fresh process: prints one JSON line.
//   node js/bench/node_bench.mjs BUNDLE TEXTS_JSON TASK PRECISION THREADS ROUNDS
import { readFileSync } from "node:fs";
import { Bundle } from "../src/node.js";

const [dir, textsFile, task, precision, threads, rounds] = process.argv.slice(2);
const texts = JSON.parse(readFileSync(textsFile, "utf8"));
const start = performance.now();
const bundle = await Bundle.load(dir, { precision, threads: Number(threads) });
await bundle.predict(texts.slice(0, 1), task);
const cold = (performance.now() - start) / 1000;
const speeds = [];
let labels;
for (let i = 0; i < Number(rounds); i++) {
  const t0 = performance.now();
  labels = await bundle.predict(texts, task, { batchSize: 32 });
  speeds.push(texts.length / ((performance.now() - t0) / 1000));
}
speeds.sort((a, b) => a - b);
console.log(JSON.stringify({ cold, rowsPerSecond: speeds[Math.floor(speeds.length / 2)], labels }));
