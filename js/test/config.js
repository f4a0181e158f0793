// Where the tests find bundles and references (set by js/ci.sh):
//   IPT_EDGE_REFERENCES  folder of reference files (js/scripts/reference.py, compare_tokenizers.mjs);
//                        default: the committed fixtures (tiny bundles only)
//   IPT_EDGE_BUNDLE      the shipped task's bundle; its tests are skipped without it
//   IPT_EDGE_BUNDLE_INT8 the same with an int8 backbone (default: IPT_EDGE_BUNDLE, if it has one)
import { createHash } from "node:crypto";
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";

export const REPO = fileURLToPath(new URL("../../", import.meta.url));
export const TINY = { sentiment: join(REPO, "tests/bundles/sentiment"), multi: join(REPO, "tests/bundles/multi"), pair: join(REPO, "tests/bundles/pair") };
export const SHIPPED = process.env.IPT_EDGE_BUNDLE || null;
const hasInt8 = (dir) => Boolean(JSON.parse(readFileSync(join(dir, "manifest.json"), "utf8")).encoder.int8_file);
/** The shipped task's bundle with an int8 backbone, or null. */
export const SHIPPED_INT8 = process.env.IPT_EDGE_BUNDLE_INT8 || (SHIPPED && hasInt8(SHIPPED) ? SHIPPED : null);
export const REFERENCES = process.env.IPT_EDGE_REFERENCES || fileURLToPath(new URL("./fixtures/", import.meta.url));

/** The reference `name` (e.g. "multi", "shipped-int8") for the bundle `dir`: checked to be for
 * this very build of the bundle (its manifest's sha256), else the test says how to rewrite it. */
export function reference(name, dir) {
  const path = join(REFERENCES, `${name}.json`);
  const rewrite = `python js/scripts/reference.py ${dir} -o ${path}${name.endsWith("int8") ? " --precision int8" : ""}`;
  if (!existsSync(path)) throw new Error(`${path} is missing; write it with: ${rewrite}`);
  const data = JSON.parse(readFileSync(path, "utf8"));
  const sha = createHash("sha256").update(readFileSync(join(dir, "manifest.json"))).digest("hex");
  if (data.manifestSha256 !== sha) throw new Error(`${path} was written for another build of ${dir}; rewrite it with: ${rewrite}`);
  return data;
}
