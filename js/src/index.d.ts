// Types of the ipt-edge package (the same API from src/node.js and src/browser.js).

/** A text for a single-text task, or [text, textPair] for a pair task (e.g. entailment). */
export type Text = string | [string, string];

export interface LoadOptions {
  /** "fp32" (default), or "int8": the bundle's quantized backbone, where it has one. */
  precision?: "fp32" | "int8";
  /** ONNX Runtime threads. Node: intra-op threads (default: ONNX Runtime's). Browser: wasm threads
   * (default 1; more need a cross-origin isolated page; the first bundle loaded sets them). */
  threads?: number;
  /** Browser only: URL of the folder that serves onnxruntime-web's dist/ort-wasm-simd-threaded.{mjs,wasm}
   * (default: beside "onnxruntime-web/wasm" as the page's import map resolves it; needed with a
   * bundler, where no import map names it). */
  wasmPaths?: string;
}

export interface RunOptions {
  /** Rows per batch (default 32); rows are sorted by token length into batches. */
  batchSize?: number;
}

export interface RunResult {
  /** Each row's task. */
  tasks: string[];
  /** Each row's task's labels, in the order of its logits and probabilities. */
  labelNames: string[][];
  logits: number[][];
  probabilities: number[][];
  /** Each row's most probable label. */
  labels: string[];
  /** Whether the row's text was longer than its task's token budget and was cut. */
  truncated: boolean[];
}

export declare class Bundle {
  /**
   * Node: the bundle folder's path. Browser: the bundle's base URL. Checks the manifest and, before
   * using it, every file's size and sha256; a task's own files are read on its first use.
   */
  static load(source: string, options?: LoadOptions): Promise<Bundle>;
  /** The task names, sorted. */
  readonly tasks: string[];
  /** Browser only: bytes downloaded so far (manifest, shared files, tasks used). */
  readonly bytesDownloaded?: number;
  /** The labels of `task`, in the order of its probabilities. */
  labels(task: string): string[];
  /** `tasks`: one task name for every text, or one per text. One array per text, following that text's task's labels. */
  predictProba(texts: Text[], tasks: string | string[], options?: RunOptions): Promise<number[][]>;
  /** The most probable label of each text, under its task. */
  predict(texts: Text[], tasks: string | string[], options?: RunOptions): Promise<string[]>;
  /** Everything about each row: logits, probabilities, labels, truncation. */
  run(texts: Text[], tasks: string | string[], options?: RunOptions): Promise<RunResult>;
  /** Releases the ONNX Runtime sessions. */
  release(): Promise<void>;
}

/** A bundle that cannot be used (damaged, tampered with, or not what this runtime reads); the
 * message names the file or manifest field. */
export declare class BundleError extends Error {}
