// The bundle format's tables (manifest.json), as ipt_edge/manifest.py defines them: written by
// `python js/scripts/write_format.py` from format_table(); tests/test_bundle.py checks they agree.
// Do not edit by hand.
export default {
  "format": "ipt-edge-bundle",
  "format_version": 3,
  "older_formats": {
    "1": "two encoder graphs, prepended prompts",
    "2": "prefix keys and values as two [B, L, ...] tensors, not one prefix_kv tensor per layer"
  },
  "manifest": "manifest.json",
  "max_manifest_bytes": 1048576,
  "task_name": "^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$",
  "poolings": [
    "mean",
    "cls"
  ],
  "limits": {
    "hidden_size": 65536,
    "num_layers": 1024,
    "num_heads": 1024,
    "vocab_size": 16777216,
    "max_positions": 1048576,
    "position_offset": 1024,
    "parameters": 1099511627776,
    "prompt_length": 4096,
    "max_length": 1048576,
    "tuned_parameters": 1099511627776,
    "size": 1099511627776,
    "rows": 1099511627776
  },
  "default_limit": 1099511627776,
  "records": {
    "backbone": {
      "name": "str",
      "model_type": "str",
      "sha256": "str",
      "hidden_size": "int",
      "num_layers": "int",
      "num_heads": "int",
      "vocab_size": "int",
      "max_positions": "int",
      "position_offset": "int",
      "parameters": "int"
    },
    "encoder": {
      "file": "str",
      "int8_file": "str",
      "fusions": "dict"
    },
    "task": {
      "generator": "str",
      "prompt_length": "int",
      "prefix_from_layer": "int",
      "pooling": "str",
      "labels": "list[str]",
      "label_values": "list[str]",
      "text_pair": "bool",
      "max_length": "int",
      "tuned_parameters": "int",
      "parity_max_abs_diff": "float",
      "generator_file": "str",
      "head_file": "str",
      "int8": "dict"
    },
    "int8": {
      "fp32_accuracy": "float",
      "int8_accuracy": "float",
      "rows": "int",
      "file": "str"
    },
    "file": {
      "size": "int",
      "sha256": "str"
    }
  }
};
