// Parity with the Python runtime in Node: token ids and probabilities for the committed tiny
// bundles (fp32) and the shipped task's bundle (fp32 and int8), against js/scripts/reference.py.
import assert from "node:assert/strict";
import { test } from "node:test";
import { Bundle } from "../src/node.js";
import { SHIPPED, SHIPPED_INT8, TINY, reference } from "./config.js";
import { compareWithReference } from "./parity.js";

const cases = [
  ...Object.entries(TINY).map(([name, dir]) => ({ name, dir, ref: name, precision: "fp32" })),
  { name: "shipped", dir: SHIPPED, ref: "shipped-fp32", precision: "fp32" },
  { name: "shipped", dir: SHIPPED_INT8, ref: "shipped-int8", precision: "int8" },
];

for (const { name, dir, ref, precision } of cases) {
  test(`node parity: ${name} ${precision}`, { skip: dir ? false : "IPT_EDGE_BUNDLE is not set (or has no int8 backbone)" }, async (t) => {
    const bundle = await Bundle.load(dir, { precision });
    const s = await compareWithReference(bundle, reference(ref, dir));
    t.diagnostic(`${name} ${precision}: ${s.rows} rows, ids equal ${s.idsEqual}/${s.rows}, max abs prob diff ${s.maxAbsDiff.toExponential(2)}, labels agree ${s.labelsAgree}/${s.rows}`);
    await bundle.release();
    assert.deepEqual(s.problems, []);
    assert.equal(s.idsEqual, s.rows);
    assert.equal(s.truncatedEqual, s.rows);
    assert.ok(s.maxAbsDiff <= 1e-4, `max abs probability difference ${s.maxAbsDiff} > 1e-4`);
  });
}
