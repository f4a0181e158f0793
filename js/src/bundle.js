// A loaded bundle and the batches that run through it, as ipt_edge/bundle.py and task.py do:
//
//   texts ─tokenizer─▶ ids [B,T] ─embed.onnx─▶ token_embeds [B,T,H]
//   each task's rows ─its generator.onnx─▶ prefix_kv.0..L-1 [2,B,heads,P,head_dim], padded to the batch's longest P
//   all rows ─encoder.onnx (the backbone)─▶ hidden [B,T,H] ─each task's pooling and head─▶ logits ─softmax─▶ probabilities
//
// Rows are sorted by token length into batches whatever their tasks; rows of every task share the
// embedding and backbone calls, only generators and heads run per task. This module knows no
// platform: the entry points (node.js, browser.js) give it a file source and ONNX Runtime.
import { BundleError } from "./errors.js";
import * as graphs from "./graphs.js";
import { MANIFEST, MAX_MANIFEST_BYTES, parseManifest, verifiedBytes } from "./manifest.js";
import { readSafetensors } from "./safetensors.js";
import { BertTokenizer, checkText } from "./tokenization.js";

const utf8 = (bytes, file) => {
  try {
    return new TextDecoder("utf-8", { fatal: true }).decode(bytes);
  } catch {
    throw new BundleError(`${file}: not UTF-8 text`);
  }
};

/** Reads and checks manifest.json from `source`. */
export async function readManifest(source) {
  const bytes = await source.read(MANIFEST, MAX_MANIFEST_BYTES, { upTo: true });
  if (bytes.byteLength > MAX_MANIFEST_BYTES) throw new BundleError(`${source.describe(MANIFEST)}: larger than ${MAX_MANIFEST_BYTES} bytes; refusing to parse it`);
  try {
    return parseManifest(utf8(bytes, MANIFEST));
  } catch (error) {
    if (error instanceof BundleError) error.message = `${source.describe("")}${error.message}`;
    throw error;
  }
}

export class Bundle {
  /**
   * Opens a bundle: the manifest, then the tokenizer, embedding and backbone graphs, each file
   * checked (size, sha256) before use. A task's own files are read when it is first used.
   * `runtime`: {ort, sessionOptions(small)} from the entry point; options: {precision}.
   */
  static async open(source, runtime, { precision = "fp32" } = {}) {
    if (precision !== "fp32" && precision !== "int8") throw new RangeError(`precision must be 'fp32' or 'int8', got ${precision}`);
    const manifest = await readManifest(source);
    const bundle = new this(source, runtime, manifest, precision);
    await bundle._openShared();
    return bundle;
  }

  /** @private use Bundle.load */
  constructor(source, runtime, manifest, precision) {
    this.source = source;
    this.runtime = runtime;
    this.manifest = manifest;
    this.precision = precision;
    this._tasks = new Map(); // name -> Promise<Task>
    this._queue = Promise.resolve(); // runs one call at a time (a wasm session runs one at a time)
  }

  async _openShared() {
    const { manifest } = this;
    const tokenizerFile = manifest.tokenizer_file;
    let json;
    try {
      json = JSON.parse(utf8(await this._read(tokenizerFile), tokenizerFile));
    } catch (error) {
      if (error instanceof BundleError) throw error;
      throw new BundleError(`${tokenizerFile}: not a tokenizer (${error.message})`);
    }
    this.tokenizer = new BertTokenizer(json, tokenizerFile);
    const b = manifest.backbone;
    this.dims = { hidden: b.hidden_size, layers: b.num_layers, heads: b.num_heads, head_dim: b.hidden_size / b.num_heads };
    this.embed = await this._session(manifest.embed_file, true); // [B, T] ids -> [B, T, H]
    graphs.checkSession(this.embed, graphs.EMBED, manifest.embed_file, { dims: { hidden: b.hidden_size } });
    const file = this.precision === "int8" ? manifest.encoder.int8_file : manifest.encoder.file;
    if (!file) throw new BundleError(`${this.source.describe("")} has no int8 encoder; export with --quantize int8`);
    // the backbone, shared by every task; an int8 one must be quantized, or int8 would run fp32
    this.encoder = await this._session(file, false, { quantized: this.precision === "int8" });
    graphs.checkSession(this.encoder, graphs.encoder(b.num_layers), file, { dims: this.dims });
  }

  _read(file) {
    return verifiedBytes(this.source, this.manifest, file);
  }

