// The bundle format (manifest.json), as ipt_edge/manifest.py defines it (its tables: format.js), and
// the checks before any file of a bundle is used. A bundle may come from anywhere, so nothing in it is
// trusted: other versions are refused, every path must stay inside the bundle, every field is
// checked, and each file's size and sha256 must match the manifest before it is used.
import { BundleError } from "./errors.js";
import TABLES from "./format.js";

// The format's tables are ipt_edge/manifest.py's, written to format.js by js/scripts/write_format.py.
export const FORMAT = TABLES.format;
export const FORMAT_VERSION = TABLES.format_version;
const OLDER_FORMATS = TABLES.older_formats; // version -> what changed since
export const MANIFEST = TABLES.manifest;
export const MAX_MANIFEST_BYTES = TABLES.max_manifest_bytes;
const TASK_NAME = new RegExp(TABLES.task_name);
const POOLINGS = TABLES.poolings;
// Upper bounds on the manifest's numbers: far above any real model, low enough that a hostile
// manifest cannot make the runtime allocate absurd arrays.
const LIMITS = TABLES.limits;
const DEFAULT_LIMIT = TABLES.default_limit;
// Each record's fields and their kinds, as the Python dataclasses declare them.
const { backbone: BACKBONE, encoder: ENCODER, task: TASK, int8: INT8, file: FILE_RECORD } = TABLES.records;

const fail = (message) => {
  throw new BundleError(`${MANIFEST}: ${message}`);
};
const isObject = (value) => value !== null && typeof value === "object" && !Array.isArray(value);
const show = (value) => String(JSON.stringify(value)).slice(0, 80);

function field(data, key, kind, where) {
  if (!isObject(data) || !Object.hasOwn(data, key)) fail(`missing field ${where}${key}`);
  const value = data[key];
  const ok = {
    str: typeof value === "string",
    int: Number.isInteger(value),
    float: typeof value === "number" && Number.isFinite(value),
    bool: typeof value === "boolean",
    dict: isObject(value),
    "list[str]": Array.isArray(value),
  }[kind];
  if (!ok) fail(`field ${where}${key} should be ${kind === "list[str]" ? "list" : kind}, got ${show(value)}`);
  if (kind === "list[str]" && !value.every((v) => typeof v === "string")) fail(`field ${where}${key} should be a list of strings`);
  const limit = LIMITS[key] ?? DEFAULT_LIMIT;
  if (kind === "int" && !(value >= 0 && value <= limit)) fail(`field ${where}${key} = ${value} is out of range (0 to ${limit})`);
  return value;
}

function fields(kinds, data, where) {
  if (!isObject(data)) fail(`${where.replace(/\.$/, "")} should be an object`);
  return Object.fromEntries(Object.entries(kinds).map(([key, kind]) => [key, field(data, key, kind, where)]));
}

/** A path inside the bundle: relative, forward slashes, no "..", nothing hidden. */
export function checkRelativePath(path, where) {
  if (
    typeof path !== "string" || !path || path.includes("\\") || path.startsWith("/") || /^[A-Za-z]:/.test(path) ||
    path.split("/").some((part) => part === "" || part === "." || part === ".." || part.startsWith("."))
  ) {
    fail(`${where} path ${show(path)} is not a plain relative path inside the bundle`);
  }
  return path;
}

/**
 * Refuses a key that an object of `text` (JSON that JSON.parse read) names twice, saying which
 * object: JSON.parse keeps the last value silently, so a wrong first entry (a sha256, a task)
 * would never be checked. One pass over the text with a stack of the open objects and arrays.
 */
function refuseRepeatedKeys(text) {
  const open = []; // each: {path, keys (a Set; null for an array), key (its last), index, wantsKey}
  for (let i = 0; i < text.length; i++) {
    const c = text[i];
    const top = open[open.length - 1];
    if (c === '"') {
      let end = i + 1;
      while (text[end] !== '"') end += text[end] === "\\" ? 2 : 1;
      if (top?.keys && top.wantsKey) {
        const key = JSON.parse(text.slice(i, end + 1)); // escapes decoded: "\u0061" is "a"
        if (top.keys.has(key)) fail(`key ${JSON.stringify(key)} appears twice ${top.path ? `in ${top.path}` : "at the top level"}`);
        top.keys.add(key);
        top.key = key;
        top.wantsKey = false;
      }
      i = end;
    } else if (c === "{" || c === "[") {
      const path = !top ? "" : top.keys ? (top.path ? `${top.path}.${top.key}` : top.key) : `${top.path}[${top.index}]`;
      open.push({ path, keys: c === "{" ? new Set() : null, key: null, index: 0, wantsKey: true });
    } else if (c === "}" || c === "]") {
      open.pop();
    } else if (c === ",") {
      if (top.keys) top.wantsKey = true;
      else top.index++;
    }
  }
}

