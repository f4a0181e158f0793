// The browser entry point: bundles from a URL, run by onnxruntime-web's wasm backend. Import maps
// (or a bundler, with the wasmPaths option) must resolve "onnxruntime-web/wasm" and
// "@huggingface/tokenizers".
//
//   import { Bundle } from "ipt-edge";
//   const bundle = await Bundle.load("https://example.org/bundle/", { threads: 1 });
import * as ort from "onnxruntime-web/wasm";
import { Bundle as Core, checkThreads } from "./bundle.js";
import { BundleError } from "./errors.js";

export { BundleError } from "./errors.js";

/** Files under the URL `base` (the bundle's folder), fetched; counts the bytes it downloads. */
export function urlSource(base, { fetch: get = globalThis.fetch.bind(globalThis) } = {}) {
  const root = new URL(String(base).replace(/\/*$/, "/"), globalThis.location?.href);
  // Each path segment is encoded: a "%", "?" or "#" in a file name names that file, nothing else.
  const locate = (relative) => new URL(relative.split("/").map(encodeURIComponent).join("/"), root);
  const source = {
    bytesRead: 0,
    describe: (relative) => locate(relative).href,
    /** The file's bytes; refuses one larger than `maxBytes` (unless upTo: then reads that much). */
    async read(relative, maxBytes, { upTo = false } = {}) {
      const url = locate(relative);
      if (!url.href.startsWith(root.href)) throw new BundleError(`${url.href}: resolves outside the bundle; refusing it`);
      let response;
      try {
        response = await get(url.href, { credentials: "same-origin" });
      } catch (error) {
        throw new BundleError(`${url.href}: cannot fetch it (${error.message})`);
      }
      if (!response.ok) throw new BundleError(`${url.href}: HTTP ${response.status}${relative === "manifest.json" ? "; not a bundle?" : " (the manifest lists it)"}`);
      const chunks = [];
      let size = 0;
      const reader = response.body.getReader();
      for (;;) {
        const { done, value } = await reader.read();
        if (done) break;
        chunks.push(value);
        size += value.byteLength;
        source.bytesRead += value.byteLength;
        if (size > maxBytes) { // never download more than the manifest promises
          await reader.cancel();
          if (upTo) break;
          throw new BundleError(`${url.href}: more than the ${maxBytes} bytes the manifest says; the file is damaged`);
        }
      }
      const bytes = new Uint8Array(size);
      let at = 0;
      for (const chunk of chunks) {
        bytes.set(chunk, at);
        at += chunk.byteLength;
      }
      return bytes;
    },
  };
  return source;
}

export class Bundle extends Core {
  /**
   * Opens the bundle at the URL `base`. Options: precision "fp32" (default) or "int8"; threads
   * (wasm threads, default 1; more need a cross-origin isolated page, and the first bundle loaded
   * sets them for the page); wasmPaths (where ort-wasm-simd-threaded.{mjs,wasm} are served;
   * default: beside onnxruntime-web/wasm as the import map resolves it, never a CDN; a bundled page
   * has no import map and must pass it).
   */
  static load(base, { precision = "fp32", threads = 1, wasmPaths } = {}) {
    checkThreads(threads);
    ort.env.wasm.numThreads = threads;
    ort.env.wasm.wasmPaths = wasmPaths ?? defaultWasmPaths();
    const sessionOptions = () => ({ graphOptimizationLevel: "all", executionMode: "sequential", executionProviders: ["wasm"] });
    return this.open(urlSource(base), { ort, sessionOptions }, { precision });
  }

  /** Bytes downloaded for this bundle so far (manifest, shared files, opened tasks). */
  get bytesDownloaded() {
    return this.source.bytesRead;
  }
}

function defaultWasmPaths() {
  let entry;
  try {
    entry = import.meta.resolve?.("onnxruntime-web/wasm");
  } catch {
    // no import map names it: a bundler built this page
  }
  if (!entry) throw new TypeError("set wasmPaths: the URL of a folder that serves onnxruntime-web's dist/ort-wasm-simd-threaded.{mjs,wasm}");
  return new URL("./", entry).href;
}
