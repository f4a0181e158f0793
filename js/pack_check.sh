#!/usr/bin/env bash
# The package as a user installs it, from the repository root:  bash js/pack_check.sh BUNDLE_DIR
# `npm pack`, the tarball's file list, then a scratch project outside the checkout that installs the
# tarball (its dependencies from the npm registry) as README.md says, and runs README.md's Node
# example there against BUNDLE_DIR, the shipped sst2-sentiment bundle; where Chromium and js's
# node_modules (playwright-core, esbuild) are installed, also its browser example (an import map)
# and its bundler example (esbuild). The examples are read out of README.md (the fenced block after
# each <!-- name --> marker) and must print the outputs it shows, so docs and test cannot drift.
# Needs Node, npm and the registry; python3 for the browser part.
set -euo pipefail
bundle=$(realpath "${1:?usage: bash js/pack_check.sh BUNDLE_DIR}")
cd "$(dirname "$0")"
js=$PWD
start=$SECONDS
scratch=$(mktemp -d)
server=""
cleanup() {
  if [ -n "$server" ]; then kill "$server" 2> /dev/null || true; fi
  rm -rf "$scratch"
}
trap cleanup EXIT

# The fenced block that follows the line "<!-- $1 -->" in js/README.md (or in $3), without its fences.
example() {
  awk -v marker="<!-- $1 -->" '
    $0 == marker { found = 1; next }
    found && /^```/ { if (inside) exit; inside = 1; next }
    inside { print }' "${3:-$js/README.md}" > "$2"
  [ -s "$2" ] || { echo "${3:-js/README.md} has no block after <!-- $1 -->"; exit 1; }
}

echo "-- npm pack"
tarball=$(npm pack --silent --pack-destination "$scratch" | tail -n 1)
tarball=$scratch/$tarball
# Exactly what a user needs: the tracked src/ (code and types), the README, the license.
tar -tzf "$tarball" | sed 's|^package/||' | sort > "$scratch/packed"
{ printf '%s\n' LICENSE README.md package.json; git ls-files src; } | sort > "$scratch/wanted"
diff "$scratch/wanted" "$scratch/packed" || { echo "the tarball's files (>) differ from those wanted (<): git add a new file in src/, or remove it"; exit 1; }
cmp LICENSE ../LICENSE || { echo "js/LICENSE differs from the repository's LICENSE: copy it again"; exit 1; }
grep -q -F "$(basename "$tarball")" README.md || { echo "js/README.md does not name $(basename "$tarball")"; exit 1; }
echo "$(basename "$tarball"): $(wc -l < "$scratch/packed") files, $(du -k "$tarball" | cut -f1) kB"

echo "-- a scratch project installs the tarball (ONNXRUNTIME_NODE_INSTALL=skip, install scripts run)"
app=$scratch/my-app
mkdir "$app"
ln -s "$bundle" "$app/bundle"
(cd "$app" && ONNXRUNTIME_NODE_INSTALL=skip npm install --no-audit --no-fund --loglevel=error "$tarball")
# The package, its types and every file its exports name are in place.
(cd "$app" && node --input-type=module -e '
  import { existsSync, readFileSync } from "node:fs";
  const dir = "node_modules/ipt-edge/";
  const pkg = JSON.parse(readFileSync(dir + "package.json", "utf8"));
  const targets = [pkg.types, ...Object.values(pkg.exports["."])];
  for (const target of targets) if (!existsSync(dir + target)) throw new Error(`exports or types name ${target}, which is not in the package`);
  const resolved = import.meta.resolve("ipt-edge");
  if (!resolved.endsWith("/my-app/node_modules/ipt-edge/src/node.js")) throw new Error(`ipt-edge resolves to ${resolved}`);
  console.log(`ipt-edge resolves to ${resolved}`);
')

echo "-- README.md's Node example"
example node-example "$app/classify.mjs"
example node-example-output "$scratch/node-expected"
# The repository's README.md shows the same example (once it has the marker, it must be the same).
if grep -q -x -F '<!-- node-example -->' ../README.md; then
  example node-example "$scratch/root-example" ../README.md
  diff "$app/classify.mjs" "$scratch/root-example" || { echo "README.md's Node example (>) differs from js/README.md's (<)"; exit 1; }
else
  echo "README.md has no <!-- node-example --> block: not compared with js/README.md's"
fi
(cd "$app" && node classify.mjs) > "$scratch/node-printed"
cat "$scratch/node-printed"
diff "$scratch/node-expected" "$scratch/node-printed" || { echo "the Node example printed (>) what js/README.md does not show (<)"; exit 1; }

chromium=${CHROMIUM:-/usr/bin/chromium}
if [ ! -x "$chromium" ] || [ ! -d node_modules/playwright-core ] || [ ! -x node_modules/.bin/esbuild ]; then
  echo "-- README.md's browser and bundler examples: skipped ($chromium, or js/node_modules: run npm ci in js/)"
else
  echo "-- README.md's browser example, served by Python's http.server, in Chromium"
  example browser-example "$app/index.html"
  example browser-example-output "$scratch/browser-expected"
  port=$(node -e 'const s = require("node:net").createServer().listen(0, "127.0.0.1", () => { console.log(s.address().port); s.close(); })')
  (cd "$app" && exec python3 -m http.server "$port" --bind 127.0.0.1 > "$scratch/server.log" 2>&1) &
  server=$!
  CHROMIUM="$chromium" node scripts/open_page.mjs "http://127.0.0.1:$port/" > "$scratch/browser-printed"
  cat "$scratch/browser-printed"
  diff "$scratch/browser-expected" "$scratch/browser-printed" || { echo "the browser example showed (>) what js/README.md does not show (<)"; exit 1; }

  echo "-- README.md's bundler example: esbuild (js's devDependency) bundles the project's ipt-edge"
  example bundler-example "$app/main.js"
  (cd "$app" && "$js/node_modules/.bin/esbuild" main.js --bundle --format=esm --outfile=dist/app.js --log-level=warning)
  mkdir "$app/ort"
  cp "$app"/node_modules/onnxruntime-web/dist/ort-wasm-simd-threaded.{mjs,wasm} "$app/ort/"
  echo '<pre id="out"></pre><script type="module" src="dist/app.js"></script>' > "$app/bundled.html"
  CHROMIUM="$chromium" node scripts/open_page.mjs "http://127.0.0.1:$port/bundled.html" > "$scratch/bundler-printed"
  cat "$scratch/bundler-printed"
  diff "$scratch/browser-expected" "$scratch/bundler-printed" || { echo "the bundler example showed (>) what js/README.md does not show (<)"; exit 1; }
fi
echo "js/pack_check.sh: passed in $((SECONDS - start)) s"