/** The manifest's text to a checked object: {backbone, encoder, tokenizer_file, embed_file, tasks, files}. */
export function parseManifest(text) {
  let data;
  try {
    data = JSON.parse(text);
  } catch (error) {
    fail(`is not valid JSON (${error.message})`);
  }
  refuseRepeatedKeys(text);
  if (!isObject(data) || data.format !== FORMAT) fail(`not an ipt-edge bundle (format should be '${FORMAT}')`);
  const version = data.format_version;
  if (Object.hasOwn(OLDER_FORMATS, version)) {
    fail(
      `format_version ${version}, from an older ipt-edge (${OLDER_FORMATS[version]}); this ipt-edge reads version ` +
        `${FORMAT_VERSION}. Re-export each task from its checkpoint into a new bundle: ipt-edge export CHECKPOINT -o NEW_BUNDLE --task NAME`,
    );
  }
  if (version !== FORMAT_VERSION) {
    fail(`format_version ${show(version)} is not understood by this ipt-edge, which reads version ${FORMAT_VERSION}; re-export the bundle, or use a matching ipt-edge`);
  }
  const backbone = fields(BACKBONE, field(data, "backbone", "dict", ""), "backbone.");
  const files = Object.create(null); // no prototype: a path may be any name, "__proto__" too
  for (const [path, record] of Object.entries(field(data, "files", "dict", ""))) {
    checkRelativePath(path, `files.${path}`);
    files[path] = fields(FILE_RECORD, record, `files.${path}.`);
    if (!/^[0-9a-f]{64}$/.test(files[path].sha256)) fail(`files.${path} needs a size >= 0 and a 64-hex sha256`);
  }
  const tasks = Object.create(null);
  for (const [name, raw] of Object.entries(field(data, "tasks", "dict", ""))) {
    if (!TASK_NAME.test(name)) fail(`task name ${show(name)} is not allowed (letters, digits, _ . -)`);
    const info = (tasks[name] = fields(TASK, raw, `tasks.${name}.`));
    if (info.labels.length < 2 || info.label_values.length !== info.labels.length || info.prompt_length < 1) {
      fail(`task '${name}' needs 2+ labels, one value per label, and a prompt`);
    }
    for (const key of ["labels", "label_values"]) {
      if (new Set(info[key]).size !== info[key].length) fail(`tasks.${name}.${key} repeats a name: ${show(info[key])}`);
    }
    if (!POOLINGS.includes(info.pooling)) fail(`tasks.${name}.pooling should be one of ${POOLINGS.join(", ")}, got ${show(info.pooling)}`);
    if (info.max_length < 1) fail(`task '${name}' needs max_length >= 1`);
    const needed = info.max_length + backbone.position_offset; // the prefix takes no positions
    if (needed > backbone.max_positions) {
      fail(`task '${name}' needs ${needed} positions (max_length ${info.max_length}, offset ${backbone.position_offset}), but the backbone has ${backbone.max_positions}`);
    }
    if (Object.keys(info.int8).length) fields(INT8, info.int8, `tasks.${name}.int8.`);
  }
  if (backbone.hidden_size < 1 || backbone.num_layers < 1 || backbone.parameters < 1) {
    fail("backbone needs hidden_size, num_layers and parameters >= 1");
  }
  if (backbone.num_heads < 1 || backbone.hidden_size % backbone.num_heads) {
    fail(`backbone.num_heads must divide hidden_size ${backbone.hidden_size}`);
  }
  const encoder = fields(ENCODER, field(data, "encoder", "dict", ""), "encoder.");
  if (!encoder.file) fail("encoder.file is empty; every bundle has its backbone graph");
  for (const [name, info] of Object.entries(tasks)) {
    if (Object.keys(info.int8).length && !encoder.int8_file) fail(`tasks.${name}.int8 measures an int8 encoder the bundle does not have`);
    // num_layers itself: no layer reads the prefix (a linear probe on the frozen backbone).
    if (info.prefix_from_layer > backbone.num_layers) {
      fail(`task '${name}': prefix_from_layer ${info.prefix_from_layer} is not a layer (0..${backbone.num_layers - 1}), nor ${backbone.num_layers} (no prefix)`);
    }
  }
  const manifest = {
    backbone, encoder, tasks, files,
    tokenizer_file: field(data, "tokenizer_file", "str", ""),
    embed_file: field(data, "embed_file", "str", ""),
  };
  const shared = [manifest.tokenizer_file, manifest.embed_file, encoder.file, encoder.int8_file].filter(Boolean);
  for (const path of [...shared, ...Object.values(tasks).flatMap((t) => [t.generator_file, t.head_file])]) {
    checkRelativePath(path, "a graph");
    if (!Object.hasOwn(files, path)) fail(`${path} is used but has no entry in files (size, sha256)`);
  }
  return manifest;
}

const hex = (digest) => Array.from(new Uint8Array(digest), (b) => b.toString(16).padStart(2, "0")).join("");

/** sha256 of the bytes, as hex, with WebCrypto (browsers offer it on https and localhost only). */
export async function sha256(bytes) {
  if (!globalThis.crypto?.subtle) throw new BundleError("crypto.subtle is unavailable: load bundles from an https or localhost page");
  return hex(await globalThis.crypto.subtle.digest("SHA-256", bytes));
}

/**
 * The bytes of the bundle file `relative`, checked: listed in the manifest, inside the bundle,
 * of the recorded size and sha256. `source.read(relative, maxBytes)` fetches them (it refuses
 * more than maxBytes), `source.sha256` (if any) hashes them; what is used is exactly what was checked.
 */
export async function verifiedBytes(source, manifest, relative) {
  checkRelativePath(relative, "a file");
  const record = manifest.files[relative];
  if (!record) throw new BundleError(`${relative}: not listed in ${MANIFEST}`);
  const bytes = await source.read(relative, record.size);
  if (bytes.byteLength !== record.size) {
    throw new BundleError(`${source.describe(relative)}: ${bytes.byteLength} bytes, the manifest says ${record.size}; the file is damaged`);
  }
  if ((await (source.sha256 ?? sha256)(bytes)) !== record.sha256) {
    throw new BundleError(`${relative}: sha256 does not match the manifest; the file is damaged or was changed`);
  }
  return bytes;
}