  async _session(file, small, { quantized = false } = {}) {
    const bytes = await this._read(file);
    if (quantized) graphs.checkQuantized(bytes, file);
    try {
      return await this.runtime.ort.InferenceSession.create(bytes, this.runtime.sessionOptions(small));
    } catch (error) {
      const detail = String(error?.message ?? error).trim().split("\n")[0].slice(0, 300);
      if (/external data/i.test(detail)) throw new BundleError(`${file}: the graph keeps weights in external data files, which a bundle may not`);
      throw new BundleError(`${file}: ONNX Runtime cannot load this graph (${detail})`);
    }
  }

  /** The bundle's task names, sorted. */
  get tasks() {
    return Object.keys(this.manifest.tasks).sort();
  }

  /** The labels of `task`, in the order of its probabilities. */
  labels(task) {
    return [...this._info(task).labels];
  }

  _info(name, where = "") {
    if (typeof name !== "string" || !Object.hasOwn(this.manifest.tasks, name)) {
      throw new BundleError(`${where}no task ${JSON.stringify(String(name))} in the bundle; it has: ${this.tasks.join(", ") || "none"}`);
    }
    return this.manifest.tasks[name];
  }

  /** The task `name`, opened on first use: its generator session, head and prefix mask. */
  task(name) {
    this._info(name);
    if (!this._tasks.has(name)) {
      const opening = this._openTask(name);
      opening.catch(() => this._tasks.delete(name)); // a later call tries again, and fails again
      this._tasks.set(name, opening);
    }
    return this._tasks.get(name);
  }

  async _openTask(name) {
    const info = this.manifest.tasks[name];
    const { layers, hidden } = this.dims;
    const generator = await this._session(info.generator_file, true);
    graphs.checkSession(generator, graphs.generator(layers), info.generator_file, {
      subsetInputs: true,
      dims: { ...this.dims, prompts: info.prompt_length },
    });
    const head = readSafetensors(await this._read(info.head_file), info.head_file);
    const classes = info.labels.length;
    const ok = (key, shape) => head[key]?.dtype === "F32" && JSON.stringify(head[key].shape) === JSON.stringify(shape);
    if (!ok("weight", [classes, hidden]) || !ok("bias", [classes])) {
      const found = Object.entries(head).map(([k, t]) => `${k} ${t.dtype} [${t.shape.join(", ")}]`).join(", ");
      throw new BundleError(`${info.head_file}: expected float32 weight [${classes}, ${hidden}] and bias [${classes}], found ${found || "nothing"}`);
    }
    // Which layers attend to the prefix: all from prefix_from_layer on.  [L, P]
    const prefixMask = new BigInt64Array(layers * info.prompt_length);
    prefixMask.fill(1n, info.prefix_from_layer * info.prompt_length);
    return { name, info, generator, weight: head.weight.data, bias: head.bias.data, prefixMask };
  }

  // ---- running ---------------------------------------------------------------------------

  /**
   * Scores each text with its task (`tasks`: one name, or one per text). Returns, one entry per
   * text in input order: {tasks, labelNames (its task's labels), logits, probabilities, labels (the
   * most probable), truncated}, as the Python runtime's Predictions.
   */
  run(texts, tasks, { batchSize = 32 } = {}) {
    const result = this._queue.then(() => this._run(texts, tasks, batchSize));
    this._queue = result.catch(() => {});
    return result;
  }

