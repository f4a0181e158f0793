// The Node entry point: bundles from a folder, run by onnxruntime-node.
//
//   import { Bundle } from "ipt-edge";
//   const bundle = await Bundle.load("bundle", { precision: "fp32", threads: 2 });
import { createHash } from "node:crypto";
import { mkdtempSync, realpathSync, rmSync } from "node:fs";
import { open, realpath } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join, resolve, sep } from "node:path";
import * as ort from "onnxruntime-node";
import { Bundle as Core, checkThreads } from "./bundle.js";
import { BundleError } from "./errors.js";

export { BundleError } from "./errors.js";

/** Files of the bundle folder `dir`, read only inside it (symbolic links resolved first). */
export function folderSource(dir) {
  const shown = String(dir).replace(/\/+$/, "");
  let root;
  try {
    root = realpathSync(resolve(String(dir)));
  } catch {
    throw new BundleError(`${shown}: no such bundle folder`);
  }
  return {
    describe: (relative) => (relative ? `${shown}/${relative}` : `${shown}/`),
    sha256: async (bytes) => createHash("sha256").update(bytes).digest("hex"),
    /** The file's bytes; refuses one larger than `maxBytes` (unless upTo: then reads that much). */
    async read(relative, maxBytes, { upTo = false } = {}) {
      const path = join(root, relative);
      let real;
      try {
        real = await realpath(path);
      } catch {
        throw new BundleError(`${shown}/${relative}: missing${relative === "manifest.json" ? "; not a bundle, or an export that did not finish" : " (the manifest lists it)"}`);
      }
      if (!real.startsWith(root + sep)) throw new BundleError(`${shown}/${relative}: resolves outside the bundle (${real}); refusing it`);
      const file = await open(real, "r");
      try {
        const { size } = await file.stat();
        if (!upTo && size !== maxBytes) throw new BundleError(`${shown}/${relative}: ${size} bytes, the manifest says ${maxBytes}; the file is damaged`);
        const bytes = new Uint8Array(Math.min(size, maxBytes + 1));
        const { bytesRead } = await file.read(bytes, 0, bytes.length, 0);
        return bytes.subarray(0, bytesRead);
      } finally {
        await file.close();
      }
    },
  };
}

// Graphs are created from their checked bytes. ONNX Runtime would look for "external data" files
// (which no checksum covers) in this folder, which stays empty, so such a graph is refused.
let emptyFolder = null;
function noExternalData() {
  if (!emptyFolder) {
    emptyFolder = mkdtempSync(join(tmpdir(), "ipt-edge-no-external-data-"));
    process.once("exit", () => rmSync(emptyFolder, { recursive: true, force: true }));
  }
  return emptyFolder;
}

export class Bundle extends Core {
  /**
   * Opens the bundle folder `dir`. Options: precision "fp32" (default) or "int8" (the bundle's
   * quantized backbone), threads (ONNX Runtime intra-op threads; default: its own).
   */
  static load(dir, { precision = "fp32", threads } = {}) {
    checkThreads(threads);
    const sessionOptions = (small) => ({
      graphOptimizationLevel: "all",
      executionMode: "sequential",
      ...(threads ? { intraOpNumThreads: threads, interOpNumThreads: 1 } : {}),
      extra: {
        session: {
          model_external_initializers_file_folder_path: noExternalData(),
          // a small graph runs between backbone calls: its threads must not spin and take cores
          ...(small ? { intra_op: { allow_spinning: "0" } } : {}),
        },
      },
    });
    return this.open(folderSource(dir), { ort, sessionOptions }, { precision });
  }
}
