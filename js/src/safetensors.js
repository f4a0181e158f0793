// A small safetensors reader for the heads (weight [C, H], bias [C]): an 8-byte little-endian
// header length, a JSON header {name: {dtype, shape, data_offsets: [begin, end]}, __metadata__?},
// then raw little-endian data. Data only, never code; every length and offset is checked, as the
// Rust safetensors library does (tensors tile the data exactly, no gaps or overlaps).
import { BundleError } from "./errors.js";

const MAX_HEADER = 100_000_000; // the Rust library's limit
const SIZES = { F64: 8, F32: 4, F16: 2, BF16: 2, I64: 8, I32: 4, I16: 2, I8: 1, U8: 1, BOOL: 1 };

/** Parses `bytes` (a Uint8Array); returns {name: {dtype, shape, data: Float32Array | null}}
 * (data for F32 tensors only). Throws a BundleError naming `file` on anything malformed. */
export function readSafetensors(bytes, file) {
  const fail = (why) => {
    throw new BundleError(`${file}: not a readable safetensors file (${why})`);
  };
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  if (bytes.byteLength < 8) fail("shorter than its 8-byte header length");
  const headerLength = view.getBigUint64(0, true);
  if (headerLength > BigInt(Math.min(MAX_HEADER, bytes.byteLength - 8))) fail(`header length ${headerLength} does not fit the file`);
  const start = 8 + Number(headerLength);
  let header;
  try {
    header = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(bytes.subarray(8, start)));
  } catch (error) {
    fail(`header is not UTF-8 JSON: ${error.message}`);
  }
  if (header === null || typeof header !== "object" || Array.isArray(header)) fail("header is not a JSON object");
  const dataLength = bytes.byteLength - start;
  const tensors = Object.create(null);
  const spans = [];
  for (const [name, entry] of Object.entries(header)) {
    if (name === "__metadata__") continue;
    const { dtype, shape, data_offsets: offsets } = entry ?? {};
    if (!Object.hasOwn(SIZES, dtype)) fail(`tensor ${name}: unknown dtype ${JSON.stringify(dtype)}`);
    if (!Array.isArray(shape) || !shape.every((d) => Number.isSafeInteger(d) && d >= 0)) fail(`tensor ${name}: bad shape`);
    if (!Array.isArray(offsets) || offsets.length !== 2 || !offsets.every((o) => Number.isSafeInteger(o) && o >= 0)) {
      fail(`tensor ${name}: bad data_offsets`);
    }
    const [begin, end] = offsets;
    const count = shape.reduce((a, b) => a * b, 1);
    if (end < begin || end > dataLength || end - begin !== count * SIZES[dtype]) {
      fail(`tensor ${name}: data_offsets [${begin}, ${end}] do not hold ${dtype} ${JSON.stringify(shape)} in ${dataLength} bytes`);
    }
    spans.push([begin, end]);
    let data = null;
    if (dtype === "F32") {
      data = new Float32Array(count);
      for (let i = 0; i < count; i++) data[i] = view.getFloat32(start + begin + 4 * i, true);
    }
    tensors[name] = { dtype, shape, data };
  }
  spans.sort((a, b) => a[0] - b[0] || a[1] - b[1]);
  let covered = 0;
  for (const [begin, end] of spans) {
    if (begin !== covered) fail("tensors overlap or leave gaps in the data");
    covered = end;
  }
  if (covered !== dataLength) fail(`the tensors hold ${covered} bytes of ${dataLength}`);
  return tensors;
}