  async _run(texts, tasks, batchSize) {
    if (!Number.isInteger(batchSize) || batchSize < 1) throw new RangeError(`batchSize must be a whole number >= 1, got ${batchSize}`);
    if (!Array.isArray(texts)) throw new TypeError("pass an array of texts, e.g. predict([text], ...), not a single text");
    const names = typeof tasks === "string" ? texts.map(() => tasks) : Array.from(tasks ?? []);
    if (names.length !== texts.length) throw new RangeError(`${texts.length} texts but ${names.length} task names: give one task per text`);
    names.forEach((name, index) => this._info(name, `text ${index}: `));
    const opened = new Map();
    for (const name of names) if (!opened.has(name)) opened.set(name, await this.task(name));
    const rowTasks = names.map((name) => opened.get(name));
    const encodings = texts.map((text, index) => {
      const task = rowTasks[index];
      if (task.info.text_pair) {
        if (!Array.isArray(text) || text.length !== 2) throw new TypeError(`text ${index}: task '${task.name}' takes [text, textPair] pairs`);
      } else if (typeof text !== "string") {
        throw new TypeError(`text ${index}: task '${task.name}' takes single strings`);
      }
      for (const part of task.info.text_pair ? text : [text]) checkText(part, index);
      return this.tokenizer.encode(text, task.info.max_length);
    });
    const logits = new Array(texts.length);
    const order = [...texts.keys()].sort((a, b) => encodings[a].ids.length - encodings[b].ids.length); // stable
    for (let start = 0; start < order.length; start += batchSize) {
      const rows = order.slice(start, start + batchSize);
      const values = await this._batchLogits(this._pad(rows.map((i) => encodings[i])), rows.map((i) => rowTasks[i]));
      rows.forEach((row, i) => (logits[row] = values[i]));
    }
    const labelNames = rowTasks.map((task) => [...task.info.labels]);
    return {
      tasks: names,
      labelNames,
      logits,
      probabilities: logits.map(softmax),
      labels: logits.map((row, i) => labelNames[i][argmax(row)]),
      truncated: encodings.map((e) => e.truncated),
    };
  }

  /** One probability array per text; its entries follow that text's task's labels. */
  async predictProba(texts, tasks, options) {
    return (await this.run(texts, tasks, options)).probabilities;
  }

  /** The most probable label of each text, under its task. */
  async predict(texts, tasks, options) {
    return (await this.run(texts, tasks, options)).labels;
  }

  /** Releases every ONNX Runtime session; the bundle cannot run afterwards. */
  async release() {
    const tasks = await Promise.allSettled(this._tasks.values());
    const sessions = [this.embed, this.encoder, ...tasks.filter((t) => t.status === "fulfilled").map((t) => t.value.generator)];
    await Promise.all(sessions.map((s) => s?.release()));
  }

  /** Right-pads encodings to the longest: input_ids, attention_mask, token_type_ids [B, T]. */
  _pad(encodings) {
    const B = encodings.length;
    const T = Math.max(...encodings.map((e) => e.ids.length));
    const ids = new BigInt64Array(B * T).fill(BigInt(this.tokenizer.padId));
    const mask = new BigInt64Array(B * T);
    const types = new BigInt64Array(B * T);
    encodings.forEach((e, row) => {
      e.ids.forEach((id, t) => {
        ids[row * T + t] = BigInt(id);
        mask[row * T + t] = 1n;
        types[row * T + t] = BigInt(e.typeIds[t]);
      });
    });
    return { B, T, ids, mask, types };
  }

  /** One padded batch through the graphs; tasks[i] is row i's task. Returns one logits array per row. */
  async _batchLogits(batch, tasks) {
    const { Tensor } = this.runtime.ort;
    const { B, T } = batch;
    const { token_embeds: tokenEmbeds } = await this.embed.run({ input_ids: new Tensor("int64", batch.ids, [B, T]) }); // [B, T, H]
    const feeds = {
      token_embeds: tokenEmbeds,
      attention_mask: new Tensor("int64", batch.mask, [B, T]),
      token_type_ids: new Tensor("int64", batch.types, [B, T]),
      ...(await this._prefix(batch, tasks, tokenEmbeds.data)),
    };
    const { hidden } = await this.encoder.run(feeds); // [B, T, H]
    return tasks.map((task, row) => taskLogits(task, hidden.data, batch.mask, row, T, this.dims.hidden));
  }

