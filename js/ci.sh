#!/usr/bin/env bash
# The JavaScript runtime's CI, from the repository root:  bash js/ci.sh BUNDLE_DIR
# BUNDLE_DIR: the shipped task's bundle (built earlier in CI). Needs the Python with ipt_edge
# on PATH (or $PYTHON), Node >= 20 and npm. Fails on any mismatch with the Python runtime.
# Where BUNDLE_DIR has no int8 backbone and the export extra is installed, an int8 bundle of the
# shipped task is exported into a temporary folder for the int8 checks (about 30 s).
# First pack_check.sh: the package as users install it (npm pack, README.md's examples).
set -euo pipefail
bundle=$(realpath "${1:?usage: bash js/ci.sh BUNDLE_DIR}")
python=${PYTHON:-python}
cd "$(dirname "$0")"
start=$SECONDS

if [ -z "${CHROMIUM:-}" ] && [ ! -x /usr/bin/chromium ]; then
  sudo=$([ "$(id -u)" = 0 ] || echo sudo)
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq chromium > /dev/null
fi

# onnxruntime-node's install script would download CUDA files (and fail here); its CPU binary is in the package.
ONNXRUNTIME_NODE_INSTALL=skip npm ci --ignore-scripts --no-audit --no-fund --loglevel=error
# The package as users get it: npm pack, installed into a scratch project, README.md's examples run there.
bash pack_check.sh "$bundle"

refs=$(mktemp -d)
trap 'rm -rf "$refs"' EXIT
for name in sentiment multi pair; do
  "$python" scripts/reference.py "../tests/bundles/$name" -o "$refs/$name.json"
done
"$python" scripts/reference.py "$bundle" -o "$refs/shipped-fp32.json"
int8="$bundle"
if ! "$python" -c 'import json, sys; sys.exit(not json.load(open(sys.argv[1]))["encoder"]["int8_file"])' "$bundle/manifest.json"; then
  int8=""
  if "$python" -c 'import torch' 2> /dev/null; then
    int8="$refs/int8-bundle"
    (cd .. && "$python" -m ipt_edge export models/sst2-sentiment -o "$int8" --quantize int8 --calibration models/sst2-sentiment/sample.tsv > /dev/null)
  else
    echo "js/ci.sh: $bundle has no int8 backbone and torch is missing: int8 checks skipped"
  fi
fi
if [ -n "$int8" ]; then
  "$python" scripts/reference.py "$int8" -o "$refs/shipped-int8.json" --precision int8
fi
# Every code point, fuzzed texts and truncations: Rust's ids against ours in Node (and, from the
# files it writes, in Chromium below). The tiny bundles share one tokenizer.json.
PYTHON="$python" node scripts/compare_tokenizers.mjs --out "$refs" ../tests/bundles/sentiment/tokenizer.json "$bundle/tokenizer.json"

export IPT_EDGE_BUNDLE="$bundle" IPT_EDGE_BUNDLE_INT8="$int8" IPT_EDGE_REFERENCES="$refs"
node --test test/*.test.js
node --test test/browser/chromium.test.js
echo "js/ci.sh: passed in $((SECONDS - start)) s"
