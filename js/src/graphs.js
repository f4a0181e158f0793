// The graph contract (ipt_edge/graphs.py): what every ONNX graph of a bundle takes and gives, by
// name, dtype and shape, checked against each session when it is opened. Symbolic dims:
//
//   batch, tokens     B, T: the padded batch         hidden  H     layers  L
//   heads, head_dim   attention heads, H / heads     prompts P: the task's prompt length
//   kv                2: a layer's prefix keys ([0]) and values ([1]), stacked
import { BundleError } from "./errors.js";

const spec = (name, dtype, dims) => ({ name, dtype, dims });
const INPUT_IDS = spec("input_ids", "int64", ["batch", "tokens"]);
const TOKEN_EMBEDS = spec("token_embeds", "float32", ["batch", "tokens", "hidden"]);
const ATTENTION_MASK = spec("attention_mask", "int64", ["batch", "tokens"]);
const TOKEN_TYPE_IDS = spec("token_type_ids", "int64", ["batch", "tokens"]);
const PREFIX_MASK = spec("prefix_mask", "int64", ["batch", "layers", "prompts"]); // 1 = attend
const HIDDEN = spec("hidden", "float32", ["batch", "tokens", "hidden"]);

/** Layer `layer`'s prefix: [2, B, heads, P, head_dim], keys then values. */
export const prefixKv = (layer) => spec(`prefix_kv.${layer}`, "float32", ["kv", "batch", "heads", "prompts", "head_dim"]);
const layers = (count) => Array.from({ length: count }, (_, layer) => prefixKv(layer));

export const EMBED = { inputs: [INPUT_IDS], outputs: [TOKEN_EMBEDS] };
/** A task's generator.onnx: it takes any subset of these inputs. */
export const generator = (count) => ({ inputs: [INPUT_IDS, TOKEN_EMBEDS, ATTENTION_MASK], outputs: layers(count) });
/** The backbone graph, encoder.onnx (and its int8 twin). */
export const encoder = (count) => ({
  inputs: [TOKEN_EMBEDS, ATTENTION_MASK, TOKEN_TYPE_IDS, PREFIX_MASK, ...layers(count)],
  outputs: [HIDDEN],
});

// Operators that compute in 8-bit integers (ipt_edge/graphs.py QUANTIZED_OPS): an int8 graph has
// at least one. Export's dynamic quantization writes DynamicQuantizeLinear and MatMulInteger
// (QAttention on a fused graph); static quantization writes QuantizeLinear.
export const QUANTIZED_OPS = ["DynamicQuantizeLinear", "DynamicQuantizeMatMul", "MatMulInteger", "MatMulIntegerToFloat", "QAttention", "QuantizeLinear", "QLinearMatMul", "QGemm"];
// Each as protobuf writes a node's op_type (field 4 of NodeProto): the byte 0x22, the name's length, the name.
const QUANTIZED_NODES = QUANTIZED_OPS.map((op) => [0x22, op.length, ...new TextEncoder().encode(op)]);

/**
 * Refuses an int8 backbone graph (its bytes) with no int8 operator, e.g. a copy of the fp32 graph:
 * int8 would silently run fp32. This catches a mistake; a graph crafted to pass could hold anything.
 */
export function checkQuantized(bytes, file) {
  const data = new Uint8Array(bytes.buffer ?? bytes, bytes.byteOffset ?? 0, bytes.byteLength);
  for (let i = data.indexOf(0x22); i !== -1; i = data.indexOf(0x22, i + 1)) {
    if (QUANTIZED_NODES.some((node) => node.every((byte, k) => data[i + k] === byte))) return;
  }
  throw new BundleError(
    `${file}: not a quantized graph (no int8 operator: ${QUANTIZED_OPS.slice(0, 3).join(", ")}, ...), so int8 would run in fp32; ` +
      "encoder.int8_file must name the graph export --quantize int8 writes",
  );
}

const describe = (t) => `${t.name} ${t.dtype} [${t.dims.join(", ")}]`;

/**
 * Compares an onnxruntime session's inputs and outputs with `graph`: names, ranks, dtypes, and
 * every dimension the graph fixes that `dims` knows (e.g. {hidden: 384, prompts: 16}).
 * subsetInputs: the graph may take only some of the inputs (generators). Throws a BundleError
 * naming the file, what was expected and what was found.
 */
export function checkSession(session, graph, file, { subsetInputs = false, dims = {} } = {}) {
  const known = { kv: 2, ...dims };
  for (const [what, specs, metadata, names] of [
    ["inputs", graph.inputs, session.inputMetadata, session.inputNames],
    ["outputs", graph.outputs, session.outputMetadata, session.outputNames],
  ]) {
    const found = new Map(names.map((name, i) => [name, metadata?.[i]]));
    const show = () => [...found].map(([n, m]) => (m?.isTensor ? `${n} ${m.type} rank ${m.shape.length}` : `${n} (not a tensor)`)).join(", ") || "none";
    const expected = new Map(specs.map((t) => [t.name, t]));
    const namesOk = [...found.keys()].every((n) => expected.has(n)) && (subsetInputs && what === "inputs" ? true : found.size === expected.size);
    const typesOk = [...found].every(([n, m]) => !expected.has(n) || (m?.isTensor && m.type === expected.get(n).dtype && m.shape.length === expected.get(n).dims.length));
    if (!namesOk || !typesOk) {
      const some = subsetInputs && what === "inputs" ? "a subset of " : "";
      throw new BundleError(`${file}: ${what} should be ${some}${specs.map(describe).join(", ")}; found ${show()}`);
    }
    for (const [name, m] of found) {
      const t = expected.get(name);
      t.dims.forEach((symbol, axis) => {
        const size = m.shape[axis];
        if (typeof size === "number" && size >= 0 && known[symbol] !== undefined && size !== known[symbol]) {
          throw new BundleError(`${file}: ${name} has ${symbol} = ${size}, but the manifest says ${known[symbol]} (expected ${describe(t)})`);
        }
      });
    }
  }
}