  /**
   * The hand-over from the tasks' generators to the backbone: the one place that knows how
   * prompts pass between the graphs (manifest format 3). Runs each task's generator on its rows
   * and returns the backbone's prefix feeds: prefix_mask [B, L, P] int64 and prefix_kv.0..L-1,
   * each [2, B, heads, P, head_dim] float32 (keys, values), P being the batch's longest prompt;
   * a shorter prefix is padded with zeros along P, and prefix_mask is 0 there.
   */
  async _prefix(batch, tasks, tokenEmbeds) {
    const { Tensor } = this.runtime.ort;
    const { B, T } = batch;
    const { layers: L, heads, head_dim: headDim, hidden: H } = this.dims;
    const rowsOf = new Map(); // task -> its rows, in order of first appearance
    tasks.forEach((task, row) => (rowsOf.has(task) ? rowsOf.get(task).push(row) : rowsOf.set(task, [row])));
    const generate = async (task, rows) => {
      const all = rows.length === B;
      const pick = (data, width, Type) => {
        if (all) return data;
        const out = new Type(rows.length * width);
        rows.forEach((row, i) => out.set(data.subarray(row * width, (row + 1) * width), i * width));
        return out;
      };
      const n = rows.length;
      const available = {
        input_ids: () => new Tensor("int64", pick(batch.ids, T, BigInt64Array), [n, T]), // [n, T]
        token_embeds: () => new Tensor("float32", pick(tokenEmbeds, T * H, Float32Array), [n, T, H]), // [n, T, H]
        attention_mask: () => new Tensor("int64", pick(batch.mask, T, BigInt64Array), [n, T]), // [n, T]
      };
      const feeds = Object.fromEntries(task.generator.inputNames.map((name) => [name, available[name]()]));
      const out = await task.generator.run(feeds);
      return Array.from({ length: L }, (_, l) => out[`prefix_kv.${l}`]); // L x [2, n, heads, p, head_dim]
    };
    if (rowsOf.size === 1) { // one task: its generator's outputs go to the backbone as they are
      const [task] = rowsOf.keys();
      const kv = await generate(task, rowsOf.get(task));
      const mask = new BigInt64Array(B * task.prefixMask.length);
      for (let row = 0; row < B; row++) mask.set(task.prefixMask, row * task.prefixMask.length);
      const P = task.info.prompt_length;
      return { prefix_mask: new Tensor("int64", mask, [B, L, P]), ...Object.fromEntries(kv.map((t, l) => [`prefix_kv.${l}`, t])) };
    }
    const P = Math.max(...[...rowsOf.keys()].map((task) => task.info.prompt_length));
    const kv = Array.from({ length: L }, () => new Float32Array(2 * B * heads * P * headDim)); // L x [2, B, heads, P, head_dim]
    const mask = new BigInt64Array(B * L * P); // [B, L, P]
    for (const [task, rows] of rowsOf) {
      const p = task.info.prompt_length;
      const own = await generate(task, rows); // L x [2, n, heads, p, head_dim]
      const n = rows.length;
      own.forEach((tensor, l) => {
        const src = tensor.data;
        for (let k = 0; k < 2; k++) {
          rows.forEach((row, i) => {
            for (let h = 0; h < heads; h++) {
              const from = (((k * n + i) * heads + h) * p) * headDim;
              const to = (((k * B + row) * heads + h) * P) * headDim;
              kv[l].set(src.subarray(from, from + p * headDim), to);
            }
          });
        }
      });
      rows.forEach((row) => {
        for (let l = 0; l < L; l++) mask.set(task.prefixMask.subarray(l * p, (l + 1) * p), (row * L + l) * P);
      });
    }
    return {
      prefix_mask: new Tensor("int64", mask, [B, L, P]),
      ...Object.fromEntries(kv.map((data, l) => [`prefix_kv.${l}`, new Tensor("float32", data, [2, B, heads, P, headDim])])),
    };
  }
}

/** `threads` is absent, or a whole number >= 1. */
export function checkThreads(threads) {
  if (threads !== undefined && !(Number.isInteger(threads) && threads >= 1)) throw new RangeError(`threads must be a whole number >= 1, got ${threads}`);
}

/** Row `row`'s logits [C]: its hidden states [T, H] pooled over the real tokens (mean) or the
 * first token (cls), then the task's head (weight [C, H], bias [C]). */
function taskLogits(task, hidden, mask, row, T, H) {
  const pooled = new Float64Array(H);
  if (task.info.pooling === "cls") {
    for (let h = 0; h < H; h++) pooled[h] = hidden[row * T * H + h];
  } else {
    let count = 0;
    for (let t = 0; t < T; t++) {
      if (mask[row * T + t] === 0n) continue;
      count++;
      const base = (row * T + t) * H;
      for (let h = 0; h < H; h++) pooled[h] += hidden[base + h];
    }
    for (let h = 0; h < H; h++) pooled[h] /= Math.max(count, 1);
  }
  const C = task.bias.length;
  return Array.from({ length: C }, (_, c) => {
    let sum = task.bias[c];
    for (let h = 0; h < H; h++) sum += pooled[h] * task.weight[c * H + h];
    return sum;
  });
}

function softmax(logits) {
  const top = Math.max(...logits);
  const exps = logits.map((x) => Math.exp(x - top));
  const total = exps.reduce((a, b) => a + b, 0);
  return exps.map((x) => x / total);
}

const argmax = (values) => values.reduce((best, x, i) => (x > values[best] ? i : best), 0);
